"""The mask rule: a pure function of (seed, site, row, sample, element), the same in numpy and
torch, with the promised keep rate and no slot ever reusing another's bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.engines import masks, torch_masks
from service.engines.mask_filler import MaskFiller

U64 = (1 << 64) - 1


def _splitmix_word(seed: int, site: int, row: int, sample: int, words: int, w: int) -> int:
    """One mask word from the documented rule, in plain Python integers (an independent
    reference for the vectorised code)."""
    index = (row * masks.SAMPLE_SPAN + sample) * words + w
    z = (masks.site_key(seed, site) + index * masks.GAMMA) & U64
    z = ((z ^ (z >> 30)) * masks.MIX1) & U64
    z = ((z ^ (z >> 27)) * masks.MIX2) & U64
    return z ^ (z >> 31)


def _keep(rows: masks.MaskRows, site: int, elements: int, keep: float) -> np.ndarray:
    out = np.empty((len(rows), elements), np.bool_)
    masks.keep_mask(out, rows, site, keep)
    return out


def test_words_follow_the_documented_rule() -> None:
    rows = masks.make_rows(77, np.array([0, 5, 5, 2]), np.array([0, 0, 9, 123_456]))
    words = masks.mask_words(rows, 3, 6)
    for i, (r, s) in enumerate([(0, 0), (5, 0), (5, 9), (2, 123_456)]):
        assert [int(v) for v in words[i]] == [_splitmix_word(77, 3, r, s, 6, w) for w in range(6)]
    # Element e of a slot is lane e mod 4 (16 bits, little end first) of word e // 4.
    keep = _keep(rows, 3, 21, 0.7)
    thr = masks.keep_threshold(0.7)
    for i, (r, s) in enumerate([(0, 0), (5, 0), (5, 9), (2, 123_456)]):
        lanes = [
            (_splitmix_word(77, 3, r, s, 6, e // 4) >> (16 * (e % 4))) & 0xFFFF for e in range(21)
        ]
        assert keep[i].tolist() == [lane < thr for lane in lanes]


def test_a_slot_has_the_same_mask_wherever_it_is_stacked() -> None:
    # The same (row, sample) slots, stacked in two different orders and among different
    # neighbours, under two seeds: each row of the result depends on its own slot and seed only.
    r = np.array([0, 1, 2, 0, 1, 2, 7])
    s = np.array([0, 0, 0, 1, 1, 1, 40])
    a = masks.make_rows(5, r, s)
    perm = np.array([6, 3, 0, 5, 1, 4, 2])
    b = masks.make_rows(5, r[perm], s[perm])
    for elements in (1, 10, 64, 1027):
        np.testing.assert_array_equal(_keep(a, 1, elements, 0.5)[perm], _keep(b, 1, elements, 0.5))
    mixed = masks.MaskRows((9, 5), np.array([0, 1, 0, 1]), a.slots[[0, 0, 3, 3]])
    alone5 = _keep(masks.make_rows(5, r[[0, 3]], s[[0, 3]]), 1, 64, 0.5)
    alone9 = _keep(masks.make_rows(9, r[[0, 3]], s[[0, 3]]), 1, 64, 0.5)
    got = _keep(mixed, 1, 64, 0.5)
    np.testing.assert_array_equal(got[[1, 3]], alone5)
    np.testing.assert_array_equal(got[[0, 2]], alone9)
    assert not np.array_equal(alone5, alone9)


def test_no_two_slots_share_a_word() -> None:
    # Rows 0..49 x samples 0..399 at a 256-word site: the counters are distinct and the
    # finaliser is a bijection, so all 5.1 million words differ (a repeated mask would repeat
    # them). A layout that reused a range of the stream for a later sample would fail here.
    r, s = np.meshgrid(np.arange(50), np.arange(400), indexing="ij")
    rows = masks.make_rows(3, r.ravel(), s.ravel())
    words = masks.mask_words(rows, 0, 256)
    assert np.unique(words).size == words.size


def test_keep_rate_is_exact_within_binomial_error() -> None:
    # 2^22 independent Bernoulli(0.9) draws: SE = sqrt(0.9 * 0.1 / 2^22) = 1.46e-4; the threshold
    # quantisation adds at most 2^-17 = 7.6e-6. 5 SE is a false alarm once in ~1.7 million runs.
    n_rows, elements = 4096, 1024
    rows = masks.make_rows(3, np.arange(n_rows) % 64, np.arange(n_rows) // 64)
    keep = _keep(rows, 1, elements, 0.9)
    n = keep.size
    assert abs(masks.quantised_keep(0.9) - 0.9) < 1e-4
    assert abs(keep.mean() - 0.9) < 5 * np.sqrt(0.9 * 0.1 / n) + 2**-17
    # Neighbouring elements and neighbouring samples are uncorrelated: the rate of keeping both
    # of a pair is 0.81 within 5 SE (SE = sqrt(0.81 * 0.19 / pairs)).
    for a, b in ((keep[:, :-1], keep[:, 1:]), (keep[:-64], keep[64:])):
        both = (a & b).mean()
        assert abs(both - 0.81) < 5 * np.sqrt(0.81 * 0.19 / a.size) + 2**-16


def test_threads_and_parts_do_not_change_a_decision() -> None:
    rows = masks.make_rows(5, np.arange(900) % 3, np.arange(900) // 3)
    ref = _keep(rows, 2, 700, 0.8)
    out = np.zeros_like(ref)
    MaskFiller(2).fill(out, rows, 2, 0.8)
    np.testing.assert_array_equal(out, ref)
    out = np.zeros_like(ref)
    masks.keep_mask(out[:301], rows.part(0, 301), 2, 0.8)
    masks.keep_mask(out[301:], rows.part(301, 900), 2, 0.8)
    np.testing.assert_array_equal(out, ref)
    # Applied in place (the torch engine's path), the same decisions zero the same elements,
    # alone and split over threads; kept elements are untouched.
    h = np.arange(1, ref.size + 1, dtype=np.float32).reshape(ref.shape)
    for filler in (MaskFiller(1), MaskFiller(2), MaskFiller(3)):
        applied = h.copy()
        filler.apply(applied, rows, 2, 0.8)
        np.testing.assert_array_equal(applied, np.where(ref, h, 0.0))


def test_gaussian_noise_has_the_right_moments() -> None:
    """N(1, (1-p)/p): mean SE sqrt(v/n); variance SE sqrt(2/n) v for a normal."""
    keep = 0.8
    rows = masks.make_rows(3, np.zeros(400, dtype=np.int64), np.arange(400))
    g = masks.gaussian_noise(rows, 1, 1000, keep).astype(np.float64)
    n, v = g.size, (1 - keep) / keep
    assert abs(g.mean() - 1.0) < 5 * np.sqrt(v / n)
    assert abs(g.var() - v) < 5 * np.sqrt(2 / n) * v
    # Same rule as the Bernoulli masks: a slot's noise does not depend on its neighbours.
    one = masks.gaussian_noise(
        masks.make_rows(3, np.zeros(1, dtype=np.int64), np.array([17])), 1, 1000, keep
    )
    np.testing.assert_array_equal(one[0], g[17].astype(np.float32))


def test_torch_ops_draw_the_same_masks_as_numpy() -> None:
    rows = masks.make_rows(11, np.arange(40) % 5, np.arange(40) + 3)
    for elements in (1, 3, 10, 64, 1027):
        words = masks.words_per_slot(elements, "bernoulli")
        bases = torch_masks.bases_tensor(rows.bases(4, words), "cpu")
        ours = torch_masks.keep_mask(bases, elements, 0.75, torch.float32).numpy()
        np.testing.assert_array_equal(ours.astype(bool), _keep(rows, 4, elements, 0.75))
        g_bases = torch_masks.bases_tensor(rows.bases(4, elements), "cpu")
        g = torch_masks.gaussian_noise(g_bases, elements, 0.75).numpy()
        np.testing.assert_allclose(g, masks.gaussian_noise(rows, 4, elements, 0.75), rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_draws_the_same_masks_as_the_cpu() -> None:
    rows = masks.make_rows(11, np.arange(4000) % 50, np.arange(4000))
    for elements in (10, 1024, 12544):
        words = masks.words_per_slot(elements, "bernoulli")
        bases = torch_masks.bases_tensor(rows.bases(1, words), "cuda")
        ours = torch_masks.keep_mask(bases, elements, 0.9, torch.float32).cpu().numpy()
        np.testing.assert_array_equal(ours.astype(bool), _keep(rows, 1, elements, 0.9))
        g_bases = torch_masks.bases_tensor(rows.bases(1, elements), "cuda")
        g = torch_masks.gaussian_noise(g_bases, elements, 0.9).cpu().numpy()
        np.testing.assert_allclose(g, masks.gaussian_noise(rows, 1, elements, 0.9), rtol=1e-5)


def test_rows_and_samples_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="sample"):
        masks.make_rows(1, np.array([0]), np.array([masks.SAMPLE_SPAN]))
    with pytest.raises(ValueError, match="row"):
        masks.make_rows(1, np.array([masks.ROW_LIMIT]), np.array([0]))
    with pytest.raises(ValueError, match="too wide"):
        masks.words_per_slot(4 * masks.WORD_LIMIT, "bernoulli")


def test_keep_threshold_quantisation_is_below_1e4() -> None:
    for keep in np.linspace(0.01, 0.99, 99):
        assert abs(masks.quantised_keep(float(keep)) - keep) < 1e-4
