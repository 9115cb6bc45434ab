"""The onnxruntime MC engine: runs model.onnx, feeding it masks drawn by `masks.py`.

The graph takes the masks as inputs (see onnx_export.py), so the engine honours per-request
seeds exactly as the torch engine does: every mask is the same pure function of (seed, site,
request row, sample, element), so a batched or chunked job equals the lone one and, to float
rounding, the torch engine's samples for the same seed. No torch import here; onnxruntime's graph optimisations stay on
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

from service.artifact import Manifest
from service.engines import masks
from service.engines.base import SampleJob, Segment, chunk_rows, plan_chunks
from service.errors import ArtifactError

ONNX_NAME = "model.onnx"


_CACHE_CHUNK_BYTES = 4 * 2**20


@dataclass(frozen=True)
class _OnnxSite:
    site: int
    keep_prob: float
    noise: str
    shape: tuple[int, ...]

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape))


def _session_options(threads: int | None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    # Idle onnxruntime workers spin by default and slowed a neighbouring pool 2-3x (PERF-NOTES).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _first_line(e: Exception, limit: int = 200) -> str:
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
                path.read_bytes(), _session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # truncated or corrupt graph, external data, unknown operator
            raise ArtifactError(f"{path}: not a loadable ONNX graph ({_first_line(e)})") from e
        meta = self._session.get_modelmeta().custom_metadata_map
        if meta.get("mcdrop.weights_sha256") != manifest.weights.sha256:
            raise ArtifactError(
                f"{path}: exported from other weights than the manifest's; "
                f"re-run `mcdrop export-onnx {folder}`"
            )
        self._sites = [
            _OnnxSite(k, s["keep_prob"], s["noise"], tuple(s["shape"]))
            for k, s in enumerate(json.loads(meta["mcdrop.sites"]))
        ]
        bytes_per_row = int(meta["mcdrop.bytes_per_row"])
        # Masks are float32 here (4 bytes, where the torch engine holds 1-byte keep masks).
        bytes_per_row += 3 * sum(s.elements for s in self._sites)
        budget_rows = int(max_activation_mb * 2**20 // bytes_per_row)
        # As the torch engine does: also at most 4 MiB of the widest float32 mask per chunk, so
        # masks are drawn into memory that stays cached instead of fresh pages every chunk
        # (measured at (256, 30) on the reference MLP: 1.12-1.23x the torch engine's time with
        # whole-budget chunks).
        widest = max((site.elements for site in self._sites), default=1)
        cache_rows = _CACHE_CHUNK_BYTES // (4 * widest)
        self.max_rows = max(1, min(budget_rows, cache_rows))
        self._filler = masks.MaskFiller(threads or os.cpu_count() or 1)

    def sample_many(self, jobs: list[SampleJob]) -> list[NDArray[np.float32]]:
        x = np.ascontiguousarray(np.concatenate([j.x for j in jobs]), dtype=np.float32)
        first_row = np.cumsum([0] + [j.rows for j in jobs])
        outputs: list[NDArray[np.float32]] = []
        for chunk in plan_chunks([(j.rows, j.samples) for j in jobs], self.max_rows):
            rows = np.concatenate(
                [
                    np.tile(np.arange(first_row[s.job], first_row[s.job + 1]), s.t1 - s.t0)
                    for s in chunk
                ]
            ).astype(np.int64)
            feed: dict[str, NDArray[np.generic]] = {"x": x, "rows": rows}
            mask_rows = chunk_rows(chunk, jobs)
            for site in self._sites:
                feed[f"mask_{site.site}"] = self._draw(site, mask_rows)
            y = self._session.run(["y"], feed)[0]
            self._scatter(y, chunk, jobs, outputs)
        return outputs

    def _draw(self, site: _OnnxSite, rows: masks.MaskRows) -> NDArray[np.float32]:
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
            "x": np.ascontiguousarray(x, dtype=np.float32),
            "rows": np.arange(n, dtype=np.int64),
        }
        for site in self._sites:
            mean = site.keep_prob if site.noise == "bernoulli" else 1.0
            feed[f"mask_{site.site}"] = np.full((n, *site.shape), mean, np.float32)
        y: NDArray[np.float32] = self._session.run(["y"], feed)[0]
        return y


def load_onnx_engine(
    folder: Path, manifest: Manifest, max_activation_mb: float, threads: int | None = None
) -> OnnxEngine:
    return OnnxEngine(Path(folder) / ONNX_NAME, folder, manifest, max_activation_mb, threads)
