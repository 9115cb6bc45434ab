"""Referral fixtures: stores on SQLite (always) and PostgreSQL (when MCDROP_TEST_DATABASE_URL
names a server, as .ci/run arranges), and hand-made referral rows."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from service.referrals.database import make_engine
from service.referrals.records import input_sha256, new_referral_id
from service.referrals.store import ReferralStore

PG_ENV = "MCDROP_TEST_DATABASE_URL"


def _reset_postgres(url: str) -> None:
    """Drop what an earlier test left, so each test starts from an empty, unmigrated database."""
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(text("DROP TABLE IF EXISTS referrals, alembic_version"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend; PostgreSQL is skipped without a server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'referrals.db'}"
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set (no PostgreSQL server for this run)")
    _reset_postgres(url)
    return url


@pytest.fixture(scope="module")
def model_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_regression_dir: Path, tiny_classifier_dir: Path
) -> Path:
    """The tiny regression and classification models, served by the prediction-path tests."""
    root = tmp_path_factory.mktemp("referral_models")
    for src in (tiny_regression_dir, tiny_classifier_dir):
        shutil.copytree(src, root / src.name)
    return root


@pytest.fixture
def store(database_url: str) -> Iterator[ReferralStore]:
    s = ReferralStore.open(database_url)
    yield s
    s.close()


def clf_row(**overrides: Any) -> dict[str, Any]:
    """A classifier referral: 3 classes, 4 features, predicted class 1."""
    x = overrides.pop("x", [0.5, -1.0, 2.0, 0.25])
    row = {
        "id": new_referral_id(),
        "request_id": "req-1",
        "row_index": 0,
        "model": "clf",
        "model_version": "1",
        "task": "classification",
        "created_at": datetime(2025, 1, 1, tzinfo=UTC),
        "status": "pending",
        "input": x,
        "input_sha256": input_sha256(x),
        "input_shape": [4],
        "feature_names": ["a", "b", "c", "d"],
        "output_names": ["y"],
        "class_labels": ["cat", "dog", "eel"],
        "prediction": {
            "probabilities": [0.3, 0.4, 0.3],
            "label": 1,
            "class_label": "dog",
            "predictive_entropy": 1.09,
            "mutual_information": 0.2,
            "variation_ratio": 0.5,
            "uncertainty": 1.09,
            "abstain": True,
        },
        "uncertainty": 1.09,
        "threshold": 0.5,
        "metric": "predictive_entropy",
        "seed": 2**63 - 1,
        "samples": 50,
    }
    row.update(overrides)
    return row


def reg_row(**overrides: Any) -> dict[str, Any]:
    """A regression referral: one output, mean 10 ± 2."""
    x = overrides.pop("x", [1.0, 2.0, 3.0])
    row = {
        "id": new_referral_id(),
        "request_id": "req-2",
        "row_index": 0,
        "model": "reg",
        "model_version": "1",
        "task": "regression",
        "created_at": datetime(2025, 1, 1, tzinfo=UTC),
        "status": "pending",
        "input": x,
        "input_sha256": input_sha256(x),
        "input_shape": [3],
        "feature_names": ["a", "b", "c"],
        "output_names": ["y"],
        "class_labels": None,
        "prediction": {
            "mean": [10.0],
            "std": [2.0],
            "variance": [4.0],
            "epistemic_variance": [3.0],
            "aleatoric_variance": [1.0],
            "uncertainty": 2.0,
            "abstain": True,
        },
        "uncertainty": 2.0,
        "threshold": 1.0,
        "metric": "std",
        "seed": 7,
        "samples": 100,
    }
    row.update(overrides)
    return row


def minutes(n: int) -> datetime:
    """A creation time n minutes after a fixed start, for ordering tests."""
    return datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=n)
