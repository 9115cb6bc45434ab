"""A loaded MC dropout model: manifest + engine + the maths that turns samples into decisions.

`prepare` validates and normalises raw inputs, an engine draws the (T, N, D) samples, and
`summarize` maps them to original units and computes mean, variance, uncertainty and abstain.
The three steps are separate so the serving layer can batch the middle one across requests.
"""

from __future__ import annotations

import random
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.artifacts.manifest import Manifest, read_manifest
from service.engines import Engine, EngineName, EngineRuntime, Precision, SampleJob, build_engine
from service.errors import InactiveDropout, InvalidInput
from service.maths import uncertainty
from service.serving.results import ClassificationResult, Prediction, RegressionResult
from service.serving.row_shapes import first_bad_row

MAX_SEED = 2**63 - 1


def _ragged(rows: Any, shape: list[int], field: str) -> InvalidInput:
    """numpy could not make one array of the rows: name the first row that does not fit."""
    bad = first_bad_row(rows, shape)
    if bad is None:
        flat = int(np.prod(shape))
        msg = f"rows differ in shape; each must have shape {shape} (or {flat} values)"
        return InvalidInput(f"{field}: {msg}")
    index, msg = bad
    return InvalidInput(
        f"{field}: {msg}", detail=[{"loc": [field, index], "msg": msg, "type": "value_error"}]
    )


def metrics_for(task: str) -> tuple[str, ...]:
    return (
        uncertainty.REGRESSION_METRICS
        if task == "regression"
        else uncertainty.CLASSIFICATION_METRICS
    )


class MCDropoutModel:
    """One model folder, loaded and ready to predict."""

    def __init__(self, folder: Path, manifest: Manifest, engine: Engine) -> None:
        self.folder = folder
        self.manifest = manifest
        self.engine = engine
        norm = manifest.normalization
        shape = manifest.input_shape
        self._x_mean = _broadcastable(norm.x_mean, shape)
        self._x_std = _broadcastable(norm.x_std, shape)
        self._y_mean = np.asarray(norm.y_mean if norm.y_mean is not None else [0.0], np.float64)
        self._y_std = np.asarray(norm.y_std if norm.y_std is not None else [1.0], np.float64)
        self._input_size = manifest.input_size  # a product over the shape: once, not per request
        self._input_scale = norm.input_scale

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def task(self) -> str:
        return self.manifest.task

    # ---------------------------------------------------------------- inputs

    def prepare(self, x: Any, field: str = "inputs") -> NDArray[np.float32]:
        """Validate shape and values of raw rows; return normalised float32 (N, *input_shape)."""
        shape = self.manifest.input_shape
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise _ragged(x, shape, field) from e
        if arr.ndim >= 1 and arr.shape[0] == 0:
            raise InvalidInput(f"{field}: expected at least one row")
        if arr.ndim == 2 and arr.shape[1] == self._input_size:
            arr = arr.reshape(arr.shape[0], *shape)
        # Single-channel images may also come without their channel axis: (N, H, W).
        if len(shape) == 3 and shape[0] == 1 and arr.ndim == 3 and list(arr.shape[1:]) == shape[1:]:
            arr = arr[:, None]
        if arr.ndim != len(shape) + 1 or list(arr.shape[1:]) != shape:
            flat = self._input_size
            raise InvalidInput(
                f"{field}: expected N rows of shape {shape} (or flat rows of {flat} values), "
                f"got an array of shape {list(arr.shape)}"
            )
        if not np.all(np.isfinite(arr)):
            raise InvalidInput(f"{field}: every value must be a finite number")
        with np.errstate(over="ignore"):  # overflow is checked just below, with a clear message
            normed64 = (arr * self._input_scale - self._x_mean) / self._x_std
        if not np.all(np.abs(normed64) <= np.finfo(np.float32).max):
            raise InvalidInput(
                f"{field}: values too large: after normalisation each must fit in float32"
            )
        normed: NDArray[np.float32] = normed64.astype(np.float32)
        return normed

    def resolve_samples(self, samples: int | None) -> int:
        t = self.manifest.default_samples if samples is None else samples
        if not 2 <= t <= self.manifest.max_samples:
            raise InvalidInput(f"samples: expected an integer in [2, {self.manifest.max_samples}]")
        return t

    def resolve_metric(self, metric: str | None) -> str:
        m = metric or self.manifest.uncertainty_metric
        allowed = metrics_for(self.task)
        if m not in allowed:
            raise InvalidInput(f"uncertainty_metric: expected one of {list(allowed)}, got '{m}'")
        return m

    # ---------------------------------------------------------------- predict

    def predict(
        self,
        x: Any,
        samples: int | None = None,
        seed: int | None = None,
        threshold: float | None = None,
        metric: str | None = None,
        return_samples: bool = False,
    ) -> Prediction:
        t = self.resolve_samples(samples)
        s = draw_seed() if seed is None else seed
        raw = self.engine.sample_many([SampleJob(self.prepare(x), t, s)])[0]
        return self.summarize(raw, s, threshold, metric, return_samples)

    def summarize(
        self,
        raw: NDArray[np.float32],
        seed: int,
        threshold: float | None = None,
        metric: str | None = None,
        return_samples: bool = False,
    ) -> Prediction:
        """Turn the engine's (T, N, D) outputs into the prediction, over all N rows at once."""
        m = self.resolve_metric(metric)
        thr = self.manifest.threshold if threshold is None else float(threshold)
        if self.task == "regression":
            return self._regression(raw, seed, m, thr, return_samples)
        probs = uncertainty.softmax(raw, axis=2)
        cm = uncertainty.classification_measures(probs)
        unc = getattr(cm, m)
        return ClassificationResult(
            samples=raw.shape[0],
            seed=seed,
            metric=m,
            threshold=thr,
            mean=cm.probabilities,
            variance=cm.variance,
            uncertainty=unc,
            abstain=_abstain(unc, thr),
            raw_samples=probs.astype(np.float32) if return_samples else None,
            probabilities=cm.probabilities,
            label=cm.label,
            predictive_entropy=cm.predictive_entropy,
            mutual_information=cm.mutual_information,
            variation_ratio=cm.variation_ratio,
        )

    def _regression(
        self, raw: NDArray[np.float32], seed: int, metric: str, thr: float, return_samples: bool
    ) -> RegressionResult:
        ys = self.to_target_units(raw)
        assert self.manifest.tau is not None  # guaranteed for regression manifests
        mom = uncertainty.regression_moments(ys, self.manifest.tau)
        values = {
            "std": mom.std,
            "variance": mom.variance,
            "epistemic_std": np.sqrt(mom.epistemic_variance),
        }
        # With several outputs the row is as uncertain as its most uncertain output.
        unc = values[metric].max(axis=1)
        return RegressionResult(
            samples=raw.shape[0],
            seed=seed,
            metric=metric,
            threshold=thr,
            mean=mom.mean,
            variance=mom.variance,
            uncertainty=unc,
            abstain=_abstain(unc, thr),
            raw_samples=ys.astype(np.float32) if return_samples else None,
            std=mom.std,
            epistemic_variance=mom.epistemic_variance,
            aleatoric_variance=mom.aleatoric_variance,
        )

    def to_target_units(self, raw: NDArray[np.floating]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = np.array(raw, np.float64)  # a copy: scaled in place below
        out *= self._y_std
        out += self._y_mean
        return out

    def predict_standard(self, x: Any) -> NDArray[np.float64]:
        """Standard dropout (weight scaling, one deterministic pass): target units /
        probabilities."""
        out = self.engine.deterministic(self.prepare(x))
        if self.task == "regression":
            return self.to_target_units(out)
        return uncertainty.softmax(out, axis=1)

    def check_dropout_active(self) -> None:
        """Refuse a model whose T passes come out identical: it would report zero uncertainty.

        64 passes: at a dropout rate of 0.005 on a 50-unit network, 8 passes of 2 rows all keep
        every unit with probability 0.995^800 ≈ 0.018, which refused a healthy model now and then.
        """
        rng = np.random.default_rng(0)
        probe = rng.standard_normal((2, *self.manifest.input_shape)).astype(np.float32)
        raw = self.engine.sample_many([SampleJob(probe, 64, 0)])[0]
        if np.all(raw == raw[0]):
            raise InactiveDropout(
                f"{self.folder}: all 64 MC passes gave identical outputs; dropout is inactive "
                "at serving time, so the model cannot express uncertainty"
            )


def _abstain(unc: NDArray[np.float64], threshold: float) -> NDArray[np.bool_]:
    # A non-finite uncertainty is never trusted: refer the item.
    out: NDArray[np.bool_] = ~np.isfinite(unc) | (unc > threshold)
    return out


def _broadcastable(values: list[float], shape: list[int]) -> NDArray[np.float64]:
    arr = np.asarray(values, np.float64)
    return arr.reshape(shape) if arr.size == int(np.prod(shape)) else arr


# Seeds need to differ, not to be secret: a PRNG seeded once from the OS is enough, and spares
# every request an os.urandom call (a system call on the event loop).
_seeds = random.Random(secrets.randbits(64))


def draw_seed() -> int:
    """A fresh seed, echoed to the caller so any answer can be reproduced."""
    return _seeds.getrandbits(63)


def load_model(
    folder: str | Path,
    device: str = "auto",
    max_activation_mb: float = 256.0,
    engine: EngineName = "torch",
    precision: Precision = "float32",
    *,
    runtime: EngineRuntime | None = None,
) -> MCDropoutModel:
    """Load a model folder and check its dropout is live. engine: "torch" (CPU or CUDA; float32,
    or tf32/bf16 on CUDA) or "onnx" (model.onnx from `mcdrop export-onnx`); graph folders run on
    onnxruntime. A `runtime` (a server's) replaces the four settings before it."""
    if runtime is None:
        runtime = EngineRuntime(
            engine, device, precision=precision, max_activation_mb=max_activation_mb
        )
    path = Path(folder)
    manifest = read_manifest(path)
    model = MCDropoutModel(path, manifest, build_engine(path, manifest, runtime))
    model.check_dropout_active()
    return model


__all__ = ["MCDropoutModel", "Prediction", "load_model"]
