"""Connecting to the referral database and bringing its schema to the newest migration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

# Alembic finds the migrations inside the installed package, so `pip install .` carries them.
SCRIPT_LOCATION = "service.referrals:migrations"
SQLITE_BUSY_TIMEOUT_MS = 5_000


def make_engine(url: str, connect_timeout_s: float = 5.0) -> Engine:
    """An engine for a SQLAlchemy URL. SQLite files get WAL (readers never wait for the writer)
    and a busy timeout (writers queue rather than fail at once); their folder is created."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    elif parsed.get_backend_name() == "postgresql":
        # An unreachable server should fail fast, not hang the writer thread for minutes.
        kwargs["connect_args"] = {"connect_timeout": max(1, round(connect_timeout_s))}
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk (WAL fsynced) before the prediction that made it answers.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def redacted(url: str) -> str:
    """The URL without its password, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)


def upgrade(engine: Engine) -> None:
    """Run every Alembic migration not yet applied (`alembic upgrade head`) on this engine."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    with engine.connect() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
