"""Bring your own network: turn an ONNX graph (imported, or captured by `package_torch`) into a
model folder that `mcdrop serve` serves like the shipped ones.

A folder is built in a hidden sibling directory, loaded and checked there (dropout active; with
every mask at its mean the served graph equals the network in eval mode; for a packaged module,
MC statistics equal the module's own), and only then renamed into place: a refusal or a failed
check leaves nothing behind.

Regression needs tau, the model precision. Without one it is fitted on held-out rows by the
rule training uses: the tau that maximises the MC log-likelihood (`fit_tau`).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.artifacts.manifest import (
    NAME_PATTERN,
    GraphArchitecture,
    Manifest,
    Normalization,
    WeightsRef,
    read_manifest,
    save_weights,
    write_manifest,
)
from service.maths import uncertainty
from service.serving.model import MCDropoutModel, load_model

if TYPE_CHECKING:
    from service.engines.graph_import import Rewritten

Heldout = tuple[Any, Any]  # (x rows, targets or integer labels)
Check = Callable[[MCDropoutModel], None]
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def import_onnx(
    path: str | Path,
    out_dir: str | Path,
    *,
    task: str,
    tau: float | None = None,
    output: str | None = None,
    sites: dict[str, float] | None = None,
    outputs: str | None = None,
    heldout: Heldout | None = None,
    class_labels: list[str] | None = None,
    output_names: list[str] | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Serve an ONNX file: every Dropout node (and each `sites` tensor -> drop rate) becomes a
    sampled mask. Returns the model folder. See docs/bring-your-own.md."""
    from service.engines.graph_sites import read_graph

    graph = read_graph(path)
    return write_graph_folder(
        graph,
        out_dir,
        task=task,
        tau=tau,
        output=output,
        sites=sites,
        outputs=outputs,
        heldout=heldout,
        class_labels=class_labels,
        output_names=output_names,
        name=name,
        overwrite=overwrite,
        source={"from": "import-onnx", "file": Path(path).name},
    )


def write_graph_folder(
    graph: Any,
    out_dir: str | Path,
    *,
    task: str,
    tau: float | None = None,
    output: str | None = None,
    sites: dict[str, float] | None = None,
    outputs: str | None = None,
    heldout: Heldout | None = None,
    class_labels: list[str] | None = None,
    output_names: list[str] | None = None,
    name: str | None = None,
    overwrite: bool = False,
    source: dict[str, Any] | None = None,
    check: Check | None = None,
) -> Path:
    """Rewrite `graph` (an onnx.ModelProto) and write, check and publish its model folder."""
    from service.engines.graph_import import rewrite

    out = Path(out_dir)
    name = name or out.name
    outputs = outputs or ("logits" if task == "classification" else "values")
    _check_arguments(out, name, task, tau, outputs, heldout, overwrite)
    rew = rewrite(graph, output=output, extra_sites=sites, outputs=outputs)
    if class_labels is not None and len(class_labels) != rew.output_dim:
        raise ValueError(
            f"class_labels: {len(class_labels)} labels for {rew.output_dim} network outputs"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        regression = task == "regression"
        manifest = _graph_manifest(
            tmp,
            rew,
            name=name,
            task=task,
            tau=tau,
            outputs=outputs,
            output_names=output_names,
            class_labels=class_labels,
            source=source,
        )
        write_manifest(tmp, manifest)
        model = load_model(tmp, device="cpu")  # includes the check that dropout is active
        _check_eval_mode(model, graph, rew)
        if check is not None:
            check(model)
        if heldout is not None:
            _fit_on_heldout(tmp, model, heldout, fit=regression and tau is None)
        _publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _graph_manifest(
    tmp: Path,
    rew: Rewritten,
    *,
    name: str,
    task: str,
    tau: float | None,
    outputs: str,
    output_names: list[str] | None,
    class_labels: list[str] | None,
    source: dict[str, Any] | None,
) -> Manifest:
    """Save the served graph and its weights into `tmp`; the manifest that names them."""
    from service.engines.graph_import import save_graph, strip_weights

    weights = strip_weights(rew.model)
    arch = GraphArchitecture(
        graph_sha256=save_graph(rew.model, tmp),
        input_shape=rew.input_shape,
        output_dim=rew.output_dim,
        outputs=outputs,  # type: ignore[arg-type]
        sites=rew.sites,
        bytes_per_row=rew.bytes_per_row,
        source=source or {},
    )
    regression = task == "regression"
    return Manifest(
        name=name,
        task=task,  # type: ignore[arg-type]
        architecture=arch,
        tau=(tau or 1.0) if regression else None,
        input_shape=rew.input_shape,
        output_names=output_names or (["y"] if regression else ["probabilities"]),
        class_labels=class_labels,
        normalization=Normalization(x_mean=[0.0], x_std=[1.0]),
        uncertainty_metric="std" if regression else "predictive_entropy",
        threshold=_FLOAT32_MAX if regression else math.log(rew.output_dim),
        training={
            "threshold_source": "placeholder: no row abstains until `mcdrop calibrate`",
            "tau_source": "given" if tau is not None or not regression else "validation_ml",
        },
        weights=WeightsRef(sha256=save_weights(tmp, weights)),
    )


def _check_arguments(
    out: Path,
    name: str,
    task: str,
    tau: float | None,
    outputs: str,
    heldout: Heldout | None,
    overwrite: bool,
) -> None:
    if task not in ("regression", "classification"):
        raise ValueError(f"task: expected 'regression' or 'classification', got '{task}'")
    if not all(re.match(NAME_PATTERN, n) and ".." not in n for n in (name, out.name)):
        raise ValueError(f"'{out.name}': a model folder's name uses letters, digits, '.', '_', '-'")
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: already exists (pass overwrite=True or --force to replace it)")
    if task == "regression":
        if outputs != "values":
            raise ValueError("outputs: a regression network returns 'values'")
        if tau is None and heldout is None:
            raise ValueError(
                "regression needs tau (the model precision) or held-out data to fit it by "
                "maximum MC log-likelihood (heldout=(x, y), or --heldout FILE)"
            )
        if tau is not None and not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau: expected a positive number, got {tau}")
    elif outputs not in ("logits", "probabilities"):
        raise ValueError("outputs: a classifier returns 'logits' or 'probabilities'")


def _check_eval_mode(model: MCDropoutModel, graph: Any, rew: Any) -> None:
    """With every mask at its mean the served graph must compute the network in eval mode."""
    import onnxruntime as ort

    from service.engines.graph_probe import eval_graph
    from service.engines.graph_sites import find_sites

    reference = eval_graph(graph, find_sites(graph, {}))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(
        reference.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(1).standard_normal((4, *rew.input_shape)).astype(np.float32)
    want = np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0], np.float64)
    want = want.reshape(len(x), -1)
    got = np.asarray(model.engine.deterministic(x), np.float64)
    if model.manifest.architecture.outputs == "probabilities":  # type: ignore[union-attr]
        got = np.exp(got)
    err = float(np.max(np.abs(got - want)))
    if err > 1e-4 * (1.0 + float(np.max(np.abs(want)))):
        raise ValueError(
            f"the rewritten graph departs from the original in eval mode (max difference {err:.3g})"
        )


def fit_tau(model: MCDropoutModel, x: Any, y: Any, samples: int = 100, seed: int = 0) -> float:
    """tau maximising the MC log-likelihood of held-out (x, y): training's validation rule."""
    pred = model.predict(x, samples=samples, seed=seed, return_samples=True)
    assert pred.raw_samples is not None
    ys = np.asarray(pred.raw_samples, np.float64)
    target = np.asarray(y, np.float64).reshape(ys.shape[1], ys.shape[2])
    return uncertainty.fit_tau(ys, target)


def fit_tau_in_folder(
    folder: str | Path, x: Any, y: Any, samples: int = 100, seed: int = 0
) -> float:
    """Fit a regression folder's tau on held-out rows and write it into its manifest."""
    path = Path(folder)
    model = load_model(path, device="cpu")
    _fit_on_heldout(path, model, (x, y), fit=True, samples=samples, seed=seed)
    return float(read_manifest(path).tau or 0.0)


def _fit_on_heldout(
    folder: Path,
    model: MCDropoutModel,
    heldout: Heldout,
    fit: bool,
    samples: int = 100,
    seed: int = 0,
) -> None:
    """Fit tau (when asked) and set the placeholder threshold from held-out rows, as training
    does: the 90th percentile of their uncertainty, until `mcdrop calibrate`."""
    if model.task != "regression" and fit:
        raise ValueError("tau is fitted for regression models only")
    x, y = heldout
    manifest: Manifest = model.manifest.model_copy(deep=True)
    if fit:
        manifest.tau = fit_tau(model, x, y, samples, seed)
        manifest.training["tau_source"] = "validation_ml"
        manifest.training["tau_heldout_rows"] = len(np.asarray(x))
        model = MCDropoutModel(folder, manifest, model.engine)
    pred = model.predict(x, samples=samples, seed=seed)
    manifest.threshold = float(np.quantile(pred.uncertainty, 0.9))
    manifest.training["threshold_source"] = "placeholder: 90th percentile of held-out uncertainty"
    write_manifest(folder, manifest)


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished folder into place (swapping out an old one when asked)."""
    if out.exists():
        if not overwrite:
            raise ValueError(f"{out}: already exists")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / "folder")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(tmp, out)


__all__ = ["fit_tau", "fit_tau_in_folder", "import_onnx", "write_graph_folder"]
