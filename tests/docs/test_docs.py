"""Every example with an output in README.md and docs/*.md, run and compared (see
tests/docs/compare.py).

`MCDROP_UPDATE_DOCS=1 pytest tests/docs` writes what the examples print now into the markdown
in place of the documented outputs that no longer match (numbers rounded as compare.py says),
for after a change that moves every seeded answer; review the diff before committing it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MODELS, REPO
from tests.docs import console, pycon
from tests.docs.markdown import blocks, replace_lines
from tests.servers import serving

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
UPDATE = os.environ.get("MCDROP_UPDATE_DOCS") == "1"


def _with(lang: str) -> list[Path]:
    return [p for p in DOCS if blocks(p, lang)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mcdrop serve` on the shipped models, as `make serve` runs it, with its referrals in tmp."""
    with serving(MODELS, tmp_path_factory.mktemp("docs-server")) as base:
        yield base


def _settle(path: Path, mismatches: list[pycon.Mismatch] | list[console.Mismatch]) -> None:
    if not mismatches:
        return
    if UPDATE:
        replace_lines(path, [m.edit() for m in mismatches])
        return
    report = "\n".join(m.describe() for m in mismatches)
    pytest.fail(
        f"{len(mismatches)} documented output(s) no longer match; if the change is intended, "
        f"rerun with MCDROP_UPDATE_DOCS=1 and review the diff:\n{report}",
        pytrace=False,
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", _with("pycon"), ids=lambda p: p.relative_to(REPO).as_posix())
def test_python_examples(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    _settle(path, pycon.run_file(path))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", _with("console"), ids=lambda p: p.relative_to(REPO).as_posix())
def test_shell_examples(path: Path, request: pytest.FixtureRequest) -> None:
    if "curl " in path.read_text() and shutil.which("curl") is None:
        pytest.skip("the examples call curl, which is not installed")
    base = request.getfixturevalue("server") if console.needs_server(path) else None
    _settle(path, console.run_file(path, base))
