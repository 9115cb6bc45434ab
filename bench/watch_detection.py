"""How many rows the calibration watch needs to flag out-of-distribution traffic.

    .venv/bin/python bench/watch_detection.py [--data build/data] [--limit 300] [--streams 100]

Reads the OOD sets scripts/ood_sets.py writes (ood-digits, ood-rotated, ood-inverted, ood-noise)
and scores `--limit` images of each with the shipped Fashion-MNIST model at the reference's T.
Per set and per OOD share (100% and a 30% mix with held-out rows), `--streams` seeded streams:
a random 4,000 of the model's 5,000 stored held-out scores are the reference, live rows are
OOD with that probability, else the other 1,000 held-out scores in shuffled order (cycled).
Prints the median and 90th percentile of rows fed until the alarm (alpha = 0.01, one row per
request). Writes bench/results/fashion-mnist/watch_detection.json (or --out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from service.artifacts.data import Dataset, read_dataset
from service.artifacts.manifest import read_manifest
from service.artifacts.reference import load_reference
from service.evaluation.heldout import score_mc
from service.maths.exchangeability import ExchangeabilityTest
from service.serving.model import load_model

ROOT = Path(__file__).resolve().parent.parent
FASHION = ROOT / "models" / "fashion-mnist"
OUT = ROOT / "bench" / "results" / "fashion-mnist" / "watch_detection.json"
SETS = ("ood-digits", "ood-rotated", "ood-inverted", "ood-noise")
MAX_ROWS = 5000


def rows_to_alarm(scores: np.ndarray, ref: Any, ood: np.ndarray, share: float, seed: int) -> int:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(scores)
    test = ExchangeabilityTest(perm[:4000], ref.threshold, ref.referral_rate, 0.01, seed=seed)
    held_out = iter(np.resize(perm[4000:], MAX_ROWS).tolist())
    for row in range(1, MAX_ROWS + 1):
        s = float(rng.choice(ood)) if rng.random() < share else next(held_out)
        if test.observe(s):
            return row
    return MAX_ROWS + 1  # not detected within MAX_ROWS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="build/data")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    ref = load_reference(FASHION, read_manifest(FASHION))
    if ref is None:
        raise SystemExit(f"{FASHION}: no reference scores; run `mcdrop calibrate` first")
    model = load_model(FASHION, device="cpu")
    results: dict[str, Any] = {"alpha": 0.01, "streams": args.streams, "limit": args.limit}
    print("| OOD set | share | median rows to alarm | 90th percentile | undetected |")
    print("|---|---:|---:|---:|---:|")
    for name in SETS:
        path = Path(args.data) / f"{name}.npz"
        if not path.is_file():
            raise SystemExit(f"{path}: missing; run scripts/ood_sets.py (see its docstring)")
        full = read_dataset(path)
        ds = Dataset(full.x[: args.limit], np.asarray(full.y)[: args.limit])
        ood = score_mc(model, ds, ref.samples, seed=0).uncertainty[ref.metric]
        for share in (1.0, 0.3):
            rows = [rows_to_alarm(ref.scores, ref, ood, share, s) for s in range(args.streams)]
            med, p90 = float(np.median(rows)), float(np.percentile(rows, 90))
            missed = sum(r > MAX_ROWS for r in rows)
            results[f"{name}@{share:g}"] = {"median": med, "p90": p90, "undetected": missed}
            print(f"| {name} | {share:.0%} | {med:g} | {p90:g} | {missed} |", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
