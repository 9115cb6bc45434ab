"""The serving install (no extras) must not need the training extras: a container installs only
it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Imports the serving path makes, with the [train] and [postgres] extras and the test-only
# scikit-learn made unimportable, as in an image that installed `pip install .` alone.
_SCRIPT = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"tqdm", "matplotlib", "sklearn", "psycopg"}:
            raise ImportError(f"{name} is not part of the serving install")
        return None

sys.meta_path.insert(0, Block())
from service.cli import build_parser
from service.api.app import create_app
from service import load_model

build_parser()
p = load_model("models/diabetes").predict([[0.0] * 10], samples=4, seed=0)
print(p.mean.shape)
"""


def test_serving_path_imports_without_the_training_extras() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 1)"
