"""Round trip with an independent V2 client (tritonclient[http]) against a real `mcdrop serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.servers import serving

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

ROW = np.array([[0.1, 0.2, -0.3, 1.5], [2.0, -1.0, 0.0, 0.5]], np.float32)


@pytest.fixture(scope="module")
def server(serving_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(serving_dir, tmp_path_factory.mktemp("v2serve")) as base:
        yield base.removeprefix("http://")  # tritonclient takes host:port


@pytest.mark.timeout(120)
def test_triton_client_round_trip(server: str) -> None:
    client = httpclient.InferenceServerClient(url=server)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("tiny_clf") and not client.is_model_ready("broken")
        meta = client.get_model_metadata("tiny_clf")
        assert meta["inputs"][0]["shape"] == [-1, 4]
        index = {m["name"]: m["state"] for m in client.get_model_repository_index()}
        assert index["broken"] == "UNAVAILABLE" and index["tiny_clf"] == "READY"

        results = {}
        for binary in (True, False):
            inp = httpclient.InferInput("input", list(ROW.shape), "FP32")
            inp.set_data_from_numpy(ROW, binary_data=binary)
            outs = [
                httpclient.InferRequestedOutput(name, binary_data=binary)
                for name in ("probabilities", "label", "abstain", "predictive_entropy")
            ]
            res = client.infer(
                "tiny_clf", [inp], outputs=outs, parameters={"samples": 32, "seed": 5}
            )
            results[binary] = res
            assert res.get_response()["parameters"]["seed"] == 5
        # Binary and JSON transport carry the same numbers; both match /v1 for the same seed.
        v1 = httpx.post(
            f"http://{server}/v1/models/tiny_clf/predict",
            json={"inputs": ROW.tolist(), "samples": 32, "seed": 5},
        ).json()["predictions"]
        for res in results.values():
            probs = res.as_numpy("probabilities")
            assert probs.dtype == np.float32 and probs.shape == (2, 3)
            np.testing.assert_allclose(probs, [p["probabilities"] for p in v1], rtol=1e-6)
            assert res.as_numpy("label").tolist() == [p["label"] for p in v1]
            assert res.as_numpy("abstain").dtype == np.bool_
            assert res.as_numpy("abstain").tolist() == [p["abstain"] for p in v1]

        inp = httpclient.InferInput("input", list(ROW.shape), "FP32")
        inp.set_data_from_numpy(ROW)
        auto = client.infer("tiny_clf", [inp], parameters={"samples": "auto", "max_samples": 64})
        used = auto.as_numpy("samples_used")
        assert used.dtype == np.int64 and ((used >= 16) & (used <= 64)).all()

        with pytest.raises(InferenceServerException) as err:
            client.infer("nope", [inp])
        assert "no model named 'nope'" in str(err.value)
        with pytest.raises(InferenceServerException) as err:
            client.infer("tiny_clf", [inp], parameters={"samples": 1})
        assert "samples" in str(err.value)
    finally:
        client.close()
