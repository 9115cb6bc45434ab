"""samples "auto" against a fixed max_samples run, side by side in one run (the machine is noisy).

For each model and max_samples, every request (chunks of --rows rows) runs both ways through
the serving path (Predictor + DirectRunner), interleaved, with the same seed. Reported:
- samples: mean samples_used / max_samples (target <= 0.25);
- agree: share of rows whose abstain decision matches the fixed max_samples run (target >= 0.99);
  `floor` is the same share between two fixed runs with different seeds, i.e. the MC noise of
  the fixed decision itself, which no sampler can beat;
- wall: median wall time of the adaptive run / the fixed run (target <= 0.40).

Data: the Fashion-MNIST test set when models/fashion-mnist exists (idx files under
../shared/data/fashion-mnist beside the repository, or --fashion-dir), else the shipped digits
model on scikit-learn's digits; always the diabetes regression model on scikit-learn's diabetes.
An explicit --fashion-dir without the idx files is an error.

    .venv/bin/python bench/adaptive.py [--max-samples 128 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.serving.predictor import Limits, Predictor, PredictParams
from service.serving.registry import ModelRegistry
from service.serving.runner import DirectRunner

REPO = Path(__file__).resolve().parent.parent


FASHION_DIR = REPO.parent / "shared" / "data" / "fashion-mnist"
FASHION_IMAGES = "t10k-images-idx3-ubyte.gz"


def fashion_images(fashion_dir: str | None) -> Path | None:
    """The Fashion-MNIST test images, or None (with a note) when the default folder lacks them."""
    images = Path(fashion_dir or FASHION_DIR) / FASHION_IMAGES
    if images.exists():
        return images
    if fashion_dir is not None:
        raise SystemExit(f"--fashion-dir {fashion_dir} lacks {FASHION_IMAGES} (the idx test set)")
    print(
        f"no {FASHION_IMAGES} under {FASHION_DIR}: using digits instead of Fashion-MNIST "
        "(pass --fashion-dir to point at the idx files)",
        file=sys.stderr,
    )
    return None


def datasets(models: Path, fashion_dir: str | None) -> list[tuple[str, np.ndarray]]:
    from sklearn import datasets as sk

    out = []
    images = fashion_images(fashion_dir) if (models / "fashion-mnist").is_dir() else None
    if images is not None:
        from service.artifacts.data import read_idx_pair

        out.append(("fashion-mnist", read_idx_pair(images).x))
    else:
        out.append(("digits", sk.load_digits().data))
    if (models / "diabetes").is_dir():
        out.append(("diabetes", sk.load_diabetes().data))
    return out


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    registry = ModelRegistry(args.model_dir)
    registry.load_all()
    predictor = Predictor(registry, DirectRunner(), Limits(max_sample_rows=10**8))
    await predictor.runner.start()
    results = []
    for name, x in datasets(Path(args.model_dir), args.fashion_dir):
        chunks = [x[i : i + args.rows].tolist() for i in range(0, len(x), args.rows)]
        for t_max in args.max_samples:
            used, agree, floor = [], [], []
            t_auto, t_fixed = [], []
            for rep in range(args.repeats):
                ta = tf = 0.0
                for k, rows in enumerate(chunks):
                    seed = 1000 * rep + k
                    t0 = time.perf_counter()
                    auto = PredictParams(
                        samples="auto", seed=seed, max_samples=t_max, confidence=args.confidence
                    )
                    a = (await predictor.infer(name, rows, auto)).result
                    t1 = time.perf_counter()
                    f = (await predictor.infer(name, rows, PredictParams(t_max, seed))).result
                    t2 = time.perf_counter()
                    ta, tf = ta + t1 - t0, tf + t2 - t1
                    if rep == 0:
                        g = (
                            await predictor.infer(name, rows, PredictParams(t_max, seed + 7))
                        ).result
                        assert a.adaptive is not None
                        used.append(a.adaptive.samples_used)
                        agree.append(a.abstain == f.abstain)
                        floor.append(g.abstain == f.abstain)
                t_auto.append(ta)
                t_fixed.append(tf)
            u = np.concatenate(used)
            row = {
                "model": name,
                "rows": len(x),
                "max_samples": t_max,
                "samples": float(u.mean() / t_max),
                "settled_early": float(np.mean(u < t_max)),
                "agree": float(np.concatenate(agree).mean()),
                "floor": float(np.concatenate(floor).mean()),
                "wall": float(np.median(t_auto) / np.median(t_fixed)),
            }
            print(
                f"{name:14s} T_max={t_max:5d}  samples {row['samples']:.3f} (<=0.25)  "
                f"agree {row['agree']:.4f} (>=0.99, floor {row['floor']:.4f})  "
                f"wall {row['wall']:.3f} (<=0.40)  settled early {row['settled_early']:.3f}",
                flush=True,
            )
            results.append(row)
    await predictor.runner.stop()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=str(REPO / "models"))
    ap.add_argument("--fashion-dir", default=None, help=f"default: {FASHION_DIR}")
    ap.add_argument("--max-samples", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--confidence", type=float, default=0.99)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "adaptive.json"))
    args = ap.parse_args()
    results = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
