"""import-onnx: Dropout nodes of any opset become sampled masks; what cannot be faithful is
refused."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx.external_data_helper import set_external_data
from torch import nn

from service.cli import main
from service.engines.base import SampleJob
from service.engines.graph_engine import read_served_graph, split_prefix
from service.engines.graph_sites import ImportRefused
from service.errors import ArtifactError
from service.serving.model import load_model
from service.training.packaging import fit_tau_in_folder, import_onnx
from service.training.torch_package import module_mc_samples
from tests.byom.graphs import D, Q, assert_same_mc, dropout_graph, graph_reference

T = 4000


def _rows() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((3, Q)).astype(np.float32)


def _nothing_left(parent: Path) -> None:
    """Neither the folder nor a hidden work directory remains after a refusal."""
    assert not parent.exists() or not any(parent.iterdir())


@pytest.mark.parametrize("opset", [13, 7])
def test_imported_graph_serves_its_own_mc_dropout(tmp_path: Path, opset: int) -> None:
    src = dropout_graph(tmp_path / "g.onnx", opset, rate=0.3)
    out = import_onnx(src, tmp_path / "models" / "g", task="regression", tau=100.0)
    model = load_model(out, device="cpu")
    pred = model.predict(_rows(), samples=T, seed=5, return_samples=True)
    assert pred.raw_samples is not None and pred.raw_samples.shape == (T, 3, D)
    assert_same_mc(pred.raw_samples, graph_reference(_rows(), 0.3, T, seed=11))
    # The served mean is the samples' mean, the variance adds 1/tau to their spread.
    np.testing.assert_allclose(pred.mean, pred.raw_samples.astype(np.float64).mean(0), rtol=1e-6)
    sites = model.manifest.architecture.sites  # type: ignore[union-attr]
    assert [(s.keep_prob, s.kind, s.shape) for s in sites] == [(0.7, "element", [32])]


def test_same_seed_same_answer_and_batched_equals_alone(tmp_path: Path) -> None:
    out = import_onnx(
        dropout_graph(tmp_path / "g.onnx", 13), tmp_path / "m" / "g", task="classification"
    )
    engine = load_model(out, device="cpu").engine
    x = _rows()
    other = np.random.default_rng(9).standard_normal((4, Q)).astype(np.float32)
    alone = engine.sample_many([SampleJob(x, 50, 7)])[0]
    again = engine.sample_many([SampleJob(x, 50, 7)])[0]
    batched = engine.sample_many([SampleJob(other, 30, 1), SampleJob(x, 50, 7)])[1]
    np.testing.assert_array_equal(alone, again)
    np.testing.assert_array_equal(alone, batched)
    assert not np.array_equal(alone, engine.sample_many([SampleJob(x, 50, 8)])[0])


def test_backbone_runs_once_per_row_and_chunks_change_nothing(tmp_path: Path) -> None:
    """Layers before the first site form a prefix run once per batch, outside the chunks."""
    out = import_onnx(
        dropout_graph(tmp_path / "g.onnx", 13), tmp_path / "m" / "g", task="classification"
    )
    model = load_model(out, device="cpu")
    head, tail = split_prefix(read_served_graph(out, model.manifest))
    assert head is not None
    assert [n.op_type for n in head.graph.node] == ["Identity", "MatMul", "Relu"]
    assert "MatMul" in [n.op_type for n in tail.graph.node]  # fc2 only
    assert [n.op_type for n in tail.graph.node].count("MatMul") == 1
    x = _rows()
    whole = model.engine.sample_many([SampleJob(x, 40, 3)])[0]
    model.engine.max_rows = 7  # type: ignore[attr-defined]  # force many small chunks
    np.testing.assert_array_equal(model.engine.sample_many([SampleJob(x, 40, 3)])[0], whole)


def test_site_option_adds_dropout_after_a_tensor(tmp_path: Path) -> None:
    src = dropout_graph(tmp_path / "g.onnx", 13, dropout=False)
    out = import_onnx(src, tmp_path / "m" / "g", task="regression", tau=10.0, sites={"hr": 0.3})
    pred = load_model(out, device="cpu").predict(_rows(), samples=T, seed=2, return_samples=True)
    assert pred.raw_samples is not None
    assert_same_mc(pred.raw_samples, graph_reference(_rows(), 0.3, T, seed=4))


def test_cli_imports_and_reports_sites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = dropout_graph(tmp_path / "g.onnx", 7, rate=0.2)
    code = main(
        [
            "import-onnx",
            str(src),
            "--out",
            str(tmp_path / "m" / "g"),
            "--task",
            "classification",
            "--class-labels",
            "a,b,c",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sites"] == [{"source": "Dropout node 'drop'", "keep_prob": 0.8}]
    assert load_model(tmp_path / "m" / "g").manifest.class_labels == ["a", "b", "c"]


def test_regression_without_tau_fits_it_on_heldout(tmp_path: Path) -> None:
    """tau from held-out rows by maximum MC log-likelihood: a noisier target gives a smaller tau."""
    src = dropout_graph(tmp_path / "g.onnx", 13)
    x = np.random.default_rng(0).standard_normal((200, Q)).astype(np.float32)
    base = graph_reference(x, 0.3, 400, seed=0).mean(0)  # the network's MC mean on the rows
    taus = []
    for k, noise in enumerate([0.1, 1.0]):
        y = base + noise * np.random.default_rng(k).standard_normal(base.shape)
        out = import_onnx(src, tmp_path / f"fit{k}", task="regression", heldout=(x, y))
        m = load_model(out).manifest
        assert m.training["tau_source"] == "validation_ml"
        assert m.tau is not None
        taus.append(m.tau)
    assert taus[0] > 5 * taus[1]
    # Refitting an existing folder in place follows the same rule on the same rows.
    folder = import_onnx(src, tmp_path / "refit", task="regression", tau=1.0)
    y = base + 0.1 * np.random.default_rng(0).standard_normal(base.shape)
    assert fit_tau_in_folder(folder, x, y) == pytest.approx(taus[0], rel=1e-9)
    assert load_model(folder).manifest.tau == pytest.approx(taus[0], rel=1e-9)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: dropout_graph(p / "g.onnx", 13, dropout=False), "torch.onnx.TrainingMode"),
        (lambda p: dropout_graph(p / "g.onnx", 13, batch=1), "static batch dimension"),
    ],
)
def test_refused_graphs_leave_nothing(tmp_path: Path, make: object, needle: str) -> None:
    src = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ImportRefused, match=needle):
        import_onnx(src, tmp_path / "models" / "g", task="classification")
    _nothing_left(tmp_path / "models")


@pytest.mark.parametrize("name", ["model.pt2", "model.pkl", "disguised.onnx"])
def test_torch_archives_and_pickles_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    torch.save({"w": torch.zeros(2)}, path)  # a zip archive holding a pickle
    with pytest.raises(ImportRefused, match="arbitrary code"):
        import_onnx(path, tmp_path / "models" / "g", task="classification")
    _nothing_left(tmp_path / "models")


def test_cli_refusal_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = dropout_graph(tmp_path / "g.onnx", 13, dropout=False)
    code = main(
        ["import-onnx", str(src), "--out", str(tmp_path / "m" / "g"), "--task", "classification"]
    )
    assert code == 2
    assert "package_torch" in capsys.readouterr().err
    assert not (tmp_path / "m" / "g").exists()


def test_graph_path_outside_the_folder_is_refused(tmp_path: Path) -> None:
    out = import_onnx(
        dropout_graph(tmp_path / "g.onnx", 13), tmp_path / "m" / "g", task="classification"
    )
    manifest = json.loads((out / "model.json").read_text())
    (tmp_path / "m" / "outside.onnx").write_bytes((out / "graph.onnx").read_bytes())
    manifest["architecture"]["graph"] = "../outside.onnx"
    (out / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="inside the model folder"):
        load_model(out)


def test_external_tensor_data_is_refused(tmp_path: Path) -> None:
    src = dropout_graph(tmp_path / "g.onnx", 13)
    model = onnx.load(str(src))
    w1 = model.graph.initializer[0]
    set_external_data(w1, location="../secret.bin")
    w1.data_location = onnx.TensorProto.EXTERNAL
    w1.ClearField("raw_data")
    (tmp_path / "ext.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ImportRefused, match="external file"):
        import_onnx(tmp_path / "ext.onnx", tmp_path / "models" / "g", task="classification")
    _nothing_left(tmp_path / "models")


def test_changed_graph_fails_its_checksum(tmp_path: Path) -> None:
    out = import_onnx(
        dropout_graph(tmp_path / "g.onnx", 13), tmp_path / "m" / "g", task="classification"
    )
    data = bytearray((out / "graph.onnx").read_bytes())
    data[-1] ^= 1
    (out / "graph.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_model(out)


def test_torch_engine_setting_picks_the_engine_the_folder_names(tmp_path: Path) -> None:
    out = import_onnx(
        dropout_graph(tmp_path / "g.onnx", 13), tmp_path / "m" / "g", task="classification"
    )
    model = load_model(out, engine="torch", device="cpu")
    assert model.engine.name == "onnx"
    assert model.manifest.architecture.engines == ["onnx"]  # type: ignore[union-attr]


def test_torch_export_in_training_mode_imports_faithfully(tmp_path: Path) -> None:
    """The export the refusal message suggests: Dropout nodes with training_mode set."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(Q, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, D))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(2, Q),),
            str(tmp_path / "t.onnx"),
            dynamo=False,
            training=torch.onnx.TrainingMode.TRAINING,
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
            do_constant_folding=False,
        )
    out = import_onnx(tmp_path / "t.onnx", tmp_path / "m" / "t", task="classification")
    x = torch.from_numpy(_rows())
    served = load_model(out).engine.sample_many([SampleJob(x.numpy(), T, 0)])[0]
    assert_same_mc(served, module_mc_samples(net, x, T, seed=1))


def test_batchnorm_in_training_mode_is_refused(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(Q, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.Linear(8, D))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(4, Q),),
            str(tmp_path / "t.onnx"),
            dynamo=False,
            training=torch.onnx.TrainingMode.TRAINING,
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
            do_constant_folding=False,
        )
    with pytest.raises(ImportRefused, match="BatchNormalization in training mode"):
        import_onnx(tmp_path / "t.onnx", tmp_path / "m" / "t", task="classification")
    _nothing_left(tmp_path / "m")
