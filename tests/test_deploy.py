"""deploy/ manifests agree with the container: port, probe paths, env names, read-only models."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from service.api.app import create_app
from service.config import Settings
from tests.conftest import REPO

DEPLOY = REPO / "deploy"


def _docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _by_kind(kind: str) -> dict[str, Any]:
    [doc] = [d for d in _docs() if d["kind"] == kind]
    return doc


def _pod_specs() -> list[dict[str, Any]]:
    return [
        _by_kind("Deployment")["spec"]["template"]["spec"],
        _by_kind("InferenceService")["spec"]["predictor"],
    ]


def _get_paths() -> set[str]:
    paths: dict[str, Any] = create_app(Settings()).openapi()["paths"]
    return {path for path, ops in paths.items() if "get" in ops}


def test_every_manifest_parses_with_the_expected_kinds() -> None:
    kinds = sorted(d["kind"] for d in _docs())
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "InferenceService", "Service"]


@pytest.mark.parametrize("spec", _pod_specs(), ids=["deployment", "kserve"])
def test_containers_match_what_mcdrop_exposes(spec: dict[str, Any]) -> None:
    [container] = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    settings = {f"MCDROP_{name.upper()}" for name in Settings.model_fields}
    unknown = {k for k in env if k.startswith("MCDROP_")} - settings
    assert not unknown, f"settings that do not exist: {unknown}"
    port = int(env["MCDROP_PORT"])
    assert port == Settings().port == 8000
    assert env["MCDROP_HOST"] == "0.0.0.0"  # the loopback default would refuse the kubelet
    assert [p["containerPort"] for p in container["ports"]] == [port]
    paths = _get_paths()
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in paths, f"{probe} path {get['path']} is not served"
        assert get["port"] in (port, "http")
    assert "ready" in container["readinessProbe"]["httpGet"]["path"]
    assert "live" in container["livenessProbe"]["httpGet"]["path"]
    # The models are mounted read-only where MCDROP_MODEL_DIR points.
    [mount] = container["volumeMounts"]
    assert mount["readOnly"] is True and mount["mountPath"] == env["MCDROP_MODEL_DIR"]
    [volume] = spec["volumes"]
    assert volume["name"] == mount["name"] and volume["persistentVolumeClaim"]["readOnly"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's USER


def test_service_and_autoscaler_point_at_the_deployment() -> None:
    deployment, service, hpa = (
        _by_kind(k) for k in ("Deployment", "Service", "HorizontalPodAutoscaler")
    )
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"],
    }  # fmt: skip
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_kserve_runs_the_image_command() -> None:
    [container] = _by_kind("InferenceService")["spec"]["predictor"]["containers"]
    assert container["args"] == ["mcdrop", "serve"]
    assert 'CMD ["mcdrop", "serve"]' in (REPO / "Dockerfile").read_text()
