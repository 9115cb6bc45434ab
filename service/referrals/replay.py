"""The store-side steps the recorder runs on its database thread: open, and replay the spool."""

from __future__ import annotations

from typing import Any

from service.referrals.spool import Spool
from service.referrals.store import ReferralStore


def open_warm(url: str) -> ReferralStore:
    store = ReferralStore.open(url)
    store.warm_up()
    return store


def replay_spool(spool: Spool, store: ReferralStore) -> list[dict[str, Any]]:
    """Store every aside file's rows; delete a file only once all of its rows are stored."""
    replayed: list[dict[str, Any]] = []
    for path in spool.take():
        rows = spool.read(path)
        inserted = set(store.add(rows))
        spool.done(path)
        replayed.extend(r for r in rows if r["id"] in inserted)
    return replayed
