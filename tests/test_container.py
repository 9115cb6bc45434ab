"""The container files agree with the service: healthcheck path, read-only models, settings."""

from __future__ import annotations

from typing import Any

import yaml

from service.config import Settings
from tests.conftest import REPO


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def test_compose_serves_models_read_only_with_a_healthcheck() -> None:
    svc = _compose()["services"]["mcdrop"]
    assert svc["build"]["context"] == "."
    assert "./models:/app/models:ro" in svc["volumes"]
    assert "/health/ready" in " ".join(svc["healthcheck"]["test"])
    assert svc["environment"]["MCDROP_MODEL_DIR"] == "/app/models"


def test_compose_environment_names_real_settings() -> None:
    env = _compose()["services"]["mcdrop"]["environment"]
    fields = {f"MCDROP_{name.upper()}" for name in Settings.model_fields}
    unknown = {k for k in env if k.startswith("MCDROP_")} - fields
    assert not unknown, f"compose sets settings that do not exist: {unknown}"


def test_dockerfile_healthcheck_and_user() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "/health/ready" in text
    assert "USER 10001" in text
    assert 'CMD ["mcdrop", "serve"]' in text
