"""Write a scikit-learn toy dataset as an NPZ (x, y, feature_names) for `mcdrop train`.

python scripts/sklearn_data.py diabetes data/diabetes.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn import datasets


def main(name: str, out: str) -> None:
    loader = {"diabetes": datasets.load_diabetes, "digits": datasets.load_digits}[name]
    d = loader()
    names = getattr(d, "feature_names", None) or [f"x{i}" for i in range(d.data.shape[1])]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, x=d.data, y=d.target, feature_names=np.array([str(n) for n in names]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
