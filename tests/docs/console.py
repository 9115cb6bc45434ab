"""Run a markdown file's ```console blocks: each `$ ` command in bash, its output compared.

A command starts at a line beginning with `$ ` and runs on while its shell syntax is incomplete
(a line ending in a backslash, or a quote still open); the lines after it, up to the next `$ `
line, are its documented output (stdout and stderr together, as a terminal shows them). The
commands run from the repository root with the test environment's `mcdrop` and `python` first
on PATH, and `localhost:8000` or `127.0.0.1:8000` (where `make serve` listens) pointing at a
server the tests started on the shipped models.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.docs.compare import format_json, json_matches, load_json, rounded, text_matches
from tests.docs.markdown import Block, blocks
from tests.docs.pycon import FLAGS

SERVE_ADDRESS = "localhost:8000"
SERVE_ADDRESSES = (SERVE_ADDRESS, "127.0.0.1:8000")


@dataclass(frozen=True)
class Command:
    block: Block
    offset: int  # line of the `$ ` line within the block
    shell: str  # the command, prompts removed, continuation lines joined as written
    output_start: int  # first and end (exclusive) lines of the documented output in the block
    output_end: int

    def documented(self) -> str:
        return "".join(self.block.lines[self.output_start : self.output_end])

    @property
    def where(self) -> str:
        return self.block.where(self.offset)


def _complete(shell: str) -> bool:
    if shell.rstrip("\n").endswith("\\"):
        return False
    try:
        shlex.split(shell)
    except ValueError:  # a quote still open
        return False
    return True


def commands(block: Block) -> list[Command]:
    lines = block.lines
    found: list[Command] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            i += 1
            continue
        start, shell = i, lines[i][2:]
        while not _complete(shell) and i + 1 < len(lines):
            i += 1
            shell += lines[i]
        out_start = i + 1
        i = out_start
        while i < len(lines) and not lines[i].startswith("$ "):
            i += 1
        found.append(Command(block, start, shell, out_start, i))
    return found


def needs_server(path: Path) -> bool:
    return any(a in b.text for b in blocks(path, "console") for a in SERVE_ADDRESSES)


def run(command: Command, server: str | None) -> str:
    shell = command.shell
    for address in SERVE_ADDRESSES:
        if address in shell:
            assert server is not None, f"{command.where} needs a server"
            shell = shell.replace(address, server.removeprefix("http://"))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        ["bash", "-c", shell],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    return done.stdout


def _as_json(text: str) -> Any:
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        return load_json(text)
    except json.JSONDecodeError:
        return None


@dataclass(frozen=True)
class Mismatch:
    command: Command
    got: str

    @property
    def where(self) -> str:
        return self.command.where

    def describe(self) -> str:
        return (
            f"{self.where}: $ {self.command.shell.strip()}\n"
            f"documented:\n{self.command.documented()}printed:\n{self.got}"
        )

    def edit(self) -> tuple[int, int, list[str]]:
        """The documented output's file lines, and what to put there (JSON re-rounded, "..."
        kept)."""
        shown, printed = _as_json(self.command.documented()), _as_json(self.got)
        text = self.got
        if printed is not None:
            text = format_json(rounded(printed, shown)) + "\n"
        first = self.command.block.first_line
        return (
            first + self.command.output_start,
            first + self.command.output_end,
            text.splitlines(True),
        )


def check(command: Command, got: str) -> Mismatch | None:
    want = command.documented()
    shown = _as_json(want)
    if shown is not None:
        printed = _as_json(got)
        ok = printed is not None and json_matches(shown, printed)
    else:
        ok = text_matches(want, got, FLAGS)
    return None if ok else Mismatch(command, got)


def run_file(path: Path, server: str | None) -> list[Mismatch]:
    mismatches: list[Mismatch] = []
    for block in blocks(path, "console"):
        for command in commands(block):
            found = check(command, run(command, server))
            if found is not None:
                mismatches.append(found)
    return mismatches
