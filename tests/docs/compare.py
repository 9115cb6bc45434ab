"""How a documented output is compared with what the example prints.

One rule for every shown number with a decimal point or an exponent: it matches a printed number
that rounds to it, i.e. lies within half a unit of its last shown digit (194.899 matches anything
in [194.8985, 194.8995]; 0.5 anything in [0.45, 0.55]). So an example is pinned to the precision
it shows and no further: a JSON answer's full-precision floats are shown rounded, and float
noise below the shown digits cannot fail it. Integers, booleans and text must match exactly; in
JSON, a shown string "..." stands for any value; update mode writes it for the ids that change on
every request (VOLATILE) and keeps it wherever the documented output had it.
"""

from __future__ import annotations

import doctest
import json
import math
import re
from decimal import Decimal
from typing import Any

NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")
ANY = "..."
SIGNIFICANT_DIGITS = 5  # how update mode writes floats into JSON outputs
VOLATILE = frozenset({"request_id", "referral_id", "id", "created_at", "updated_at"})


def unit(shown: str) -> float:
    """One unit of the last digit of a shown number: '194.899' -> 0.001, '1.5e-05' -> 1e-06."""
    exponent = Decimal(shown).as_tuple().exponent
    assert isinstance(exponent, int)
    return float(Decimal(1).scaleb(exponent))


def is_float_text(shown: str) -> bool:
    return any(c in shown for c in ".eE")


def number_matches(shown: str, printed: str) -> bool:
    if not is_float_text(shown):
        return Decimal(shown) == Decimal(printed)
    # Half a unit, plus a millionth of the value: float32 sums differ in their last bits from one
    # CPU's BLAS to another, which moves a value that sits on a rounding boundary across it.
    return abs(float(printed) - float(shown)) <= unit(shown) / 2 + 1e-6 * abs(float(printed))


def text_matches(want: str, got: str, flags: int) -> bool:
    """Doctest's own comparison, then the same text with each number compared by
    `number_matches`."""
    if doctest.OutputChecker().check_output(want, got, flags):
        return True
    want_numbers, got_numbers = NUMBER.findall(want), NUMBER.findall(got)
    if len(want_numbers) != len(got_numbers):
        return False
    if NUMBER.sub("0", want).split() != NUMBER.sub("0", got).split():
        return False
    return all(number_matches(w, g) for w, g in zip(want_numbers, got_numbers, strict=True))


class NumberTolerantChecker(doctest.OutputChecker):
    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        return text_matches(want, got, optionflags)


def load_json(text: str) -> Any:
    """JSON with its floats kept as Decimal, so a shown float keeps the digits it was written
    with."""
    return json.loads(text, parse_float=Decimal)


def json_matches(shown: Any, printed: Any) -> bool:
    if shown == ANY:
        return True
    if isinstance(shown, dict):
        return (
            isinstance(printed, dict)
            and shown.keys() == printed.keys()
            and all(json_matches(v, printed[k]) for k, v in shown.items())
        )
    if isinstance(shown, list):
        return (
            isinstance(printed, list)
            and len(shown) == len(printed)
            and all(json_matches(s, p) for s, p in zip(shown, printed, strict=True))
        )
    if isinstance(shown, bool) or isinstance(printed, bool) or shown is None:
        return shown is printed or (shown == printed and type(shown) is type(printed))
    if isinstance(shown, Decimal | int) and isinstance(printed, Decimal | int):
        return number_matches(str(shown), str(printed))
    return bool(shown == printed)


class Shown(str):
    """A float as update mode writes it: its text is its precision (see `shown_float`)."""


def shown_float(x: float) -> Shown:
    """`x` to SIGNIFICANT_DIGITS, written so that its last digit is the last significant one.

    Always with a decimal point or an exponent, so it is compared as a float; trailing zeros are
    dropped, which only widens the match interval around the same rounded value.
    """
    if x == 0 or not math.isfinite(x):
        return Shown("0.0" if x == 0 else json.dumps(x))
    magnitude = math.floor(math.log10(abs(x))) + 1  # digits before the point
    if abs(x) < 1e-4:
        mantissa, exponent = f"{x:.{SIGNIFICANT_DIGITS - 1}e}".split("e")
        return Shown(_trim(mantissa) + "e" + exponent)
    return Shown(_trim(f"{x:.{max(1, SIGNIFICANT_DIGITS - magnitude)}f}"))


def _trim(decimal: str) -> str:
    """'3298.00' -> '3298.0', '0.46000' -> '0.46': trailing zeros off, the point kept."""
    text = decimal.rstrip("0")
    return text + "0" if text.endswith(".") else text


def rounded(value: Any, like: Any = None) -> Any:
    """`value` with floats as `shown_float`s, and "..." wherever `like` (the old output) had it
    or the key is VOLATILE."""
    if like == ANY:
        return ANY
    if isinstance(value, dict):
        old = like if isinstance(like, dict) else {}
        return {
            k: ANY if k in VOLATILE and isinstance(v, str) else rounded(v, old.get(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        old_items = (
            like if isinstance(like, list) and len(like) == len(value) else [None] * len(value)
        )
        return [rounded(v, o) for v, o in zip(value, old_items, strict=True)]
    if isinstance(value, Decimal):
        return shown_float(float(value))
    return value


def _compact(value: Any) -> str:
    if isinstance(value, Shown):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_compact(k)}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def format_json(value: Any, indent: int = 0, width: int = 96) -> str:
    """Compact where it fits on a line, else one member per line (scalars filled like a
    paragraph): short and diff-friendly."""
    flat = _compact(value)
    if len(flat) + indent <= width or not isinstance(value, dict | list) or not value:
        return flat
    pad = " " * (indent + 2)
    end = "\n" + " " * indent
    if isinstance(value, list) and not any(isinstance(v, dict | list) for v in value):
        return "[\n" + _flow([_compact(v) for v in value], pad, width) + end + "]"
    if isinstance(value, dict):
        items = [
            f"{pad}{_compact(k)}: {format_json(v, indent + 2, width)}" for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + end + "}"
    items = [pad + format_json(v, indent + 2, width) for v in value]
    return "[\n" + ",\n".join(items) + end + "]"


def _flow(items: list[str], pad: str, width: int) -> str:
    """Scalars filled into lines of at most `width` characters, like a paragraph."""
    lines, line = [], pad
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if line != pad and len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = pad
        line += piece if line == pad else " " + piece
    lines.append(line)
    return "\n".join(lines)
