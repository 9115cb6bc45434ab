"""DirectRunner: the engine's samples, computed in one dedicated thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.engines.base import SampleJob
from service.serving.model import load_model
from service.serving.runner import DirectRunner

pytestmark = pytest.mark.anyio


async def test_direct_runner_matches_the_engine_in_one_worker_thread(
    tiny_regression_dir: Path,
) -> None:
    model = load_model(tiny_regression_dir)
    x = model.prepare([[0.1, 0.2, 0.3], [1.0, -1.0, 0.0]])
    threads: list[int] = []
    original = model.engine.sample_many

    def recording(jobs: Any) -> Any:
        threads.append(threading.get_ident())
        return original(jobs)

    model.engine.sample_many = recording  # type: ignore[method-assign]
    runner = DirectRunner()
    await runner.start()
    try:
        outs = [await runner.sample(model, SampleJob(x, 9, seed)) for seed in (1, 2, 1)]
    finally:
        await runner.stop()
    expected = original([SampleJob(x, 9, 1)])[0]
    assert outs[0].shape == (9, 2, 1)
    np.testing.assert_array_equal(outs[0], expected)
    np.testing.assert_array_equal(outs[0], outs[2])
    assert not np.array_equal(outs[0], outs[1])
    assert len(set(threads)) == 1 and threads[0] != threading.get_ident()


async def test_sample_before_start_is_an_error(tiny_regression_dir: Path) -> None:
    model = load_model(tiny_regression_dir)
    with pytest.raises(RuntimeError, match="before start"):
        await DirectRunner().sample(model, SampleJob(model.prepare([[0.0, 0.0, 0.0]]), 2, 0))
