"""Resolved referrals as labelled data: held-out rows for calibration, and a report of how the
model did on the items people answered."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from service.referrals.database import redacted
from service.referrals.models import Referral
from service.referrals.store import ReferralStore


def resolved_referrals(
    database_url: str, model_name: str, version: str | None = None
) -> list[Referral]:
    """Every resolved referral of a model (one version, or all), oldest first. Reads only: the
    schema is neither created nor migrated, and a missing SQLite file is an error."""
    url = make_url(database_url)
    db = url.database if url.get_backend_name() == "sqlite" else None
    if db and db != ":memory:" and not Path(db).expanduser().is_file():
        raise ValueError(f"no referral store at {db} (see MCDROP_DATABASE_URL)")
    try:
        store = ReferralStore.open(database_url, migrate=False)
        try:
            return store.resolved(model_name, version)
        finally:
            store.close()
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or type(e).__name__).splitlines()[0]
        raise ValueError(f"cannot read referrals from {redacted(database_url)}: {reason}") from e


def resolved_dataset(
    database_url: str, model_name: str, version: str | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The inputs people resolved and their answers, as held-out data `(x, y)`.

    - `database_url`: the referral store (MCDROP_DATABASE_URL). `model_name`: the served name,
      i.e. the model's folder name (pass `Path(folder).name`). `version`: only referrals made
      by that model version; None takes every version, since a person's label belongs to the
      input, not to the model that referred it.
    - `x`: float64, shape (n, *input_shape): the rows exactly as clients sent them (raw units,
      before the model's own normalisation), like the x of a training NPZ. `model.predict(x)`
      accepts it as is.
    - `y`: float64 like `service.artifacts.data.Dataset.y`: classifiers give class indices (integer
      valued), shape (n,); regression gives the reviewers' values, shape (n,) for one output,
      (n, D) for several.
    - Rows: resolved referrals whose input was stored, oldest first. Referrals recorded with
      MCDROP_REFERRAL_STORE_INPUTS=false (hash only) are skipped, and so are rows whose
      recorded input_shape differs from the newest one's (a model re-trained on another shape
      under the same name).
    - Raises ValueError when the store cannot be read or no usable row exists.
    """
    rows = [r for r in resolved_referrals(database_url, model_name, version) if r.input is not None]
    if not rows:
        raise ValueError(
            f"no resolved referral with a stored input for model '{model_name}'"
            + (f" version {version}" if version else "")
        )
    shape = list(rows[-1].input_shape)
    rows = [r for r in rows if list(r.input_shape) == shape]
    x = np.stack([np.asarray(r.input, np.float64).reshape(shape) for r in rows])
    if rows[-1].task == "classification":
        y = np.asarray([r.label for r in rows], np.float64)
    else:
        y = np.asarray([r.value for r in rows], np.float64)
        if y.shape[1] == 1:
            y = y[:, 0]
    return x, y


def accuracy_report(referrals: Sequence[Referral]) -> dict[str, Any]:
    """How the model's answers (as recorded when it referred each item) compare with the
    people's: per model version and overall. Classifiers: accuracy of the predicted label.
    Regression: MAE, RMSE, and the share of values within 2 predictive std of the mean."""
    by_version: dict[str, list[Referral]] = {}
    for r in referrals:
        by_version.setdefault(r.model_version, []).append(r)
    out: dict[str, Any] = {
        "resolved": len(referrals),
        "overall": _figures(referrals) if referrals else None,
        "by_version": {v: _figures(rs) for v, rs in sorted(by_version.items())},
    }
    return out


def _figures(rs: Sequence[Referral]) -> dict[str, Any]:
    task = rs[-1].task
    if task == "classification":
        p = sum(r.prediction["label"] == r.label for r in rs) / len(rs)
        return {
            "task": task,
            "n": len(rs),
            "accuracy": p,
            "accuracy_se": math.sqrt(p * (1 - p) / len(rs)),  # binomial standard error
            "labels": dict(sorted(Counter(str(r.label) for r in rs).items())),
        }
    err, within = [], []
    for r in rs:
        mean, std, value = r.prediction["mean"], r.prediction["std"], r.value or []
        for m, s, v in zip(mean, std, value, strict=False):
            err.append(v - m)
            within.append(abs(v - m) <= 2 * s)
    n = max(len(err), 1)
    return {
        "task": task,
        "n": len(rs),
        "mae": sum(abs(e) for e in err) / n,
        "rmse": math.sqrt(sum(e * e for e in err) / n),
        "within_2_std": sum(within) / n,
    }
