"""Dataset shift applied to images, at increasing intensity, and out-of-distribution images
(pure numpy/scipy).

`rotate`: every image turned by the angle in degrees (bilinear, same size, corners filled with
the background 0). `noise`: additive Gaussian noise with a standard deviation given as a fraction
of the pixel range, clipped back into it. Intensity 0 leaves the images unchanged.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

SHIFTS = ("rotate", "noise")
DEFAULT_INTENSITIES = {
    "rotate": (0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0),
    "noise": (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
}
UNITS = {"rotate": "degrees", "noise": "noise std / pixel range"}


def shifted(
    images: NDArray[np.floating],
    kind: str,
    intensity: float,
    pixel_range: float,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """images: (N, H, W) or (N, C, H, W) in [0, pixel_range]; returns a shifted copy."""
    x = np.asarray(images, np.float64)
    if x.ndim not in (3, 4):
        raise ValueError(f"--shift needs image inputs (N, H, W) or (N, C, H, W), got {x.shape}")
    if kind == "rotate":
        if intensity == 0:
            return x.copy()
        axes = (x.ndim - 2, x.ndim - 1)
        out = ndimage.rotate(x, intensity, axes=axes, reshape=False, order=1, cval=0.0)
        rotated: NDArray[np.float64] = np.clip(out, 0.0, pixel_range)
        return rotated
    if kind == "noise":
        noise = rng.normal(0.0, intensity * pixel_range, x.shape) if intensity else 0.0
        return np.clip(x + noise, 0.0, pixel_range)
    raise ValueError(f"--shift: expected one of {list(SHIFTS)}, got '{kind}'")


def upscaled_digits(digits: NDArray[np.floating], size: int = 28) -> NDArray[np.uint8]:
    """scikit-learn's 8x8 digits (0..16) as MNIST-like images: upscaled to 20x20 (bilinear) and
    centred on a black size x size canvas, grey levels 0..255."""
    x = np.asarray(digits, np.float64).reshape(-1, 8, 8) / 16.0
    big = ndimage.zoom(x, (1, 2.5, 2.5), order=1)
    canvas = np.zeros((len(x), size, size))
    off = (size - 20) // 2
    canvas[:, off : off + 20, off : off + 20] = np.clip(big, 0.0, 1.0)
    out: NDArray[np.uint8] = np.round(canvas * 255).astype(np.uint8)
    return out


def noise_images(
    n: int, mean: float, std: float, rng: np.random.Generator, size: int = 28
) -> NDArray[np.uint8]:
    """Gaussian noise images with a given grey-level mean and std, clipped to 0..255."""
    out: NDArray[np.uint8] = np.clip(rng.normal(mean, std, (n, size, size)), 0, 255).astype(
        np.uint8
    )
    return out
