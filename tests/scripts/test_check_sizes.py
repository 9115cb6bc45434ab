"""scripts/check_sizes.py: fails on a long function or module, passes at the limits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "check_sizes.py"


def _check(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(folder)], capture_output=True, text=True, check=False
    )


def _function(name: str, lines: int) -> str:
    """A function of exactly `lines` lines: its def line and `lines - 1` statements."""
    body = "".join(f"    x{i} = {i}\n" for i in range(lines - 1))
    return f"def {name}() -> None:\n{body}"


def test_a_function_over_60_lines_fails_and_is_named(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "long.py").write_text(_function("at_limit", 60) + _function("over", 61))
    result = _check(tmp_path)
    assert result.returncode == 1
    assert "function over has 61 lines" in result.stdout
    assert "at_limit" not in result.stdout


def test_a_module_over_300_lines_fails(tmp_path: Path) -> None:
    (tmp_path / "at_limit.py").write_text("x = 0\n" * 300)
    (tmp_path / "over.py").write_text("x = 0\n" * 301)
    result = _check(tmp_path)
    assert result.returncode == 1
    assert "over.py: module has 301 lines" in result.stdout
    assert "at_limit.py" not in result.stdout


def test_code_within_the_limits_passes(tmp_path: Path) -> None:
    (tmp_path / "short.py").write_text(_function("step", 60) + "x = 0\n" * 200)
    result = _check(tmp_path)
    assert (result.returncode, result.stdout) == (0, "")
