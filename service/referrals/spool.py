"""The spool: a local append-only JSON-lines file that holds referrals the database did not
take in time. Each append (one per group of requests) is fsynced before those predictions
answer, and the folder is fsynced when the file is created or renamed, so a record handed to
the spool survives a crash, a restart or a power loss; the recorder replays the spool into the
database at start-up
and every few seconds after.

Replay never edits the file in place: `take()` renames it aside (`<name>.<id>.replay`), new
appends start a fresh file, and the aside file is deleted only once every row in it is in the
database. A crash mid-replay leaves the aside file for the next start; the store skips ids it
already holds, so a replayed row is never duplicated.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("mcdrop.referrals")

_DATETIME_FIELDS = ("created_at",)


class Spool:
    """Append-only JSONL file of referral rows (column name → value)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write the rows and fsync; raises OSError when the disk does not take them."""
        data = "".join(json.dumps(_encode(r), separators=(",", ":")) + "\n" for r in rows)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            with open(self.path, "a+b") as f:
                # A crash mid-append can leave a torn last line; start ours on a fresh one so
                # only the torn record is unreadable, not the next one too.
                if f.tell() > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
                f.write(data.encode())
                f.flush()
                os.fsync(f.fileno())
            if created:  # a new file's name lives in the folder: make that durable too
                _fsync_dir(self.path.parent)

    def take(self) -> list[Path]:
        """Move the live file aside and return every aside file waiting for replay."""
        with self._lock:
            if self.path.exists() and self.path.stat().st_size > 0:
                os.replace(self.path, self._aside(uuid.uuid4().hex))
                _fsync_dir(self.path.parent)
            return self.waiting()

    def waiting(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.name}.*.replay"))

    def pending(self) -> int:
        """Rows waiting in the live file and the aside files (for the /metrics gauge)."""
        files = [*self.waiting(), self.path]
        return sum(_count_lines(p) for p in files if p.exists())

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        rows = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(_decode(json.loads(line)))
                except (ValueError, TypeError, KeyError):
                    log.error("%s line %d: unreadable spooled referral, skipped", path, n)
        return rows

    @staticmethod
    def done(path: Path) -> None:
        path.unlink(missing_ok=True)

    def _aside(self, tag: str) -> Path:
        return self.path.with_name(f"{self.path.name}.{tag}.replay")


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for k in _DATETIME_FIELDS:
        if isinstance(out.get(k), datetime):
            out[k] = out[k].isoformat()
    return out


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for k in _DATETIME_FIELDS:
        if isinstance(row.get(k), str):
            row[k] = datetime.fromisoformat(row[k])
    if not isinstance(row.get("id"), str):
        raise KeyError("id")
    return row


def _fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a created or renamed file) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
