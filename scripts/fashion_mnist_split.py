"""Split Fashion-MNIST into the NPZ files the shipped triage model is built from.

python scripts/fashion_mnist_split.py [--data DIR] build/data
python scripts/fashion_mnist_split.py --check [--data DIR]     # only find the files

- fashion-train.npz:   training images 0..54,999 (what `mcdrop train` sees, --val-fraction 0)
- fashion-heldout.npz: training images 55,000..59,999 (for `mcdrop calibrate` only)
- fashion-test.npz:    the 10,000 test images (for `mcdrop evaluate` only)

DIR holds the four idx files as Zalando publishes them (gzipped or not). Without --data the
script looks where Debian's `dataset-fashion-mnist` package puts them, then in a `shared/data`
folder beside the repository. The split is by position, not random, so it needs no seed and
anyone can rebuild it. Pixels stay uint8 (0..255); the manifest scales them by 1/255.

The checks use the standard library only, so `--check` runs before any install.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
SEARCHED = (DEBIAN_DIR, Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist")

WHERE_TO_GET_THEM = f"""Get the four files ({", ".join(f + ".gz" for f in FILES)}) from:
  - Debian or Ubuntu: sudo apt-get install dataset-fashion-mnist  (installs them in {DEBIAN_DIR})
  - Zalando: https://github.com/zalandoresearch/fashion-mnist (the data/fashion folder; MIT licence)
then pass the folder: --data DIR (or FASHION_SRC=DIR make models-fashion). See docs/data.md."""

# Fashion-MNIST's label names, in label order (as Zalando's repository lists them).
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

N_TRAIN = 55_000


class MissingData(Exception):
    """The Fashion-MNIST files are not where they were looked for."""


def _file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def find_files(data: str | None) -> dict[str, Path]:
    """The four idx files, from `data` or the first searched folder holding all of them."""
    folders = [Path(data)] if data is not None else list(SEARCHED)
    for folder in folders:
        found = {stem: _file(folder, stem) for stem in FILES}
        if all(found.values()):
            return {stem: path for stem, path in found.items() if path is not None}
    if data is not None:
        folder = Path(data)
        if not folder.is_dir():
            raise MissingData(f"--data {folder}: no such folder.\n{WHERE_TO_GET_THEM}")
        missing = [stem + ".gz" for stem in FILES if _file(folder, stem) is None]
        raise MissingData(f"--data {folder} lacks {', '.join(missing)}.\n{WHERE_TO_GET_THEM}")
    looked = ", ".join(str(f) for f in folders)
    raise MissingData(f"Fashion-MNIST not found (looked in {looked}).\n{WHERE_TO_GET_THEM}")


def split(files: dict[str, Path], out: Path) -> None:
    import numpy as np

    from service.artifacts.data import read_idx_pair

    out.mkdir(parents=True, exist_ok=True)
    train = read_idx_pair(files["train-images-idx3-ubyte"])
    test = read_idx_pair(files["t10k-images-idx3-ubyte"])
    parts = {
        "fashion-train.npz": (train.x[:N_TRAIN], train.y[:N_TRAIN]),
        "fashion-heldout.npz": (train.x[N_TRAIN:], train.y[N_TRAIN:]),
        "fashion-test.npz": (test.x, test.y),
    }
    for name, (x, y) in parts.items():
        np.savez_compressed(
            out / name, x=x.astype(np.uint8), y=y.astype(np.int64), class_labels=np.array(CLASSES)
        )
        print(f"{out / name}: {len(x)} images")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", help="folder for the NPZ files (e.g. build/data)")
    parser.add_argument("--data", help="folder holding the four Fashion-MNIST idx files")
    parser.add_argument("--check", action="store_true", help="only check that the files are there")
    args = parser.parse_args(argv)
    if not args.check and args.out is None:
        parser.error("give the output folder (e.g. build/data), or --check")
    try:
        files = find_files(args.data)
    except MissingData as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"Fashion-MNIST found in {files[FILES[0]].parent}")
        return 0
    split(files, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
