"""The MC kernel: masks positioned by sample index, exact keep rate, bounded chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.artifact import DropoutSpec, MLPArchitecture
from service.engines import masks
from service.engines.base import SampleJob, Segment, plan_chunks, replication_index
from service.engines.torch_engine import TorchEngine
from service.nets import build_mlp


def _engine(max_activation_mb: float = 256.0, input_rate: float = 0.1) -> TorchEngine:
    torch.manual_seed(0)
    net = build_mlp(
        MLPArchitecture(input_dim=5, hidden=[32, 32], output_dim=3),
        DropoutSpec(input_rate=input_rate, hidden_rate=0.2),
    )
    return TorchEngine(net, [5], "cpu", max_activation_mb)


def _x(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 5)).astype(np.float32)


def test_keep_rate_is_exact_within_binomial_error() -> None:
    # 2^22 independent Bernoulli(0.9) draws: SE = sqrt(0.9 * 0.1 / 2^22) = 1.46e-4; the threshold
    # quantisation adds at most 2^-17 = 7.6e-6. 5 SE is a false alarm once in ~1.7 million runs.
    n = 1 << 22
    keep = np.empty(n, np.bool_)
    masks.fill_keep(keep, [masks.MaskPiece(seed=3, site=1, offset=11, count=n, dest=0)], 0.9)
    assert abs(masks.quantised_keep(0.9) - 0.9) < 1e-4
    assert abs(keep.mean() - 0.9) < 5 * np.sqrt(0.9 * 0.1 / n) + 2**-17


def test_filling_in_parts_and_threads_gives_the_same_mask() -> None:
    pieces = [masks.MaskPiece(5, 1, 7, 300_001, 0), masks.MaskPiece(9, 2, 3, 300_002, 300_001)]
    ref = np.empty(600_003, np.bool_)
    masks.fill_keep(ref, pieces, 0.8)
    # The first piece equals the historical lane definition: keep iff lane < round(keep * 2^16).
    assert np.array_equal(ref[:300_001], ~masks.drop_mask(5, 1, 7, 300_001, 0.8))
    for parts in (2, 3, 7):
        out = np.zeros_like(ref)
        for part in masks.split_pieces(pieces, parts):
            masks.fill_keep(out, part, 0.8)
        assert np.array_equal(out, ref)
    out = np.zeros_like(ref)
    masks.MaskFiller(2).fill(out, pieces, 0.8)
    assert np.array_equal(out, ref)
    # Applied in place (the torch engine's path), the same decisions zero the same elements,
    # alone and split over threads; kept elements are untouched.
    h = np.arange(1, ref.size + 1, dtype=np.float32)
    for filler in (masks.MaskFiller(1), masks.MaskFiller(2)):
        applied = h.copy()
        filler.apply(applied, pieces, 0.8)
        assert np.array_equal(applied, np.where(ref, h, 0.0))


def test_small_pieces_are_packed_without_changing_a_decision() -> None:
    # A batch of one-row requests: many small pieces end to end (packed into one block), one
    # starting mid-word, a gap before the last one (the packed run must end there), and a piece
    # larger than half a block (applied without packing). Each must match fill_keep exactly.
    pieces, dest = [], 0
    for i in range(40):
        count = 1_000 + 37 * i
        pieces.append(masks.MaskPiece(seed=100 + i, site=1, offset=3 * i, count=count, dest=dest))
        dest += count
    dest += 5  # the gap: these 5 elements belong to no piece and must stay untouched
    pieces.append(masks.MaskPiece(seed=7, site=2, offset=0, count=150_000, dest=dest))
    dest += 150_000
    pieces.append(masks.MaskPiece(seed=8, site=2, offset=1, count=999, dest=dest))
    total = dest + 999
    ref = np.zeros(total, np.bool_)
    masks.fill_keep(ref, pieces, 0.8)
    covered = np.zeros(total, np.bool_)
    for p in pieces:
        covered[p.dest : p.dest + p.count] = True
    h = np.arange(1, total + 1, dtype=np.float32)
    applied = h.copy()
    masks.apply_keep(applied, pieces, 0.8)
    assert np.array_equal(applied, np.where(ref | ~covered, h, 0.0))
    assert 0 < (~ref[covered]).mean() < 0.5  # some were dropped


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


def test_same_seed_same_samples_alone_batched_and_chunked() -> None:
    eng = _engine()
    a, b = _x(3, 1), _x(2, 2)
    alone = eng.sample_many([SampleJob(a, 40, seed=7)])[0]
    batched = eng.sample_many([SampleJob(b, 25, seed=8), SampleJob(a, 40, seed=7)])[1]
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
        TorchEngine(net, [5], "cpu", precision="bf16")


def test_device_mask_path_keep_rate_and_seeding() -> None:
    # The CUDA path's mask drawing, exercised through torch's CPU generator (no GPU here).
    # 2^20 draws: SE of the keep rate = sqrt(0.8 * 0.2 / 2^20) = 3.9e-4; 5 SE tolerance.
    eng = _engine()
    site = eng.sites[next(i for i in eng.sites if eng.sites[i].site == 1)]
    n = 1 << 20
    pieces = [masks.MaskPiece(seed=3, site=1, offset=0, count=n, dest=0)]
    a = eng._device_noise(site, pieces, n // site.elements)
    b = eng._device_noise(site, pieces, n // site.elements)
    assert torch.equal(a, b)
    assert abs(a.mean().item() - 0.8) < 5 * np.sqrt(0.8 * 0.2 / n)
