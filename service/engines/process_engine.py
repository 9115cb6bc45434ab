"""Engines whose passes run in child processes, each with its own interpreter and GIL.

In one process the engine thread and the event loop take turns on the GIL: after every torch or
numpy call the engine waits for it, so under load a pass runs slower than alone
(docs/engine-process.md). Here the server keeps the HTTP work and the children the passes; only
each batch's inputs and its (T, N, D) outputs cross, over a socket pair (process_wire.py).

A runtime's `workers` children form one pool that every model of the runtime shares, as the
in-process engines share the runtime's torch threads: each child holds every model's engine
(loaded from the folder itself: safetensors, ONNX and JSON) and runs one pass at a time. A child
found dead is started again, with every model, before the next call; one that dies during a
call fails it with EngineUnavailable (503), and the batcher then runs that pass's jobs again
one by one. Children end with the server: each reads end-of-file on its
socket when the server's end closes.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service import errors
from service.engines.base import SampleJob
from service.engines.process_wire import WireError, receive, send
from service.engines.runtime import EngineRuntime, threads_per_worker

log = logging.getLogger("mcdrop.engines")

# Errors a child reports are raised again here as the same class where the server knows it.
_RAISED_AGAIN: dict[str, type[Exception]] = {
    name: cls
    for name, cls in vars(errors).items()
    if isinstance(cls, type) and issubclass(cls, errors.MCDropError)
}
_RAISED_AGAIN.update(ValueError=ValueError, MemoryError=MemoryError)


class _Child:
    """One engine process and the server's end of its socket."""

    def __init__(self, runtime: dict[str, Any]) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service.engines.process_child", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self.sock = ours
        self.alive = True
        self.unload: list[int] = []  # engines the server dropped, told with the next call
        send(ours, {"runtime": runtime}, [])

    def started(self) -> _Child:
        """Wait for the child to apply the runtime."""
        self.request_reply()
        return self

    def request(
        self, header: dict[str, Any], arrays: list[NDArray[Any]]
    ) -> tuple[dict[str, Any], list[NDArray[Any]]]:
        gone, self.unload = self.unload, []
        try:
            send(self.sock, {**header, "unload": gone}, arrays)
        except OSError as e:
            raise self._stopped() from e
        return self.request_reply()

    def request_reply(self) -> tuple[dict[str, Any], list[NDArray[Any]]]:
        try:
            header, arrays = receive(self.sock)
        except (WireError, OSError) as e:
            raise self._stopped() from e
        if not header["ok"]:
            cls = _RAISED_AGAIN.get(header["type"])
            if cls is None:
                raise RuntimeError(f"{header['type']} in the engine process: {header['message']}")
            raise cls(header["message"])
        return header, arrays

    def _stopped(self) -> errors.EngineUnavailable:
        code = self.stop(timeout_s=1)
        return errors.EngineUnavailable(
            f"the engine process stopped (exit code {code}) during this call; it starts again "
            "with the next request"
        )

    def dead(self) -> bool:
        """Closed by us, or exited (killed, out of memory) since its last call."""
        return not self.alive or self.proc.poll() is not None

    def close(self) -> None:
        """Close our end: the child reads end-of-file and exits."""
        self.alive = False
        self.sock.close()

    def stop(self, timeout_s: float) -> int:
        """Close our end and wait for the child to exit, killing it after timeout_s; its exit
        code."""
        self.close()
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class ProcessPool:
    """A runtime's engine processes, shared by every model built under it."""

    def __init__(self, runtime: dict[str, Any], workers: int) -> None:
        self._runtime = runtime
        self._workers = workers
        self._models: dict[int, str] = {}  # engine id -> folder, for every engine held
        self._ids = itertools.count()
        self._children: list[_Child] = []
        self._idle: queue.SimpleQueue[_Child] = queue.SimpleQueue()
        self._load_lock = threading.Lock()  # one load at a time: it takes every child
        self._lock = threading.Lock()  # _models and each child's unload list

    def load(self, folder: Path) -> tuple[int, str, str]:
        """Build the folder's engine in every child: its id, engine name and device."""
        with self._load_lock:
            if not self._children:
                started = [_Child(self._runtime) for _ in range(self._workers)]
                self._children = [c.started() for c in started]
                for child in self._children:
                    self._idle.put(child)
            key = next(self._ids)
            taken = [self._idle.get() for _ in range(self._workers)]
            try:
                for i, child in enumerate(taken):
                    if child.dead():
                        taken[i] = child = self._restart(child)
                    reply, _ = child.request({"op": "load", "id": key, "folder": str(folder)}, [])
            except BaseException:
                self.forget(key)
                raise
            finally:
                for child in taken:
                    self._idle.put(child)
            with self._lock:
                self._models[key] = str(folder)
        return key, reply["name"], reply["device"]

    def call(
        self, key: int, header: dict[str, Any], arrays: list[NDArray[Any]]
    ) -> list[NDArray[Any]]:
        """One call on an idle child (waiting for one), started again first if it died while
        idle, so the call never meets it; one that dies during the call fails it."""
        child = self._idle.get()
        try:
            if child.dead():
                child = self._restart(child)
            return child.request({**header, "id": key}, arrays)[1]
        finally:
            self._idle.put(child)

    @property
    def pids(self) -> list[int]:
        """The children's process ids."""
        return [c.proc.pid for c in self._children]

    def forget(self, key: int) -> None:
        """The engine is gone: each child drops it with its next call."""
        with self._lock:
            self._models.pop(key, None)
            for child in self._children:
                child.unload.append(key)

    def close(self) -> None:
        """Stop every child (at exit; each would also stop on its own once we are gone)."""
        for child in self._children:
            child.close()  # all told first, so they exit side by side
        for child in self._children:
            child.stop(timeout_s=5)

    def _restart(self, dead: _Child) -> _Child:
        dead.close()
        dead.proc.poll()  # reaped, if it exited
        child = _Child(self._runtime).started()
        with self._lock:
            models = dict(self._models)
            self._children = [child if c is dead else c for c in self._children]
        for key, folder in models.items():
            try:
                child.request({"op": "load", "id": key, "folder": folder}, [])
            except errors.MCDropError as e:  # its passes now fail with EngineUnavailable
                log.error("engine process restart: model %s (%s) did not load: %s", key, folder, e)
        names = ", ".join(Path(folder).name for folder in models.values())
        log.warning("engine process restarted; models loaded again: %s", names or "none")
        return child


def _child_runtime(runtime: EngineRuntime) -> tuple[tuple[str, Any], ...]:
    """Each child runs one worker with its share of the cores (see threads_per_worker)."""
    threads = threads_per_worker(runtime.threads, runtime.workers, os.cpu_count() or 1) or 0
    return (
        ("engine", runtime.engine),
        ("device", runtime.device),
        ("threads", threads),
        ("workers", 1),
        ("precision", runtime.precision),
        ("max_activation_mb", runtime.max_activation_mb),
    )


@functools.cache
def _pool(child_runtime: tuple[tuple[str, Any], ...], workers: int) -> ProcessPool:
    pool = ProcessPool(dict(child_runtime), workers)
    atexit.register(pool.close)
    return pool


class ProcessEngine:
    """The Engine contract for one model folder, served by its runtime's ProcessPool."""

    def __init__(self, folder: Path, runtime: EngineRuntime) -> None:
        self._pool = _pool(_child_runtime(runtime), runtime.workers)
        self._key, self.name, self.device = self._pool.load(folder)
        weakref.finalize(self, self._pool.forget, self._key)

    @property
    def pool(self) -> ProcessPool:
        return self._pool

    def sample_many(self, jobs: list[SampleJob]) -> list[NDArray[np.float32]]:
        specs, arrays = [], []
        for job in jobs:
            specs.append(
                {
                    "samples": job.samples,
                    "seed": job.seed,
                    "first_sample": job.first_sample,
                    "row_ids": job.row_ids is not None,
                }
            )
            arrays.append(job.x)
            if job.row_ids is not None:
                arrays.append(np.asarray(job.row_ids, np.int64))
        return self._pool.call(self._key, {"op": "sample", "jobs": specs}, arrays)

    def deterministic(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        return self._pool.call(self._key, {"op": "deterministic"}, [x])[0]
