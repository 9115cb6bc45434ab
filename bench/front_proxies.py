"""Slow clients through the front proxies of deploy/proxy/, and against mcdrop alone.

    .venv/bin/python bench/front_proxies.py [--slow 600]   # needs nginx and haproxy (Debian)

A server of the light model (`diabetes`) runs on a loopback port with uvicorn's plain protocol
behind nginx, then behind HAProxy (each with its file from deploy/proxy/, ports rewritten), and
then alone with the guarded protocol of `mcdrop serve`. Against each front: `--slow` connections
send half a request head and stop, and as many send a whole head with Content-Length: 1000 and
then one body byte a second; two seconds in, three GET /health/live probes and one prediction.
Prints the probes' statuses, the prediction's status, and when the slow connections were closed
(or that they were still open when the run ended at 45 s). Bounded: 45 s per front.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from serve_load import free_port

ROOT = Path(__file__).resolve().parent.parent
RUN_S = 45.0
PREDICT = b"POST /v1/models/diabetes/predict HTTP/1.1\r\nHost: x\r\n"


def wait_ok(port: int, path: str) -> None:
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"port {port}: {path} never answered 200")


async def exchange(port: int, request: bytes) -> tuple[int, float]:
    """One request on a fresh connection: status (0 if none came) and seconds."""
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        return (int(answer[9:12]) if answer else 0), time.perf_counter() - t0
    except (OSError, TimeoutError):
        return 0, time.perf_counter() - t0


async def slow_client(port: int, trickle: bool, t0: float) -> float | None:
    """Seconds until the server closed the connection, or None if it was still open at the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if trickle:
        writer.write(PREDICT + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    else:
        writer.write(PREDICT)
    while time.perf_counter() - t0 < RUN_S:
        try:
            if not await asyncio.wait_for(reader.read(4096), 1.0):
                return time.perf_counter() - t0
        except TimeoutError:
            if trickle:
                try:
                    writer.write(b" ")
                    await writer.drain()
                except OSError:
                    return time.perf_counter() - t0
        except OSError:
            return time.perf_counter() - t0
    writer.close()
    return None


def describe(closed: list[float | None]) -> str:
    still = sum(t is None for t in closed)
    if still:
        return f"{still}/{len(closed)} still open at {RUN_S:.0f} s"
    done = [t for t in closed if t is not None]
    return f"all closed after {min(done):.1f}-{max(done):.1f} s"


async def scenario(port: int, n: int) -> str:
    t0 = time.perf_counter()
    heads = [asyncio.create_task(slow_client(port, False, t0)) for _ in range(n)]
    bodies = [asyncio.create_task(slow_client(port, True, t0)) for _ in range(n)]
    await asyncio.sleep(2.0)
    live = b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    probes = [await exchange(port, live) for _ in range(3)]
    body = json.dumps({"inputs": [[0.01] * 10], "samples": 100}).encode()
    head = PREDICT + b"Connection: close\r\nContent-Type: application/json\r\n"
    predicted, _ = await exchange(port, head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return (
        f"health {[s for s, _ in probes]} (fastest {1e3 * min(t for _, t in probes):.1f} ms), "
        f"prediction {predicted}; half-sent heads: {describe(await asyncio.gather(*heads))}; "
        f"trickled bodies: {describe(await asyncio.gather(*bodies))}"
    )


def proxy_command(name: str, tmp: Path, back: int, front: int) -> list[str]:
    """The deploy/proxy file for `name`, pointed at the loopback ports, and how to run it."""
    if name == "nginx":
        text = (ROOT / "deploy" / "proxy" / "nginx.conf").read_text()
        text = text.replace("listen 8080", f"listen 127.0.0.1:{front}")
        text = text.replace(
            "http {", f"http {{\n client_body_temp_path {tmp};\n proxy_temp_path {tmp};"
        )
        text = f"pid {tmp}/nginx.pid;\nerror_log {tmp}/nginx.log;\n" + text
    else:
        text = (ROOT / "deploy" / "proxy" / "haproxy.cfg").read_text()
        text = text.replace("bind :8080", f"bind 127.0.0.1:{front}")
    conf = tmp / f"{name}.conf"
    conf.write_text(text.replace("127.0.0.1:8000", f"127.0.0.1:{back}"))
    if name == "nginx":
        return ["nginx", "-c", str(conf), "-g", "daemon off;"]
    return ["haproxy", "-f", str(conf)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--slow", type=int, default=600, help="half-sent heads, and trickled bodies")
    args = ap.parse_args()
    missing = [p for p in ("nginx", "haproxy") if shutil.which(p) is None]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not found: apt-get install nginx-light haproxy")
    with tempfile.TemporaryDirectory(prefix="mcdrop-proxies-") as name:
        tmp = Path(name)
        shutil.copytree(ROOT / "models" / "diabetes", tmp / "models" / "diabetes")
        env = {
            **os.environ,
            "MCDROP_NUM_THREADS": "1",
            "MCDROP_DATABASE_URL": f"sqlite:///{tmp}/referrals.db",
            "MCDROP_REFERRAL_SPOOL": f"{tmp}/spool.jsonl",
        }
        serve = [sys.executable, str(Path(__file__).parent / "slow_clients.py"), "--serve"]
        for kind in ("plain", "guarded"):
            back = free_port()
            server = subprocess.Popen(
                [*serve, kind, "--port", str(back), "--model-dir", str(tmp / "models")],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_ok(back, "/health/ready")
                if kind == "guarded":
                    print(
                        f"mcdrop alone (guarded protocol): {asyncio.run(scenario(back, args.slow))}"
                    )
                    continue
                for proxy in ("nginx", "haproxy"):
                    front = free_port()
                    p = subprocess.Popen(
                        proxy_command(proxy, tmp, back, front),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    try:
                        wait_ok(front, "/health/live")
                        result = asyncio.run(scenario(front, args.slow))
                        print(f"{proxy} in front of plain uvicorn: {result}", flush=True)
                    finally:
                        p.terminate()
                        p.wait()
            finally:
                server.terminate()
                server.wait()


if __name__ == "__main__":
    main()
