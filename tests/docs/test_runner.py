"""The documentation runner itself: stale outputs fail, the stated precision holds, update mode
rewrites."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs import console, pycon
from tests.docs.compare import (
    format_json,
    json_matches,
    load_json,
    number_matches,
    shown_float,
    unit,
)
from tests.docs.markdown import blocks, replace_lines

PYCON = """# A page

Some prose.

```pycon
>>> x = 0.1 + 0.2
>>> round(x, 3)
{shown}
>>> print("a\\n\\nb")
a
<BLANKLINE>
b
```

```bash
echo not run
```

```pycon
>>> round(x * 2, 2)
0.6
```
"""


def _page(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text)
    return path


def test_blocks_are_found_by_language_with_their_lines(tmp_path: Path) -> None:
    path = _page(tmp_path, PYCON.replace("{shown}", "0.3"))
    found = blocks(path, "pycon")
    assert [b.first_line for b in found] == [5, 19]
    assert found[1].text == ">>> round(x * 2, 2)\n0.6\n"
    assert [b.lang for b in blocks(path)] == ["pycon", "bash", "pycon"]


def test_a_matching_page_passes_and_blocks_share_one_namespace(tmp_path: Path) -> None:
    assert pycon.run_file(_page(tmp_path, PYCON.replace("{shown}", "0.3"))) == []


@pytest.mark.parametrize(
    ("shown", "ok"), [("0.3", True), ("0.30", True), ("0.4", False), ("3", False)]
)
def test_a_stale_output_fails(tmp_path: Path, shown: str, ok: bool) -> None:
    mismatches = pycon.run_file(_page(tmp_path, PYCON.replace("{shown}", shown)))
    assert (mismatches == []) is ok
    if not ok:
        assert [m.where for m in mismatches] == ["page.md:7"]
        assert "documented:" in mismatches[0].describe()


@pytest.mark.parametrize(
    ("shown", "printed", "ok"),
    [
        ("194.899", "194.89912", True),
        ("194.899", "194.8986", True),  # rounds to the shown digits
        ("194.899", "194.900", False),
        ("0.0071163", "0.00711635005", True),  # on a rounding boundary, within float noise
        ("0.0071163", "0.0071164", False),
        ("0.5", "0.46", True),
        ("0.5", "0.44", False),
        ("1.5e-05", "1.54e-05", True),
        ("1.5e-05", "1.56e-05", False),
        ("7", "7", True),
        ("7", "8", False),  # integers are exact
    ],
)
def test_numbers_match_to_the_last_shown_digit(shown: str, printed: str, ok: bool) -> None:
    assert number_matches(shown, printed) is ok


def test_unit_of_the_last_digit() -> None:
    assert unit("194.899") == pytest.approx(0.001)
    assert unit("3") == 1.0
    assert unit("1.5e-05") == pytest.approx(1e-06)


def test_update_rewrites_only_what_differs(tmp_path: Path) -> None:
    path = _page(tmp_path, PYCON.replace("{shown}", "0.4"))
    before = path.read_text()
    replace_lines(path, [m.edit() for m in pycon.run_file(path)])
    assert path.read_text() == before.replace(">>> round(x, 3)\n0.4\n", ">>> round(x, 3)\n0.3\n")
    assert pycon.run_file(path) == []


def test_an_unexpected_exception_is_reported_and_written_as_a_traceback(tmp_path: Path) -> None:
    path = _page(tmp_path, "```pycon\n>>> int('x')\n3\n```\n")
    [mismatch] = pycon.run_file(path)
    assert "ValueError: invalid literal" in mismatch.got
    replace_lines(path, [mismatch.edit()])
    assert pycon.run_file(path) == []


CONSOLE = """```console
$ echo '{"id": "abc", "mean": [197.52930356],
  "n": 100}'
{shown}
$ printf 'one\\ntwo\\n'
one
two
```
"""


def test_console_commands_run_on_until_their_quotes_close(tmp_path: Path) -> None:
    path = _page(tmp_path, CONSOLE.replace("{shown}", '{"id": "...", "mean": [197.529], "n": 100}'))
    [block] = blocks(path, "console")
    first, second = console.commands(block)
    assert first.shell.count("\n") == 2 and first.documented().startswith('{"id"')
    assert second.documented() == "one\ntwo\n"
    assert console.run_file(path, None) == []


@pytest.mark.parametrize(
    "shown",
    [
        '{"id": "...", "mean": [197.7], "n": 100}',  # a number moved
        '{"id": "abd", "mean": [197.529], "n": 100}',  # a string changed
        '{"id": "...", "mean": [197.529], "n": 101}',  # an integer changed
        '{"id": "...", "mean": [197.529]}',  # a field appeared
        '{"id": "...", "mean": [197.529, 1.0], "n": 100}',  # a list changed length
    ],
)
def test_a_stale_json_output_fails(tmp_path: Path, shown: str) -> None:
    path = _page(tmp_path, CONSOLE.replace("{shown}", shown))
    assert [m.where for m in console.run_file(path, None)] == ["page.md:2"]


def test_console_update_keeps_wildcards_and_rounds_floats(tmp_path: Path) -> None:
    path = _page(tmp_path, CONSOLE.replace("{shown}", '{"id": "...", "mean": [1.0], "n": 100}'))
    replace_lines(path, [m.edit() for m in console.run_file(path, None)])
    assert '{"id": "...", "mean": [197.53], "n": 100}\n' in path.read_text()
    assert console.run_file(path, None) == []


def test_json_comparison_and_layout() -> None:
    assert json_matches(load_json('{"a": null, "b": false}'), load_json('{"a": null, "b": false}'))
    assert not json_matches(load_json('{"b": false}'), load_json('{"b": 0}'))
    assert not json_matches(load_json('{"a": null}'), load_json('{"a": 0}'))
    long = {"key": list(range(40)), "short": [1, 2]}
    assert format_json(long, width=40).splitlines()[0] == "{"
    assert '  "short": [1, 2]' in format_json(long, width=40)


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (3297.9704, "3298.0"),
        (12345.67, "12345.7"),
        (57.427959, "57.428"),
        (0.0531167, "0.053117"),
        (0.45999999999999996, "0.46"),
        (1.6489690e-05, "1.649e-05"),
        (0.0, "0.0"),
        (-0.003, "-0.003"),
    ],
)
def test_update_writes_floats_to_five_significant_digits(x: float, text: str) -> None:
    assert shown_float(x) == text
    assert number_matches(text, repr(x))
