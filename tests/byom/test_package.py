"""package_torch: the served MC distribution is the module's own (dropout on, all else in eval)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from service import package_torch
from service.engines.base import SampleJob
from service.engines.graph_sites import ImportRefused
from service.serving.model import load_model
from service.training.torch_package import module_mc_samples
from tests.byom.graphs import (
    MLP,
    FunctionalMLP,
    Q,
    ResNet,
    ShapeFromPrefix,
    assert_same_mc,
    with_running_stats,
)

T = 3000


def _module(kind: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if kind == "resnet":
        return with_running_stats(ResNet()), torch.randn(3, 1, 6, 6)
    if kind == "shape":
        return ShapeFromPrefix(), torch.randn(3, 1, 6, 6)
    return (MLP() if kind == "mlp" else FunctionalMLP()), torch.randn(3, Q)


@pytest.mark.parametrize("kind", ["mlp", "functional", "resnet", "shape"])
def test_served_mc_equals_the_modules_own(tmp_path: Path, kind: str) -> None:
    module, x = _module(kind)
    out = package_torch(module, x, tmp_path / kind, task="classification")
    engine = load_model(out, device="cpu").engine
    served = engine.sample_many([SampleJob(x.numpy(), T, 3)])[0]
    assert_same_mc(served, module_mc_samples(module, x, T, seed=4))


def test_sites_are_found_with_their_kind_and_rate(tmp_path: Path) -> None:
    module, x = _module("resnet")
    out = package_torch(module, x, tmp_path / "r", task="classification")
    sites = load_model(out).manifest.architecture.sites  # type: ignore[union-attr]
    assert [(s.kind, s.keep_prob, s.shape) for s in sites] == [
        ("element", 0.9, [6, 6, 6]),  # F.dropout in the residual block
        ("channel", 0.8, [6, 1, 1]),  # Dropout2d
        ("element", 0.7, [24]),  # the head's Dropout
    ]
    assert "block (Block)" in sites[0].source and "drop2d" in sites[1].source


def test_dropout2d_zeroes_whole_channels_per_sample(tmp_path: Path) -> None:
    module = nn.Sequential(nn.Dropout2d(0.5), nn.Flatten())
    x = torch.rand(4, 6, 3, 3) + 1.0  # no zero inputs, so a zero is a dropped value
    out = package_torch(module, x, tmp_path / "c", task="regression", tau=1.0)
    y = load_model(out).engine.sample_many([SampleJob(x.numpy(), 200, 0)])[0]
    per_channel = y.reshape(200, 4, 6, 9)
    dropped = per_channel == 0
    kept = np.isclose(per_channel, 2.0 * x.numpy().reshape(1, 4, 6, 9))  # kept: x / keep
    assert np.all(dropped.all(-1) | kept.all(-1))  # each channel entirely dropped or kept
    frac = dropped.all(-1).mean()
    # 4,800 independent channel decisions at p = 0.5: SE 0.0072, so 0.5 +- 0.04 is 5.5 SE.
    assert abs(frac - 0.5) < 0.04
    assert not np.array_equal(dropped[0], dropped[1])  # fresh masks per sample


def test_batchnorm_uses_running_stats_unlike_model_train(tmp_path: Path) -> None:
    """model.train() MC makes a row's answer depend on its batch; the packaged model does not."""
    module, _ = _module("resnet")
    row = torch.randn(1, 1, 6, 6)
    batch_a = torch.cat([row, torch.randn(3, 1, 6, 6)])
    batch_b = torch.cat([row, 5 + 3 * torch.randn(3, 1, 6, 6)])
    out = package_torch(module, batch_a, tmp_path / "bn", task="classification")
    model = load_model(out)
    ours_a = model.predict(batch_a.numpy(), samples=200, seed=1).mean[0]
    ours_b = model.predict(batch_b.numpy(), samples=200, seed=1).mean[0]
    np.testing.assert_array_equal(ours_a, ours_b)

    def train_mode_logits(batch: torch.Tensor) -> np.ndarray:
        # 200 copies of the batch in one pass: the same batch statistics (a repeated batch
        # has the same mean and biased variance), with fresh dropout masks per copy.
        torch.manual_seed(1)
        with torch.no_grad():
            out = module.train()(batch.repeat(200, 1, 1, 1)).reshape(200, len(batch), -1)
        logits: np.ndarray = out[:, 0].double().numpy()
        return logits

    a, b = train_mode_logits(batch_a), train_mode_logits(batch_b)
    module.eval()
    # Same row, only its batch-mates differ. The gap between the two 200-sample MC means is
    # measured in standard errors of that difference: beyond 6 SE (two-sided p < 2e-9 per
    # class) it is not MC noise.
    z = np.abs(a.mean(0) - b.mean(0)) / np.sqrt((a.var(0) + b.var(0)) / 200)
    assert z.max() > 6


def test_alpha_dropout_is_refused_by_name(tmp_path: Path) -> None:
    module = nn.Sequential(nn.Linear(Q, 8), nn.SELU(), nn.AlphaDropout(0.1), nn.Linear(8, 2))
    with pytest.raises(ImportRefused, match=r"layer '2' \(AlphaDropout\)"):
        package_torch(module, torch.randn(2, Q), tmp_path / "a", task="classification")
    assert not any(tmp_path.iterdir())


def test_functional_alpha_dropout_is_refused(tmp_path: Path) -> None:
    class Selu(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.feature_alpha_dropout(x, 0.1, training=self.training)

    with pytest.raises(ImportRefused, match="feature_alpha_dropout"):
        package_torch(Selu(), torch.randn(2, 4, 3), tmp_path / "a", task="regression", tau=1.0)
    assert not any(tmp_path.iterdir())


def test_dropout_in_a_data_dependent_loop_is_refused(tmp_path: Path) -> None:
    class Looping(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(Q, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for _ in range(int(x.abs().sum().item()) % 3 + 1):
                x = F.dropout(x, 0.2, training=self.training)
            out: torch.Tensor = self.fc(x)
            return out

    with pytest.raises(ImportRefused, match=r"<root> \(Looping\).*depends on the input"):
        package_torch(Looping(), torch.randn(2, Q), tmp_path / "l", task="classification")
    assert not any(tmp_path.iterdir())


def test_module_without_dropout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImportRefused, match="no active dropout"):
        package_torch(nn.Linear(Q, 2), torch.randn(2, Q), tmp_path / "n", task="classification")
    assert not any(tmp_path.iterdir())


def test_folder_holds_no_pickle(tmp_path: Path) -> None:
    module, x = _module("mlp")
    out = package_torch(module, x, tmp_path / "p", task="classification")
    assert sorted(p.name for p in out.iterdir()) == [
        "graph.onnx",
        "model.json",
        "weights.safetensors",
    ]


def test_probability_outputs_are_served_as_given(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(Q, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3), nn.Softmax(dim=1)
    )
    x = torch.randn(3, Q)
    out = package_torch(module, x, tmp_path / "p", task="classification", outputs="probabilities")
    pred = load_model(out).predict(x.numpy(), samples=T, seed=0, return_samples=True)
    assert pred.raw_samples is not None  # probabilities per sample, after the summary's softmax
    assert_same_mc(pred.raw_samples, module_mc_samples(module, x, T, seed=1))


def test_module_returning_several_tensors_is_refused(tmp_path: Path) -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(Q, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = F.dropout(self.fc(x), 0.2, training=self.training)
            return h, h.sum(1)

    with pytest.raises(ImportRefused, match="returns 2 tensors"):
        package_torch(Two(), torch.randn(2, Q), tmp_path / "t", task="classification")
    assert not any(tmp_path.iterdir())


def test_masks_applied_in_place_equal_mask_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site right after the prefix is masked by the engine in place; same samples either way."""
    import service.engines.graph_engine as graph_engine

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(Q, 16), nn.ReLU(), nn.Dropout(0.4), nn.Linear(16, 3))
    out = package_torch(net, torch.randn(3, Q), tmp_path / "h", task="classification")
    in_place = load_model(out).engine
    monkeypatch.setattr(graph_engine, "masked_on_entry", lambda nodes, sites: {})
    as_inputs = load_model(out).engine
    assert in_place._applied and not as_inputs._applied  # type: ignore[attr-defined]
    x = torch.randn(4, Q).numpy()
    jobs = [SampleJob(x[:1], 30, 1), SampleJob(x, 50, 2)]
    for a, b in zip(in_place.sample_many(jobs), as_inputs.sample_many(jobs), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(in_place.deterministic(x), as_inputs.deterministic(x), rtol=1e-6)
