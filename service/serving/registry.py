"""The models a server holds: every folder under the model directory, loaded at start-up and
again on reload (SIGHUP or POST /v1/admin/reload).

A folder that fails to load (corrupt weights, wrong checksum, bad manifest, inactive dropout,
a link out of the directory) is kept as a not-ready entry with its reason, so the other models
keep serving and GET /v1/models can say what went wrong. A missing model directory is not fatal
either: the server stays live with no model ready (readiness says why) until a reload finds it.

Reload loads new and changed folders beside the models in service and then replaces the whole
name → entry map in one assignment, so a lookup sees the old map or the new one, never a mix.
A request that already holds a model object finishes on it. A changed folder that fails to
load leaves its previous version serving, with the failure in `reload_error`.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from service.artifacts.manifest import MANIFEST_NAME, Manifest, read_manifest
from service.artifacts.names import valid_model_name
from service.artifacts.reference import ReferenceScores, load_reference
from service.engines import EngineRuntime, start_runtime
from service.errors import ArtifactError, ModelNotFound, ModelNotReady
from service.serving.model import MCDropoutModel, load_model
from service.serving.paths import check_folder, fingerprint

log = logging.getLogger("mcdrop.registry")


@dataclass
class ModelEntry:
    """One model folder: loaded and ready, or not ready with the reason."""

    name: str
    folder: Path
    model: MCDropoutModel | None = None
    manifest: Manifest | None = None  # kept when the manifest reads but the model does not load
    reason: str | None = None
    reload_error: str | None = None  # the last reload of a changed folder failed; still serving
    fingerprint: tuple[tuple[str, int, int], ...] = field(default=(), repr=False)
    # The calibration watch's reference scores; a model without them (or with a damaged file)
    # still serves, and the watch says why it is unavailable.
    reference: ReferenceScores | None = field(default=None, repr=False)
    reference_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.model is not None


class ModelRegistry:
    """Name → model entry. Loading happens once, in `load_all`; lookups never load."""

    def __init__(
        self,
        model_dir: str | Path,
        default_model: str | None = None,
        runtime: EngineRuntime | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self._default = default_model
        self.runtime = runtime or EngineRuntime()  # every model's engine is built under it
        self.entries: dict[str, ModelEntry] = {}
        self.loaded = False  # true once load_all has finished, whatever the outcome per model
        self.error: str | None = None  # why nothing could be scanned (missing directory)
        self._reload_lock = threading.Lock()  # one scan at a time (SIGHUP and HTTP may race)

    def discover(self) -> list[Path]:
        """Model folders under model_dir, sorted by name; raises ValueError when there is no dir."""
        if not self.model_dir.is_dir():
            raise ValueError(f"model directory '{self.model_dir}' does not exist")
        mistake = model_folder_given(self.model_dir)
        if mistake:
            raise ValueError(mistake)
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
        """Load every model folder; one failure never stops the others.

        A missing directory leaves the registry loaded but empty (not ready, `error` says why);
        a default model that is not there is a configuration mistake and raises ValueError.
        """
        try:
            folders = self.discover()
        except ValueError as e:
            self.error = str(e)
            log.error("no models served: %s", e)
            self.loaded = True
            return
        if self._default is not None and self._default not in {p.name for p in folders}:
            raise ValueError(
                f"default model '{self._default}' is not a folder under '{self.model_dir}'"
            )
        start_runtime(self.runtime)
        with self._reload_lock:
            self.entries = {f.name: self._load_one(f) for f in folders}
            self.error = None
        self.loaded = True

    def reload(self) -> dict[str, list[str]]:
        """Rescan the directory: load new and changed folders, drop removed ones, swap at once.

        Returns the names by outcome: loaded, unchanged, failed (a previous version may still
        serve), removed. Raises ValueError when the directory is gone; nothing changes then.
        """
        with self._reload_lock:
            folders = self.discover()
            report: dict[str, list[str]] = {"loaded": [], "unchanged": [], "failed": []}
            fresh: dict[str, ModelEntry] = {}
            for folder in folders:
                old = self.entries.get(folder.name)
                if old is not None and old.fingerprint == _fingerprint(folder):
                    fresh[folder.name] = old
                    report["unchanged"].append(folder.name)
                    continue
                new = self._load_one(folder)
                if new.ready or old is None or not old.ready:
                    fresh[folder.name] = new
                    report["loaded" if new.ready else "failed"].append(folder.name)
                else:  # keep the working version; its old fingerprint makes the next scan retry
                    fresh[folder.name] = replace(old, reload_error=new.reason)
                    report["failed"].append(folder.name)
            report["removed"] = sorted(set(self.entries) - set(fresh))
            self.entries = fresh  # the atomic swap: one reference assignment
            self.error = None
            self.loaded = True
        log.info("reload: %s", {k: v for k, v in report.items() if v})
        return report

    def _load_one(self, folder: Path) -> ModelEntry:
        entry = ModelEntry(name=folder.name, folder=folder, fingerprint=_fingerprint(folder))
        try:
            check_folder(self.model_dir, folder)
        except (ArtifactError, OSError) as e:  # read nothing from it, not even the manifest
            entry.reason = f"{type(e).__name__}: {e}"
            log.error("model '%s' is not ready: %s", folder.name, entry.reason)
            return entry
        try:
            model = load_model(folder, runtime=self.runtime)
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
        try:
            entry.reference = load_reference(folder, model.manifest)
        except ArtifactError as e:
            entry.reference_error = str(e)
            log.error("model '%s' serves without its calibration watch: %s", folder.name, e)
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

    def not_ready_reason(self) -> str | None:
        """Why no model serves, or None when one does."""
        if not self.loaded:
            return "models are still loading"
        if self.error:
            return self.error
        if not self.entries:
            return f"no model folders under '{self.model_dir}' (each holds a {MANIFEST_NAME})"
        if not self.any_ready():
            return f"none of the {len(self.entries)} model folders loaded; each says why"
        return None

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


def model_folder_given(model_dir: Path) -> str | None:
    """A message when the model directory is itself one model's folder, naming its parent."""
    if not (model_dir / MANIFEST_NAME).is_file():
        return None
    parent = (
        model_dir.parent if model_dir.name not in ("", ".", "..") else model_dir.resolve().parent
    )
    return (
        f"'{model_dir}' is one model's folder (it holds {MANIFEST_NAME}); the model directory is "
        f"the folder above it: use --model-dir {parent} (MCDROP_MODEL_DIR={parent})"
    )


def _fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    try:
        return fingerprint(folder)
    except OSError:  # vanished or unreadable: never equal to a loaded folder's
        return (("?", -1, -1),)


def _clip(text: str, limit: int = 64) -> str:
    """Never echo a long string back: names in errors are cut to a readable length."""
    return text if len(text) <= limit else text[:limit] + "…"
