"""Out-of-distribution image sets for a 28x28 grey-level classifier (the shipped Fashion-MNIST).

python scripts/ood_sets.py build/data/fashion-test.npz build/data [N]

Writes N images (default 1000) of each, as uint8 pixels 0..255 with placeholder labels 0 (an
OOD set has no right answer; `mcdrop evaluate --ood` only reads the images):

- ood-digits.npz:  scikit-learn's handwritten digits (8x8, 0..16), upscaled to 20x20 and
                   centred on a 28x28 black canvas, as MNIST digits are;
- ood-rotated.npz: Fashion-MNIST test images turned by 90 degrees;
- ood-inverted.npz: Fashion-MNIST test images with their grey levels inverted (255 - x);
- ood-noise.npz:   Gaussian noise images with the test set's pixel mean and standard deviation.

Everything is made offline from data the project ships or reads already, with a fixed seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from service.maths.shift import noise_images, upscaled_digits

SEED = 0


def main(test_npz: str, out: str, n: int = 1000) -> None:
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    with np.load(test_npz, allow_pickle=False) as z:
        x = np.asarray(z["x"]).reshape(-1, 28, 28)
    pick = x[rng.choice(len(x), size=min(n, len(x)), replace=False)]
    mean, std = float(x.mean()), float(x.std())
    digits = load_digits().images  # (1797, 8, 8), 0..16
    sets = {
        "ood-digits.npz": upscaled_digits(digits[rng.choice(len(digits), n, replace=False)]),
        "ood-rotated.npz": np.rot90(pick, k=1, axes=(1, 2)).copy(),
        "ood-inverted.npz": (255 - pick).astype(np.uint8),
        "ood-noise.npz": noise_images(n, mean, std, rng),
    }
    for name, images in sets.items():
        np.savez_compressed(dest / name, x=images, y=np.zeros(len(images), np.int64))
        print(f"{dest / name}: {len(images)} images")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
