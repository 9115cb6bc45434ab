"""GET /v1/models and /v1/models/{name}."""

from __future__ import annotations

import httpx
import pytest
import torch

pytestmark = pytest.mark.anyio


async def test_list_describes_every_model(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["default_model"] == "tiny_reg"
    by_name = {m["name"]: m for m in body["models"]}
    assert sorted(by_name) == ["broken", "tiny_clf", "tiny_img", "tiny_reg"]
    reg = by_name["tiny_reg"]
    assert reg["ready"] is True and reg["reason"] is None
    assert (reg["task"], reg["input_shape"], reg["tau"]) == ("regression", [3], 100.0)
    assert (reg["default_samples"], reg["max_samples"]) == (100, 10_000)
    assert reg["uncertainty_metric"] == "std"
    assert reg["uncertainty_metrics"] == ["std", "variance", "epistemic_std"]
    assert reg["output_names"] and reg["version"] and reg["calibrated"] is False
    assert isinstance(reg["threshold"], float)
    # The app's device setting is "auto": the CUDA device where torch sees one.
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert (reg["engine"], reg["device"]) == ("torch", auto)
    clf = by_name["tiny_clf"]
    assert clf["task"] == "classification" and clf["tau"] is None
    assert by_name["tiny_img"]["input_shape"] == [1, 4, 4]


async def test_broken_model_is_listed_not_ready_with_reason(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models/broken")
    assert r.status_code == 200
    broken = r.json()
    assert broken["ready"] is False
    assert "SHA-256 mismatch" in broken["reason"]
    assert broken["task"] == "regression"  # the manifest still reads: the client sees what it was
    assert broken["engine"] is None


async def test_get_one_model(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models/tiny_clf")
    assert r.status_code == 200
    assert r.json()["name"] == "tiny_clf"


def test_image_display_comes_from_the_manifest() -> None:
    # The review page draws pixels over [0, 1/input_scale], value 0 as the manifest says.
    from pathlib import Path

    from service.api.routes.models import describe
    from service.artifacts.manifest import read_manifest
    from service.serving.registry import ModelEntry
    from tests.conftest import MODELS

    def shown(folder: Path, **changes: object) -> tuple[list[float] | None, str | None]:
        manifest = read_manifest(folder).model_copy(update=changes)
        out = describe(None, ModelEntry(name=folder.name, folder=folder, manifest=manifest))
        return out.input_range, out.image_zero

    assert shown(MODELS / "fashion-mnist") == ([0.0, 255.0], "black")
    assert shown(MODELS / "digits") == ([0.0, 16.0], "black")
    assert shown(MODELS / "diabetes") == (None, "black")  # no scale: range unknown
    assert shown(MODELS / "fashion-mnist", image_zero="white") == ([0.0, 255.0], "white")
