"""Where one MC pass spends its time, step by step, beside the mask-free chain's steps.

    .venv/bin/python bench/pass_breakdown.py [N T]      # default 1 100, the reference MLP (Q=64)

Runs inside the engine's torch thread with no hand-off per call (perf.py's part a pays one per
call, for the pass and the chain alike), mirrors TorchEngine._sample_many step by step, and
prints the mean milliseconds of each step over 40 runs: the masks ("maskK", drawn and applied in
place), the matrix products ("linearK") and ReLUs, and the chain's own steps ("c...").
A diagnostic: it reads the engine's private structure, so it may need updating with it.
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf import reference_mlp

from service.engines.base import SampleJob, chunk_rows, plan_chunks
from service.engines.nets import MCDropout
from service.engines.runtime import EngineRuntime
from service.engines.torch_engine import TorchEngine
from service.engines.torch_runtime import apply_thread_settings


def main() -> None:
    n, t = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (1, 100)
    cpu = EngineRuntime(device="cpu")
    apply_thread_settings(cpu)
    net = reference_mlp(64)
    eng: TorchEngine = cpu.calls.run(TorchEngine, net, [64], cpu)
    plain = nn.Sequential(*[m for m in net if not isinstance(m, MCDropout)]).eval()
    x = np.random.default_rng(0).standard_normal((n, 64)).astype(np.float32)
    stacked = torch.from_numpy(np.tile(x, (t, 1)))
    acc: dict[str, float] = collections.defaultdict(float)

    def tick(key: str, since: float) -> float:
        now = time.perf_counter()
        acc[key] += now - since
        return now

    def mc(seed: int) -> None:
        jobs = [SampleJob(x, t, seed=seed)]
        with torch.inference_mode():
            t0 = start = time.perf_counter()
            pre = eng.prefix(torch.as_tensor(x))
            for chunk in plan_chunks([(n, t)], eng.max_rows):
                rows = chunk_rows(chunk, jobs)
                noise = eng.mask_strategy.draw(rows)
                h = eng._first_site(chunk, jobs, pre)
                t0 = tick("replicate", t0)
                for i, mod in enumerate(eng.body):
                    site = eng.sites.get(i)
                    if site is not None:
                        h = eng.mask_strategy.apply(h, site, rows, noise[site.site])
                        t0 = tick(f"mask{site.site}", t0)
                    elif isinstance(mod, nn.ReLU):
                        h.relu_()
                        t0 = tick("relu", t0)
                    else:
                        h = mod(h)
                        t0 = tick(f"linear{i}", t0)
                h.float().numpy()
            tick("total", start)

    def chain() -> None:
        with torch.inference_mode():
            t0 = start = time.perf_counter()
            h = stacked
            for i, mod in enumerate(plain):
                h = mod(h)
                t0 = tick(f"c{type(mod).__name__}{i}", t0)
            tick("ctotal", start)

    def run() -> dict[str, float]:
        for i in range(5):
            mc(i)
            chain()
        acc.clear()
        reps = 40
        for i in range(reps):
            mc(100 + i)
            chain()
        return {k: v / reps * 1e3 for k, v in acc.items()}

    res = cpu.calls.run(run)
    print(f"N={n} T={t}, {torch.get_num_threads()} threads; ms per pass:")
    for k, v in res.items():
        print(f"  {k:<14} {v:8.3f}")
    print(f"  ratio total / ctotal: {res['total'] / res['ctotal']:.3f}")


if __name__ == "__main__":
    main()
