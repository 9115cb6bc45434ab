"""The referral store on SQLite and PostgreSQL: add, list, claim, resolve, concurrent claims,
and the migration matching the ORM table."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service.errors import InvalidInput
from service.referrals.errors import ReferralConflict, ReferralNotFound
from service.referrals.models import Base
from service.referrals.store import ReferralStore
from tests.referrals.conftest import clf_row, minutes, reg_row


def test_migration_creates_exactly_the_orm_table(store: ReferralStore) -> None:
    with store.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diff == []


def test_add_then_get_keeps_every_field(store: ReferralStore) -> None:
    row = clf_row()
    assert store.add([row]) == [row["id"]]
    got = store.get(row["id"])
    for k, v in row.items():
        assert getattr(got, k) == v, k  # seed 2**63-1 survives: BIGINT, not a float
    assert got.claimed_by is None and got.resolved_at is None


def test_adding_the_same_ids_again_skips_them(store: ReferralStore) -> None:
    a, b = clf_row(), clf_row()
    assert store.add([a]) == [a["id"]]
    assert store.add([a, b]) == [b["id"]]  # a replayed spool never duplicates
    assert store.find(model="clf").total == 2


def test_listing_filters_orders_and_pages(store: ReferralStore) -> None:
    rows = [clf_row(created_at=minutes(i)) for i in range(5)] + [reg_row(created_at=minutes(9))]
    store.add(rows)
    page = store.find(model="clf", limit=2, offset=0)
    assert page.total == 5
    assert [r.id for r in page.items] == [rows[4]["id"], rows[3]["id"]]  # newest first
    page = store.find(model="clf", limit=2, offset=4)
    assert [r.id for r in page.items] == [rows[0]["id"]]
    oldest = store.find(model=None, limit=10, newest_first=False)
    assert [r.id for r in oldest.items] == [r["id"] for r in rows]
    store.resolve(rows[2]["id"], "ann", label=0)
    assert store.find(status="pending", model="clf").total == 4
    assert [r.id for r in store.find(status="resolved").items] == [rows[2]["id"]]


def test_resolve_classifier_by_index_or_name_and_twice_is_a_conflict(store: ReferralStore) -> None:
    a, b = clf_row(), clf_row()
    store.add([a, b])
    done = store.resolve(a["id"], "ann", label=2, note="clearly an eel")
    assert (done.status, done.label, done.reviewer, done.note) == (
        "resolved",
        2,
        "ann",
        "clearly an eel",
    )
    assert done.resolved_at is not None
    assert store.resolve(b["id"], "bob", label="cat").label == 0
    with pytest.raises(ReferralConflict, match="already resolved"):
        store.resolve(a["id"], "bob", label=1)
    assert store.get(a["id"]).label == 2  # the first answer stands


def test_resolve_regression_takes_one_value_per_output(store: ReferralStore) -> None:
    r = reg_row()
    store.add([r])
    with pytest.raises(InvalidInput, match="value: expected 1 number"):
        store.resolve(r["id"], "ann", value=[1.0, 2.0])
    with pytest.raises(InvalidInput, match="label"):
        store.resolve(r["id"], "ann", label=1)
    assert store.resolve(r["id"], "ann", value=[12.5]).value == [12.5]


@pytest.mark.parametrize(
    ("label", "match"), [(3, r"\[0, 2\], got 3"), ("fox", "class names"), (None, "label")]
)
def test_bad_labels_are_refused(store: ReferralStore, label: int | str | None, match: str) -> None:
    r = clf_row()
    store.add([r])
    with pytest.raises(InvalidInput, match=match):
        store.resolve(r["id"], "ann", label=label)
    assert store.get(r["id"]).status == "pending"


def test_unknown_ids_are_not_found(store: ReferralStore) -> None:
    for call in (
        lambda: store.get("nope"),
        lambda: store.claim("nope", "ann", 60),
        lambda: store.resolve("nope", "ann", label=0),
    ):
        with pytest.raises(ReferralNotFound):
            call()


def test_a_claim_hides_the_item_from_others_until_the_lease_ends(store: ReferralStore) -> None:
    a, b = clf_row(), clf_row()
    store.add([a, b])
    claimed = store.claim(a["id"], "ann", lease_s=600)
    assert claimed.claimed_by == "ann" and claimed.claim_expires_at is not None
    assert [r.id for r in store.find(reviewer="bob").items] == [b["id"]]
    assert {r.id for r in store.find(reviewer="ann").items} == {a["id"], b["id"]}
    with pytest.raises(ReferralConflict, match="claimed by ann"):
        store.claim(a["id"], "bob", lease_s=600)
    with pytest.raises(ReferralConflict, match="claimed by ann"):
        store.resolve(a["id"], "bob", label=0)
    assert store.claim(a["id"], "ann", lease_s=600).claimed_by == "ann"  # renewing is fine
    # A lease that has already ended (negative length: no sleeping in tests) frees the item.
    store.claim(b["id"], "ann", lease_s=-1)
    assert store.claim(b["id"], "bob", lease_s=600).claimed_by == "bob"
    assert store.resolve(a["id"], "ann", label=1).claimed_by is None


def test_two_claimers_one_winner(database_url: str) -> None:
    """Two reviewers, each with their own connection pool, claim the same items at once."""
    first, second = ReferralStore.open(database_url), ReferralStore.open(database_url)
    rows = [clf_row() for _ in range(20)]
    first.add(rows)
    outcomes: dict[str, list[str]] = {"ann": [], "bob": []}

    def claimer(store: ReferralStore, name: str, gate: threading.Barrier) -> None:
        for r in rows:
            gate.wait()  # both threads send this item's UPDATE together
            try:
                store.claim(r["id"], name, lease_s=600)
                outcomes[name].append(r["id"])
            except ReferralConflict:
                pass

    gate = threading.Barrier(2)
    threads = [
        threading.Thread(target=claimer, args=(s, n, gate))
        for s, n in ((first, "ann"), (second, "bob"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        won = outcomes["ann"] + outcomes["bob"]
        assert sorted(won) == sorted(r["id"] for r in rows)  # every item: exactly one winner
        for name, ids in outcomes.items():
            assert all(first.get(i).claimed_by == name for i in ids)
    finally:
        first.close()
        second.close()
