"""The `mcdrop` command line. Each subcommand lives in service/commands/ and registers itself."""

from __future__ import annotations

import argparse
import importlib
import sys

from service.errors import MCDropError

# One module per subcommand; each defines register(subparsers) and sets args.func.
COMMANDS = [
    "service.commands.train",
    "service.commands.serve",
    "service.commands.export_onnx",
    "service.commands.import_onnx",
    "service.commands.referrals",
    "service.commands.bench",
    "service.commands.calibrate",
    "service.commands.evaluate",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcdrop", description="MC dropout uncertainty serving: train, serve, calibrate."
    )
    sub = parser.add_subparsers(dest="command", required=True)
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
