"""Write the rows `mcdrop train` held out for validation (never trained on) as their own NPZ.

python scripts/validation_rows.py build/data/digits.npz build/data/digits-heldout.npz 0.1 0

Uses the training code's own split (`service.training.train.validation_split`) with the same
val-fraction and seed as the training run, so the rows are exactly the ones it did not fit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from service.training.train import validation_split


def main(src: str, out: str, val_fraction: float, seed: int) -> None:
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    _, val = validation_split(len(arrays["x"]), val_fraction, seed)
    rows = {k: (v[val] if k in ("x", "y") else v) for k, v in arrays.items()}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **rows)
    print(f"{out}: {len(val)} validation rows of {len(arrays['x'])}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
