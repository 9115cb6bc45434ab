"""Settings: MCDROP_ environment variables, safe defaults, refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.config import Settings


def test_defaults_are_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("MCDROP_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert s.host == "127.0.0.1"  # loopback unless asked
    assert (s.model_dir, s.port, s.engine, s.batching) == ("models", 8000, "torch", True)
    assert s.max_body_bytes == 8 * 1024 * 1024 and s.max_rows == 1024


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCDROP_PORT", "9123")
    monkeypatch.setenv("MCDROP_MODEL_DIR", "/srv/models")
    monkeypatch.setenv("MCDROP_BATCHING", "true")
    s = Settings()
    assert (s.port, s.model_dir, s.batching) == (9123, "/srv/models", True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 0},
        {"device": "tpu"},
        {"default_model": "../etc"},
        {"max_rows": 0},
        {"nope": 1},
        {"engine_workers": 0},
        {"engine_workers": 2, "engine": "onnx"},  # onnxruntime runs each pass on every core
    ],
)
def test_bad_values_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_every_field_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no docstring"


def test_docs_document_every_setting() -> None:
    from tests.conftest import REPO

    page = (REPO / "docs" / "configuration.md").read_text()
    missing = [n for n in Settings.model_fields if f"`MCDROP_{n.upper()}`" not in page]
    assert not missing, f"docs/configuration.md's table lacks {missing}"


@pytest.mark.parametrize(
    ("num_threads", "workers", "cores", "expected"),
    [
        (0, 1, 8, None),  # one worker: torch's own default
        (3, 1, 8, 3),  # a setting always wins
        (0, 2, 8, 4),  # several: an equal share of the cores
        (0, 3, 2, 1),  # never below one thread
        (1, 2, 2, 1),
    ],
)
def test_threads_per_worker_never_oversubscribes(
    num_threads: int, workers: int, cores: int, expected: int | None
) -> None:
    from service.engines.runtime import threads_per_worker

    assert threads_per_worker(num_threads, workers, cores) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", "auto"), ("true", True), ("false", False)]
)
def test_engine_process_is_auto_by_default_or_a_boolean(
    value: str, expected: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().engine_process == "auto"
    monkeypatch.setenv("MCDROP_ENGINE_PROCESS", value)
    assert Settings().engine_process == expected
    monkeypatch.setenv("MCDROP_ENGINE_PROCESS", "sometimes")
    with pytest.raises(ValidationError):
        Settings()
