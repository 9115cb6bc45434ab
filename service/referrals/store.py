"""The referral store: every query the service and the CLI run, over SQLAlchemy (SQLite or
PostgreSQL), synchronous. Callers on the event loop run these in a thread.

Claims and resolutions are single conditional UPDATEs (`... WHERE status = 'pending' AND the
claim is free`), so the database decides races: of two reviewers claiming one item, one UPDATE
changes a row and the other changes none, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from service.errors import InvalidInput
from service.referrals.database import make_engine, upgrade
from service.referrals.errors import ReferralConflict, ReferralNotFound
from service.referrals.models import PENDING, RESOLVED, Referral, utcnow
from service.referrals.sqlite_insert import SQLiteGroupInsert


@dataclass(frozen=True)
class Page:
    """One page of a listing, with the total that matched."""

    items: list[Referral]
    total: int


class ReferralStore:
    """Queries on the referrals table of one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)
        # SQLite files: groups go in through the driver (see sqlite_insert); PostgreSQL's
        # driver waits on the network, not on the GIL, and keeps the general path.
        self._fast = SQLiteGroupInsert(engine) if SQLiteGroupInsert.supports(engine) else None

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> ReferralStore:
        """Connect, and bring the schema to the newest migration unless told not to."""
        engine = make_engine(url)
        try:
            if migrate:
                upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def warm_up(self) -> None:
        """Insert a row and roll it back, so the first referral does not pay for SQLAlchemy's
        first-use work (mapper set-up, statement compilation) inside its write timeout."""
        with self._session() as s:
            s.add(Referral(**_WARM_UP_ROW, created_at=utcnow()))
            s.flush()
            s.rollback()
        if self._fast is not None:
            self._fast.connect()

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        self.engine.dispose()

    # ------------------------------------------------------------------ writes

    def add(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Insert new referrals (column name → value); ids already present are skipped, so a
        replayed spool or a retried write never duplicates. Returns the ids inserted.

        All rows go in one transaction, so one commit (one fsync) makes a whole group durable.
        """
        if not rows:
            return []
        try:
            if self._fast is not None and self._fast.insert(rows):
                return [r["id"] for r in rows]
        except sqlite3.IntegrityError:
            return self._add_new(rows)
        try:
            # One Core executemany: no ORM object per row, and a third less CPU than the ORM's
            # bulk insert, CPU the prediction path's threads share.
            with self.engine.begin() as c:
                c.execute(insert(Referral), list(rows))
            return [r["id"] for r in rows]
        except IntegrityError:
            return self._add_new(rows)

    def _add_new(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Some ids exist already: insert the others one by one."""
        inserted = []
        for r in rows:
            try:
                with self._session.begin() as s:
                    if s.get(Referral, r["id"]) is None:
                        s.add(Referral(**r))
                        inserted.append(r["id"])
            except IntegrityError:
                continue  # inserted meanwhile by another writer
        return inserted

    def claim(self, referral_id: str, reviewer: str, lease_s: float) -> Referral:
        """Give a pending item to `reviewer` for `lease_s` seconds; others cannot claim or
        resolve it until the lease ends. The same reviewer may claim again to renew."""
        now = utcnow()
        stmt = (
            update(Referral)
            .where(Referral.id == referral_id, Referral.status == PENDING, _free_for(reviewer, now))
            .values(claimed_by=reviewer, claim_expires_at=now + timedelta(seconds=lease_s))
        )
        with self._session.begin() as s:
            changed = cast(CursorResult[Any], s.execute(stmt)).rowcount
        if changed != 1:
            self._explain_refusal(referral_id, reviewer, "claim")
        return self.get(referral_id)

    def resolve(
        self,
        referral_id: str,
        reviewer: str,
        label: int | str | None = None,
        value: Sequence[float] | None = None,
        note: str | None = None,
    ) -> Referral:
        """Record a person's answer: a class index (or class name) for classifiers, one value
        per output for regression. A resolved item is never changed again (409)."""
        current = self.get(referral_id)
        index, values = _checked_answer(current, label, value)
        now = utcnow()
        stmt = (
            update(Referral)
            .where(Referral.id == referral_id, Referral.status == PENDING, _free_for(reviewer, now))
            .values(
                status=RESOLVED,
                reviewer=reviewer,
                label=index,
                value=values,
                note=note,
                resolved_at=now,
                claimed_by=None,
                claim_expires_at=None,
            )
        )
        with self._session.begin() as s:
            changed = cast(CursorResult[Any], s.execute(stmt)).rowcount
        if changed != 1:
            self._explain_refusal(referral_id, reviewer, "resolve")
        return self.get(referral_id)

    # ------------------------------------------------------------------ reads

    def get(self, referral_id: str) -> Referral:
        with self._session() as s:
            found = s.get(Referral, referral_id)
        if found is None:
            raise ReferralNotFound(
                f"no referral with id '{referral_id[:64]}'",
                [{"loc": ["path", "referral_id"], "msg": "unknown id", "type": "not_found"}],
            )
        return found

    def find(
        self,
        status: str | None = PENDING,
        model: str | None = None,
        reviewer: str | None = None,
        limit: int = 50,
        offset: int = 0,
        newest_first: bool = True,
    ) -> Page:
        """Referrals by status and model. Pending items claimed by someone other than
        `reviewer` are hidden until their lease ends."""
        conds: list[ColumnElement[bool]] = []
        if status is not None:
            conds.append(Referral.status == status)
        if model is not None:
            conds.append(Referral.model == model)
        if status == PENDING:
            conds.append(_free_for(reviewer, utcnow()))
        order = (
            (Referral.created_at.desc(), Referral.id.desc())
            if newest_first
            else (Referral.created_at.asc(), Referral.id.asc())
        )
        with self._session() as s:
            total = s.scalar(select(func.count()).select_from(Referral).where(*conds)) or 0
            items = s.scalars(
                select(Referral).where(*conds).order_by(*order).limit(limit).offset(offset)
            ).all()
        return Page(list(items), int(total))

    def resolved(self, model: str, version: str | None = None) -> list[Referral]:
        """Every resolved referral of a model (optionally one version), oldest first."""
        conds = [Referral.status == RESOLVED, Referral.model == model]
        if version is not None:
            conds.append(Referral.model_version == version)
        with self._session() as s:
            rows = s.scalars(
                select(Referral).where(*conds).order_by(Referral.created_at, Referral.id)
            ).all()
        return list(rows)

    def _explain_refusal(self, referral_id: str, reviewer: str, action: str) -> None:
        """An UPDATE changed nothing: say why (raises ReferralNotFound or ReferralConflict)."""
        current = self.get(referral_id)
        if current.status == RESOLVED:
            raise ReferralConflict(
                f"referral '{referral_id}' is already resolved (by {current.reviewer})",
                [{"loc": ["path", "referral_id"], "msg": "already resolved", "type": "conflict"}],
            )
        until = current.claim_expires_at
        raise ReferralConflict(
            f"cannot {action}: referral '{referral_id}' is claimed by {current.claimed_by} "
            f"until {until.isoformat() if until else '?'}",
            [{"loc": ["path", "referral_id"], "msg": "claimed by another", "type": "conflict"}],
        )


_WARM_UP_ROW: dict[str, Any] = {
    "id": "0" * 32,
    "request_id": "",
    "row_index": 0,
    "model": "",
    "model_version": "",
    "task": "",
    "status": PENDING,
    "input": None,
    "input_sha256": "",
    "input_shape": [],
    "prediction": {},
    "uncertainty": 0.0,
    "threshold": 0.0,
    "metric": "",
    "seed": 0,
    "samples": 0,
}


def _free_for(reviewer: str | None, now: datetime) -> ColumnElement[bool]:
    """Unclaimed, lease over, or claimed by this reviewer."""
    free = or_(Referral.claim_expires_at.is_(None), Referral.claim_expires_at <= now)
    if reviewer is None:
        return free
    return or_(free, Referral.claimed_by == reviewer)


def _checked_answer(
    item: Referral, label: int | str | None, value: Sequence[float] | None
) -> tuple[int | None, list[float] | None]:
    """The answer fits the item's task and shape, or InvalidInput naming the field."""
    if item.task == "classification":
        n = len(item.prediction.get("probabilities") or item.class_labels or [])
        if value is not None:
            raise InvalidInput("value: a classifier's referral takes a label, not a value")
        if label is None:
            raise InvalidInput(f"label: expected a class index in [0, {n - 1}]")
        if isinstance(label, str):
            names = item.class_labels or []
            if label not in names:
                raise InvalidInput(
                    f"label: expected a class index in [0, {n - 1}] or one of the class names "
                    f"{names[:20]}"
                )
            return names.index(label), None
        if not 0 <= label < n:
            raise InvalidInput(f"label: expected a class index in [0, {n - 1}], got {label}")
        return label, None
    d = len(item.prediction.get("mean") or [0.0])
    if label is not None:
        raise InvalidInput("label: a regression referral takes a value, not a label")
    if value is None or len(value) != d:
        got = "none" if value is None else f"{len(value)}"
        raise InvalidInput(f"value: expected {d} number(s), one per output, got {got}")
    if not all(math.isfinite(v) for v in value):
        raise InvalidInput("value: every value must be a finite number")
    return None, [float(v) for v in value]
