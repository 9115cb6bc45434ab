"""Every relative link in README.md and docs/*.md points at a file that exists, and at a heading
that exists when it names one (GitHub's anchor rules: lower case, punctuation dropped, spaces
to hyphens)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.docs.markdown import blocks

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.*)$")


def anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(page: Path) -> str:
    """The page without its fenced blocks, where '#' and '](' mean something else."""
    text = page.read_text()
    for block in blocks(page):
        text = text.replace(block.text, "")
    return text


def _anchors(page: Path) -> set[str]:
    return {anchor(m[1]) for line in _prose(page).splitlines() if (m := HEADING.match(line))}


def test_anchor_rules() -> None:
    assert anchor("Fashion-MNIST triage model (`models/fashion-mnist`)") == (
        "fashion-mnist-triage-model-modelsfashion-mnist"
    )
    assert anchor("What a seed reproduces") == "what-a-seed-reproduces"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in LINK.findall(_prose(page)):
        if re.match(r"[a-z]+:", link):
            continue  # http(s), mailto: not checked offline
        path, _, fragment = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in _anchors(target):
            broken.append(f"{link}: no heading #{fragment} in {target.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)
