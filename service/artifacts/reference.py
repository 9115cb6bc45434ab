"""Reference scores: the held-out uncertainty scores a model was calibrated on.

`mcdrop calibrate` writes them beside the weights (reference.safetensors), and the manifest
records the file's SHA-256, exactly as it does for the weights. The calibration watch ranks live
uncertainty against them: the threshold's guarantee holds only while live scores look like these.

The file holds one float64 tensor, `scores` (sorted), and string metadata: the metric, the
threshold, the MC sample count T the scores were drawn with, the calibrated referral rate and the
calibration date (so a recalibration on the same data still changes the hash).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from service.artifacts.manifest import Manifest, ReferenceRef, sha256_file
from service.errors import ArtifactError

REFERENCE_NAME = "reference.safetensors"


@dataclass(frozen=True)
class ReferenceScores:
    """The held-out uncertainty of one calibration, as the watch needs it."""

    scores: NDArray[np.float64]  # sorted ascending, finite
    metric: str
    threshold: float
    samples: int  # T the scores were computed with; other T give other scores
    referral_rate: float  # calibrated: the fraction of held-out rows over the threshold
    calibrated_at: str
    sha256: str

    @property
    def n(self) -> int:
        return len(self.scores)


def save_reference(
    folder: Path,
    scores: NDArray[np.floating],
    metric: str,
    threshold: float,
    samples: int,
    referral_rate: float,
    calibrated_at: str,
) -> ReferenceRef:
    """Write reference.safetensors; returns what the manifest records about it."""
    u = np.asarray(scores, np.float64)
    u = np.sort(u[np.isfinite(u)])
    if len(u) == 0:
        raise ValueError("no finite held-out uncertainty scores to keep as the reference")
    meta = {
        "metric": metric,
        "threshold": repr(float(threshold)),
        "samples": str(int(samples)),
        "referral_rate": repr(float(referral_rate)),
        "calibrated_at": calibrated_at,
    }
    path = Path(folder) / REFERENCE_NAME
    tmp = path.with_suffix(".safetensors.tmp")
    save_file({"scores": u}, tmp, metadata=meta)
    tmp.replace(path)
    return ReferenceRef(file=REFERENCE_NAME, sha256=sha256_file(path), n=len(u))


def load_reference(folder: Path, manifest: Manifest) -> ReferenceScores | None:
    """Read and verify the reference scores; None when the manifest names none.

    Raises ArtifactError on a checksum mismatch or an unreadable or inconsistent file.
    """
    ref = manifest.reference
    if ref is None:
        return None
    path = Path(folder) / ref.file
    if path.suffix != ".safetensors" or path.resolve().parent != Path(folder).resolve():
        raise ArtifactError(f"{path}: reference must be a .safetensors file inside the folder")
    if not path.is_file():
        raise ArtifactError(f"{path}: reference scores file not found")
    digest = sha256_file(path)
    if digest != ref.sha256:
        raise ArtifactError(
            f"{path}: SHA-256 mismatch (manifest {ref.sha256[:12]}…, file {digest[:12]}…): "
            "the reference scores were changed or corrupted; rerun `mcdrop calibrate`"
        )
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            scores = np.asarray(f.get_tensor("scores"), np.float64)
        out = ReferenceScores(
            scores=scores,
            metric=meta["metric"],
            threshold=float(meta["threshold"]),
            samples=int(meta["samples"]),
            referral_rate=float(meta["referral_rate"]),
            calibrated_at=meta.get("calibrated_at", ""),
            sha256=digest,
        )
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise ArtifactError(f"{path}: not a readable reference file ({e})") from e
    if scores.ndim != 1 or len(scores) == 0 or not np.all(np.isfinite(scores)):
        raise ArtifactError(f"{path}: 'scores' must be a non-empty vector of finite numbers")
    if np.any(np.diff(scores) < 0) or not math.isfinite(out.threshold):
        raise ArtifactError(f"{path}: scores must be sorted and the threshold finite")
    return out
