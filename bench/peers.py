"""mcdrop against two peers serving the same model the way their users would, in one run.

    .venv/bin/python bench/peers.py --setup            # once: the peers' own virtual envs
    .venv/bin/python bench/peers.py [--seconds 4] [--repeats 3] [--concurrency 1 32]

The peers live in virtual environments of their own under build/peers/ (never the project's):
LitServe, and MLServer 1.7.1 with uvloop<0.22 (its inference worker fails to start with newer
uvloop). Each serves the shipped `diabetes` model from its model folder (safetensors weights
and JSON manifest, read with torch and safetensors only), with T=100 MC dropout samples of
every row as one pass: the rows replicated T times through the network with `nn.Dropout` in
train mode, which is how a user of either framework would write it. Both batch requests
dynamically (up to 32 requests, 2 ms).
- LitServe: a `LitAPI` (decode, predict on the batch, encode), JSON body {"inputs": [[...]]}.
- MLServer: a custom `MLModel` runtime with adaptive batching; Open Inference Protocol (V2)
  bodies with one FP32 tensor.
- mcdrop: `mcdrop serve`, REST (`/v1/models/diabetes/predict`) and V2
  (`/v2/models/diabetes/infer`), `"refer": false` so the store is out of the comparison.
Every server answers mean, variance and abstain per row. Servers are started one after the
other in an order that rotates between repeats, and loaded with the raw HTTP/1.1 client of
bench/load_http.py (closed loop). Prints medians of requests/s and the ratios mcdrop / peer;
writes bench/results/peers.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from load_http import run_level
from serve_load import free_port, repo_relative, start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / "build" / "peers"
OUT = Path(__file__).resolve().parent / "results" / "peers.json"
T = 100
PEER_PACKAGES = {
    "litserve": ["litserve"],
    "mlserver": ["mlserver==1.7.1", "uvloop<0.22"],
}

# The model as a peer's user would load it: torch and safetensors, nothing from mcdrop.
PEER_MODEL = '''
import json
import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

T = 100


class MCModel:
    def __init__(self, folder):
        m = json.load(open(f"{folder}/model.json"))
        a, d, n = m["architecture"], m["dropout"], m["normalization"]
        sizes = [a["input_dim"], *a["hidden"], a["output_dim"]]
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Dropout(d["input_rate"] if i == 0 else d["hidden_rate"]))
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        self.net.load_state_dict(load_file(f"{folder}/weights.safetensors"))
        self.net.train()  # dropout on: MC dropout
        self.x_mean = torch.tensor(n["x_mean"]) / n.get("input_scale", 1.0)
        self.x_std = torch.tensor(n["x_std"])
        self.scale = n.get("input_scale", 1.0)
        self.y_mean = np.array(n["y_mean"])
        self.y_std = np.array(n["y_std"])
        self.noise = 1.0 / m["tau"]
        self.threshold = m["threshold"]

    def __call__(self, x):
        """x: (N, D) float32 array -> mean, variance (N, K) and abstain (N,)."""
        rows = (torch.from_numpy(x) * self.scale - self.x_mean * self.scale) / self.x_std
        with torch.inference_mode():
            y = self.net(rows.repeat(T, 1)).reshape(T, len(x), -1).numpy()
        y = y * self.y_std + self.y_mean
        mean, var = y.mean(0), y.var(0) + self.noise
        return mean, var, np.sqrt(var).max(1) > self.threshold
'''

LITSERVE_SERVER = """
import sys
import numpy as np
import litserve as ls
from peer_model import MCModel


class MCDropoutAPI(ls.LitAPI):
    def setup(self, device):
        self.model = MCModel(sys.argv[1])

    def decode_request(self, request):
        return np.asarray(request["inputs"], dtype=np.float32)

    def batch(self, inputs):
        return inputs

    def predict(self, xs):
        mean, var, abstain = self.model(np.concatenate(xs))
        out, start = [], 0
        for x in xs:
            end = start + len(x)
            out.append((mean[start:end], var[start:end], abstain[start:end]))
            start = end
        return out

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        mean, var, abstain = output
        return {"mean": mean.tolist(), "variance": var.tolist(), "abstain": abstain.tolist()}


if __name__ == "__main__":
    api = MCDropoutAPI(max_batch_size=32, batch_timeout=0.002)
    ls.LitServer(api, accelerator="cpu", workers_per_device=1).run(
        port=int(sys.argv[2]), log_level="warning", generate_client_file=False
    )
"""

MLSERVER_RUNTIME = """
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from peer_model import MCModel


class MCDropoutRuntime(MLModel):
    async def load(self):
        self.model = MCModel(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        mean, var, abstain = self.model(x)
        outputs = [
            NumpyCodec.encode_output("mean", mean),
            NumpyCodec.encode_output("variance", var),
            NumpyCodec.encode_output("abstain", abstain),
        ]
        return InferenceResponse(model_name=self.name, outputs=outputs)
"""


def python_of(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def setup() -> None:
    """Create the peers' virtual environments (pip from the configured index)."""
    for peer, packages in PEER_PACKAGES.items():
        if not python_of(peer).exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENVS / peer)], check=True)
        constraints = ["-c", str(ROOT / "constraints.txt")]
        pip = [str(python_of(peer)), "-m", "pip", "install", "-q", *constraints]
        subprocess.run([*pip, *packages, "torch", "safetensors", "numpy"], check=True)


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"not ready: {url}\n{log.read_text()[-3000:]}")


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server and every process it started: LitServe's and MLServer's workers outlive
    a SIGTERM to their parent, and would load the machine through the later measurements."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    time.sleep(0.5)  # the workers' own shutdown
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def start_litserve(tmp: Path, model: Path, port: int) -> subprocess.Popen[bytes]:
    (tmp / "peer_model.py").write_text(PEER_MODEL)
    (tmp / "litserve_server.py").write_text(LITSERVE_SERVER)
    log = tmp / "litserve.log"
    proc = subprocess.Popen(
        [str(python_of("litserve")), "litserve_server.py", str(model), str(port)],
        cwd=tmp,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp)},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its worker processes share the group, and stop with it
    )
    wait_ready(proc, f"http://127.0.0.1:{port}/health", log)
    return proc


def start_mlserver(tmp: Path, model: Path, port: int) -> subprocess.Popen[bytes]:
    root = tmp / "mlserver"
    (root / "diabetes").mkdir(parents=True, exist_ok=True)
    (root / "peer_model.py").write_text(PEER_MODEL)
    (root / "runtime.py").write_text(MLSERVER_RUNTIME)
    settings = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port()}
    (root / "settings.json").write_text(json.dumps(settings | {"debug": False}))
    model_settings = {
        "name": "diabetes",
        "implementation": "runtime.MCDropoutRuntime",
        "max_batch_size": 32,
        "max_batch_time": 0.002,
        "parameters": {"uri": str(model)},
    }
    (root / "diabetes" / "model-settings.json").write_text(json.dumps(model_settings))
    log = tmp / "mlserver.log"
    mlserver = python_of("mlserver").parent / "mlserver"
    proc = subprocess.Popen(
        [str(mlserver), "start", str(root)],
        cwd=root,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its worker processes share the group, and stop with it
    )
    wait_ready(proc, f"http://127.0.0.1:{port}/v2/models/diabetes/ready", log)
    return proc


def bodies(x: list[list[float]]) -> dict[str, bytes]:
    tensor = {"name": "input", "shape": [len(x), len(x[0])], "datatype": "FP32", "data": x}
    return {
        "rest": json.dumps({"inputs": x, "samples": T, "refer": False}).encode(),
        "v2": json.dumps(
            {"inputs": [tensor], "parameters": {"samples": T, "refer": False}}
        ).encode(),
        "litserve": json.dumps({"inputs": x}).encode(),
        "mlserver": json.dumps({"inputs": [tensor]}).encode(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--setup", action="store_true", help="create the peers' virtual envs")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    if args.setup:
        setup()
        return
    missing = [p for p in PEER_PACKAGES if not python_of(p).exists()]
    if missing:
        raise SystemExit(f"no virtual env for {missing}: run bench/peers.py --setup first")

    x = np.random.default_rng(0).normal(0, 0.05, (1, 10)).tolist()
    body = bodies(x)
    load_start = os.getloadavg()
    runs: list[dict[str, Any]] = []
    servers = ["mcdrop", "litserve", "mlserver"]
    with tempfile.TemporaryDirectory(prefix="mcdrop-peers-") as name:
        tmp = Path(name)
        model = tmp / "models" / "diabetes"
        shutil.copytree(ROOT / "models" / "diabetes", model)
        for rep in range(args.repeats):
            for server in servers[rep % 3 :] + servers[: rep % 3]:
                port = free_port()
                base = f"http://127.0.0.1:{port}"
                if server == "mcdrop":
                    env = {
                        "MCDROP_DATABASE_URL": f"sqlite:///{tmp}/referrals.db",
                        "MCDROP_REFERRAL_SPOOL": f"{tmp}/spool.jsonl",
                    }
                    proc = start_server(model.parent, True, 1, 1, port, env)
                    targets = {
                        "mcdrop REST": (f"{base}/v1/models/diabetes/predict", body["rest"]),
                        "mcdrop V2": (f"{base}/v2/models/diabetes/infer", body["v2"]),
                    }
                elif server == "litserve":
                    proc = start_litserve(tmp, model, port)
                    targets = {"LitServe": (f"{base}/predict", body["litserve"])}
                else:
                    proc = start_mlserver(tmp, model, port)
                    targets = {
                        "MLServer V2": (f"{base}/v2/models/diabetes/infer", body["mlserver"])
                    }
                try:
                    for label, (url, data) in targets.items():
                        for conc in args.concurrency:
                            asyncio.run(run_level(url, "POST", data, conc, 1.0, 5000))
                            r = asyncio.run(run_level(url, "POST", data, conc, args.seconds))
                            r |= {"server": label, "repeat": rep}
                            runs.append(r)
                            print(
                                f"rep {rep} {label:>12} c={conc:<3} {r['rps']:7.1f} req/s  "
                                f"p50 {r['p50_ms']:6.2f}  p99 {r['p99_ms']:6.2f} ms  errors "
                                f"{r['errors']}",
                                flush=True,
                            )
                finally:
                    if server == "mcdrop":
                        stop_server(proc)
                    else:
                        stop_group(proc)
    report(runs, args, load_start, os.getloadavg())


def report(
    runs: list[dict[str, Any]],
    args: argparse.Namespace,
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
) -> None:
    def rps(label: str, conc: int) -> float:
        sel = [r["rps"] for r in runs if r["server"] == label and r["concurrency"] == conc]
        return float(np.median(sel)) if sel else float("nan")

    print(
        f"\nmedians of {args.repeats} repeats, {args.seconds:.0f} s each, diabetes, N=1, T={T}, "
        f"{os.cpu_count()} cores, load average {load_start[0]:.1f} at start, "
        f"{load_end[0]:.1f} at end"
    )
    labels = ["mcdrop REST", "mcdrop V2", "LitServe", "MLServer V2"]
    ratios: dict[str, float] = {}
    for conc in args.concurrency:
        print(f"c={conc}: " + ", ".join(f"{k} {rps(k, conc):.0f}" for k in labels))
        for ours in ("mcdrop REST", "mcdrop V2"):
            for peer in ("LitServe", "MLServer V2"):
                key = f"c{conc} {ours} / {peer}"
                ratios[key] = rps(ours, conc) / rps(peer, conc)
                print(f"  {key}: {ratios[key]:.2f}")
        ratios[f"c{conc} mcdrop V2 / REST"] = rps("mcdrop V2", conc) / rps("mcdrop REST", conc)
        print(f"  c{conc} mcdrop V2 / REST: {ratios[f'c{conc} mcdrop V2 / REST']:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "setup"}
    settings |= {"load_average": [load_start, load_end], "T": T, "N": 1, "out": repo_relative(out)}
    out.write_text(json.dumps({"settings": settings, "ratios": ratios, "runs": runs}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
