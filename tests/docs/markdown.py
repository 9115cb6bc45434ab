"""Fenced code blocks of a markdown file, with where they sit, so examples can be run and
rewritten."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    lang: str  # the info string's first word: "pycon", "console", "bash", ...
    first_line: int  # 0-based index, in the file, of the block's first content line
    text: str  # the content, every line ending in "\n"

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines(keepends=True)

    def where(self, offset: int = 0) -> str:
        """`path:line` (1-based) of the block's line `offset`, for failure messages."""
        return f"{self.path.name}:{self.first_line + offset + 1}"


def blocks(path: Path, lang: str | None = None) -> list[Block]:
    """Every fenced block of the file (only those of `lang` when given), in order."""
    found: list[Block] = []
    lines = path.read_text().splitlines(keepends=True)
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i].rstrip("\n"))
        if not m:
            i += 1
            continue
        fence, info = m["fence"], m["info"].strip()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        kind = info.split()[0] if info else ""
        if lang is None or kind == lang:
            found.append(Block(path, kind, i + 1, "".join(lines[i + 1 : j])))
        i = j + 1
    return found


def replace_lines(path: Path, edits: list[tuple[int, int, list[str]]]) -> None:
    """Replace file lines [start, end) by new ones for each (start, end, new); edits must not
    overlap."""
    lines = path.read_text().splitlines(keepends=True)
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        lines[start:end] = new
    path.write_text("".join(lines))
