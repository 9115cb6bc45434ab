"""The models a server holds: every folder under the model directory, loaded once at start-up.

A folder that fails to load (corrupt weights, wrong checksum, bad manifest, inactive dropout)
is kept as a not-ready entry with its reason, so the other models keep serving and
GET /v1/models can say what went wrong.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from service.artifact import Manifest, read_manifest
from service.errors import ModelNotFound, ModelNotReady
from service.model import MCDropoutModel, load_model
from service.serving.names import valid_model_name

log = logging.getLogger("mcdrop.registry")


@dataclass
class ModelEntry:
    """One model folder: loaded and ready, or not ready with the reason."""

    name: str
    folder: Path
    model: MCDropoutModel | None = None
    manifest: Manifest | None = None  # kept when the manifest reads but the model does not load
    reason: str | None = None

    @property
    def ready(self) -> bool:
        return self.model is not None


class ModelRegistry:
    """Name → model entry. Loading happens once, in `load_all`; lookups never load."""

    def __init__(
        self,
        model_dir: str | Path,
        default_model: str | None = None,
        device: str = "auto",
        engine: str = "torch",
        max_activation_mb: float = 256.0,
        num_threads: int = 0,
    ) -> None:
        self.model_dir = Path(model_dir)
        self._default = default_model
        self.device = device
        self.engine = engine
        self.max_activation_mb = max_activation_mb
        self.num_threads = num_threads
        self.entries: dict[str, ModelEntry] = {}
        self.loaded = False  # true once load_all has finished, whatever the outcome per model

    def discover(self) -> list[Path]:
        """Model folders under model_dir, sorted by name; raises ValueError when there is no dir."""
        if not self.model_dir.is_dir():
            raise ValueError(f"model directory '{self.model_dir}' does not exist")
        folders = []
        for p in sorted(self.model_dir.iterdir()):
            if not p.is_dir() or p.name.startswith("."):
                continue
            if not valid_model_name(p.name):
                log.warning("skipping '%s': not a valid model name", p.name)
                continue
            folders.append(p)
        return folders

    def load_all(self) -> None:
        """Load every model folder; one failure never stops the others."""
        folders = self.discover()
        if self._default is not None and self._default not in {p.name for p in folders}:
            raise ValueError(
                f"default model '{self._default}' is not a folder under '{self.model_dir}'"
            )
        if self.engine == "torch" and self.num_threads:
            from service.engines.torch_engine import configure_threads

            configure_threads(self.num_threads)
        for folder in folders:
            self.entries[folder.name] = self._load_one(folder)
        self.loaded = True

    def _load_one(self, folder: Path) -> ModelEntry:
        entry = ModelEntry(name=folder.name, folder=folder)
        try:
            model = load_model(folder, self.device, self.max_activation_mb, self.engine)
            if not math.isfinite(model.manifest.threshold):
                raise ValueError(f"threshold {model.manifest.threshold} is not a finite number")
        except Exception as e:  # any failure marks this model, and only this model, not ready
            entry.reason = f"{type(e).__name__}: {e}"
            log.error("model '%s' is not ready: %s", folder.name, entry.reason)
            try:
                entry.manifest = read_manifest(folder)
            except Exception:
                entry.manifest = None
            return entry
        entry.model, entry.manifest = model, model.manifest
        log.info(
            "model '%s' ready (task %s, engine %s on %s)",
            folder.name,
            model.task,
            model.engine.name,
            model.engine.device,
        )
        return entry

    @property
    def default_name(self) -> str | None:
        if self._default is not None:
            return self._default
        return min(self.entries) if self.entries else None

    def any_ready(self) -> bool:
        return any(e.ready for e in self.entries.values())

    def entry(self, name: str) -> ModelEntry:
        """The entry for a name; ModelNotFound when no folder of that name was found."""
        if not self.loaded:
            raise ModelNotReady("models are still loading; retry shortly")
        found = self.entries.get(name) if valid_model_name(name) else None
        if found is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise ModelNotFound(
                f"no model named '{_clip(name)}' (loaded models: {known})",
                [{"loc": ["model"], "msg": "unknown model", "type": "model_not_found"}],
            )
        return found

    def get(self, name: str | None) -> MCDropoutModel:
        """The ready model of that name (None: the default); ModelNotReady when it failed."""
        if name is None:
            if not self.loaded:
                raise ModelNotReady("models are still loading; retry shortly")
            name = self.default_name
            if name is None:
                raise ModelNotFound(f"no models under '{self.model_dir}'")
        e = self.entry(name)
        if e.model is None:
            raise ModelNotReady(f"model '{name}' is not ready: {e.reason}")
        return e.model


def _clip(text: str, limit: int = 64) -> str:
    """Never echo a long string back: names in errors are cut to a readable length."""
    return text if len(text) <= limit else text[:limit] + "…"
