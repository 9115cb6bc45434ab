"""Turning a prediction's abstained rows into referral rows (column name → value)."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from typing import Any

import numpy as np

from service.serving.hooks import Rows
from service.serving.model import MCDropoutModel
from service.serving.results import Prediction


class _RandomIds:
    """uuid4-style ids (32 hex digits, version 4) from os.urandom drawn 256 ids at a time: a
    referral id stays unguessable, and the system call is paid once per 256 ids, not per id."""

    BATCH = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: list[str] = []

    def next(self) -> str:
        with self._lock:
            if not self._ids:
                pool = os.urandom(16 * self.BATCH)
                self._ids = [
                    uuid.UUID(bytes=pool[i : i + 16], version=4).hex
                    for i in range(0, len(pool), 16)
                ]
            return self._ids.pop()

    def forget(self) -> None:
        """Drop the drawn ids: a forked child must not hand out its parent's."""
        self._lock = threading.Lock()
        self._ids = []


_ids = _RandomIds()
os.register_at_fork(after_in_child=_ids.forget)


def new_referral_id() -> str:
    return _ids.next()


def input_sha256(row: Any) -> str:
    """SHA-256 of the row's values as little-endian float64, row-major: the same for a flat row
    and its nested form, and for 1 and 1.0, so equal inputs hash equal however they were sent."""
    return hashlib.sha256(np.asarray(row, dtype="<f8").tobytes()).hexdigest()


def breakdown(pred: Prediction, i: int, class_labels: list[str] | None) -> dict[str, Any]:
    """Row i of the prediction, as the client saw it (every per-row field)."""
    out: dict[str, Any] = {name: value[i].tolist() for name, value in pred.outputs().items()}
    if class_labels and "label" in out:
        out["class_label"] = class_labels[out["label"]]
    out["reason"] = pred.reason[i] if pred.reason else None
    return out


def referral_rows(
    name: str,
    model: MCDropoutModel,
    inputs: Rows,
    pred: Prediction,
    request_id: str,
    ids: list[str | None],
    store_inputs: bool,
) -> list[dict[str, Any]]:
    """One row per abstained input; `ids[i]` is row i's referral id (None: not referred)."""
    from service.referrals.models import PENDING, utcnow

    m = model.manifest
    now = utcnow()
    shape = list(m.input_shape)  # one object for every row: the store serialises it once
    rows = []
    for i, rid in enumerate(ids):
        if rid is None:
            continue
        row = inputs[i]
        if isinstance(row, np.ndarray):  # a decoded V2 tensor: stored as JSON lists
            row = row.tolist()
        rows.append(
            {
                "id": rid,
                "request_id": request_id,
                "row_index": i,
                "model": name,
                "model_version": m.version,
                "task": m.task,
                "created_at": now,
                "status": PENDING,
                "input": row if store_inputs else None,
                "input_sha256": input_sha256(row),
                "input_shape": shape,
                "feature_names": m.feature_names,
                "output_names": m.output_names,
                "class_labels": m.class_labels,
                "prediction": breakdown(pred, i, m.class_labels),
                "uncertainty": float(pred.uncertainty[i]),
                "threshold": float(pred.threshold),
                "metric": pred.metric,
                "seed": int(pred.seed),
                "samples": int(pred.samples),
            }
        )
    return rows
