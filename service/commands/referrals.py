"""`mcdrop referrals export|report MODEL`: resolved referrals as held-out data, and how the
model did on them. The store is MCDROP_DATABASE_URL unless --database-url names another."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "referrals",
        help="export resolved referrals as an NPZ, or report the model's accuracy on them",
        description="Work with the referral queue's resolved items (see the README).",
    )
    actions = p.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("export", "write the resolved referrals of MODEL as an NPZ (x, y) of held-out data"),
        ("report", "the model's accuracy (or error) on the items people resolved, as JSON"),
    ):
        a = actions.add_parser(name, help=help_text, description=help_text)
        a.add_argument("model", help="model name, or its folder (models/digits)")
        a.add_argument("--database-url", help="referral store (default: MCDROP_DATABASE_URL)")
        a.add_argument("--version", help="only referrals made by this model version")
        if name == "export":
            a.add_argument("--out", required=True, help="NPZ file to write")
        a.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from service.config import Settings
    from service.referrals.export import accuracy_report, resolved_dataset, resolved_referrals

    url = args.database_url or Settings().database_url
    name = Path(args.model).name
    if args.action == "export":
        import numpy as np

        x, y = resolved_dataset(url, name, args.version)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, x=x, y=y)
        print(
            json.dumps(
                {
                    "written": str(out),
                    "rows": int(x.shape[0]),
                    "x_shape": list(x.shape),
                    "y_shape": list(y.shape),
                }
            )
        )
        return 0
    report = accuracy_report(resolved_referrals(url, name, args.version))
    print(json.dumps({"model": name, **report}, indent=2))
    return 0
