"""Reading labelled data for training, calibration and evaluation: CSV, NPZ or idx (MNIST-style)."""

from __future__ import annotations

import csv
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


@dataclass
class Dataset:
    x: NDArray[np.float64]  # (N, *shape)
    y: NDArray[np.float64]  # (N,) or (N, D); integer-valued for classification
    feature_names: list[str] | None = None
    target_names: list[str] | None = None
    class_labels: list[str] | None = None


def read_csv(path: Path, target: str | list[str]) -> Dataset:
    targets = [target] if isinstance(target, str) else list(target)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty CSV")
    header, body = rows[0], [r for r in rows[1:] if r]
    missing = [t for t in targets if t not in header]
    if missing:
        raise ValueError(f"{path}: target column(s) {missing} not in header {header}")
    t_idx = [header.index(t) for t in targets]
    f_idx = [i for i in range(len(header)) if i not in t_idx]
    x = np.array([[float(r[i]) for i in f_idx] for r in body], dtype=np.float64)
    raw_y = [[r[i] for i in t_idx] for r in body]
    class_labels = None
    try:
        y = np.array(raw_y, dtype=np.float64)
    except ValueError:  # string labels: a classification target
        if len(targets) != 1:
            raise
        class_labels = sorted({r[0] for r in raw_y})
        y = np.array([[class_labels.index(r[0])] for r in raw_y], dtype=np.float64)
    if y.shape[1] == 1:
        y = y[:, 0]
    return Dataset(x, y, [header[i] for i in f_idx], targets, class_labels)


def read_npz(path: Path) -> Dataset:
    with np.load(path, allow_pickle=False) as z:
        if "x" not in z or "y" not in z:
            raise ValueError(f"{path}: an NPZ needs arrays 'x' and 'y', found {list(z.keys())}")
        names = [str(n) for n in z["feature_names"]] if "feature_names" in z else None
        classes = [str(c) for c in z["class_labels"]] if "class_labels" in z else None
        return Dataset(
            np.asarray(z["x"], np.float64), np.asarray(z["y"], np.float64), names, None, classes
        )


def read_idx(path: Path) -> NDArray[np.uint8]:
    """An idx file (optionally gzipped), as used by MNIST and Fashion-MNIST."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_idx_pair(images: Path) -> Dataset:
    """Images idx file plus its labels file found by name (…images-idx3… → …labels-idx1…)."""
    labels = Path(str(images).replace("images-idx3", "labels-idx1"))
    x = read_idx(images).astype(np.float64)
    if x.ndim == 3:
        x = x[:, None, :, :]  # (N, 1, H, W)
    y = read_idx(labels).astype(np.float64)
    return Dataset(x, y)


def read_dataset(path: str | Path, target: str | list[str] | None = None) -> Dataset:
    p = Path(path)
    name = p.name
    if name.endswith(".npz"):
        return read_npz(p)
    if name.endswith(".csv"):
        if target is None:
            raise ValueError("a CSV needs --target naming the target column")
        return read_csv(p, target)
    if "idx" in name:
        return read_idx_pair(p)
    raise ValueError(f"{p}: unknown format; expected .csv, .npz or an idx file")
