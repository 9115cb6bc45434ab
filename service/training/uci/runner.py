"""Run the protocol over datasets, in worker processes if asked, and write the JSON."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from service.training.uci import tuned_report
from service.training.uci.data import load_dataset
from service.training.uci.protocol import ProtocolConfig, run_dataset
from service.training.uci.report import machine, passes, table
from service.training.uci.tuned import TunedConfig, run_tuned

# Smallest first: a run cut short still has finished datasets in its JSON, and the two longest
# (naval, protein) end up running side by side with --jobs 2.
_COST_ORDER = (
    "yacht",
    "bostonHousing",
    "energy",
    "concrete",
    "wine-quality-red",
    "kin8nm",
    "power-plant",
    "naval-propulsion-plant",
    "protein-tertiary-structure",
)


def _one(
    root: str, name: str, max_splits: int | None, cfg: ProtocolConfig | TunedConfig, threads: int
) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    ds = load_dataset(Path(root), name, max_splits)
    result = run_tuned(ds, cfg) if isinstance(cfg, TunedConfig) else run_dataset(ds, cfg)
    print(f"[uci] {name}: done in {time.perf_counter() - t0:.0f}s", flush=True)
    return result


def run_benchmark(
    root: Path,
    datasets: list[str],
    cfg: ProtocolConfig | TunedConfig,
    max_splits: int | None = None,
    jobs: int = 1,
    threads: int = 1,
    out: Path | None = None,
    command: str = "",
) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    header = {
        "command": command,
        "started_utc": started.isoformat(timespec="seconds"),
        "jobs": jobs,
        "machine": {**machine(), "load_average_at_start": list(os.getloadavg())},
        "config": asdict(cfg),
        "max_splits": max_splits,
    }
    order = sorted(datasets, key=lambda n: _COST_ORDER.index(n) if n in _COST_ORDER else -1)
    by_name: dict[str, dict[str, Any]] = {}

    def write(final: bool) -> dict[str, Any]:
        report = _report(header, cfg, datasets, by_name, final, time.perf_counter() - t0)
        if out is not None:  # rewritten after every dataset, so a cut-short run keeps its part
            _save(report, out)
        return report

    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_one, str(root), n, max_splits, cfg, threads): n for n in order}
            for f in as_completed(futures):
                by_name[futures[f]] = f.result()
                write(final=False)
    else:
        for n in order:
            by_name[n] = _one(str(root), n, max_splits, cfg, threads)
            write(final=False)
    report = write(final=True)
    results = [by_name[n] for n in datasets]
    report["table"] = (
        tuned_report.table(results) if isinstance(cfg, TunedConfig) else table(results)
    )
    return report


def _report(
    header: dict[str, Any],
    cfg: ProtocolConfig | TunedConfig,
    datasets: list[str],
    by_name: dict[str, dict[str, Any]],
    final: bool,
    wall_time_s: float,
) -> dict[str, Any]:
    """The JSON so far: the run's header, each finished dataset, and how it compares."""
    results = [by_name[n] for n in datasets if n in by_name]
    tuned = isinstance(cfg, TunedConfig)
    protocol = (
        "tuned protocol (mcdrop tune's search per split)"
        if tuned
        else "(Gal & Ghahramani 2016, Table 1 protocol)"
    )
    comparisons: dict[str, Any]
    if tuned:
        verdicts = {r["dataset"]: tuned_report.compare(r["dataset"], r["summary"]) for r in results}
        comparisons = {
            "comparisons": verdicts,
            "counts": tuned_report.counts(verdicts),
            "datasets_run": [r["dataset"] for r in results],
            "datasets_not_run": [n for n in datasets if n not in by_name],
        }
    else:
        comparisons = {
            "targets_10x": {r["dataset"]: passes(r["dataset"], r["summary"]) for r in results}
        }
    return {
        "benchmark": "UCI regression, MC dropout, " + protocol,
        "command": header["command"],
        "complete": final,
        "started_utc": header["started_utc"],
        "wall_time_s": wall_time_s,
        **{k: header[k] for k in ("jobs", "machine", "config", "max_splits")},
        **comparisons,
        "datasets": results,
    }


def _save(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out)
