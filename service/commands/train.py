"""`mcdrop train`: fit a dropout network on a CSV or NPZ and write a model folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "train", help="train a dropout network and write models/NAME (model.json + weights)"
    )
    p.add_argument("data", help="training data: .csv (with --target) or .npz with arrays x, y")
    p.add_argument(
        "--task",
        choices=["regression", "classification"],
        required=True,
        help="what the network predicts",
    )
    p.add_argument("--target", help="CSV target column name")
    p.add_argument("--name", help="model name (default: the --out folder's name)")
    p.add_argument("--out", required=True, help="output folder, e.g. models/diabetes")
    _network_options(p)
    _training_options(p)
    p.set_defaults(func=run)


def _network_options(p: argparse.ArgumentParser) -> None:
    """The network: architecture, widths, activation and dropout."""
    p.add_argument(
        "--arch",
        choices=["mlp", "convnet"],
        default="mlp",
        help="mlp for feature rows, convnet for images",
    )
    p.add_argument("--hidden", type=int, default=50, help="units per hidden layer")
    p.add_argument("--layers", type=int, default=2, help="hidden layers")
    p.add_argument(
        "--activation", choices=["relu", "tanh"], default="relu", help="hidden-layer activation"
    )
    p.add_argument(
        "--channels",
        type=int,
        nargs="+",
        default=[32, 64],
        help="convnet: output channels of each conv block",
    )
    p.add_argument("--dropout", type=float, default=0.1, help="drop rate of hidden layers")
    p.add_argument(
        "--input-dropout", type=float, help="drop rate of the input (default: --dropout)"
    )
    p.add_argument(
        "--noise",
        choices=["bernoulli", "gaussian"],
        default="bernoulli",
        help="dropout noise: bernoulli masks, or gaussian multiplicative noise of the same "
        "mean and variance",
    )


def _training_options(p: argparse.ArgumentParser) -> None:
    """The fit: epochs, optimiser, validation split, prior, input scaling."""
    p.add_argument("--epochs", type=int, default=100, help="passes over the training rows")
    p.add_argument("--batch-size", type=int, default=32, help="rows per optimiser step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, weights and masks")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of rows held out to fit tau and report validation figures",
    )
    p.add_argument("--length-scale", type=float, default=1e-2, help="prior length-scale l")
    p.add_argument(
        "--tau", type=float, help="model precision (regression; default: fitted on validation)"
    )
    p.add_argument(
        "--input-scale",
        type=float,
        default=1.0,
        help="multiply inputs first (e.g. 1/255 for 8-bit images)",
    )
    p.add_argument(
        "--image-zero",
        choices=["black", "white"],
        default="black",
        help="images: how the review page draws the value 0 (white for dark ink on paper)",
    )
    p.add_argument(
        "--early-stopping",
        type=int,
        metavar="PATIENCE",
        help="classification: after each epoch score the validation rows (needs --val-fraction "
        "> 0); stop after PATIENCE epochs without a lower MC dropout NLL and keep the best "
        "epoch's weights (the manifest records every epoch's figures)",
    )
    p.add_argument(
        "--val-samples",
        type=int,
        default=20,
        help="MC dropout samples per validation row for --early-stopping",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from service.artifacts.data import read_dataset
    from service.training.train import TrainConfig, summary, train

    out = Path(args.out)
    ds = read_dataset(args.data, args.target)
    cfg = TrainConfig(
        task=args.task,
        name=args.name or out.name,
        arch=args.arch,
        hidden=args.hidden,
        layers=args.layers,
        activation=args.activation,
        conv_channels=list(args.channels),
        dropout=args.dropout,
        input_dropout=args.input_dropout,
        noise=args.noise,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        val_fraction=args.val_fraction,
        length_scale=args.length_scale,
        tau=args.tau,
        input_scale=args.input_scale,
        image_zero=args.image_zero,
        early_stopping=args.early_stopping,
        val_samples=args.val_samples,
    )
    result = train(ds, cfg, out, progress=not args.quiet)
    print(json.dumps(summary(result), indent=2))
    return 0
