"""`package_torch`: capture a PyTorch module's graph, dropout sites included, as a model folder.

The module is traced by torch's ONNX exporter with every dropout call it makes in training
mode recorded as an mcdrop::Site node (element-wise for F.dropout / nn.Dropout, one decision
per channel for dropout1d/2d/3d), keep probability from the call. Everything else runs in eval
mode: torch.nn layers (BatchNorm with its running statistics) are put in eval mode, while the
user's own modules keep `training=True` so that `F.dropout(x, p, training=self.training)` is
seen. The folder is then built by the same rewrite as `mcdrop import-onnx`, and checked against
the module's own MC dropout before it is published.

Refused, naming the layer: AlphaDropout and FeatureAlphaDropout (their affine correction is
not a 0/1 mask), and a forward whose trace depends on input values (a loop of data-dependent
length, a branch on a tensor), which a trace would freeze to the example's path. Nothing is
pickled: the folder holds ONNX, safetensors and JSON.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn
from torch.jit._trace import TracerWarning

from service.engines.graph_sites import SITE_DOMAIN, ImportRefused

_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_REFUSED_MODULES = (nn.AlphaDropout, nn.FeatureAlphaDropout)


class _Site(torch.autograd.Function):
    """Identity when traced; exported as one mcdrop::Site node carrying rate, kind and layer."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rate: float, kind: str, source: str) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def symbolic(g: Any, x: Any, rate: float, kind: str, source: str) -> Any:
        out = g.op(f"{SITE_DOMAIN}::Site", x, rate_f=rate, kind_s=kind, source_s=source)
        out.setType(x.type())
        return out


class _Layers:
    """The qualified name of the module running now, kept by forward hooks."""

    def __init__(self, module: nn.Module) -> None:
        self.stack: list[str] = []
        self._handles = []
        for name, sub in module.named_modules():
            label = f"{name or '<root>'} ({type(sub).__name__})"
            self._handles.append(sub.register_forward_pre_hook(self._enter(label)))
            self._handles.append(sub.register_forward_hook(self._leave()))

    def _enter(self, label: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self.stack.append(label)

        return hook

    def _leave(self) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            if self.stack:
                self.stack.pop()

        return hook

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else "<root>"

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def refuse_unfaithful_layers(module: nn.Module) -> None:
    for name, sub in module.named_modules():
        if isinstance(sub, _REFUSED_MODULES):
            raise ImportRefused(
                f"layer '{name}' ({type(sub).__name__}) cannot be sampled faithfully: its "
                "output is an affine correction of a mask, not a 0/1 mask; mcdrop refuses it "
                "rather than serve it deterministic"
            )


_M = TypeVar("_M", bound=nn.Module)


def mc_mode(module: _M) -> _M:
    """The module's MC-dropout mode, in place: dropout on, torch.nn layers in eval mode, the
    user's own modules with training=True (so functional dropout keyed on it is on)."""
    for sub in module.modules():
        own = not type(sub).__module__.startswith("torch.")
        sub.training = own or isinstance(sub, _DROPOUT_MODULES)
    return module


@contextlib.contextmanager
def _dropout_as_sites(layers: _Layers) -> Iterator[None]:
    """Route every dropout function through _Site while tracing."""
    saved = {n: getattr(F, n) for n in ("dropout", "dropout1d", "dropout2d", "dropout3d")}
    refused = {n: getattr(F, n) for n in ("alpha_dropout", "feature_alpha_dropout")}

    def site(kind: str, fn_name: str) -> Callable[..., torch.Tensor]:
        def fn(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False):  # type: ignore[no-untyped-def]
            if not training or p == 0.0:
                return x
            if not 0.0 < p < 1.0:
                raise ImportRefused(f"{layers.current}: F.{fn_name} with p={p}")
            return _Site.apply(x, float(p), kind, f"F.{fn_name} in {layers.current}")

        return fn

    def refuse(fn_name: str) -> Callable[..., torch.Tensor]:
        def fn(x: torch.Tensor, p: float = 0.5, training: bool = False, inplace: bool = False):  # type: ignore[no-untyped-def]
            if training:
                raise ImportRefused(
                    f"{layers.current}: F.{fn_name} cannot be sampled faithfully (an affine "
                    "correction of a mask, not a 0/1 mask)"
                )
            return x

        return fn

    try:
        F.dropout = site("element", "dropout")
        for dims in ("1d", "2d", "3d"):
            setattr(F, f"dropout{dims}", site("channel", f"dropout{dims}"))
        for n in refused:
            setattr(F, n, refuse(n))
        yield
    finally:
        for n, f in {**saved, **refused}.items():
            setattr(F, n, f)


def capture(module: nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    """The module's ONNX graph with an mcdrop::Site node for each dropout call."""
    refuse_unfaithful_layers(module)
    net = mc_mode(copy.deepcopy(module).cpu().float())
    layers = _Layers(net)
    buf = io.BytesIO()
    traced_values: list[tuple[str, str]] = []  # (layer, warning) for each value-dependent step

    def note(message: Any, category: Any, *_: Any, **__: Any) -> None:
        if issubclass(category, TracerWarning):
            traced_values.append((layers.current, str(message).splitlines()[0]))

    try:
        with _dropout_as_sites(layers), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", TracerWarning)
            warnings.showwarning = note
            torch.onnx.export(
                net,
                (example,),
                buf,  # type: ignore[arg-type]  # file-like works too
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}},
                opset_version=17,
                custom_opsets={SITE_DOMAIN: 1},
                do_constant_folding=True,
                training=torch.onnx.TrainingMode.PRESERVE,
            )
    finally:
        layers.remove()
    if traced_values:
        layer, message = traced_values[0]
        raise ImportRefused(
            f"{layer}: its forward depends on the input's values ({message}); a traced "
            "graph would freeze it to the example's path (for instance a loop of "
            "data-dependent length around a dropout). Rewrite it with a fixed structure"
        )
    return onnx.load_model_from_string(buf.getvalue())


@torch.no_grad()
def module_mc_samples(module: nn.Module, x: torch.Tensor, samples: int, seed: int) -> np.ndarray:
    """The module's own MC dropout, (T, N, D): dropout on, everything else in eval mode."""
    net = mc_mode(copy.deepcopy(module).cpu().float())
    torch.manual_seed(seed)
    rows = x.shape[0]
    out = net(x.repeat(samples, *([1] * (x.dim() - 1))))
    result: np.ndarray = out.reshape(samples, rows, -1).double().numpy()
    return result


def package_torch(
    module: nn.Module,
    example_input: Any,
    out_dir: str | Path,
    *,
    task: str,
    name: str | None = None,
    tau: float | None = None,
    class_labels: list[str] | None = None,
    output_names: list[str] | None = None,
    outputs: str | None = None,
    heldout: tuple[Any, Any] | None = None,
    overwrite: bool = False,
    check_samples: int = 2000,
) -> Path:
    """Write a model folder serving `module` with MC dropout; see docs/bring-your-own.md.

    example_input: a few rows shaped as the module takes them (batch first). outputs:
    "logits" (a softmax per sample, the default for classifiers), "probabilities", or
    "values" (regression). Regression needs `tau`, or `heldout=(x, y)` to fit it.
    """
    from service.serving.model import MCDropoutModel
    from service.training.packaging import write_graph_folder

    example = torch.as_tensor(np.asarray(example_input, np.float32))
    if example.dim() < 2 or example.shape[0] < 1:
        raise ValueError("example_input: expected a batch of rows, shaped (N, ...)")
    graph = capture(module, example)
    if len(graph.graph.output) != 1:
        raise ImportRefused(
            f"the module returns {len(graph.graph.output)} tensors; mcdrop serves a module "
            "returning one (N, D) tensor, so wrap it to return the one to serve"
        )

    def check(model: MCDropoutModel) -> None:
        _check_against_module(model, module, example[:4], check_samples)

    return write_graph_folder(
        graph,
        out_dir,
        task=task,
        tau=tau,
        outputs=outputs,
        heldout=heldout,
        class_labels=class_labels,
        output_names=output_names,
        name=name,
        overwrite=overwrite,
        source={
            "from": "package_torch",
            "class": type(module).__name__,
            "torch": torch.__version__,
        },
        check=check,
    )


def _check_against_module(model: Any, module: nn.Module, x: torch.Tensor, samples: int) -> None:
    """Served MC mean and variance must match the module's own, seeds independent.

    Means within 5 standard errors of a difference of two T-sample means; summed variance
    ratio within 0.8-1.25 (its relative SE is about 2/sqrt(T), 0.045 at T=2000, so 0.2 is
    over 4 SE while a lost or doubled mask moves it by far more).
    """
    from service.engines.base import SampleJob

    a = model.engine.sample_many([SampleJob(x.numpy(), samples, 1)])[0].astype(np.float64)
    b = module_mc_samples(module, x, samples, 2)
    if model.manifest.architecture.outputs == "probabilities":
        a = np.exp(a)
    se = np.sqrt((a.var(0) + b.var(0)) / samples) + 1e-9
    z = float(np.max(np.abs(a.mean(0) - b.mean(0)) / se))
    ratio = (a.var(0).sum(-1) + 1e-12) / (b.var(0).sum(-1) + 1e-12)
    if z > 5 or ratio.min() < 0.8 or ratio.max() > 1.25:
        raise ImportRefused(
            "the packaged graph does not reproduce the module's MC dropout (mean off by up to "
            f"{z:.1f} SE, variance ratio {ratio.min():.2f}-{ratio.max():.2f}); a dropout call "
            "may bypass torch.nn.functional (e.g. torch.dropout or a custom random op)"
        )


__all__ = ["capture", "mc_mode", "module_mc_samples", "package_torch"]
