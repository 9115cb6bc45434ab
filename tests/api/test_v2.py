"""Open Inference Protocol (V2): the protocol's own examples, errors, and the binary extension."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.api.app import create_app
from service.config import Settings
from tests.api.conftest import CLF_ROW, running
from tests.helpers import linear_model_dir

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def v2(
    serving_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    # The protocol's examples send a [2, 2] input: a two-feature linear model ("pair") takes it.
    root = tmp_path_factory.mktemp("v2models")
    for name in ("tiny_clf", "tiny_reg", "broken"):
        # Copies, not symlinks: a link leading out of the models directory is refused.
        shutil.copytree(serving_dir / name, root / name)
    linear_model_dir(root / "pair", np.array([1.0, 2.0]), bias=0.5, input_rate=0.5)
    async with running(create_app(Settings(model_dir=str(root)))) as c:
        yield c


# From the KServe / Triton V2 REST specification, "Inference Request Examples": a model with one
# [2, 2] UINT32 input; the spec's second input (BOOL input1) and output0 are the spec model's.
SPEC_REQUEST: dict[str, Any] = {
    "id": "42",
    "inputs": [
        {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
        {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True]},
    ],
    "outputs": [{"name": "output0"}],
}


def _spec_request_for_mcdrop() -> dict[str, Any]:
    """The spec's example with mcdrop's tensor names: one input 'input', output 'mean'."""
    req: dict[str, Any] = json.loads(json.dumps(SPEC_REQUEST))
    req["inputs"] = [dict(req["inputs"][0], name="input")]
    req["outputs"] = [{"name": "mean"}]
    req["parameters"] = {"samples": 16, "seed": 3}
    return req


async def test_server_metadata_and_health(v2: httpx.AsyncClient) -> None:
    meta = (await v2.get("/v2")).json()
    assert meta["name"] == "mcdrop" and "binary_tensor_data" in meta["extensions"]
    assert isinstance(meta["version"], str)
    assert (await v2.get("/v2/health/live")).status_code == 200
    assert (await v2.get("/v2/health/ready")).status_code == 200


async def test_model_metadata_lists_inputs_and_outputs(v2: httpx.AsyncClient) -> None:
    clf = (await v2.get("/v2/models/tiny_clf")).json()
    assert clf["name"] == "tiny_clf" and clf["versions"] == ["1"]
    assert clf["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    outs = {o["name"]: (o["datatype"], o["shape"]) for o in clf["outputs"]}
    assert outs["abstain"] == ("BOOL", [-1]) and outs["label"] == ("INT64", [-1])
    assert {"probabilities", "predictive_entropy", "mutual_information", "variation_ratio"} <= set(
        outs
    )
    reg = (await v2.get("/v2/models/tiny_reg/versions/1")).json()
    names = {o["name"] for o in reg["outputs"]}
    assert {"mean", "variance", "uncertainty", "epistemic_variance", "aleatoric_variance"} <= names
    assert "label" not in names
    assert (await v2.get("/v2/models/tiny_clf/ready")).status_code == 200
    assert (await v2.get("/v2/models/tiny_clf/versions/1/ready")).status_code == 200
    assert (await v2.get("/v2/models/broken/ready")).status_code == 400


@pytest.mark.parametrize(
    "path", ["/v2/models/nope", "/v2/models/tiny_clf/versions/7", "/v2/models/nope/ready"]
)
async def test_unknown_model_or_version_is_404(v2: httpx.AsyncClient, path: str) -> None:
    r = await v2.get(path)
    assert r.status_code == 404 and set(r.json()) == {"error"}


async def test_spec_example_runs_and_echoes_id_and_parameters(v2: httpx.AsyncClient) -> None:
    r = await v2.post("/v2/models/pair/infer", json=_spec_request_for_mcdrop())
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "42" and out["model_name"] == "pair" and out["model_version"] == "1"
    assert out["parameters"]["samples"] == 16 and out["parameters"]["seed"] == 3
    [mean] = out["outputs"]
    assert mean["name"] == "mean" and mean["datatype"] == "FP32" and mean["shape"] == [2, 1]
    # Same rows through /v1 with the same T and seed: the same numbers (to float32).
    v1 = await v2.post(
        "/v1/models/pair/predict", json={"inputs": [[1, 2], [3, 4]], "samples": 16, "seed": 3}
    )
    expected = [p["mean"][0] for p in v1.json()["predictions"]]
    np.testing.assert_allclose(mean["data"], expected, rtol=1e-6)


async def test_nested_data_equals_flat_data(v2: httpx.AsyncClient) -> None:
    # The spec: a [2, 2] tensor may be sent flat [1, 2, 3, 4] or nested [[1, 2], [3, 4]].
    flat = _spec_request_for_mcdrop()
    nested = _spec_request_for_mcdrop()
    nested["inputs"][0]["data"] = [[1, 2], [3, 4]]
    a = (await v2.post("/v2/models/pair/infer", json=flat)).json()
    b = (await v2.post("/v2/models/pair/infer", json=nested)).json()
    assert a["outputs"] == b["outputs"]


async def test_the_spec_example_as_written_is_refused_with_a_400(v2: httpx.AsyncClient) -> None:
    # Its second input and its output name are another model's: a clear 400, not a 500.
    r = await v2.post("/v2/models/pair/infer", json=SPEC_REQUEST)
    assert r.status_code == 400 and "exactly one input, named 'input'" in r.json()["error"]


async def test_all_outputs_by_default_and_types(v2: httpx.AsyncClient) -> None:
    body = {
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": CLF_ROW}],
        "parameters": {"samples": 8, "seed": 1, "threshold": 0.0},
    }
    out = (await v2.post("/v2/models/tiny_clf/infer", json=body)).json()
    tensors = {o["name"]: o for o in out["outputs"]}
    assert tensors["abstain"]["data"] == [True]  # threshold 0: any uncertainty abstains
    assert tensors["label"]["datatype"] == "INT64" and isinstance(tensors["label"]["data"][0], int)
    assert tensors["probabilities"]["shape"] == [1, 3]
    assert "samples_used" not in tensors


async def test_samples_auto_adds_adaptive_outputs(v2: httpx.AsyncClient) -> None:
    body = {
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": CLF_ROW * 2}],
        "parameters": {"samples": "auto", "max_samples": 64, "seed": 1},
    }
    out = (await v2.post("/v2/models/tiny_clf/infer", json=body)).json()
    tensors = {o["name"]: o for o in out["outputs"]}
    assert tensors["samples_used"]["datatype"] == "INT64"
    assert tensors["decision_settled"]["datatype"] == "BOOL"
    assert out["parameters"]["max_samples"] == 64 and out["parameters"]["confidence"] == 0.99


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"parameters": {"samples": 1}}, "samples"),
        ({"parameters": {"samples": "many"}}, 'integer or "auto"'),
        ({"parameters": {"priority": 1}}, "parameters: unknown ['priority']"),
        ({"parameters": {"max_samples": 10}}, "only with samples"),
        ({"outputs": [{"name": "label"}]}, "outputs.0.name"),
        (
            {"inputs": [{"name": "input", "shape": [2, 2], "datatype": "BYTES", "data": ["a"]}]},
            "datatype",
        ),
        (
            {"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]},
            "expected 4 values",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [1, True, 3, 4]}
                ]
            },
            "value 1: expected a finite number, not true or false",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [2, 2], "datatype": "INT32", "data": [1, 2.5, 3, 4]}
                ]
            },
            "value 1: expected an integer",
        ),
        (
            {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1] * 6}]},
            "inputs: expected N rows",
        ),
        ({"inputs": []}, "inputs"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
async def test_bad_requests_are_400_with_an_error(
    v2: httpx.AsyncClient, change: dict[str, Any], needle: str
) -> None:
    body = {**_spec_request_for_mcdrop(), **change}
    r = await v2.post("/v2/models/pair/infer", json=body)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and needle in r.json()["error"]


async def test_invalid_json_is_400(v2: httpx.AsyncClient) -> None:
    r = await v2.post(
        "/v2/models/pair/infer",
        content=b'{"inputs": [',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "error" in r.json()


async def test_unknown_model_infer_is_404(v2: httpx.AsyncClient) -> None:
    r = await v2.post("/v2/models/nope/infer", json=_spec_request_for_mcdrop())
    assert r.status_code == 404 and set(r.json()) == {"error"}


async def test_binary_request_and_response(v2: httpx.AsyncClient) -> None:
    # The spec's binary example: input0's 16 bytes (UINT32 [2, 2]) follow the JSON header, and
    # output0 is asked as binary while output1 stays JSON; here output0/1 are mean/abstain.
    header = {
        "model_name": "pair",
        "inputs": [
            {
                "name": "input",
                "shape": [2, 2],
                "datatype": "UINT32",
                "parameters": {"binary_data_size": 16},
            }
        ],
        "outputs": [{"name": "mean", "parameters": {"binary_data": True}}, {"name": "abstain"}],
        "parameters": {"samples": 16, "seed": 3},
    }
    head = json.dumps(header).encode()
    body = head + struct.pack("<4I", 1, 2, 3, 4)
    r = await v2.post(
        "/v2/models/pair/infer",
        content=body,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(head)),
        },
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:n])
    mean_meta, abstain_meta = meta["outputs"]
    assert mean_meta["parameters"]["binary_data_size"] == 8 and "data" not in mean_meta
    assert isinstance(abstain_meta["data"], list)
    mean = np.frombuffer(r.content[n:], "<f4")
    as_json = (await v2.post("/v2/models/pair/infer", json=_spec_request_for_mcdrop())).json()
    np.testing.assert_array_equal(mean, np.asarray(as_json["outputs"][0]["data"], np.float32))


@pytest.mark.parametrize(
    ("length", "extra", "needle"),
    [
        ("x", b"", "expected an integer"),
        ("99999", b"", "outside the body"),
        (None, b"\0\0\0\0", "binary bytes belong to no input"),
    ],
)
async def test_bad_binary_framing_is_400(
    v2: httpx.AsyncClient, length: str | None, extra: bytes, needle: str
) -> None:
    head = json.dumps(_spec_request_for_mcdrop()).encode()
    hdr = {"inference-header-content-length": length or str(len(head))}
    r = await v2.post("/v2/models/pair/infer", content=head + extra, headers=hdr)
    assert r.status_code == 400 and needle in r.json()["error"]


async def test_repository_index_lists_states(v2: httpx.AsyncClient) -> None:
    index = (await v2.post("/v2/repository/index")).json()
    states = {m["name"]: m["state"] for m in index}
    assert states == {
        "broken": "UNAVAILABLE",
        "pair": "READY",
        "tiny_clf": "READY",
        "tiny_reg": "READY",
    }
    ready = (await v2.post("/v2/repository/index", json={"ready": True})).json()
    assert "broken" not in {m["name"] for m in ready}


async def test_v2_hands_the_decoded_array_to_the_data_plane(
    serving_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(serving_dir / "tiny_clf", tmp_path / "tiny_clf")
    app = create_app(Settings(model_dir=str(tmp_path)))
    seen: list[Any] = []
    async with running(app) as c:
        predictor = app.state.predictor
        infer = predictor.infer

        async def spy(name: str | None, rows: Any, params: Any) -> Any:
            seen.append(rows)
            return await infer(name, rows, params)

        monkeypatch.setattr(predictor, "infer", spy)
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": CLF_ROW}]}
        r = await c.post("/v2/models/tiny_clf/infer", json=body)
        assert r.status_code == 200, r.text
        r = await c.post("/v1/models/tiny_clf/predict", json={"inputs": [CLF_ROW]})
        assert r.status_code == 200, r.text
    # V2: the tensor as decoded, no round trip through lists; REST: the validated JSON rows.
    assert isinstance(seen[0], np.ndarray) and seen[0].shape == (1, 4)
    assert seen[1] == [CLF_ROW]
