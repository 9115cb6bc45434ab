"""Where model files may come from: only inside the model directory, links included.

A model name is already restricted to [A-Za-z0-9._-] without '..' (names.py), so a name cannot
walk out of the directory. A symbolic link can: `models/evil -> /etc` has a fine name. So every
folder and every file we read is resolved (links followed) and must still lie inside the
resolved model directory, or inside the resolved model folder for its files.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.errors import ArtifactError


def inside(root: Path, path: Path) -> bool:
    """True when `path`, links resolved, is `root` or below it (root resolved too)."""
    return path.resolve().is_relative_to(root.resolve())


def check_folder(model_dir: Path, folder: Path) -> None:
    """ArtifactError unless the folder and every file in it resolve inside where they belong."""
    if not inside(model_dir, folder):
        raise ArtifactError(
            f"{folder.name}: refused, the folder is a link leading outside the model directory"
        )
    for item in folder.iterdir():
        if not inside(folder, item):
            raise ArtifactError(
                f"{folder.name}/{item.name}: refused, a link leading outside the model folder"
            )


def fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What a reload compares: each file's name, size and modification time (links followed).

    Cheap (no hashing), and any rewrite of a manifest, weights or ONNX file changes it; the
    SHA-256 check at load still guards the content itself.
    """
    out = []
    for item in sorted(folder.iterdir()):
        try:
            st = os.stat(item)
        except OSError:
            continue
        out.append((item.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


__all__ = ["check_folder", "fingerprint", "inside"]
