"""The container files agree with the service: healthcheck path, read-only models, settings."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
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


def _without_podman(tmp_path: Path) -> dict[str, str]:
    # A PATH holding only what the script needs before it looks for podman.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return {"PATH": str(bin_dir)}


def test_image_check_skips_without_podman_unless_required(tmp_path: Path) -> None:
    script = REPO / "deploy" / "check-image.sh"
    assert os.access(script, os.X_OK)
    env = _without_podman(tmp_path)
    skipped = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert skipped.returncode == 0
    assert "skipped: podman is not installed" in skipped.stderr
    required = subprocess.run(
        [str(script), "--require"], env=env, capture_output=True, text=True, timeout=30
    )
    assert required.returncode == 1
    assert "cannot run: podman is not installed" in required.stderr
