"""Outputs are never NaN or Infinity: a row whose computation overflowed abstains with a reason.

Finite inputs can still overflow float32 inside the network when they sit far outside the
training data. Failing the whole request for that would punish the other rows, and JSON has no
NaN or Infinity, so the row is answered instead: `abstain: true`, a `reason` saying why, and
its numbers set to 0. The zeros are placeholders that keep the response well-typed; the reason
tells the caller not to read them. Rows that computed fine are untouched.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from service.serving.results import Prediction

OVERFLOW_REASON = (
    "overflow: the model's outputs for this row are not finite (its inputs are far outside "
    "the range the model was trained on); the row's numbers are placeholders"
)


_ALL = np.logical_and.reduce


def _float_arrays(pred: Prediction) -> list[NDArray[np.floating]]:
    """The per-row float outputs, (N, ...) each."""
    return [v for v in pred.outputs().values() if v.dtype.kind == "f"]  # type: ignore[misc]


def non_finite_rows(pred: Prediction) -> NDArray[np.bool_]:
    """(N,) True where any float output of the row (raw samples included) is not finite."""
    bad = np.zeros(pred.rows, dtype=bool)
    arrays = _float_arrays(pred)
    samples = pred.raw_samples
    # Every request passes through here and nearly all are finite: one check per array first,
    # as the per-row reductions below pay several numpy calls per array.
    # logical_and.reduce is what .all() runs, without its Python wrapper.
    whole = [*arrays, samples] if samples is not None else arrays
    if all(_ALL(np.isfinite(value), axis=None) for value in whole):
        return bad
    for value in arrays:
        bad |= ~np.isfinite(value).reshape(value.shape[0], -1).all(axis=1)
    if samples is not None:  # (T, N, D): rows on axis 1
        bad |= ~np.isfinite(samples).all(axis=(0, 2))
    return bad


def abstain_non_finite(pred: Prediction) -> Prediction:
    """The result with its overflowed rows zeroed, abstaining, each with its reason.

    The arrays are the result's own (fresh from the summary), so they are zeroed in place."""
    bad = non_finite_rows(pred)
    if not bad.any():
        return pred
    for value in _float_arrays(pred):
        value[bad] = 0.0
    if pred.raw_samples is not None:
        pred.raw_samples[:, bad] = 0.0
    reasons = pred.reason or [None] * len(bad)
    reason = [OVERFLOW_REASON if b else r for b, r in zip(bad.tolist(), reasons, strict=True)]
    return replace(pred, abstain=pred.abstain | bad, reason=reason)


__all__ = ["OVERFLOW_REASON", "abstain_non_finite", "non_finite_rows"]
