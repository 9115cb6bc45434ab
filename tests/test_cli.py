"""The command line itself: help shows every option's default, --version, quiet progress off a
terminal."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from service.cli import build_parser, main


def _parsers(
    parser: argparse.ArgumentParser, path: str = "mcdrop"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


COMMANDS = list(_parsers(build_parser()))


def test_every_subcommand_is_reached() -> None:
    names = {path for path, _ in COMMANDS}
    assert {"mcdrop train", "mcdrop serve", "mcdrop calibrate", "mcdrop bench uci"} <= names
    assert {"mcdrop referrals export", "mcdrop evaluate", "mcdrop export-onnx"} <= names


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_option_has_help_showing_its_default(
    path: str, parser: argparse.ArgumentParser
) -> None:
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = action.option_strings[-1] if action.option_strings else action.dest
        assert action.help, f"{path} {name}: no help text"
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            continue
        # The help says the default in words ("default: ...") or the formatter appends it.
        assert "default" in action.help or f"(default: {action.default})" in " ".join(
            text.split()
        ), f"{path} {name}: default {action.default!r} not shown"


def test_train_help_lists_the_training_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for option, default in [
        ("--epochs EPOCHS", "100"),
        ("--batch-size BATCH_SIZE", "32"),
        ("--lr LR", "0.001"),
        ("--hidden HIDDEN", "50"),
        ("--layers LAYERS", "2"),
        ("--seed SEED", "0"),
        ("--val-fraction VAL_FRACTION", "0.1"),
        ("--noise {bernoulli,gaussian}", "bernoulli"),
    ]:
        after = text.split(f" {option} ", 1)[1]
        assert f"(default: {default})" in after.split(" --", 1)[0], option


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"mcdrop {metadata.version('mcdrop')}"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _train(tmp_path: Path, name: str, *extra: str) -> int:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    np.savez(tmp_path / "d.npz", x=x, y=x.sum(axis=1))
    argv = [
        "train",
        str(tmp_path / "d.npz"),
        "--task",
        "regression",
        "--out",
        str(tmp_path / name),
        "--epochs",
        "2",
        "--hidden",
        "4",
        "--layers",
        "1",
    ]
    return main([*argv, *extra])


def test_progress_bar_only_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    assert _train(tmp_path, "piped") == 0
    assert "epoch" not in piped.getvalue()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert _train(tmp_path, "terminal") == 0
    assert "train terminal" in terminal.getvalue() and "epoch" in terminal.getvalue()


def test_train_records_how_images_are_drawn(tmp_path: Path) -> None:
    from service.artifacts.manifest import read_manifest

    assert _train(tmp_path, "plain", "--quiet") == 0
    assert read_manifest(tmp_path / "plain").image_zero == "black"  # the data as it is
    assert _train(tmp_path, "paper", "--quiet", "--image-zero", "white") == 0
    assert read_manifest(tmp_path / "paper").image_zero == "white"
