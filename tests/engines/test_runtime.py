"""The engine runtime: built once from the settings, handed to every engine, owning its threads;
and the two mask strategies behind one interface."""

from __future__ import annotations

import copy
import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from service.artifacts.manifest import DropoutSpec, MLPArchitecture, read_manifest
from service.config import Settings
from service.engines import EngineRuntime, SampleJob, build_engine, start_runtime
from service.engines.mask_strategy import AcceleratorMasks, CpuMasks
from service.engines.nets import build_mlp
from service.engines.runtime import TORCH_THREAD_PREFIX, library_threads
from service.engines.torch_engine import TorchEngine


def test_a_runtime_carries_the_engine_settings() -> None:
    settings = Settings(
        engine="onnx", device="cpu", num_threads=3, precision="float32", max_activation_mb=64
    )
    runtime = EngineRuntime.from_settings(settings)
    assert (runtime.engine, runtime.device, runtime.threads, runtime.workers) == (
        "onnx",
        "cpu",
        3,
        1,
    )
    assert (runtime.precision, runtime.max_activation_mb, runtime.session_threads) == (
        "float32",
        64,
        3,
    )
    workers = EngineRuntime.from_settings(Settings(engine_workers=4, precision="bf16"))
    assert (workers.workers, workers.precision, workers.session_threads) == (4, "bf16", None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"engine": "tpu"}, "engine"),
        ({"precision": "fp8"}, "precision"),
        ({"workers": 0}, "workers"),
    ],
)
def test_a_bad_runtime_is_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        EngineRuntime(**change)  # type: ignore[arg-type]


def test_runtimes_of_one_worker_share_one_torch_thread_and_others_have_their_own() -> None:
    # One thread for all library callers keeps one OpenMP team in the process.
    assert EngineRuntime().calls is library_threads()
    assert EngineRuntime(device="cpu", precision="float32").calls is library_threads()
    several = EngineRuntime(workers=3)
    assert several.calls is not library_threads() and several.calls.workers == 3
    assert dataclasses.replace(several, device="cpu").calls is several.calls
    assert dataclasses.replace(several, workers=1).calls is library_threads()


def test_cpu_torch_work_runs_on_the_runtimes_threads_and_nests() -> None:
    calls = EngineRuntime(workers=2).calls

    def name() -> str:
        return threading.current_thread().name

    assert calls.run(name).startswith(TORCH_THREAD_PREFIX)
    # A call from one of those threads runs in place, so a load inside a pass cannot deadlock.
    assert calls.run(calls.run, name).startswith(TORCH_THREAD_PREFIX)


def test_start_runtime_applies_its_threads_to_torch() -> None:
    before = torch.get_num_threads()
    try:
        start_runtime(EngineRuntime(threads=1))
        assert torch.get_num_threads() == 1
        start_runtime(EngineRuntime(engine="onnx", threads=2))  # torch is left alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_factory_builds_the_runtimes_engine(tiny_regression_dir: Path) -> None:
    manifest = read_manifest(tiny_regression_dir)
    runtime = EngineRuntime(device="cpu", max_activation_mb=1)
    engine = build_engine(tiny_regression_dir, manifest, runtime)
    assert isinstance(engine, TorchEngine) and engine.device == "cpu"
    assert isinstance(engine.mask_strategy, CpuMasks)
    assert engine.max_rows * engine.bytes_per_row <= 2**20


def _engine(noise: str) -> TorchEngine:
    torch.manual_seed(0)
    net = build_mlp(
        MLPArchitecture(input_dim=6, hidden=[24, 24], output_dim=2),
        DropoutSpec(noise=noise, input_rate=0.2, hidden_rate=0.3),  # type: ignore[arg-type]
    )
    return TorchEngine(net, [6], EngineRuntime(device="cpu"))


@pytest.mark.parametrize("noise", ["bernoulli", "gaussian"])
def test_the_accelerator_strategy_gives_the_cpu_strategys_samples(noise: str) -> None:
    # The accelerator's whole pass (noise drawn by torch ops, held per chunk, applied as a
    # multiplier) run on CPU tensors: the same samples as the CPU strategy, chunked or not.
    cpu = _engine(noise)
    accelerator = copy.copy(cpu)
    sites = list(cpu.sites.values())
    accelerator.mask_strategy = AcceleratorMasks(sites, "cpu", torch.float32, tf32=False)
    rng = np.random.default_rng(2)
    jobs = [
        SampleJob(rng.standard_normal((3, 6)).astype(np.float32), 30, seed=4),
        SampleJob(rng.standard_normal((2, 6)).astype(np.float32), 9, seed=5, first_sample=7),
    ]
    want = cpu.sample_many(jobs)
    for got, ref in zip(accelerator.sample_many(jobs), want, strict=True):
        if noise == "bernoulli":  # a 0/1 multiplier and an in-place zeroing agree exactly
            np.testing.assert_array_equal(got, ref)
        else:  # Box-Muller in torch and in numpy agree to float64 rounding, cast to float32
            np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    accelerator.max_rows = 11  # several chunks, each drawing its own noise; smaller products
    for got, ref in zip(accelerator.sample_many(jobs), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_an_accelerator_pass_sets_tf32_for_itself_only() -> None:
    before = torch.get_float32_matmul_precision()
    strategy = AcceleratorMasks([], "cpu", torch.float32, tf32=True)
    assert strategy.run(torch.get_float32_matmul_precision) == "high"
    strict = AcceleratorMasks([], "cpu", torch.float32, tf32=False)
    assert strict.run(torch.get_float32_matmul_precision) == "highest"
    assert torch.get_float32_matmul_precision() == before
