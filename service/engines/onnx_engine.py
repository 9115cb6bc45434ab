"""The onnxruntime MC engine: runs model.onnx, feeding it masks drawn by `masks.py`.

The graph takes the masks as inputs (see onnx_export.py), so the engine honours per-request
seeds exactly as the torch engine does: every mask is the same pure function of (seed, site,
request row, sample, element), so a batched or chunked job equals the lone one and, to float
rounding, the torch engine's samples for the same seed. No torch import here; onnxruntime's graph
optimisations stay on
(there is no Dropout node for EliminateDropout to remove).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from service.artifacts.manifest import Manifest
from service.engines import masks
from service.engines.base import CACHE_CHUNK_BYTES, SampleJob, Segment, chunk_rows, plan_chunks
from service.engines.mask_filler import MaskFiller
from service.engines.runtime import EngineRuntime
from service.errors import ArtifactError

ONNX_NAME = "model.onnx"


@dataclass(frozen=True)
class OnnxSite:
    """A mask input `mask_{site}` of shape (rows, *shape), 0/1 or Gaussian noise."""

    site: int
    keep_prob: float
    noise: str
    shape: tuple[int, ...]

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape))


def session_options(threads: int | None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    # Idle onnxruntime workers spin by default and slow a neighbouring thread pool
    # (docs/performance.md).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def first_line(e: Exception, limit: int = 200) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:limit]


class OnnxEngine:
    """Engine protocol over an onnxruntime session of an exported model.onnx."""

    name = "onnx"
    device = "cpu"

    def __init__(
        self,
        path: Path,
        folder: Path,
        manifest: Manifest,
        max_activation_mb: float = 256.0,
        threads: int | None = None,
    ) -> None:
        path, folder = Path(path), Path(folder)
        # Only a graph inside the model folder is loaded (no path escapes through links).
        if path.resolve().parent != folder.resolve() or not path.name.startswith(ONNX_NAME):
            raise ArtifactError(f"{path}: ONNX graphs load only from {folder}/{ONNX_NAME}")
        if not path.is_file():
            raise ArtifactError(f"{path}: not found; run `mcdrop export-onnx {folder}` first")
        # From bytes, not a path: a session without a model path cannot resolve external data
        # files, so a graph whose tensors point elsewhere ("../../secret") fails to load.
        try:
            self._session = ort.InferenceSession(
                path.read_bytes(), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # truncated or corrupt graph, external data, unknown operator
            raise ArtifactError(f"{path}: not a loadable ONNX graph ({first_line(e)})") from e
        meta = self._session.get_modelmeta().custom_metadata_map
        if meta.get("mcdrop.weights_sha256") != manifest.weights.sha256:
            raise ArtifactError(
                f"{path}: exported from other weights than the manifest's; "
                f"re-run `mcdrop export-onnx {folder}`"
            )
        sites = [
            OnnxSite(k, s["keep_prob"], s["noise"], tuple(s["shape"]))
            for k, s in enumerate(json.loads(meta["mcdrop.sites"]))
        ]
        self._start(sites, int(meta["mcdrop.bytes_per_row"]), max_activation_mb, threads)

    # A graph may run its deterministic prefix as a session of its own: once per batch of
    # requests, where inside the graph it would run again for every chunk.
    _prefix: ort.InferenceSession | None = None
    _prefix_outputs: tuple[str, ...] = ()
    _suffix_takes_x = True
    _inputs: frozenset[str] | None = None  # the session's inputs, when not all are fed
    _applied: dict[int, tuple[str, str]] = {}  # noqa: RUF012  # never mutated: replaced

    @classmethod
    def from_session(
        cls,
        session: ort.InferenceSession,
        sites: list[OnnxSite],
        bytes_per_row: int,
        max_activation_mb: float = 256.0,
        threads: int | None = None,
        prefix: ort.InferenceSession | None = None,
        applied: dict[int, tuple[str, str]] | None = None,
    ) -> OnnxEngine:
        """An engine over sessions already built and checked (an imported graph's folder).

        With `prefix`, `session` takes the prefix's outputs (and `x` if it lists it) in place
        of the layers before the first dropout site. `applied` maps a site to (prefix output,
        session input): that site's mask is applied here, in place on the replicated rows,
        and the session takes the masked tensor.
        """
        engine = cls.__new__(cls)
        engine._session = session
        if prefix is not None:
            engine._prefix = prefix
            engine._prefix_outputs = tuple(o.name for o in prefix.get_outputs())
            engine._suffix_takes_x = "x" in {i.name for i in session.get_inputs()}
            engine._inputs = frozenset(i.name for i in session.get_inputs())
            engine._applied = dict(applied or {})
        if "CUDAExecutionProvider" in session.get_providers():
            engine.device = "cuda"
        engine._start(sites, bytes_per_row, max_activation_mb, threads)
        return engine

    def _start(
        self,
        sites: list[OnnxSite],
        bytes_per_row: int,
        max_activation_mb: float,
        threads: int | None,
    ) -> None:
        self._sites = sites
        # Masks are float32 here (4 bytes, where the torch engine holds 1-byte keep masks).
        bytes_per_row += 3 * sum(s.elements for s in self._sites)
        budget_rows = int(max_activation_mb * 2**20 // bytes_per_row)
        # As the torch engine does on the CPU: masks are drawn into memory that stays cached
        # instead of fresh pages every chunk (docs/performance.md).
        widest = max((site.elements for site in self._sites), default=1)
        cache_rows = CACHE_CHUNK_BYTES // (4 * widest)
        self.max_rows = max(1, min(budget_rows, cache_rows))
        self._filler = MaskFiller(threads or os.cpu_count() or 1)

    def _per_row(self, x: NDArray[np.float32]) -> dict[str, NDArray[np.generic]]:
        """The graph's inputs that hold one row per input row: x, or the prefix's outputs."""
        if self._prefix is None:
            return {"x": x}
        values = self._prefix.run(list(self._prefix_outputs), {"x": x})
        feed: dict[str, NDArray[np.generic]] = dict(zip(self._prefix_outputs, values, strict=True))
        if self._suffix_takes_x:
            feed["x"] = x
        return feed

    def sample_many(self, jobs: list[SampleJob]) -> list[NDArray[np.float32]]:
        x = np.ascontiguousarray(np.concatenate([j.x for j in jobs]), dtype=np.float32)
        per_row = self._per_row(x)
        first_row = np.cumsum([0] + [j.rows for j in jobs])
        outputs: list[NDArray[np.float32]] = []
        for chunk in plan_chunks([(j.rows, j.samples) for j in jobs], self.max_rows):
            rows = np.concatenate(
                [
                    np.tile(np.arange(first_row[s.job], first_row[s.job + 1]), s.t1 - s.t0)
                    for s in chunk
                ]
            ).astype(np.int64)
            feed: dict[str, NDArray[np.generic]] = {**per_row, "rows": rows}
            mask_rows = chunk_rows(chunk, jobs)
            for site in self._sites:
                entered = self._applied.get(site.site)
                if entered is None:
                    feed[f"mask_{site.site}"] = self._draw(site, mask_rows)
                    continue
                source, masked = entered
                h = np.take(per_row[source], rows, axis=0)
                flat = h.reshape(len(rows), -1)
                self._filler.apply(flat, mask_rows, site.site, site.keep_prob)
                feed[masked] = h
            if self._inputs is not None:
                feed = {k: v for k, v in feed.items() if k in self._inputs}
            y = self._session.run(["y"], feed)[0]
            self._scatter(y, chunk, jobs, outputs)
        return outputs

    def _draw(self, site: OnnxSite, rows: masks.MaskRows) -> NDArray[np.float32]:
        if site.noise == "bernoulli":
            keep = np.empty((len(rows), site.elements), np.bool_)
            self._filler.fill(keep, rows, site.site, site.keep_prob)
            mask = keep.view(np.uint8).astype(np.float32)
        else:
            mask = masks.gaussian_noise(rows, site.site, site.elements, site.keep_prob)
        return mask.reshape(len(rows), *site.shape)

    @staticmethod
    def _scatter(
        y: NDArray[np.float32],
        chunk: list[Segment],
        jobs: list[SampleJob],
        outputs: list[NDArray[np.float32]],
    ) -> None:
        if not outputs:
            outputs.extend(np.empty((j.samples, j.rows, y.shape[1]), np.float32) for j in jobs)
        start = 0
        for s in chunk:
            n = jobs[s.job].rows
            stop = start + (s.t1 - s.t0) * n
            outputs[s.job][s.t0 : s.t1] = y[start:stop].reshape(s.t1 - s.t0, n, -1)
            start = stop

    def deterministic(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Weight scaling: every mask at its mean (keep_prob, since 1/keep is folded; or 1)."""
        n = x.shape[0]
        feed: dict[str, NDArray[np.generic]] = {
            **self._per_row(np.ascontiguousarray(x, dtype=np.float32)),
            "rows": np.arange(n, dtype=np.int64),
        }
        for site in self._sites:
            mean = site.keep_prob if site.noise == "bernoulli" else 1.0
            entered = self._applied.get(site.site)
            if entered is not None:
                feed[entered[1]] = np.asarray(feed[entered[0]], np.float32) * np.float32(mean)
            else:
                feed[f"mask_{site.site}"] = np.full((n, *site.shape), mean, np.float32)
        if self._inputs is not None:
            feed = {k: v for k, v in feed.items() if k in self._inputs}
        y: NDArray[np.float32] = self._session.run(["y"], feed)[0]
        return y


def load_onnx_engine(folder: Path, manifest: Manifest, runtime: EngineRuntime) -> OnnxEngine:
    """The folder's model.onnx on the CPU, with the runtime's memory budget and threads."""
    path = Path(folder) / ONNX_NAME
    return OnnxEngine(path, folder, manifest, runtime.max_activation_mb, runtime.session_threads)
