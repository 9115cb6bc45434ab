"""Engine processes: the same samples as in the server process, errors raised again as their own
class, a dead child replaced, a dropped model unloaded, and a server that never imports torch."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from service.artifacts.manifest import read_manifest
from service.engines import EngineRuntime, SampleJob, build_engine, factory
from service.engines.process_engine import ProcessEngine
from service.engines.process_wire import WireError, receive, send
from service.errors import ArtifactError, EngineUnavailable
from service.serving.batcher import BatchingRunner
from service.serving.model import load_model
from tests.conftest import REPO

IN_PROCESS = EngineRuntime(device="cpu")
IN_CHILDREN = EngineRuntime(device="cpu", process=True)


def _engines(folder: Path, runtime: EngineRuntime = IN_CHILDREN) -> tuple[object, ProcessEngine]:
    manifest = read_manifest(folder)
    remote = build_engine(folder, manifest, runtime)
    assert isinstance(remote, ProcessEngine)
    return build_engine(folder, manifest, IN_PROCESS), remote


def _jobs(folder: Path) -> list[SampleJob]:
    shape = read_manifest(folder).input_shape
    rng = np.random.default_rng(3)
    x1 = rng.standard_normal((3, *shape)).astype(np.float32)
    x2 = rng.standard_normal((2, *shape)).astype(np.float32)
    # The second is a later adaptive round of two rows of a request: its own rows and samples.
    return [SampleJob(x1, 20, 7), SampleJob(x2, 5, 8, first_sample=20, row_ids=np.array([4, 1]))]


@pytest.mark.parametrize("which", ["tiny_regression_dir", "tiny_classifier_dir"])
def test_the_samples_are_those_of_the_in_process_engine(
    which: str, request: pytest.FixtureRequest
) -> None:
    folder = request.getfixturevalue(which)
    local, remote = _engines(folder)
    jobs = _jobs(folder)
    for here, there in zip(local.sample_many(jobs), remote.sample_many(jobs), strict=True):  # type: ignore[attr-defined]
        assert there.dtype == np.float32
        np.testing.assert_array_equal(here, there)
    x = jobs[0].x
    np.testing.assert_array_equal(local.deterministic(x), remote.deterministic(x))  # type: ignore[attr-defined]
    assert (remote.name, remote.device) == ("torch", "cpu")


def test_two_workers_are_two_children_that_both_hold_the_model(tiny_regression_dir: Path) -> None:
    local, remote = _engines(
        tiny_regression_dir, EngineRuntime(device="cpu", process=True, workers=2)
    )
    assert len(set(remote.pool.pids)) == 2
    jobs = _jobs(tiny_regression_dir)
    expected = local.sample_many(jobs)  # type: ignore[attr-defined]
    for _ in range(4):  # calls take whichever child is idle; each must give the same samples
        for here, there in zip(expected, remote.sample_many(jobs), strict=True):
            np.testing.assert_array_equal(here, there)


def test_an_error_in_the_child_is_raised_again_as_its_class(tiny_regression_dir: Path) -> None:
    _, remote = _engines(tiny_regression_dir)
    x = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="row_ids: expected 3 indices"):
        remote.sample_many([SampleJob(x, 4, 1, row_ids=np.array([0]))])
    assert remote.sample_many([SampleJob(x, 4, 1)])[0].shape == (4, 3, 1)  # still serving


def test_a_model_that_does_not_load_fails_alone(tiny_regression_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_regression_dir, broken)
    (broken / "weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError):
        build_engine(broken, read_manifest(broken), IN_CHILDREN)
    _, remote = _engines(tiny_regression_dir)
    assert remote.sample_many(_jobs(tiny_regression_dir))[0].shape == (20, 3, 1)


def test_a_child_that_died_idle_is_started_again_before_the_call(
    tiny_regression_dir: Path,
) -> None:
    local, remote = _engines(tiny_regression_dir)
    jobs = _jobs(tiny_regression_dir)
    (before,) = remote.pool.pids
    os.kill(before, signal.SIGKILL)
    remote.pool._children[0].proc.wait(30)  # dead before the call comes
    for here, there in zip(local.sample_many(jobs), remote.sample_many(jobs), strict=True):  # type: ignore[attr-defined]
        np.testing.assert_array_equal(here, there)
    assert remote.pool.pids != [before]


def test_a_child_that_dies_during_a_call_fails_that_call_only(tiny_regression_dir: Path) -> None:
    local, remote = _engines(tiny_regression_dir)
    jobs = _jobs(tiny_regression_dir)
    (pid,) = remote.pool.pids
    os.kill(pid, signal.SIGSTOP)  # alive, so the call is sent, and it waits for the answer
    failed: list[BaseException] = []
    call = threading.Thread(target=lambda: _record(failed, remote.sample_many, jobs))
    call.start()
    time.sleep(0.2)  # the call is in flight (nothing can answer it while the child is stopped)
    os.kill(pid, signal.SIGKILL)
    call.join(30)
    assert len(failed) == 1 and isinstance(failed[0], EngineUnavailable), failed
    assert "engine process stopped" in str(failed[0])
    for here, there in zip(local.sample_many(jobs), remote.sample_many(jobs), strict=True):  # type: ignore[attr-defined]
        np.testing.assert_array_equal(here, there)


def _record(into: list[BaseException], fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except BaseException as e:
        into.append(e)


def test_a_dropped_engine_is_unloaded_from_the_children(tiny_regression_dir: Path) -> None:
    _, remote = _engines(tiny_regression_dir)
    pool, key = remote.pool, remote._key
    x = np.zeros((1, 3), np.float32)
    assert pool.call(key, {"op": "deterministic"}, [x])[0].shape == (1, 1)
    del remote
    gc.collect()
    with pytest.raises(EngineUnavailable, match="does not hold"):
        pool.call(key, {"op": "deterministic"}, [x])


def test_the_server_side_never_imports_torch(tiny_regression_dir: Path) -> None:
    script = (
        "import sys\n"
        "from service.engines import EngineRuntime\n"
        "from service.serving.model import load_model\n"
        f"m = load_model({str(tiny_regression_dir)!r}, runtime=EngineRuntime(process=True))\n"
        "print(m.predict([[0.0, 1.0, 2.0]], samples=10, seed=1).mean.shape)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["(1, 1)", "False"]


def test_the_wire_carries_arrays_and_refuses_other_dtypes() -> None:
    a, b = socket.socketpair()
    with a, b:
        arrays: list[NDArray[Any]] = [
            np.arange(24, dtype=np.float32).reshape(2, 3, 4),
            np.zeros((0, 5), np.float32),
            np.array([3, -1], np.int64),
        ]
        send(a, {"op": "x"}, arrays)
        header, got = receive(b)
        assert header == {"op": "x"}
        for sent, came in zip(arrays, got, strict=True):
            assert came.dtype == sent.dtype
            np.testing.assert_array_equal(sent, came)
        with pytest.raises(TypeError, match="do not travel"):
            send(a, {}, [np.array(["text"])])
        head = b'{"arrays": [["|O", [1]]]}'
        a.sendall(len(head).to_bytes(8, "little") + head)
        with pytest.raises(WireError, match="dtype"):
            receive(b)
        a.close()
        with pytest.raises(WireError, match="closed"):
            receive(b)


def test_the_jobs_of_a_pass_whose_child_died_are_served_after_its_restart(
    tiny_regression_dir: Path,
) -> None:
    """The batcher runs a failed pass's jobs again one by one: the first starts a new child."""
    model = load_model(tiny_regression_dir, runtime=IN_CHILDREN)
    local = load_model(tiny_regression_dir, device="cpu")
    jobs = [SampleJob(model.prepare(np.full((2, 3), float(i))), 10, i) for i in range(4)]
    (pid,) = model.engine.pool.pids  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGSTOP)  # it takes the batch's pass, then dies before answering
    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()

    async def run() -> list[NDArray[np.float32] | BaseException]:
        runner = BatchingRunner(wait_ms=200, max_rows=10_000)
        await runner.start()
        try:
            return await asyncio.gather(
                *(runner.sample(model, j) for j in jobs), return_exceptions=True
            )
        finally:
            await runner.stop()

    results = asyncio.run(run())
    for job, res in zip(jobs, results, strict=True):
        assert isinstance(res, np.ndarray), res
        np.testing.assert_array_equal(res, local.engine.sample_many([job])[0])
    assert model.engine.pool.pids != [pid]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("threshold_s", "in_child"), [(0.0, True), (float("inf"), False)])
def test_auto_moves_a_model_by_the_time_of_its_lone_pass(
    threshold_s: float, in_child: bool, tiny_regression_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(factory, "AUTO_PROCESS_PASS_S", threshold_s)
    runtime = EngineRuntime(device="cpu", process="auto")
    local = build_engine(tiny_regression_dir, read_manifest(tiny_regression_dir), IN_PROCESS)
    engine = build_engine(tiny_regression_dir, read_manifest(tiny_regression_dir), runtime)
    assert isinstance(engine, ProcessEngine) == in_child
    jobs = _jobs(tiny_regression_dir)
    for here, there in zip(local.sample_many(jobs), engine.sample_many(jobs), strict=True):
        np.testing.assert_array_equal(here, there)
