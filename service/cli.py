"""The `mcdrop` command line. Each subcommand lives in service/commands/ and registers itself."""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata
from typing import Any

from service.errors import MCDropError

# One module per subcommand; each defines register(subparsers) and sets args.func.
COMMANDS = [
    "service.commands.train",
    "service.commands.tune",
    "service.commands.serve",
    "service.commands.export_onnx",
    "service.commands.import_onnx",
    "service.commands.referrals",
    "service.commands.bench",
    "service.commands.calibrate",
    "service.commands.evaluate",
]


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default after its help, unless there is none or the help says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        no_default = action.default is None or action.default is False  # 0 is a default
        if no_default or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """Every subcommand's parser formats its help the same way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def package_version() -> str:
    try:
        return metadata.version("mcdrop")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="mcdrop", description="MC dropout uncertainty serving: train, serve, calibrate."
    )
    parser.add_argument("--version", action="version", version=f"mcdrop {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (ValueError, FileNotFoundError, MCDropError) as e:
        print(f"mcdrop {args.command}: error: {e}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
