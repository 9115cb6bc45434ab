"""Alembic environment. The URL comes from, in order: a connection handed over by
`service.referrals.schema.upgrade` (the app at start-up), `sqlalchemy.url` in the Alembic
config, or MCDROP_DATABASE_URL (`alembic upgrade head` from the repository root).

On PostgreSQL the upgrade holds an advisory lock, so replicas starting together against one
database migrate it once, one after the other, instead of racing to create the same table.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine, text

from service.referrals.models import Base

# Any fixed 64-bit key; only mcdrop's migrations take it.
_MIGRATION_LOCK = 0x6D6364726F70  # "mcdrop"

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    """Migrate on a connection that is not inside a `with engine.begin()`: this commits."""
    postgres = connection.dialect.name == "postgresql"
    if postgres:  # a session-level lock: it outlives the commits below
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
        connection.commit()
    try:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if postgres:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
            connection.commit()


def main() -> None:
    config = context.config
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("MCDROP_DATABASE_URL")
    if not url:
        raise RuntimeError("set MCDROP_DATABASE_URL (or sqlalchemy.url) to the referral database")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


main()
