"""scripts/fashion_mnist_split.py: missing data gets a message saying where to get it, not a
traceback."""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.conftest import REPO
from tests.helpers import load_script

SCRIPT = REPO / "scripts" / "fashion_mnist_split.py"


def _script() -> ModuleType:
    return load_script(SCRIPT)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
        ">" + "I" * array.ndim, *array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(folder: Path, n_train: int = 12, n_test: int = 5) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return folder


def _says_where_to_get_it(message: str) -> None:
    assert "Traceback" not in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "/usr/share/datasets/fashion-mnist" in message
    assert "--data DIR" in message and "FASHION_SRC=DIR" in message


def test_a_missing_folder_says_where_to_get_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = _script().main(["--data", str(tmp_path / "nowhere"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"--data {tmp_path / 'nowhere'}: no such folder" in err
    _says_where_to_get_it(err)
    assert not (tmp_path / "out").exists()


def test_a_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _fake_fashion(tmp_path / "fashion")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    assert _script().main(["--check", "--data", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "lacks t10k-labels-idx1-ubyte.gz." in err
    _says_where_to_get_it(err)


def test_without_data_the_searched_folders_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    monkeypatch.setattr(script, "SEARCHED", (tmp_path / "a", tmp_path / "b"))
    assert script.main(["--check"]) == 2
    err = capsys.readouterr().err
    assert f"looked in {tmp_path / 'a'}, {tmp_path / 'b'}" in err
    _says_where_to_get_it(err)


def test_the_split_is_written_when_the_files_are_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _fake_fashion(tmp_path / "fashion")
    assert _script().main(["--data", str(folder), str(tmp_path / "out")]) == 0
    with np.load(tmp_path / "out" / "fashion-train.npz") as z:
        assert z["x"].shape == (12, 1, 28, 28) and z["x"].dtype == np.uint8
        assert str(z["class_labels"][0]) == "T-shirt/top"
    with np.load(tmp_path / "out" / "fashion-test.npz") as z:
        assert len(z["y"]) == 5
    assert "fashion-heldout.npz: 0 images" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_models_fashion_checks_the_data_before_installing_anything(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    plan = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-n",
            "models-fashion",
            f"FASHION_SRC={missing}",
            "VENV=" + str(tmp_path / "venv"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert plan[0].endswith(f"scripts/fashion_mnist_split.py --check --data {missing}")
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-s",
            "fashion-data",
            f"FASHION_SRC={missing}",
            f"PYTHON={sys.executable}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    _says_where_to_get_it(done.stderr)
