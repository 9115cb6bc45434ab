"""deploy/ manifests agree with the container: port, probe paths, env names, read-only models."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.api.app import create_app
from service.config import Settings
from tests.conftest import REPO

DEPLOY = REPO / "deploy"


KUBERNETES = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
KSERVE = sorted((DEPLOY / "kserve").glob("*.yaml"))


def _docs(path: Path | None = None) -> list[dict[str, Any]]:
    docs = []
    for p in [path] if path else sorted(DEPLOY.rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(p.read_text()) if d]
    return docs


def _by_kind(kind: str, path: Path) -> dict[str, Any]:
    [doc] = [d for d in _docs(path) if d["kind"] == kind]
    return doc


def _pod_specs() -> list[Any]:
    return [
        pytest.param(_by_kind("Deployment", p)["spec"]["template"]["spec"], id=p.stem)
        for p in KUBERNETES
    ] + [
        pytest.param(_by_kind("InferenceService", p)["spec"]["predictor"], id=f"kserve-{p.stem}")
        for p in KSERVE
    ]


def _get_paths() -> set[str]:
    paths: dict[str, Any] = create_app(Settings()).openapi()["paths"]
    return {path for path, ops in paths.items() if "get" in ops}


def test_every_manifest_parses_with_the_expected_kinds() -> None:
    # A CPU and a GPU variant of each.
    assert {p.stem for p in KUBERNETES} == {"mcdrop", "mcdrop-gpu"}
    assert {p.stem for p in KSERVE} == {"inferenceservice", "inferenceservice-gpu"}
    for path in KUBERNETES:
        kinds = sorted(d["kind"] for d in _docs(path))
        assert kinds == ["Deployment", "HorizontalPodAutoscaler", "Service"], path
    for path in KSERVE:
        assert [d["kind"] for d in _docs(path)] == ["InferenceService"], path


@pytest.mark.parametrize("spec", _pod_specs())
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
    # A pod asks for a GPU exactly when it runs on one, and then the same count as a limit.
    gpus = container["resources"]["limits"].get("nvidia.com/gpu", 0)
    assert (env["MCDROP_DEVICE"] == "cuda") == (gpus >= 1)
    assert container["resources"]["requests"].get("nvidia.com/gpu", 0) == gpus
    if "MCDROP_PRECISION" in env:
        assert env["MCDROP_PRECISION"] in ("float32", "tf32", "bf16")
        assert env["MCDROP_PRECISION"] == "float32" or gpus >= 1  # the CPU refuses the others


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda p: p.stem)
def test_service_and_autoscaler_point_at_the_deployment(path: Path) -> None:
    deployment, service, hpa = (
        _by_kind(k, path) for k in ("Deployment", "Service", "HorizontalPodAutoscaler")
    )
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("path", KSERVE, ids=lambda p: p.stem)
def test_kserve_runs_the_image_command(path: Path) -> None:
    [container] = _by_kind("InferenceService", path)["spec"]["predictor"]["containers"]
    assert container["args"] == ["mcdrop", "serve"]
    assert 'CMD ["mcdrop", "serve"]' in (REPO / "Dockerfile").read_text()


def test_the_gpu_image_is_built_with_a_build_argument_that_exists() -> None:
    # Every `--build-arg NAME=` the GPU manifests' comments (and docs) tell a reader to pass is
    # an ARG the Dockerfile declares.
    dockerfile = (REPO / "Dockerfile").read_text()
    declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.M))
    for path in [*KUBERNETES, *KSERVE, REPO / "Dockerfile", REPO / "docs" / "gpu.md"]:
        for name in re.findall(r"--build-arg (\w+)=", path.read_text()):
            assert name in declared, f"{path.name}: --build-arg {name} is not an ARG"
    assert "TORCH_INDEX_URL" in declared and "${TORCH_INDEX_URL}" in dockerfile
