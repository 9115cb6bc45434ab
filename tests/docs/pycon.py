"""Run a markdown file's ```pycon blocks as doctests, one shared namespace per file, in order."""

from __future__ import annotations

import doctest
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.docs.compare import NumberTolerantChecker
from tests.docs.markdown import Block, blocks

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@dataclass(frozen=True)
class Mismatch:
    block: Block
    example: doctest.Example
    got: str  # what the example printed, written as doctest expects it

    @property
    def where(self) -> str:
        return self.block.where(self.example.lineno)

    def describe(self) -> str:
        return (
            f"{self.where}: {self.example.source.strip()}\n"
            f"documented:\n{self.example.want}printed:\n{self.got}"
        )

    def edit(self) -> tuple[int, int, list[str]]:
        """The file lines holding the documented output, and the printed output to put there."""
        start = self.block.first_line + self.example.lineno + self.example.source.count("\n")
        end = start + self.example.want.count("\n")
        pad = " " * self.example.indent
        new = [
            pad + line if line.strip() else "<BLANKLINE>\n" for line in self.got.splitlines(True)
        ]
        return start, end, new


class _Recorder(doctest.DocTestRunner):
    def __init__(self, block: Block) -> None:
        super().__init__(checker=NumberTolerantChecker(), optionflags=FLAGS)
        self.block = block
        self.mismatches: list[Mismatch] = []

    def report_start(self, out: Any, test: doctest.DocTest, example: doctest.Example) -> None:
        pass

    def report_success(self, out: Any, test: Any, example: doctest.Example, got: str) -> None:
        pass

    def report_failure(self, out: Any, test: Any, example: doctest.Example, got: str) -> None:
        self.mismatches.append(Mismatch(self.block, example, got))

    def report_unexpected_exception(
        self,
        out: Any,
        test: Any,
        example: doctest.Example,
        exc_info: tuple[type[BaseException], BaseException, TracebackType],
    ) -> None:
        kind, exc, _ = exc_info
        got = "Traceback (most recent call last):\n    ...\n"
        got += "".join(traceback.format_exception_only(kind, exc))
        self.mismatches.append(Mismatch(self.block, example, got))


def run_file(path: Path) -> list[Mismatch]:
    """Every pycon example of the file, run in order in one namespace; the ones that differ."""
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    parser = doctest.DocTestParser()
    mismatches: list[Mismatch] = []
    for block in blocks(path, "pycon"):
        examples = parser.get_examples(block.text, name=block.where())
        test = doctest.DocTest(
            examples, namespace, block.where(), str(path), block.first_line, None
        )
        runner = _Recorder(block)
        runner.run(test, out=lambda _: None, clear_globs=False)
        namespace = test.globs  # DocTest copies the namespace it is given: carry it on
        mismatches += runner.mismatches
    return mismatches
