"""Paired difference of two tuned UCI runs, split by split: what one change did.

    .venv/bin/python bench/uci/paired.py BEFORE.json AFTER.json

Both files are `mcdrop bench uci --protocol tuned` results. For every dataset in both, the test
RMSE and LL of the same split are subtracted (after - before) and the mean difference is printed
with its standard error over splits. Pairing removes the split-to-split spread, which is far
larger than most protocol changes: a difference of two standard errors is a real one.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any


def by_split(result: dict[str, Any]) -> dict[str, dict[int, dict[str, float]]]:
    """{dataset: {split: split record}} of one results file."""
    return {d["dataset"]: {int(s["split"]): s for s in d["splits"]} for d in result["datasets"]}


def mean_and_se(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0] if values else math.nan), math.nan
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def paired(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Per shared dataset: splits paired, and mean ± SE of after - before for RMSE and LL."""
    a, b = by_split(before), by_split(after)
    rows = []
    for name in sorted(a.keys() & b.keys()):
        splits = sorted(a[name].keys() & b[name].keys())
        row: dict[str, Any] = {"dataset": name, "splits": len(splits)}
        for metric in ("rmse_tuned", "ll_tuned"):
            diffs = [b[name][s][metric] - a[name][s][metric] for s in splits]
            row[metric] = mean_and_se(diffs)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    args = p.parse_args()
    try:
        before, after = (json.loads(f.read_text()) for f in (args.before, args.after))
    except (OSError, json.JSONDecodeError) as e:
        p.error(f"expected two results files of `mcdrop bench uci --protocol tuned`: {e}")
    print("after - before, mean ± standard error over paired splits")
    cb, ca = before.get("config", {}), after.get("config", {})
    changed = {k: (cb.get(k), ca.get(k)) for k in cb.keys() | ca.keys() if cb.get(k) != ca.get(k)}
    print(f"config changed (before, after): {changed}")
    print("| dataset | splits | RMSE | LL |")
    print("|---|---|---|---|")
    for row in paired(before, after):
        (dr, sr), (dl, sl) = row["rmse_tuned"], row["ll_tuned"]
        rmse, ll = f"{dr:+.4f} ± {sr:.4f}", f"{dl:+.4f} ± {sl:.4f}"
        print(f"| {row['dataset']} | {row['splits']} | {rmse} | {ll} |")


if __name__ == "__main__":
    main()
