"""POST /predict and /v1/models/{name}/predict: response shape, reproducibility, overrides."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.serving.model import load_model
from service.serving.results import RegressionResult
from tests.api.conftest import CLF_ROW, REG_ROW, running

pytestmark = pytest.mark.anyio


def _without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    """The body without what differs between two identical requests: ids."""
    rows = [{k: v for k, v in p.items() if k != "referral_id"} for p in body["predictions"]]
    return {k: v for k, v in body.items() if k != "request_id"} | {"predictions": rows}


async def test_regression_rows_have_every_field(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/models/tiny_reg/predict", json={"inputs": [REG_ROW, REG_ROW], "seed": 3}
    )
    assert r.status_code == 200
    body = r.json()
    assert (body["model"], body["task"], body["seed"]) == ("tiny_reg", "regression", 3)
    assert body["samples"] == 100  # the manifest's default_samples
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["uncertainty_metric"] == "std"
    assert len(body["predictions"]) == 2
    for row in body["predictions"]:
        assert set(row) == {
            "mean",
            "variance",
            "uncertainty",
            "abstain",
            "reason",
            "std",
            "epistemic_variance",
            "aleatoric_variance",
            "referral_id",
        }
        assert row["reason"] is None  # only rows that abstain whatever the threshold have one
        # total = epistemic + aleatoric, std = sqrt(total), aleatoric = 1/tau (tau = 100).
        assert math.isclose(row["variance"][0], row["epistemic_variance"][0] + 0.01, rel_tol=1e-9)
        assert math.isclose(row["std"][0], math.sqrt(row["variance"][0]), rel_tol=1e-9)
        assert math.isclose(row["aleatoric_variance"][0], 0.01, rel_tol=1e-9)
        assert row["uncertainty"] == row["std"][0]
        assert row["abstain"] == (row["uncertainty"] > body["threshold"])


async def test_classification_rows_have_every_field(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/predict", json={"model": "tiny_clf", "inputs": [CLF_ROW], "samples": 20}
    )
    assert r.status_code == 200
    body = r.json()
    assert (body["model"], body["task"], body["samples"]) == ("tiny_clf", "classification", 20)
    row = body["predictions"][0]
    assert set(row) >= {
        "mean",
        "variance",
        "uncertainty",
        "abstain",
        "probabilities",
        "label",
        "class_label",
        "predictive_entropy",
        "mutual_information",
        "variation_ratio",
    }
    assert row["mean"] == row["probabilities"]
    assert math.isclose(sum(row["probabilities"]), 1.0, rel_tol=1e-9)
    assert row["label"] == int(np.argmax(row["probabilities"]))
    assert row["uncertainty"] == row["predictive_entropy"]  # the model's default metric
    assert 0.0 <= row["mutual_information"] <= row["predictive_entropy"] + 1e-12


async def test_nested_rows_match_flat_rows(client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 1, 4, 4))
    nested = await client.post(
        "/v1/models/tiny_img/predict", json={"inputs": images.tolist(), "seed": 5}
    )
    flat = await client.post(
        "/v1/models/tiny_img/predict", json={"inputs": images.reshape(3, 16).tolist(), "seed": 5}
    )
    assert nested.status_code == flat.status_code == 200
    assert _without_request_id(nested.json()) == _without_request_id(flat.json())


async def test_default_route_uses_default_model(client: httpx.AsyncClient) -> None:
    body = (await client.post("/predict", json={"inputs": [REG_ROW]})).json()
    assert body["model"] == "tiny_reg"


async def test_same_seed_gives_identical_response(client: httpx.AsyncClient) -> None:
    req = {"inputs": [REG_ROW, [0.0, 0.0, 0.0]], "seed": 42, "samples": 50}
    a = (await client.post("/v1/models/tiny_reg/predict", json=req)).json()
    b = (await client.post("/v1/models/tiny_reg/predict", json=req)).json()
    assert _without_request_id(a) == _without_request_id(b)
    c = (await client.post("/v1/models/tiny_reg/predict", json={**req, "seed": 43})).json()
    assert c["predictions"] != a["predictions"]  # the seed matters


async def test_drawn_seed_is_echoed_and_reproduces(client: httpx.AsyncClient) -> None:
    first = (await client.post("/predict", json={"model": "tiny_clf", "inputs": [CLF_ROW]})).json()
    assert isinstance(first["seed"], int)
    again = (
        await client.post(
            "/predict", json={"model": "tiny_clf", "inputs": [CLF_ROW], "seed": first["seed"]}
        )
    ).json()
    assert again["predictions"] == first["predictions"]


async def test_return_samples_gives_t_by_n_by_d(client: httpx.AsyncClient) -> None:
    req = {"inputs": [REG_ROW, REG_ROW, REG_ROW], "samples": 7, "seed": 1, "return_samples": True}
    body = (await client.post("/v1/models/tiny_reg/predict", json=req)).json()
    raw = np.asarray(body["raw_samples"])
    assert raw.shape == (7, 3, 1)
    means = [row["mean"][0] for row in body["predictions"]]
    np.testing.assert_allclose(raw.mean(axis=0)[:, 0], means, rtol=1e-5)  # float32 samples
    plain = await client.post("/v1/models/tiny_reg/predict", json={**req, "return_samples": False})
    assert plain.json()["raw_samples"] is None


async def test_threshold_and_metric_overrides(client: httpx.AsyncClient) -> None:
    req: dict[str, Any] = {"inputs": [REG_ROW], "seed": 2}
    never = (
        await client.post("/v1/models/tiny_reg/predict", json={**req, "threshold": 1e9})
    ).json()
    always = (
        await client.post("/v1/models/tiny_reg/predict", json={**req, "threshold": -1.0})
    ).json()
    assert never["predictions"][0]["abstain"] is False
    assert always["predictions"][0]["abstain"] is True
    assert always["threshold"] == -1.0
    var = (
        await client.post(
            "/v1/models/tiny_reg/predict", json={**req, "uncertainty_metric": "variance"}
        )
    ).json()
    assert var["uncertainty_metric"] == "variance"
    assert var["predictions"][0]["uncertainty"] == var["predictions"][0]["variance"][0]


async def test_shipped_regression_model_agrees_with_load_model(client: httpx.AsyncClient) -> None:
    """The HTTP answer for models/diabetes equals the library's for the same seed."""
    from service.api.app import create_app
    from service.config import Settings
    from tests.conftest import MODELS

    x = np.random.default_rng(7).normal(0.0, 0.05, size=(4, 10))
    seed, t = 123, 200
    async with running(create_app(Settings(model_dir=str(MODELS)))) as shipped:
        body = (
            await shipped.post(
                "/v1/models/diabetes/predict",
                json={"inputs": x.tolist(), "samples": t, "seed": seed},
            )
        ).json()
        other = (
            await shipped.post(
                "/v1/models/diabetes/predict",
                json={"inputs": x.tolist(), "samples": t, "seed": seed + 1},
            )
        ).json()
    lib = load_model(Path(MODELS) / "diabetes").predict(x, samples=t, seed=seed)
    mean = np.array([r["mean"][0] for r in body["predictions"]])
    var = np.array([r["variance"][0] for r in body["predictions"]])
    # Same seed → same masks → the same samples, up to float rounding of the same GEMMs.
    np.testing.assert_allclose(mean, lib.mean[:, 0], rtol=1e-6)
    np.testing.assert_allclose(var, lib.variance[:, 0], rtol=1e-6)
    # A different seed agrees within MC error: each mean has standard error
    # sqrt(epistemic_var / T); two independent means differ with SE sqrt(2 * epistemic_var / T).
    # 5 SE bounds a false failure below 6e-7 per row.
    other_mean = np.array([r["mean"][0] for r in other["predictions"]])
    assert isinstance(lib, RegressionResult)
    se = np.sqrt(2 * lib.epistemic_variance[:, 0] / t)
    assert np.all(np.abs(other_mean - lib.mean[:, 0]) < 5 * se)


async def test_samples_auto_reports_per_row_sampling(client: httpx.AsyncClient) -> None:
    body = {
        "inputs": [CLF_ROW, [3.0, 3.0, -3.0, 0.0]],
        "samples": "auto",
        "max_samples": 64,
        "seed": 4,
    }
    r = await client.post("/v1/models/tiny_clf/predict", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["samples"] == max(p["samples_used"] for p in out["predictions"])
    for p in out["predictions"]:
        assert 16 <= p["samples_used"] <= 64
        assert p["decision_settled"] == (p["samples_used"] < 64)
        assert len(p["mean_se"]) == len(p["mean"]) and p["uncertainty_se"] >= 0
    again = await client.post("/v1/models/tiny_clf/predict", json=body)
    assert again.json()["predictions"] == out["predictions"]  # the seed reproduces it


async def test_fixed_samples_leave_the_adaptive_fields_out(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/models/tiny_clf/predict", json={"inputs": [CLF_ROW], "samples": 8})
    assert "samples_used" not in r.json()["predictions"][0]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"samples": 10, "max_samples": 20}, "max_samples"),
        ({"confidence": 0.9}, "confidence"),
        ({"samples": "auto", "return_samples": True}, "return_samples"),
        ({"samples": "lots"}, "samples"),
        ({"samples": "auto", "confidence": 1.0}, "confidence"),
        ({"samples": "auto", "max_samples": 1}, "max_samples"),
    ],
)
async def test_bad_auto_options_are_422_naming_the_field(
    client: httpx.AsyncClient, extra: dict[str, Any], field: str
) -> None:
    r = await client.post("/v1/models/tiny_clf/predict", json={"inputs": [CLF_ROW], **extra})
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith(field)


async def test_engine_workers_do_not_change_a_seeded_answer(serving_dir: Path) -> None:
    from service.api.app import create_app
    from tests.api.conftest import settings_for

    req = {"inputs": [REG_ROW, [0.0, 1.0, -1.0]], "seed": 11, "samples": 40}
    answers = []
    for workers, batching in ((1, True), (2, True), (2, False)):
        settings = settings_for(serving_dir, engine_workers=workers, batching=batching)
        async with running(create_app(settings)) as c:
            r = await c.post("/v1/models/tiny_reg/predict", json=req)
            assert r.status_code == 200
            answers.append(_without_request_id(r.json()))
    assert answers[0] == answers[1] == answers[2]
