"""`mcdrop import-onnx FILE --out DIR --task ...`: serve an ONNX graph made elsewhere.

Every Dropout node becomes a sampled mask input; `--site TENSOR=RATE` adds one after a tensor.
The folder is written only once it loads and passes its checks (see service/training/packaging.py).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _site(text: str) -> tuple[str, float]:
    tensor, sep, rate = text.rpartition("=")
    try:
        value = float(rate)
    except ValueError:
        value = float("nan")
    if not sep or not tensor or not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"'{text}': expected TENSOR=RATE with a drop rate in (0, 1), e.g. fc1_out=0.2"
        )
    return tensor, value


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "import-onnx", help="serve an ONNX graph: its Dropout nodes become MC dropout masks"
    )
    p.add_argument("file", help="the .onnx file (PyTorch archives and pickles are refused)")
    p.add_argument("--out", required=True, help="model folder to write, e.g. models/mynet")
    p.add_argument(
        "--task",
        required=True,
        choices=["regression", "classification"],
        help="what the network predicts",
    )
    p.add_argument("--tau", type=float, help="regression: model precision in target units")
    p.add_argument("--output", help="the graph output to serve (when it has several)")
    p.add_argument(
        "--outputs",
        choices=["logits", "probabilities", "values"],
        help="what that output holds (default: logits for classifiers, values for regression)",
    )
    p.add_argument(
        "--site",
        type=_site,
        action="append",
        default=[],
        metavar="TENSOR=RATE",
        help="add a dropout site after TENSOR with drop rate RATE (repeatable; default: none)",
    )
    p.add_argument(
        "--heldout",
        help="labelled held-out data (.csv, .npz or idx): fits tau for regression "
        "without --tau, and sets the placeholder threshold",
    )
    p.add_argument("--target", dest="target_col", help="CSV target column of --heldout")
    p.add_argument("--class-labels", help="comma-separated class names")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from service.artifacts.data import read_dataset
    from service.training.packaging import import_onnx

    heldout = None
    if args.heldout:
        ds = read_dataset(args.heldout, args.target_col)
        heldout = (ds.x, ds.y)
    out = import_onnx(
        args.file,
        args.out,
        task=args.task,
        tau=args.tau,
        output=args.output,
        sites=dict(args.site),
        outputs=args.outputs,
        heldout=heldout,
        class_labels=args.class_labels.split(",") if args.class_labels else None,
        overwrite=args.force,
    )
    from service.artifacts.manifest import read_manifest

    m = read_manifest(out)
    sites = m.architecture.sites  # type: ignore[union-attr]
    print(
        json.dumps(
            {
                "written": str(out),
                "task": m.task,
                "tau": m.tau,
                "sites": [{"source": s.source, "keep_prob": s.keep_prob} for s in sites],
            },
            indent=2,
        )
    )
    return 0
