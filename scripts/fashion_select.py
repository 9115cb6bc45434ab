"""Choose the shipped Fashion-MNIST model's recipe on validation rows, never the test set.

PYTHONPATH=. python scripts/fashion_select.py build/data/fashion-train.npz \
    bench/results/fashion-mnist/selection.json

Each candidate (dropout rate, prior length-scale) trains on 90% of fashion-train.npz and is
scored after every epoch on the other 10% (seed 0): NLL and accuracy of the MC dropout
predictive (T = 20) and of standard dropout. Training stops 3 epochs after the best MC NLL
(at most 30 epochs). The chosen point is the lowest MC validation NLL over every candidate
and epoch; its rate, length-scale and epoch count are then used to train on all 55,000 rows.
Candidates already in the output file are kept, so a stopped search resumes where it was.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

CANDIDATES = [  # (dropout rate after every layer, prior length-scale)
    (0.25, 0.01),
    (0.1, 0.01),
    (0.1, 3.0),
    (0.25, 3.0),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=3)
    args = ap.parse_args()

    from service.artifacts.data import read_dataset
    from service.training.train import TrainConfig, train

    out = Path(args.out)
    doc: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"candidates": []}
    done = {(c["dropout"], c["length_scale"]) for c in doc["candidates"]}
    ds = read_dataset(args.data)
    for rate, scale in CANDIDATES:
        if (rate, scale) in done:
            continue
        cfg = TrainConfig(
            task="classification", name="select", arch="convnet", conv_channels=[16, 32],
            hidden=128, layers=2, dropout=rate, length_scale=scale, epochs=args.max_epochs,
            batch_size=128, seed=0, val_fraction=0.1, input_scale=1 / 255,
            early_stopping=args.patience, val_samples=20,
        )  # fmt: skip
        start = time.monotonic()
        res = train(ds, cfg, None, progress=False)
        tr = res.manifest.training
        doc["candidates"].append({
            "dropout": rate, "length_scale": scale, "weight_decay": tr["weight_decay"],
            "best_epoch": tr["best_epoch"], "history": tr["history"],
            "wall_seconds": round(time.monotonic() - start),
        })  # fmt: skip
        _choose(doc, args)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
        best = min(tr["history"], key=lambda h: h["mc_nll"])
        print(f"dropout {rate} length-scale {scale}: {json.dumps(best)}", flush=True)


def _choose(doc: dict[str, Any], args: argparse.Namespace) -> None:
    points = [(h["mc_nll"], c, h) for c in doc["candidates"] for h in c["history"]]
    _, c, h = min(points, key=lambda p: p[0])
    doc["protocol"] = {
        "data": args.data, "validation": "10% of the rows (seed 0), the other 90% train",
        "mc_samples": 20, "max_epochs": args.max_epochs, "patience": args.patience,
        "criterion": "lowest MC dropout validation NLL over every candidate and epoch",
        "fixed": "convnet, channels 16 32, hidden 128, Adam lr 1e-3, batch 128, seed 0",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    doc["chosen"] = {"dropout": c["dropout"], "length_scale": c["length_scale"], **h}


if __name__ == "__main__":
    main()
