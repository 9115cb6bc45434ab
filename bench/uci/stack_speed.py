"""Training G small dropout MLPs: one at a time (autograd nn.Sequential, and the stacked code
with G=1) against one stack of G, interleaved in one run; prints CPU seconds and ratios.

    .venv/bin/python bench/uci/stack_speed.py [--models 48] [--rows 742] [--epochs 3]

CPU time (time.process_time) rather than wall time: the 2-core machine is shared and wall time
mostly measures the neighbours. One torch thread, as the benchmark runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from service.training.stacked import StackData, StackedMLP, train_stacked


def plain_loop(x: torch.Tensor, y: torch.Tensor, g: int, epochs: int, batch: int) -> None:
    for _ in range(g):
        net = nn.Sequential(
            nn.Dropout(0.05),
            nn.Linear(x.shape[1], 50),
            nn.ReLU(),
            nn.Dropout(0.05),
            nn.Linear(50, 1),
        )
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
        for _ in range(epochs):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), batch):
                idx = perm[i : i + batch]
                loss = ((net(x[idx]) - y[idx]) ** 2).mean() + 1e-6 * sum(
                    (w**2).sum() for w in weights
                )
                opt.zero_grad()
                loss.backward()
                opt.step()


def stacked(
    x: torch.Tensor, y: torch.Tensor, g: int, epochs: int, batch: int, per_call: int
) -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(g // per_call):
        keep = torch.full((per_call,), 0.95)
        m = StackedMLP.glorot(keep, x.shape[1], 50, 1, gen)
        data = StackData(x[None], y[None], torch.zeros(per_call, dtype=torch.long))
        train_stacked(m, data, torch.full((per_call,), 1e-6), epochs, gen, batch_size=batch)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, default=48)
    p.add_argument("--rows", type=int, default=742)  # concrete's 80% fit rows
    p.add_argument("--features", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    x, y = torch.randn(a.rows, a.features), torch.randn(a.rows, 1)
    variants = {
        "plain nn.Sequential loop": lambda: plain_loop(x, y, a.models, a.epochs, a.batch),
        "stacked code, G=1 loop": lambda: stacked(x, y, a.models, a.epochs, a.batch, 1),
        f"one stack of G={a.models}": lambda: stacked(x, y, a.models, a.epochs, a.batch, a.models),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(a.repeats):  # interleaved, so drifts in machine load hit every variant
        for name, fn in variants.items():
            t0 = time.process_time()
            fn()
            times[name].append(time.process_time() - t0)
    rows = a.models * a.rows * a.epochs
    base = statistics.median(times["plain nn.Sequential loop"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"{name:28s} {med:7.2f} s CPU  "
            f"{rows / med / 1e3:8.0f}k row-passes/s  x{base / med:5.1f}"
        )


if __name__ == "__main__":
    main()
