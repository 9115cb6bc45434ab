"""Property-based tests over the whole OpenAPI schema with schemathesis, in-process (ASGI).

Every operation gets generated requests, valid ones and invalid ones, and every response is
checked with all of schemathesis's checks: no 5xx, status codes, headers, content types and
bodies that match the documented ones, and so on. CI runs a few examples per operation and
mode; the full run is

    MCDROP_SCHEMATHESIS_EXAMPLES=250 .venv/bin/pytest tests/api/test_schemathesis.py -s

(every operation positive, and negative where it has parameters or a body, up to 100 examples
each: over 1,000 requests; hypothesis stops early where the input space is small). The app is the
one the service runs, on the tiny test models (one
of them broken), with the batcher on and no API keys, so the admin route answers its
documented 403; test_auth.py covers keys.

One check is left out: positive_data_acceptance, which expects every schema-valid request to
succeed. The schema is shared by all models, so it cannot say how many features a given model
takes, which metrics it knows or how large T·N may be; such requests are schema-valid and are
refused with a documented 422 on purpose. Every other check runs.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.api.app import create_app
from service.config import Settings

EXAMPLES = int(os.environ.get("MCDROP_SCHEMATHESIS_EXAMPLES", "6"))
CASES: Counter[str] = Counter()


def _cases() -> list[tuple[str, GenerationMode, str | None]]:
    """(operation label, mode, fixed model name), from the schema of an app that loads nothing.

    Operations with no parameters and no body have nothing to make invalid: positive only.
    Routes with a {name} also run with the name fixed to a served model, so generated bodies
    reach the model instead of stopping at 404 for a random name.
    """
    spec = create_app(Settings(model_dir="unused")).openapi()
    out: list[tuple[str, GenerationMode, str | None]] = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            label = f"{method.upper()} {path}"
            out.append((label, GenerationMode.POSITIVE, None))
            if op.get("parameters") or op.get("requestBody"):
                out.append((label, GenerationMode.NEGATIVE, None))
            if "{name}" in path:
                out.append((label, GenerationMode.POSITIVE, "tiny_reg"))
                out.append((label, GenerationMode.NEGATIVE, "tiny_clf"))
    return out


@pytest.fixture(scope="module")
def api_schema(serving_dir: Path) -> Iterator[Any]:
    app = create_app(Settings(model_dir=str(serving_dir), default_model="tiny_reg"))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    print(f"\nschemathesis: {sum(CASES.values())} cases, by status {dict(sorted(CASES.items()))}")


@pytest.mark.parametrize(("label", "mode", "name"), _cases())
def test_operation_conforms_to_the_schema(
    api_schema: Any, label: str, mode: Any, name: str | None
) -> None:
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    fixed = {"path_parameters": {"name": name}} if name else {}

    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
        CASES[str(response.status_code)] += 1

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # e.g. GET /v1/models/{name}: any string is a valid name (unknown ones are a 404).
        pytest.skip("no invalid request exists for this operation's parameters")
