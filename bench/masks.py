"""Cost of drawing and applying Bernoulli masks, per mask element, for candidate generators.

Every variant fills the keep decisions of the same 2^18 elements (one 512 KiB block of 64-bit
words, four 16-bit lanes each, compared with an integer threshold) and multiplies them into a
float32 activation, as the CPU engine does; variants run interleaved, medians reported, and
each as a ratio to the counter-hash rule the engine uses (this machine is noisy).

    python bench/masks.py [--reps 15]

  pcg-stream   PCG64DXSM words read in order from a positioned stream (fast, but a position
               is an offset in one stream per (seed, site): not a function of (row, sample))
  philox       numpy's Philox4x64 (counter-based, jumpable with `advance`)
  sfc64        numpy's SFC64 (sequential only)
  splitmix     the engine's rule: SplitMix64's finaliser over a counter, numpy (masks.py)
  fmix-1mul    a weaker one-multiply finaliser (for scale)
  torch-ops    the same rule in torch int64 ops on the CPU (torch_masks.py)
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from service.engines import masks, torch_masks

ROOT = Path(__file__).resolve().parent.parent
ROWS, ELEMENTS = 256, 1024  # one block: 256 stacked rows of a 1024-wide site
LANES = ROWS * ELEMENTS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "masks.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    thr = masks.keep_threshold(0.9)
    h = np.ones((ROWS, ELEMENTS), np.float32)
    keep = np.empty((ROWS, ELEMENTS), np.bool_)
    words = LANES // 4
    rows = masks.make_rows(1, np.arange(ROWS) % 32, np.arange(ROWS) // 32)

    def apply_words(raw: np.ndarray) -> None:
        np.less(raw.view(np.uint16).reshape(ROWS, ELEMENTS), thr, out=keep)
        np.multiply(h, keep, out=h)

    pcg, philox, sfc = np.random.PCG64DXSM(1), np.random.Philox(1), np.random.SFC64(1)
    x, tmp = np.empty(words, np.uint64), np.empty(words, np.uint64)
    offsets = np.arange(words, dtype=np.uint64) * np.uint64(masks.GAMMA)

    def fmix_one() -> None:
        np.add(offsets, np.uint64(12345), out=x)
        np.right_shift(x, np.uint64(32), out=tmp)
        np.bitwise_xor(x, tmp, out=x)
        np.multiply(x, np.uint64(masks.MIX1), out=x)
        np.right_shift(x, np.uint64(29), out=tmp)
        np.bitwise_xor(x, tmp, out=x)
        apply_words(x)

    bases = torch_masks.bases_tensor(rows.bases(0, ELEMENTS // 4), "cpu")
    ht = torch.from_numpy(h)

    def torch_ops() -> None:
        ht.mul_(torch_masks.keep_mask(bases, ELEMENTS, 0.9, torch.float32))

    variants: dict[str, Callable[[], None]] = {
        "splitmix": lambda: masks.apply_keep(h, rows, 0, 0.9),
        "pcg-stream": lambda: apply_words(pcg.random_raw(words)),
        "philox": lambda: apply_words(philox.random_raw(words)),
        "sfc64": lambda: apply_words(sfc.random_raw(words)),
        "fmix-1mul": fmix_one,
        "torch-ops": torch_ops,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for f in variants.values():
        f()
    for rep in range(args.reps):
        for k in names[rep % len(names) :] + names[: rep % len(names)]:
            t = time.process_time()
            for _ in range(20):
                variants[k]()
            times[k].append((time.process_time() - t) / 20 / LANES)
    med = {k: float(np.median(v)) * 1e9 for k, v in times.items()}
    for k, ns in med.items():
        print(f"{k:11s} {ns:6.3f} ns/element   {ns / med['splitmix']:5.2f}x splitmix")
    Path(args.out).write_text(json.dumps({"ns_per_element": med}, indent=2) + "\n")


if __name__ == "__main__":
    main()
