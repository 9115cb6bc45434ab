"""Fail when a module passes 300 lines or a function 60 (standard library only; run by `make lint`).

python scripts/check_sizes.py [FOLDER ...]     (default: service)

A function's length runs from its `def` line to its last line, docstring and comments included;
nested functions count on their own and within their parent. Long procedures are split into steps
named for what they do, so a reader can follow one without scrolling.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def oversized(path: Path) -> Iterator[str]:
    """One message per module or function in `path` over its limit."""
    source = path.read_text(encoding="utf-8")
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        yield f"{path}: module has {lines} lines (limit {MAX_MODULE_LINES})"
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                yield (
                    f"{path}:{node.lineno}: function {node.name} has {length} lines "
                    f"(limit {MAX_FUNCTION_LINES})"
                )


def main(folders: list[str]) -> int:
    problems = [
        message
        for folder in folders
        for path in sorted(Path(folder).rglob("*.py"))
        for message in oversized(path)
    ]
    for message in problems:
        print(message)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["service"]))
