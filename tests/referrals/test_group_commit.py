"""Group commit: the referrals of requests that abstain together share one transaction (one
fsync), every acknowledged id is stored exactly once, and a store that hangs in the middle of a
group hands the whole group to the spool (one fsynced append) with nothing lost or doubled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.api.app import create_app
from service.referrals import spool as spool_module
from service.referrals.spool import Spool
from tests.api.conftest import REG_ROW, running
from tests.referrals.conftest import reg_row
from tests.referrals.test_recording import ALWAYS, metric, settings

pytestmark = pytest.mark.anyio

N = 24  # concurrent abstaining requests


async def _predict_all(c: Any, n: int) -> list[str]:
    """n concurrent requests of one abstaining row each; the ids they were acknowledged with."""
    body = {"inputs": [REG_ROW], "threshold": ALWAYS}
    answers = await asyncio.gather(
        *(c.post("/v1/models/tiny_reg/predict", json=body) for _ in range(n))
    )
    assert [a.status_code for a in answers] == [200] * n
    return [a.json()["predictions"][0]["referral_id"] for a in answers]


async def _stored_ids(c: Any) -> list[str]:
    page = (await c.get("/v1/referrals", params={"limit": 500})).json()
    return [item["id"] for item in page["items"]]


async def test_concurrent_referrals_share_commits(
    model_dir: Path, tmp_path: Path, database_url: str
) -> None:
    """The first commit is held until every other request has queued its rows: those must then
    go in together, so N requests make at most 2 commits rather than N."""
    app = create_app(
        settings(model_dir, tmp_path, database_url=database_url, referral_write_timeout_ms=60_000)
    )
    async with running(app) as c:
        recorder = app.state.referrals
        real_add: Callable[[list[dict[str, Any]]], list[str]] = recorder.store.add
        calls: list[int] = []

        def held_first_add(rows: list[dict[str, Any]]) -> list[str]:
            calls.append(len(rows))
            if len(calls) == 1:  # bounded wait (30 s) for the others to queue behind it
                for _ in range(3000):
                    if calls[0] + sum(len(q.rows) for q in recorder._queue) == N:
                        break
                    threading.Event().wait(0.01)
            return real_add(rows)

        recorder.store.add = held_first_add
        ids = await _predict_all(c, N)
        recorder.store.add = real_add
        assert all(ids) and len(set(ids)) == N
        assert len(calls) <= 2 and sum(calls) == N  # at most two transactions for N requests
        stored = await _stored_ids(c)
        assert sorted(stored) == sorted(ids)  # every acknowledged id, each once
        m = (await c.get("/metrics")).text
        assert metric(m, 'mcdrop_referral_commits_total{target="store"}') == len(calls)
        assert metric(m, 'mcdrop_referral_commit_rows_sum{target="store"}') == N
        assert metric(m, "mcdrop_referral_store_failures_total") == 0
        assert metric(m, "mcdrop_referrals_spooled_total") == 0


async def test_store_hanging_mid_group_fails_over_to_the_spool(
    model_dir: Path, tmp_path: Path, database_url: str
) -> None:
    """The store hangs inside a group's commit: every request still answers with its ids while
    the commit is hung (so within its write timeout, not the store's), the group and the ones
    behind it go to the spool, and once the store is back each id is stored exactly once."""
    app = create_app(
        settings(model_dir, tmp_path, database_url=database_url, referral_write_timeout_ms=200)
    )
    release = threading.Event()
    async with running(app) as c:
        recorder = app.state.referrals
        before = await _predict_all(c, 2)  # the store works
        real_add: Callable[[list[dict[str, Any]]], list[str]] = recorder.store.add

        def hanging_add(rows: list[dict[str, Any]]) -> list[str]:
            release.wait(60)
            return real_add(rows)

        recorder.store.add = hanging_add
        during = await _predict_all(c, N)
        assert not release.is_set()  # every answer came while the commit was still hung
        assert all(during) and len(set(during)) == N
        m = (await c.get("/metrics")).text
        timed_out = metric(m, 'mcdrop_referral_store_failures_total{reason="timeout"}')
        unavailable = metric(m, 'mcdrop_referral_store_failures_total{reason="unavailable"}')
        assert timed_out >= 1 and timed_out + unavailable == N
        assert metric(m, "mcdrop_referrals_spooled_total") == N
        assert metric(m, 'mcdrop_referral_commit_rows_sum{target="spool"}') == N
        assert metric(m, "mcdrop_referrals_lost_total") == 0

        recorder.store.add = real_add
        release.set()  # the hung commit now lands, after its rows were spooled
        for _ in range(3000):  # bounded wait (30 s) for it to end
            if recorder._in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert recorder._in_flight == 0
        await recorder.replay()
        stored = await _stored_ids(c)
        assert sorted(stored) == sorted(before + during)  # nothing lost, nothing doubled
        assert not Spool(recorder.spool.path).waiting() and not recorder.spool.path.exists()


def test_spool_fsyncs_its_folder_when_the_file_is_created_or_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real = spool_module._fsync_dir

    def recording_fsync(p: Path) -> None:
        synced.append(p)
        real(p)

    monkeypatch.setattr(spool_module, "_fsync_dir", recording_fsync)
    spool = Spool(tmp_path / "s" / "spool.jsonl")
    spool.append([reg_row()])
    assert synced == [tmp_path / "s"]  # the new file's name
    spool.append([reg_row(), reg_row()])
    assert synced == [tmp_path / "s"]  # an append to an existing file: the file's fsync only
    aside = spool.take()
    assert len(aside) == 1 and len(Spool.read(aside[0])) == 3
    assert synced == [tmp_path / "s"] * 2  # the rename
