"""V2 responses as bytes: the JSON encoder, its refusal of non-finite values, and the infer docs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.api.app import create_app
from service.api.v2_binary import encode_response
from service.config import Settings


def test_json_response_parses_as_the_values_sent() -> None:
    head = {"model_name": "m", "id": 'é"\n', "parameters": {"seed": 7, "threshold": 1e-05}}
    mean = np.array([[0.1, -2.5e30], [1e-7, 3.0]])
    body, json_length = encode_response(
        head,
        [
            ("mean", "FP32", mean, False),
            ("label", "INT64", np.array([1, 2]), False),
            ("abstain", "BOOL", np.array([True, False]), False),
        ],
    )
    assert json_length is None
    expected = {
        **head,
        "outputs": [
            {
                "name": "mean",
                "datatype": "FP32",
                "shape": [2, 2],
                "data": mean.astype(np.float32).reshape(-1).tolist(),
            },
            {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 2]},
            {"name": "abstain", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        ],
    }
    assert json.loads(body) == expected


def test_binary_outputs_follow_the_json_part() -> None:
    body, json_length = encode_response({}, [("u", "FP32", np.array([0.5, 2.0]), True)])
    assert json_length is not None
    head = json.loads(body[:json_length])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(body[json_length:], "<f4").tolist() == [0.5, 2.0]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("value", [1e39, -1e39, float("nan")])
def test_a_value_json_cannot_hold_is_refused(value: float) -> None:
    # Finite in float64, 1e39 overflows FP32: JSON has no Infinity, so no body is written.
    with pytest.raises(ValueError, match="not JSON compliant: output mean"):
        encode_response({}, [("mean", "FP32", np.array([[1.0, value]]), False)])


def test_infer_documents_its_path_parameters_only() -> None:
    paths = create_app(Settings()).openapi()["paths"]
    for path, names in (
        ("/v2/models/{name}/infer", ["name"]),
        ("/v2/models/{name}/versions/{version}/infer", ["name", "version"]),
    ):
        params = paths[path]["post"]["parameters"]
        assert [(p["name"], p["in"], p["required"]) for p in params] == [
            (n, "path", True) for n in names
        ]
