"""Model artifacts: a folder with a versioned JSON manifest and a safetensors weights file.

The manifest describes the model completely (architecture, dropout, tau, normalisation,
input shape, threshold), so the network can be rebuilt from the folder alone. Weights are read
with safetensors' numpy API: no pickle, no torch needed to validate a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from service.errors import ArtifactError

MANIFEST_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"
FORMAT_VERSION = 1
NAME_PATTERN = r"^[A-Za-z0-9._-]+$"

Task = Literal["regression", "classification"]
NoiseKind = Literal["bernoulli", "gaussian"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class MLPArchitecture(_Strict):
    """A fully connected network: dropout before every weight layer."""

    kind: Literal["mlp"] = "mlp"
    input_dim: int = Field(gt=0)
    hidden: list[int] = Field(description="Width of each hidden layer.")
    output_dim: int = Field(gt=0)
    activation: Literal["relu", "tanh"] = "relu"


class ConvArchitecture(_Strict):
    """The paper's Bayesian convnet: conv-relu-pool blocks, then dense layers, dropout after
    each."""

    kind: Literal["convnet"] = "convnet"
    input_shape: list[int] = Field(description="(channels, height, width)")
    channels: list[int]
    kernel_size: int = 5
    hidden: list[int]
    output_dim: int = Field(gt=0)


class GraphSite(_Strict):
    """One dropout site of an ONNX graph: the graph multiplies by the 0/1 mask input `input`."""

    input: str = Field(description="Name of the mask input, e.g. mask_0.")
    keep_prob: float = Field(gt=0.0, lt=1.0)
    kind: Literal["element", "channel"] = Field(
        description="element: one decision per value; channel: one per (row, channel)."
    )
    shape: list[int] = Field(description="Mask shape per row (1 on the broadcast axes).")
    source: str = Field(default="", description="The layer, node or tensor it came from.")


class GraphArchitecture(_Strict):
    """A user's network as an ONNX graph whose dropout sites are mask inputs (see graph_import)."""

    kind: Literal["graph"] = "graph"
    graph: str = Field(default="graph.onnx", description="The graph file, in the folder.")
    graph_sha256: str
    input_shape: list[int]
    output_dim: int = Field(gt=0)
    outputs: Literal["logits", "probabilities", "values"] = Field(
        description="What the network returns; probabilities enter the graph as their log."
    )
    sites: list[GraphSite] = Field(min_length=1)
    bytes_per_row: int = Field(gt=0, description="Activation bytes per stacked row of a pass.")
    engines: list[Literal["onnx"]] = Field(
        default_factory=lambda: ["onnx"],  # type: ignore[arg-type]
        description="Engines that can run this folder.",
    )
    source: dict[str, Any] = Field(default_factory=dict)


class DropoutSpec(_Strict):
    """Rates are drop probabilities; keep_prob = 1 - rate."""

    noise: NoiseKind = "bernoulli"
    input_rate: float = Field(ge=0.0, lt=1.0)
    hidden_rate: float = Field(gt=0.0, lt=1.0)


class Normalization(_Strict):
    """x_model = (x * input_scale - x_mean) / x_std; y = y_model * y_std + y_mean."""

    input_scale: float = 1.0
    x_mean: list[float]
    x_std: list[float]
    y_mean: list[float] | None = None
    y_std: list[float] | None = None


class WeightsRef(_Strict):
    file: str = WEIGHTS_NAME
    sha256: str


class ReferenceRef(_Strict):
    """The held-out uncertainty scores of the last calibration (see
    service/artifacts/reference.py)."""

    file: str = "reference.safetensors"
    sha256: str
    n: int = Field(gt=0, description="How many held-out scores the file holds.")


class Manifest(_Strict):
    """The versioned description of one model folder (model.json)."""

    format_version: int = FORMAT_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    version: str = "1"
    task: Task
    architecture: MLPArchitecture | ConvArchitecture | GraphArchitecture = Field(
        discriminator="kind"
    )
    dropout: DropoutSpec | None = Field(
        default=None, description="The built-in networks' dropout; graphs list their sites."
    )
    tau: float | None = Field(
        default=None,
        gt=0,
        description="Model precision in the target's original units (regression only).",
    )
    input_shape: list[int]
    feature_names: list[str] | None = None
    output_names: list[str]
    class_labels: list[str] | None = None
    normalization: Normalization
    image_zero: Literal["black", "white"] = Field(
        default="black",
        description="How an image input's value 0 is drawn for a reviewer: black, as the data "
        "is in MNIST and Fashion-MNIST, or white for dark ink on a light background.",
    )
    default_samples: int = Field(default=100, gt=1)
    max_samples: int = Field(default=10_000, gt=1)
    uncertainty_metric: str
    threshold: float
    calibration: dict[str, Any] | None = Field(
        default=None,
        description="How the threshold was chosen; null while it is the training placeholder.",
    )
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    weights: WeightsRef
    reference: ReferenceRef | None = Field(
        default=None,
        description="Held-out uncertainty scores the calibration watch ranks live traffic "
        "against; null before `mcdrop calibrate` (the watch then reports 'unavailable').",
    )

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v > FORMAT_VERSION:
            raise ValueError(
                f"format_version {v} is newer than this mcdrop reads ({FORMAT_VERSION})"
            )
        return v

    @model_validator(mode="after")
    def _dropout_described(self) -> Manifest:
        if self.dropout is None and not isinstance(self.architecture, GraphArchitecture):
            raise ValueError(f"a '{self.architecture.kind}' network needs its 'dropout' spec")
        return self

    @property
    def keep_prob(self) -> float:
        if self.dropout is None:  # a graph: its lowest keep probability
            assert isinstance(self.architecture, GraphArchitecture)
            return min(s.keep_prob for s in self.architecture.sites)
        return 1.0 - self.dropout.hidden_rate

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: Path) -> Manifest:
    path = Path(folder) / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ArtifactError(f"{path}: no manifest ({MANIFEST_NAME}) in the model folder") from e
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from e
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"{path}: invalid manifest at '{where}': {first['msg']}") from e


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write atomically, so a reader never sees half a manifest."""
    path = Path(folder) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, path)


def save_weights(folder: Path, tensors: dict[str, NDArray[np.float32]]) -> str:
    """Write weights.safetensors and return its SHA-256."""
    path = Path(folder) / WEIGHTS_NAME
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, path)
    return sha256_file(path)


def load_weights(
    folder: Path, manifest: Manifest, expected: dict[str, tuple[int, ...]]
) -> dict[str, NDArray[np.float32]]:
    """Read and verify the weights: checksum, then every expected tensor's presence and shape."""
    path = Path(folder) / manifest.weights.file
    # Resolve the file itself, not only its folder: a link pointing out is refused too.
    if path.suffix != ".safetensors" or path.resolve().parent != Path(folder).resolve():
        raise ArtifactError(f"{path}: weights must be a .safetensors file inside the model folder")
    if not path.is_file():
        raise ArtifactError(f"{path}: weights file not found")
    digest = sha256_file(path)
    if digest != manifest.weights.sha256:
        raise ArtifactError(
            f"{path}: SHA-256 mismatch (manifest {manifest.weights.sha256[:12]}…, "
            f"file {digest[:12]}…): the weights were changed or corrupted"
        )
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path}: not a readable safetensors file ({e})") from e
    for name, shape in expected.items():
        if name not in tensors:
            raise ArtifactError(f"{path}: missing tensor '{name}' (expected shape {list(shape)})")
        if tuple(tensors[name].shape) != tuple(shape):
            raise ArtifactError(
                f"{path}: tensor '{name}' has shape {list(tensors[name].shape)}, "
                f"the architecture needs {list(shape)}"
            )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ArtifactError(f"{path}: unexpected tensors {extra} for this architecture")
    return tensors
