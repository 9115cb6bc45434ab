"""The SQLite group insert (the referral writer's path through the driver): a group is one
statement and one transaction, every id is stored once, present ids are skipped, and what it
stores is byte for byte what the general SQLAlchemy path stores."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.referrals import sqlite_insert
from service.referrals.store import ReferralStore
from tests.referrals.conftest import clf_row, minutes, reg_row


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[ReferralStore]:
    s = ReferralStore.open(f"sqlite:///{tmp_path / 'referrals.db'}")
    s.warm_up()
    yield s
    s.close()


def _group(n: int) -> list[dict[str, Any]]:
    """n rows of two models, as the writer sees them: the rows of one model share their
    shape and name lists, some JSON columns are None, one input is not stored."""
    shared = {"input_shape": [4], "feature_names": ["a", "b", "c", "d"], "class_labels": None}
    rows = []
    for i in range(n):
        if i % 3 == 2:
            rows.append(reg_row(row_index=i, created_at=minutes(i)))
        else:
            rows.append(clf_row(row_index=i, created_at=minutes(i), **shared))
    rows[0]["input"] = None  # MCDROP_REFERRAL_STORE_INPUTS=false
    return rows


def _raw(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as c:
        return c.execute("SELECT * FROM referrals ORDER BY id").fetchall()


def _statements(store: ReferralStore) -> list[str]:
    """Records every statement the group insert's connection runs from now on."""
    assert store._fast is not None
    with store._fast._lock:
        conn = store._fast._connection()
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    return seen


def test_a_group_is_one_statement_and_reads_back_equal(sqlite_store: ReferralStore) -> None:
    rows = _group(20)
    seen = _statements(sqlite_store)
    assert sqlite_store.add(rows) == [r["id"] for r in rows]
    # One INSERT in autocommit: the statement is the transaction, no BEGIN or COMMIT.
    assert len(seen) == 1 and seen[0].startswith("INSERT INTO referrals")
    for row in rows:
        got = sqlite_store.get(row["id"])
        for k, v in row.items():
            assert getattr(got, k) == v, k  # JSON columns, datetimes and the 64-bit seed


def test_stores_exactly_what_the_general_path_stores(tmp_path: Path) -> None:
    rows = _group(7)
    rows[1]["created_at"] = minutes(3).replace(microsecond=250)
    stores = {n: ReferralStore.open(f"sqlite:///{tmp_path / n}.db") for n in ("driver", "sqla")}
    try:
        stores["sqla"]._fast = None  # the Core executemany
        for s in stores.values():
            s.add(rows)
    finally:
        for s in stores.values():
            s.close()
    driver, general = _raw(tmp_path / "driver.db"), _raw(tmp_path / "sqla.db")
    assert len(driver) == 7 and driver == general


def test_present_ids_are_skipped_and_each_id_is_stored_once(
    sqlite_store: ReferralStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_insert, "MAX_ROWS_PER_STATEMENT", 4)  # several statements
    first = _group(6)
    assert sqlite_store.add(first[2:3]) == [first[2]["id"]]
    # The duplicate sits in the first statement of the group: the whole transaction rolls
    # back, then the rows go in one by one, skipping the one already there.
    more = _group(9)
    assert sqlite_store.add([*more[:2], first[2], *more[2:]]) == [r["id"] for r in more]
    ids = [r.id for r in sqlite_store.find(model=None, limit=100).items]
    assert sorted(ids) == sorted([first[2]["id"], *(r["id"] for r in more)])


def test_a_large_group_is_one_transaction_of_several_statements(
    sqlite_store: ReferralStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_insert, "MAX_ROWS_PER_STATEMENT", 4)
    rows = _group(10)
    seen = _statements(sqlite_store)
    assert sqlite_store.add(rows) == [r["id"] for r in rows]
    assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "COMMIT"
    assert len(seen) == 2 + 3  # 4 + 4 + 2 rows
    assert sqlite_store.find(model=None, limit=100).total == 10


def test_columns_left_out_get_what_the_general_path_gives_them(tmp_path: Path) -> None:
    rows = _group(4)
    for r in rows:
        del r["status"], r["feature_names"]  # a Python-side default; a nullable column
    stores = {n: ReferralStore.open(f"sqlite:///{tmp_path / n}.db") for n in ("driver", "sqla")}
    try:
        stores["sqla"]._fast = None
        seen = _statements(stores["driver"])
        for s in stores.values():
            s.add(rows)
        assert len(seen) == 1  # through the driver
        got = stores["driver"].get(rows[0]["id"])
        assert got.status == "pending" and got.feature_names is None
    finally:
        for s in stores.values():
            s.close()
    assert _raw(tmp_path / "driver.db") == _raw(tmp_path / "sqla.db")


def test_a_failed_insert_opens_a_fresh_connection(sqlite_store: ReferralStore) -> None:
    fast = sqlite_store._fast
    assert fast is not None
    with fast._lock:
        broken = fast._connection()
    broken.close()  # any use now raises sqlite3.ProgrammingError
    with pytest.raises(sqlite3.ProgrammingError):
        sqlite_store.add([clf_row()])
    row = clf_row()
    assert sqlite_store.add([row]) == [row["id"]]
    assert sqlite_store.get(row["id"]).id == row["id"]


def test_closing_does_not_wait_for_a_hung_insert(
    sqlite_store: ReferralStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = sqlite_store._fast
    assert fast is not None
    entered, release = threading.Event(), threading.Event()
    real_execute = fast._execute

    def hung_execute(*args: Any) -> None:
        entered.set()
        release.wait(30)
        real_execute(*args)

    monkeypatch.setattr(fast, "_execute", hung_execute)
    row = clf_row()
    writer = threading.Thread(target=sqlite_store.add, args=([row],))
    writer.start()
    assert entered.wait(30)
    sqlite_store.close()  # returns while the insert is still hung
    assert writer.is_alive() and not release.is_set()
    release.set()
    writer.join(30)
    assert not writer.is_alive()
    assert fast._conn is None  # the insert ended and closed the connection
    with pytest.raises(sqlite3.ProgrammingError):
        fast.insert([clf_row()])


def test_only_sqlite_files_take_the_driver_path(tmp_path: Path) -> None:
    memory = ReferralStore.open("sqlite:///:memory:")
    try:
        assert memory._fast is None  # one connection holds the database
    finally:
        memory.close()
