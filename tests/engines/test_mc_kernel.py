"""The MC kernel: masks positioned by sample index, exact keep rate, bounded chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.artifacts.manifest import DropoutSpec, MLPArchitecture
from service.engines import masks
from service.engines.base import SampleJob, Segment, chunk_rows, plan_chunks, replication_index
from service.engines.mask_strategy import AcceleratorMasks
from service.engines.nets import build_mlp
from service.engines.runtime import EngineRuntime
from service.engines.torch_engine import TorchEngine


def _engine(
    max_activation_mb: float = 256.0, input_rate: float = 0.1, noise: str = "bernoulli"
) -> TorchEngine:
    torch.manual_seed(0)
    net = build_mlp(
        MLPArchitecture(input_dim=5, hidden=[32, 32], output_dim=3),
        DropoutSpec(noise=noise, input_rate=input_rate, hidden_rate=0.2),  # type: ignore[arg-type]
    )
    return TorchEngine(net, [5], EngineRuntime(device="cpu", max_activation_mb=max_activation_mb))


def _x(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 5)).astype(np.float32)


def test_replication_index_copies_each_row_over_its_samples() -> None:
    jobs = [SampleJob(_x(2), 3, 0), SampleJob(_x(1), 4, 1), SampleJob(_x(3), 2, 2)]
    chunk = [Segment(0, 1, 3), Segment(1, 0, 4), Segment(2, 0, 1)]
    # Inputs are concatenated: job 0 is rows 0-1, job 1 row 2, job 2 rows 3-5; each segment's
    # rows are sample-major (all of a sample's rows, then the next sample's).
    expected = [0, 1, 0, 1, 2, 2, 2, 2, 3, 4, 5]
    assert replication_index(chunk, jobs).tolist() == expected
    # A chunk of one segment (a request alone, or one cut from a batch) takes a shortcut.
    assert replication_index([Segment(2, 3, 5)], jobs).tolist() == [3, 4, 5, 3, 4, 5]
    assert replication_index([Segment(1, 0, 3)], jobs).tolist() == [2, 2, 2]


def test_chunk_rows_name_each_stacked_rows_seed_row_and_sample() -> None:
    jobs = [
        SampleJob(_x(2), 3, seed=10),
        SampleJob(_x(1), 4, seed=11, first_sample=5),
        SampleJob(_x(3), 2, seed=12, row_ids=np.array([7, 2, 9])),
    ]
    chunk = [Segment(0, 1, 3), Segment(1, 0, 4), Segment(2, 0, 1)]
    rows = chunk_rows(chunk, jobs)
    seeds = [rows.seeds[i] for i in rows.seed_index]
    slots = [(int(s) // masks.SAMPLE_SPAN, int(s) % masks.SAMPLE_SPAN) for s in rows.slots]
    assert seeds == [10] * 4 + [11] * 4 + [12] * 3
    expected = [(0, 1), (1, 1), (0, 2), (1, 2), (0, 5), (0, 6), (0, 7), (0, 8)]
    assert slots == [*expected, (7, 0), (2, 0), (9, 0)]
    # A chunk of one segment (a request alone, or a later chunk of a batch) takes a shortcut,
    # and must still name that job's seed, not the first job's.
    alone = chunk_rows([Segment(2, 1, 2)], jobs)
    assert [alone.seeds[i] for i in alone.seed_index] == [12] * 3
    assert [int(s) % masks.SAMPLE_SPAN for s in alone.slots] == [1, 1, 1]
    assert [int(s) // masks.SAMPLE_SPAN for s in alone.slots] == [7, 2, 9]


def test_same_seed_same_samples_alone_batched_and_chunked() -> None:
    eng = _engine()
    a, b = _x(3, 1), _x(2, 2)
    alone = eng.sample_many([SampleJob(a, 40, seed=7)])[0]
    batched = eng.sample_many([SampleJob(b, 25, seed=8), SampleJob(a, 40, seed=7)])[1]
    eng.max_rows = 60  # the second request's later samples run in chunks of their own
    batched_chunked = eng.sample_many([SampleJob(b, 25, seed=8), SampleJob(a, 40, seed=7)])[1]
    np.testing.assert_allclose(batched_chunked, alone, rtol=1e-5, atol=1e-6)
    eng.max_rows = 7  # forces cuts inside the job (and a single sample per chunk at times)
    chunked = eng.sample_many([SampleJob(a, 40, seed=7)])[0]
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunked, alone, rtol=1e-5, atol=1e-6)
    # A different seed gives different samples; samples within a request differ from each other.
    other = eng.sample_many([SampleJob(a, 40, seed=6)])[0]
    assert not np.allclose(other, alone)
    assert not np.allclose(alone[0], alone[1])


def test_rounds_continue_the_stream() -> None:
    eng = _engine()
    x = _x(2)
    whole = eng.sample_many([SampleJob(x, 30, seed=4)])[0]
    second = eng.sample_many([SampleJob(x, 10, seed=4, first_sample=20)])[0]
    np.testing.assert_allclose(second, whole[20:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("noise", ["bernoulli", "gaussian"])
def test_a_round_of_some_rows_draws_the_fixed_runs_samples_of_those_rows(noise: str) -> None:
    # An adaptive round holds only the rows still open, in a smaller job: with their indices in
    # the request, row r's samples k..k+n are the fixed run's samples k..k+n of row r, batched
    # with another request or not, and cut into chunks or not. Gaussian noise follows the same
    # rule as Bernoulli masks.
    eng = _engine(noise=noise)
    x = _x(5, 3)
    fixed = eng.sample_many([SampleJob(x, 48, seed=4)])[0]
    open_rows = np.array([4, 1])
    job = SampleJob(x[open_rows], 32, seed=4, first_sample=16, row_ids=open_rows)
    np.testing.assert_allclose(
        eng.sample_many([job])[0], fixed[16:48][:, open_rows], rtol=1e-5, atol=1e-6
    )
    batched = eng.sample_many([SampleJob(_x(2, 9), 7, seed=5), job])[1]
    np.testing.assert_allclose(batched, fixed[16:48][:, open_rows], rtol=1e-5, atol=1e-6)
    eng.max_rows = 5
    np.testing.assert_allclose(
        eng.sample_many([job])[0], fixed[16:48][:, open_rows], rtol=1e-5, atol=1e-6
    )
    # Without the row indices the rows would take rows 0 and 1's masks: different samples.
    wrong = eng.sample_many([SampleJob(x[open_rows], 32, seed=4, first_sample=16)])[0]
    assert not np.allclose(wrong, fixed[16:48][:, open_rows])


def test_no_sample_of_a_row_repeats_another() -> None:
    # Round 2 of an adaptive run (row 2 alone, samples 8..15) must not copy round 1 (rows 0-2,
    # samples 0..7). Every (row, sample) output of a network with 10 Bernoulli(0.5) input units
    # is one of 2^10 values per row, so a few coincidences are expected by chance: at most
    # C(16, 2) / 2^10 ~ 0.12 per row on average; a reused mask repeats every sample of a range.
    torch.manual_seed(0)
    net = build_mlp(
        MLPArchitecture(input_dim=10, hidden=[], output_dim=1),
        DropoutSpec(input_rate=0.5, hidden_rate=0.5),
    )
    eng = TorchEngine(net, [10], EngineRuntime(device="cpu"))
    x = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    first = eng.sample_many([SampleJob(x, 8, seed=3)])[0]
    second = eng.sample_many([SampleJob(x[[2]], 8, seed=3, first_sample=8, row_ids=np.array([2]))])[
        0
    ]
    row2 = np.concatenate([first[:, 2, 0], second[:, 0, 0]])
    assert len(np.unique(row2)) >= 14


def test_masks_match_plain_dropout_in_distribution() -> None:
    # Against an independent reference: torch's own dropout in training mode, T passes in a loop.
    # Means over T=4000 agree within 5 standard errors of the difference of two MC means.
    eng = _engine(input_rate=0.0)  # no input dropout: exercises the prefix broadcast too
    net = eng._net.train()
    x = _x(2)
    t = 4000
    ours = eng.sample_many([SampleJob(x, t, seed=1)])[0].astype(np.float64)
    torch.manual_seed(1)
    with torch.no_grad():
        ref = torch.stack([net(torch.from_numpy(x)) for _ in range(t)]).double().numpy()
    net.eval()
    se = np.sqrt((ours.var(0) + ref.var(0)) / t)
    assert np.all(np.abs(ours.mean(0) - ref.mean(0)) < 5 * se + 1e-9)
    # Variances agree in ratio: the SE of a sample variance is about var * sqrt(2/T) (+ excess
    # kurtosis, bounded here by using 0.25 as a loose tolerance for 2/sqrt(T) = 0.03).
    ratio = ours.var(0) / ref.var(0)
    assert np.all(np.abs(ratio - 1) < 0.25)


def test_chunks_follow_the_budget_and_never_loop() -> None:
    # A single sample wider than the budget still runs whole, and planning terminates.
    chunks = plan_chunks([(256, 3)], 128)
    assert [[(s.t0, s.t1) for s in c] for c in chunks] == [[(0, 1)], [(1, 2)], [(2, 3)]]
    chunks = plan_chunks([(2, 3), (256, 2), (1, 5)], 300)
    for chunk in chunks:
        rows = sum((s.t1 - s.t0) * [2, 256, 1][s.job] for s in chunk)
        assert rows <= 300
    eng = _engine(max_activation_mb=0.05)
    assert eng.max_rows * eng.bytes_per_row <= 0.05 * 2**20


def test_bf16_is_refused_on_the_cpu() -> None:
    net = build_mlp(
        MLPArchitecture(input_dim=5, hidden=[8], output_dim=1),
        DropoutSpec(input_rate=0.1, hidden_rate=0.1),
    )
    with pytest.raises(ValueError, match="CUDA"):
        TorchEngine(net, [5], EngineRuntime(device="cpu", precision="bf16"))


def test_device_mask_path_draws_the_cpu_masks() -> None:
    # The accelerator's mask drawing (torch ops), run here on CPU tensors: every site's mask
    # for a chunk equals what the numpy path applies.
    eng = _engine()
    jobs = [SampleJob(_x(3), 20, seed=3), SampleJob(_x(2), 9, seed=8, first_sample=4)]
    chunk = [Segment(0, 5, 20), Segment(1, 0, 9)]
    rows = chunk_rows(chunk, jobs)
    drawn = AcceleratorMasks(list(eng.sites.values()), "cpu", torch.float32, False).draw(rows)
    for site in eng.sites.values():
        ref = np.empty((len(rows), site.elements), np.bool_)
        masks.keep_mask(ref, rows, site.site, site.keep_prob)
        got = drawn[site.site]
        assert got is not None
        np.testing.assert_array_equal(got.numpy().astype(bool), ref)


def test_the_callers_module_is_not_moved_or_changed() -> None:
    torch.manual_seed(0)
    net = build_mlp(
        MLPArchitecture(input_dim=5, hidden=[8], output_dim=1),
        DropoutSpec(input_rate=0.1, hidden_rate=0.1),
    ).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    TorchEngine(net, [5], EngineRuntime(device="cpu"))
    assert net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_samples_equal_cpu_samples() -> None:
    eng_cpu = _engine()
    net = eng_cpu._net
    eng_gpu = TorchEngine(net, [5], EngineRuntime(device="cuda"))
    jobs = [SampleJob(_x(3), 40, seed=7), SampleJob(_x(2), 9, seed=8, first_sample=4)]
    for a, b in zip(eng_cpu.sample_many(jobs), eng_gpu.sample_many(jobs), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert next(net.parameters()).device.type == "cpu"


def test_rows_and_samples_past_the_mask_range_are_refused() -> None:
    eng = _engine()
    with pytest.raises(ValueError, match="samples below"):
        eng.sample_many([SampleJob(_x(1), 2, 1, first_sample=masks.SAMPLE_SPAN - 1)])
    with pytest.raises(ValueError, match="rows 0"):
        eng.sample_many([SampleJob(_x(1), 2, 1, row_ids=np.array([masks.ROW_LIMIT]))])
