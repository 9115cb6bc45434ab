"""plan_chunks: every sample of every job is planned exactly once, within the row budget."""

from __future__ import annotations

import pytest

from service.engines.base import Segment, plan_chunks


def _covered(chunks: list[list[Segment]], jobs: list[tuple[int, int]]) -> dict[int, list[int]]:
    seen: dict[int, list[int]] = {j: [] for j in range(len(jobs))}
    for chunk in chunks:
        for s in chunk:
            assert s.t1 > s.t0
            seen[s.job] += list(range(s.t0, s.t1))
    return seen


@pytest.mark.timeout(30)  # the bug this guards against was an endless loop
def test_a_job_wider_than_the_budget_runs_one_sample_per_chunk() -> None:
    # 2,000 rows against a 1,783-row budget: each sample alone, all 3 of them, then the next job.
    jobs = [(2000, 3), (10, 4)]
    chunks = plan_chunks(jobs, 1783)
    assert _covered(chunks, jobs) == {0: [0, 1, 2], 1: [0, 1, 2, 3]}
    assert [[(s.job, s.t0, s.t1) for s in c] for c in chunks[:3]] == [
        [(0, 0, 1)],
        [(0, 1, 2)],
        [(0, 2, 3)],
    ]


def test_chunks_respect_the_budget_when_samples_fit() -> None:
    jobs = [(30, 10), (7, 5)]
    chunks = plan_chunks(jobs, 100)
    assert _covered(chunks, jobs) == {0: list(range(10)), 1: list(range(5))}
    for chunk in chunks:
        assert sum((s.t1 - s.t0) * jobs[s.job][0] for s in chunk) <= 100
