"""Admission control: the T·N bound, the bounded FIFO queue, refusals, draining and deadlines.

No timing assertions: waits are driven by events, and the one deadline test only checks that a
request blocked forever gets RequestTimeout and gives its place back.
"""

from __future__ import annotations

import asyncio

import pytest

from service.errors import Overloaded, RequestTimeout
from service.serving.admission import AdmissionController

pytestmark = pytest.mark.anyio


async def _hold(
    ac: AdmissionController,
    cost: int,
    entered: asyncio.Event,
    go: asyncio.Event,
    order: list[int] | None = None,
    tag: int = 0,
) -> None:
    async with ac.admitted(cost, 60):
        if order is not None:
            order.append(tag)
        entered.set()
        await go.wait()


async def _settle() -> None:
    for _ in range(5):  # let queued callbacks run
        await asyncio.sleep(0)


async def test_work_under_the_bound_runs_and_is_released() -> None:
    ac = AdmissionController(max_inflight=100, max_queued=0, timeout_s=60)
    async with ac.admitted(60, 60), ac.admitted(40, 60):
        assert (ac.inflight, ac.running) == (100, 2)
    assert (ac.inflight, ac.running, ac.queued) == (0, 0, 0)


async def test_full_queue_is_refused_at_once_with_retry_after() -> None:
    ac = AdmissionController(max_inflight=100, max_queued=1, timeout_s=60)
    go, e1, e2 = asyncio.Event(), asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_hold(ac, 100, e1, go))
    await e1.wait()
    second = asyncio.create_task(_hold(ac, 10, e2, go))  # waits: the bound is taken
    await _settle()
    assert ac.queued == 1 and not e2.is_set()
    with pytest.raises(Overloaded) as info:
        async with ac.admitted(10, 60):
            pass
    assert info.value.status_code == 503
    assert info.value.headers["Retry-After"] == "1"
    go.set()
    await asyncio.gather(first, second)
    assert e2.is_set() and (ac.inflight, ac.queued) == (0, 0)


async def test_queue_is_first_in_first_out() -> None:
    """A small request arriving after a large waiting one does not overtake it."""
    ac = AdmissionController(max_inflight=100, max_queued=10, timeout_s=60)
    go_big, go = asyncio.Event(), asyncio.Event()
    order: list[int] = []
    events = [asyncio.Event() for _ in range(3)]
    t0 = asyncio.create_task(_hold(ac, 60, events[0], go_big, order, 0))
    await events[0].wait()
    t1 = asyncio.create_task(_hold(ac, 80, events[1], go, order, 1))  # does not fit: waits
    await _settle()
    t2 = asyncio.create_task(_hold(ac, 10, events[2], go, order, 2))  # would fit, but queues
    await _settle()
    assert order == [0] and ac.queued == 2
    go_big.set()
    await events[1].wait()
    await events[2].wait()
    go.set()
    await asyncio.gather(t0, t1, t2)
    assert order == [0, 1, 2]


async def test_a_request_larger_than_the_bound_runs_alone() -> None:
    ac = AdmissionController(max_inflight=100, max_queued=1, timeout_s=60)
    async with ac.admitted(10_000, 60):
        assert ac.inflight == 100  # clamped to the bound, so it can run at all


async def test_draining_refuses_new_work_but_lets_admitted_work_finish() -> None:
    ac = AdmissionController(max_inflight=100, max_queued=1, timeout_s=60)
    go, e1 = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_hold(ac, 10, e1, go))
    await e1.wait()
    ac.drain()
    with pytest.raises(Overloaded, match="shutting down"):
        async with ac.admitted(1, 60):
            pass
    go.set()
    await first  # completes normally
    assert ac.inflight == 0


async def test_deadline_gives_504_and_frees_the_place() -> None:
    ac = AdmissionController(max_inflight=100, max_queued=4, timeout_s=60)
    never = asyncio.Event()
    with pytest.raises(RequestTimeout) as info:
        async with ac.admitted(50, 0.05):
            await never.wait()  # the work outlives its deadline: it is cancelled
    assert info.value.status_code == 504
    assert (ac.inflight, ac.running) == (0, 0)


async def test_deadline_while_queued_leaves_the_queue() -> None:
    ac = AdmissionController(max_inflight=100, max_queued=4, timeout_s=60)
    go, e1 = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_hold(ac, 100, e1, go))
    await e1.wait()
    with pytest.raises(RequestTimeout):
        async with ac.admitted(10, 0.05):
            pass
    assert ac.queued == 0
    go.set()
    await first
    assert (ac.inflight, ac.running) == (0, 0)


def test_request_timeout_only_lowers_the_servers() -> None:
    ac = AdmissionController(max_inflight=1, max_queued=0, timeout_s=30)
    assert ac.deadline_for(None) == 30
    assert ac.deadline_for(500) == 0.5
    assert ac.deadline_for(3_600_000) == 30
