"""`mcdrop serve`: serve every model under the model directory over HTTP with uvicorn."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="serve the models over HTTP (settings from MCDROP_* environment variables)",
        description="Serve every model folder under the model directory. Settings come from "
        "MCDROP_* environment variables (see the README); these flags override them.",
    )
    p.add_argument("--host", help="interface to bind (MCDROP_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (MCDROP_PORT, default 8000)")
    p.add_argument("--model-dir", help="folder of model folders (MCDROP_MODEL_DIR, default models)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from service.api.app import create_app
    from service.config import Settings

    overrides = {
        k: v
        for k, v in {"host": args.host, "port": args.port, "model_dir": args.model_dir}.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        problems = "; ".join(
            f"MCDROP_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in e.errors()
        )
        raise ValueError(f"invalid settings: {problems}") from None
    if not Path(settings.model_dir).is_dir():
        raise ValueError(f"model directory '{settings.model_dir}' does not exist")
    if settings.default_model and not (Path(settings.model_dir) / settings.default_model).is_dir():
        raise ValueError(
            f"MCDROP_DEFAULT_MODEL: '{settings.default_model}' is not a folder under "
            f"'{settings.model_dir}'"
        )
    _configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=True,
    )
    return 0


def _configure_logging(level: str) -> None:
    """mcdrop's own messages (models loaded or not, errors with request ids) beside uvicorn's."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)-9s %(name)s: %(message)s"))
    logger = logging.getLogger("mcdrop")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
