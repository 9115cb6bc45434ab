"""`mcdrop tune`: train a regression network with its dropout rate, tau and epochs chosen on
validation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "tune",
        help="search dropout rate, tau and epochs by validation likelihood; write the best model",
    )
    p.add_argument("data", help="training data: .csv (with --target) or .npz with arrays x, y")
    p.add_argument(
        "--task",
        choices=["regression"],
        required=True,
        help="regression only: classification has no tau to tune",
    )
    p.add_argument("--target", help="CSV target column name")
    p.add_argument("--name", help="model name (default: the --out folder's name)")
    p.add_argument("--out", required=True, help="output folder, e.g. models/houses")
    _training_options(p)
    _search_options(p)
    p.set_defaults(func=run)


def _training_options(p: argparse.ArgumentParser) -> None:
    """The network and its fit."""
    p.add_argument("--hidden", type=int, default=50, help="units of the hidden layer")
    p.add_argument(
        "--layers",
        type=int,
        choices=[1],
        default=1,
        help="hidden layers: the search trains one-hidden-layer networks side by side",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=200,
        help="epoch cap; early stopping chooses the count below it",
    )
    p.add_argument(
        "--no-early-stopping",
        action="store_true",
        help="train every candidate for exactly --epochs",
    )
    p.add_argument("--batch-size", type=int, default=32, help="rows per gradient step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, weights and masks")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="rows held out to judge candidates (never trained on unless --refit)",
    )
    p.add_argument("--length-scale", type=float, default=1e-2, help="prior length-scale l")
    p.add_argument("--input-scale", type=float, default=1.0, help="multiply inputs first")


def _search_options(p: argparse.ArgumentParser) -> None:
    """The search: its budget, starting grid, validation scoring and threads."""
    p.add_argument("--budget", type=int, default=8, help="networks trained in the whole search")
    p.add_argument(
        "--dropout-start",
        type=float,
        nargs="+",
        default=[0.005, 0.02, 0.08, 0.3],
        help="first dropout rates tried; the grid widens and refines from there",
    )
    p.add_argument(
        "--tau-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="first tau bracket in the target's units (default: noise between 3%% "
        "and 100%% of the target's std); it widens when an edge wins",
    )
    p.add_argument("--val-samples", type=int, default=200, help="MC passes per validation score")
    p.add_argument("--checkpoints", type=int, default=8, help="validation points over the epochs")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (stacks of small networks run best on one)",
    )
    p.add_argument(
        "--refit",
        action="store_true",
        help="train the chosen settings again on all rows (tau as validated)",
    )


def run(args: argparse.Namespace) -> int:
    from service.artifacts.data import read_dataset
    from service.training.tuning.tune import TuneConfig, set_threads, summary, tune

    set_threads(args.threads)
    out = Path(args.out)
    ds = read_dataset(args.data, args.target)
    cfg = TuneConfig(
        name=args.name or out.name,
        hidden=args.hidden,
        epochs=args.epochs,
        early_stopping=not args.no_early_stopping,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        val_fraction=args.val_fraction,
        length_scale=args.length_scale,
        budget=args.budget,
        dropout_start=tuple(args.dropout_start),
        tau_range=tuple(args.tau_range) if args.tau_range else None,
        val_samples=args.val_samples,
        checkpoints=args.checkpoints,
        refit=args.refit,
        input_scale=args.input_scale,
    )
    result = tune(ds, cfg, out)
    print(json.dumps(summary(result), indent=2))
    return 0
