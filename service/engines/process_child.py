"""An engine process: holds the engines of the server's models and runs their passes.

Started by `process_engine.ProcessPool` as `python -m service.engines.process_child FD`, where FD
is its end of a socket pair. The first message carries the runtime, applied once (torch's
threads). Then each message is one call, answered with its arrays or the error it raised:
- `load`: build the engine of a model folder under an id;
- `sample` / `deterministic`: that engine's `sample_many` or `deterministic`.
Every call may also list ids whose engines the server no longer holds (`unload`). The process
ends when the server closes its end.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from service.artifacts.manifest import read_manifest
from service.engines.base import Engine, SampleJob
from service.engines.factory import build_engine, start_runtime
from service.engines.process_wire import WireError, receive, send
from service.engines.runtime import TORCH_THREAD_PREFIX, EngineRuntime
from service.errors import EngineUnavailable


def _jobs(header: dict[str, Any], arrays: list[Any]) -> list[SampleJob]:
    jobs, k = [], 0
    for spec in header["jobs"]:
        x = arrays[k]
        k += 1
        row_ids = None
        if spec["row_ids"]:
            row_ids = arrays[k]
            k += 1
        jobs.append(SampleJob(x, spec["samples"], spec["seed"], spec["first_sample"], row_ids))
    return jobs


def _answer(
    engines: dict[int, Engine], runtime: EngineRuntime, header: dict[str, Any], arrays: list[Any]
) -> tuple[dict[str, Any], list[Any]]:
    for gone in header.get("unload", []):
        engines.pop(gone, None)
    op, key = header["op"], header["id"]
    if op == "load":
        folder = Path(header["folder"])
        engine = build_engine(folder, read_manifest(folder), runtime)
        engines[key] = engine
        return {"ok": True, "name": engine.name, "device": engine.device}, []
    if key not in engines:
        raise EngineUnavailable(f"the engine process does not hold model {key}; reload the model")
    if op == "sample":
        return {"ok": True}, list(engines[key].sample_many(_jobs(header, arrays)))
    return {"ok": True}, [engines[key].deterministic(arrays[0])]


def serve(sock: socket.socket) -> None:
    header, _ = receive(sock)
    runtime = EngineRuntime(**header["runtime"])
    start_runtime(runtime)
    send(sock, {"ok": True}, [])
    engines: dict[int, Engine] = {}
    while True:
        try:
            header, arrays = receive(sock)
        except WireError:  # the server closed its end (shut down or died)
            return
        try:
            reply, out = _answer(engines, runtime, header, arrays)
        except Exception as e:  # the caller's error, raised again on the server's side
            reply, out = {"ok": False, "type": type(e).__name__, "message": str(e)}, []
        send(sock, reply, out)


def main(argv: list[str]) -> None:
    # Named as the runtime's torch threads: the engine's CallThreads then run each pass here
    # at once, instead of handing it to a pool thread and waiting (two wake-ups per pass).
    threading.current_thread().name = f"{TORCH_THREAD_PREFIX}-process"
    # The server going away mid-message leaves nothing to answer.
    gone = (WireError, BrokenPipeError, ConnectionResetError)
    with socket.socket(fileno=int(argv[1])) as sock, contextlib.suppress(*gone):
        serve(sock)


if __name__ == "__main__":
    main(sys.argv)
