"""Split Fashion-MNIST into the NPZ files the shipped triage model is built from.

python scripts/fashion_mnist_split.py ../shared/data/fashion-mnist build/data

- fashion-train.npz:   training images 0..54,999 (what `mcdrop train` sees, --val-fraction 0)
- fashion-heldout.npz: training images 55,000..59,999 (for `mcdrop calibrate` only)
- fashion-test.npz:    the 10,000 test images (for `mcdrop evaluate` only)

The split is by position, not random, so it needs no seed and anyone can rebuild it. Pixels stay
uint8 (0..255); the model's manifest scales them by input_scale = 1/255.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from service.data import read_idx_pair

# Fashion-MNIST's label names, in label order (Zalando's README).
CLASSES = np.array(
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
)  # fmt: skip

N_TRAIN = 55_000


def main(src: str, out: str) -> None:
    root, dest = Path(src), Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    train = read_idx_pair(root / "train-images-idx3-ubyte.gz")
    test = read_idx_pair(root / "t10k-images-idx3-ubyte.gz")
    parts = {
        "fashion-train.npz": (train.x[:N_TRAIN], train.y[:N_TRAIN]),
        "fashion-heldout.npz": (train.x[N_TRAIN:], train.y[N_TRAIN:]),
        "fashion-test.npz": (test.x, test.y),
    }
    for name, (x, y) in parts.items():
        np.savez_compressed(
            dest / name, x=x.astype(np.uint8), y=y.astype(np.int64), class_labels=CLASSES
        )
        print(f"{dest / name}: {len(x)} images")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
