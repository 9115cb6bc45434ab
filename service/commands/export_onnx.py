"""`mcdrop export-onnx MODEL`: write MODEL/model.onnx (masks as inputs) and verify it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "export-onnx",
        help="export a model folder to model.onnx for the onnxruntime engine (self-verified)",
    )
    p.add_argument("model", help="model folder, e.g. models/diabetes")
    p.add_argument(
        "--samples", type=int, default=2000, help="MC samples for the check against torch"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from service.engines.onnx_export import ONNX_NAME, ExportError, export_onnx

    folder = Path(args.model)
    try:
        report = export_onnx(folder, samples=args.samples)
    except ExportError as e:
        print(f"mcdrop export-onnx: verification failed: {e}")
        return 1
    print(json.dumps({"written": str(folder / ONNX_NAME), "checks": report}, indent=2))
    return 0
