"""Outputs are never NaN or Infinity: a row whose computation overflowed abstains with a reason.

Finite inputs can still overflow float32 inside the network when they sit far outside the
training data. Failing the whole request for that would punish the other rows, and JSON has no
NaN or Infinity, so the row is answered instead: `abstain: true`, a `reason` saying why, and
its numbers set to 0. The zeros are placeholders that keep the response well-typed; the reason
tells the caller not to read them. Rows that computed fine are untouched.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
from numpy.typing import NDArray

from service.serving.model import Prediction

OVERFLOW_REASON = (
    "overflow: the model's outputs for this row are not finite (its inputs are far outside "
    "the range the model was trained on); the row's numbers are placeholders"
)


_ALL = np.logical_and.reduce
# Field names once: dataclasses.fields() would otherwise be paid by every request.
_FIELDS = tuple(f.name for f in fields(Prediction))


def _float_arrays(pred: Prediction) -> list[tuple[str, NDArray[np.floating]]]:
    out = []
    for name in _FIELDS:
        value = getattr(pred, name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            out.append((name, value))
    return out


def non_finite_rows(pred: Prediction) -> NDArray[np.bool_]:
    """(N,) True where any float output of the row (raw samples included) is not finite."""
    bad = np.zeros(pred.abstain.shape[0], dtype=bool)
    arrays = _float_arrays(pred)
    # Every request passes through here and nearly all are finite: one check per array first,
    # as the per-row reductions below pay several numpy calls per array.
    # logical_and.reduce is what .all() runs, without its Python wrapper.
    if all(_ALL(np.isfinite(value), axis=None) for _, value in arrays):
        return bad
    for name, value in arrays:
        finite = np.isfinite(value)
        if name == "raw_samples":  # (T, N, D): rows on axis 1
            bad |= ~finite.all(axis=(0, 2))
        else:
            bad |= ~finite.reshape(finite.shape[0], -1).all(axis=1)
    return bad


def abstain_non_finite(pred: Prediction) -> Prediction:
    """Zero the overflowed rows' numbers, make them abstain and give each its reason (in place)."""
    bad = non_finite_rows(pred)
    if not bad.any():
        return pred
    for name, value in _float_arrays(pred):
        if name == "raw_samples":
            value[:, bad] = 0.0
        else:
            value[bad] = 0.0
    pred.abstain = pred.abstain | bad
    reasons = pred.reason or [None] * len(bad)
    pred.reason = [OVERFLOW_REASON if b else r for b, r in zip(bad.tolist(), reasons, strict=True)]
    return pred


__all__ = ["OVERFLOW_REASON", "abstain_non_finite", "non_finite_rows"]
