"""Group inserts on SQLite straight through the driver: the referral writer's hot path.

Why not SQLAlchemy's `executemany`: the `sqlite3` module gives the GIL back around every step and
every reset of a statement, so a group of n rows costs the writer thread some 2n + 4 hand-backs
(begin, a step and a reset per row, commit). While the event loop or the engine thread is busy,
each one waits up to the interpreter's switch interval (5 ms) to get the GIL back, and every
client of the group waits with it. Here a group is **one** multi-row
`INSERT ... VALUES (...), (...)` on a connection of its own in autocommit mode: on SQLite one
statement is one transaction, so the step that inserts the rows also commits them (one fsync),
and a group costs two hand-backs (the step and the reset) whatever its size. The driver keeps
each prepared statement by its SQL text, so a group size seen before is not compiled again.

Values go through the same SQLAlchemy type processors as the general path (UTC datetimes to
text, JSON columns to text), so a row stored here reads back exactly as one stored there. The
columns every row of a model shares (its shapes and names) are serialised once per group.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool

from service.referrals.database import SQLITE_BUSY_TIMEOUT_MS
from service.referrals.models import Referral

# Rows per statement: groups are rarely larger, and the driver's cache of prepared statements
# (128 by default) then holds one per size. Larger groups run as several statements in one
# explicit transaction, still one fsync.
MAX_ROWS_PER_STATEMENT = 64
# Taken from the model's manifest: the same objects in every row of a request.
_SHARED_JSON = frozenset({"input_shape", "feature_names", "output_names", "class_labels"})

_Processor = Callable[[Any], Any] | None


class SQLiteGroupInsert:
    """Inserts a group of referral rows in one transaction on a dedicated driver connection."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        columns = Referral.__table__.columns
        self._process: dict[str, _Processor] = {
            c.name: c.type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
            for c in columns
        }
        # Python-side scalar defaults (`status`), which a Core insert fills in when a row
        # leaves the column out.
        self._defaults = {
            c.name: c.default.arg
            for c in columns
            if c.default is not None and getattr(c.default, "is_scalar", False)
        }
        self._lock = threading.Lock()  # one connection: the writer's two threads take turns
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._sql: dict[tuple[tuple[str, ...], int], str] = {}

    @staticmethod
    def supports(engine: Engine) -> bool:
        """A SQLite file: an in-memory database lives in one connection, so it cannot have a
        second one of its own."""
        return engine.dialect.name == "sqlite" and isinstance(engine.pool, QueuePool)

    def insert(self, rows: Sequence[dict[str, Any]]) -> bool:
        """Insert every row in one transaction; False (nothing done) when the rows do not all
        name the same known columns, for the general path to take them. Raises
        `sqlite3.IntegrityError`, with nothing inserted, when an id is already stored."""
        columns = self._columns(rows)
        if columns is None:
            return False
        params = self._params(rows, columns)
        if not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise TimeoutError("the referral store's insert connection stayed busy")
        try:
            if self._closed:
                raise sqlite3.ProgrammingError("the referral store is closed")
            conn = self._connection()
            try:
                self._execute(conn, columns, params)
            except sqlite3.IntegrityError:
                raise
            except BaseException:
                self._drop()  # a fresh connection for the next group, whatever went wrong
                raise
        finally:
            if self._closed:  # closed while this insert ran: it closes the connection
                self._drop()
            self._lock.release()
        return True

    def connect(self) -> None:
        """Open the connection now, so the first group does not pay for it."""
        with self._lock:
            self._connection()

    def close(self) -> None:
        """Close the connection; a hung insert (a disk that does not answer) must not hold up
        the server's shutdown, so after a second the insert closes it when it ends."""
        self._closed = True
        if self._lock.acquire(timeout=1.0):
            try:
                self._drop()
            finally:
                self._lock.release()

    # ------------------------------------------------------------------ steps

    def _columns(self, rows: Sequence[dict[str, Any]]) -> tuple[str, ...] | None:
        keys = rows[0].keys()
        if not keys <= self._process.keys() or any(r.keys() != keys for r in rows):
            return None
        return (*keys, *(k for k in self._defaults if k not in keys))

    def _params(self, rows: Sequence[dict[str, Any]], columns: tuple[str, ...]) -> list[Any]:
        """The rows' values in column order, flat, as the driver binds them."""
        steps = [(c, self._process[c], c in _SHARED_JSON, self._defaults.get(c)) for c in columns]
        shared: dict[tuple[str, int], Any] = {}  # rows hold the values, so ids stay unique
        flat: list[Any] = []
        for row in rows:
            for name, process, is_shared, default in steps:
                value = row.get(name, default)
                if process is None:
                    flat.append(value)
                elif is_shared:
                    key = (name, id(value))
                    if key not in shared:
                        shared[key] = process(value)
                    flat.append(shared[key])
                else:
                    flat.append(process(value))
        return flat

    def _execute(self, conn: sqlite3.Connection, columns: tuple[str, ...], flat: list[Any]) -> None:
        width = len(columns)
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        per_statement = max(1, min(MAX_ROWS_PER_STATEMENT, limit // width))
        n = len(flat) // width
        if n <= per_statement:  # autocommit: the statement is its own transaction
            conn.execute(self._statement(columns, n), flat)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, n, per_statement):
                k = min(per_statement, n - start)
                conn.execute(self._statement(columns, k), flat[start * width : (start + k) * width])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _statement(self, columns: tuple[str, ...], n: int) -> str:
        sql = self._sql.get((columns, n))
        if sql is None:
            one = "(" + ",".join("?" * len(columns)) + ")"
            names = ",".join(f'"{c}"' for c in columns)
            sql = f"INSERT INTO referrals ({names}) VALUES " + ",".join([one] * n)
            self._sql[(columns, n)] = sql
        return sql

    def _connection(self) -> sqlite3.Connection:
        """The dedicated connection, made by the engine (same file, same pragmas) and taken out
        of its pool for good, in autocommit mode."""
        if self._conn is None:
            held = self.engine.raw_connection()
            conn = held.driver_connection
            held.detach()
            assert isinstance(conn, sqlite3.Connection)
            conn.isolation_level = None
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
