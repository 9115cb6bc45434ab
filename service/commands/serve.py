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
    from service.api.protocol import guarded_protocol
    from service.api.server import DrainingServer
    from service.config import Settings
    from service.serving.registry import model_folder_given

    overrides = {
        k: v
        for k, v in {"host": args.host, "port": args.port, "model_dir": args.model_dir}.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        # A check across several settings has no single field: its message names them.
        problems = "; ".join(
            f"MCDROP_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            if err["loc"]
            else str(err["msg"]).removeprefix("Value error, ")
            for err in e.errors()
        )
        raise ValueError(f"invalid settings: {problems}") from None
    # A missing model directory is not fatal: the server stays live and not ready (readiness
    # says why) until a reload (SIGHUP) finds it, e.g. once a volume is mounted.
    model_dir = Path(settings.model_dir)
    mistake = model_folder_given(model_dir)
    if mistake:
        raise ValueError(mistake)
    if (
        settings.default_model
        and model_dir.is_dir()
        and not (model_dir / settings.default_model).is_dir()
    ):
        raise ValueError(
            f"MCDROP_DEFAULT_MODEL: '{settings.default_model}' is not a folder under "
            f"'{settings.model_dir}'"
        )
    _configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=True,
        limit_concurrency=settings.max_connections,
        # Read deadlines, and health probes that the connection cap never refuses.
        http=guarded_protocol(settings.header_read_timeout_s, settings.body_read_timeout_s),
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    DrainingServer(config, on_exit=app.state.predictor.admission.drain).run()
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
