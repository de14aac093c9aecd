"""The nn-Meter-style ``kernel`` predictor: kernel detection, numpy trees, fit/save/load, sampling."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from hwnas.errors import PredictorError
from hwnas.export import to_onnx
from hwnas.models.blocks import ConvBNAct, SqueezeExcite
from hwnas.predictors import create_predictor, list_predictors, load_predictor
from hwnas.predictors.kernel import KernelPredictor, NetworkRecord
from hwnas.predictors.kernels.detect import KernelRecord, detect_kernels
from hwnas.predictors.kernels.forest import TreeEnsemble


def _export(module: nn.Module, shape: tuple[int, ...]) -> str:
    torch.manual_seed(0)
    return to_onnx(module.eval(), shape, label=type(module).__name__).path


def _summary(kernels: list[KernelRecord]) -> list[tuple]:
    return [(k.type, k.cin, k.cout, k.k, k.stride, k.act) for k in kernels]


# ---- detection on exported torch models --------------------------------------------------


def test_conv_bn_relu_is_one_kernel():
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
    ks = detect_kernels(_export(net, (1, 3, 32, 32)))
    assert _summary(ks) == [("conv", 3, 16, 3, 2, "relu")]
    k = ks[0]
    assert (k.h, k.w, k.out_h, k.out_w, k.groups) == (32, 32, 16, 16, 1)
    assert k.macs == 16 * 16 * 16 * 3 * 3 * 3
    assert k.in_bytes == 3 * 32 * 32 * 4 and k.out_bytes == 16 * 16 * 16 * 4


class _DepthwiseBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = ConvBNAct(16, 16, 5, 1, groups=16, act=nn.ReLU6)
        self.pw = ConvBNAct(16, 24, 1, act=None)

    def forward(self, x):
        return self.pw(self.dw(x))


def test_depthwise_block_gives_dwconv_then_linear_conv():
    ks = detect_kernels(_export(_DepthwiseBlock(), (1, 16, 14, 14)))
    assert _summary(ks) == [("dwconv", 16, 16, 5, 1, "relu6"), ("conv", 16, 24, 1, 1, "none")]
    assert ks[0].groups == 16 and ks[0].macs == 14 * 14 * 16 * 25


def test_squeeze_excite_is_one_kernel():
    net = nn.Sequential(ConvBNAct(8, 32, 3, act=nn.Hardswish), SqueezeExcite(32, 8))
    ks = detect_kernels(_export(net, (1, 8, 16, 16)))
    assert [k.type for k in ks] == ["conv", "se"]
    assert ks[0].act == "hswish"
    se = ks[1]
    assert (se.cin, se.cout, se.mid, se.h, se.w) == (32, 32, 8, 16, 16)
    # pool, reduce conv, relu, expand conv, sigmoid, mul
    assert len(se.nodes) == 6


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = ConvBNAct(16, 16, 3, act=nn.ReLU)
        self.c2 = ConvBNAct(16, 16, 3, act=None)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        y = torch.relu(self.c2(self.c1(x)) + x)
        return self.head(y.mean((2, 3)))


def test_residual_add_relu_and_head():
    ks = detect_kernels(_export(_Residual(), (1, 16, 8, 8)))
    assert [k.type for k in ks] == ["conv", "conv", "add", "gap", "fc"]
    add = ks[2]
    assert add.act == "relu" and add.n_inputs == 2 and add.cout == 16
    assert ks[3].cin == 16 and ks[3].h == 8
    assert (ks[4].cin, ks[4].cout) == (16, 10)


# ---- detection on hand-written graphs (unfolded BN, two-node activations, MatMul) ---------


def _graph_with_unfolded_bn_and_swish() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def init(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [
        init("w", (8, 4, 3, 3)),
        *(init(n, (8,)) for n in ("s", "b", "m")),
        numpy_helper.from_array(np.ones(8, np.float32), "v"),
        init("fw", (8, 6)),
        init("fb", (6,)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"]),
        helper.make_node("Sigmoid", ["bn"], ["sg"]),
        helper.make_node("Mul", ["bn", "sg"], ["sw"]),
        helper.make_node("GlobalAveragePool", ["sw"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fw"], ["mm"]),
        helper.make_node("Add", ["mm", "fb"], ["y0"]),
        helper.make_node("Relu", ["y0"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_unfolded_bn_swish_and_matmul_bias():
    ks = detect_kernels(_graph_with_unfolded_bn_and_swish())
    assert [(k.type, k.act) for k in ks] == [("conv", "swish"), ("gap", "none"), ("fc", "relu")]
    assert len(ks[0].nodes) == 4 and len(ks[1].nodes) == 2 and len(ks[2].nodes) == 3
    assert (ks[2].cin, ks[2].cout) == (4 * 2, 6)


def test_detection_covers_every_node_of_a_zoo_model():
    from hwnas.models import create_model, model_input_shape
    from hwnas.predictors.kernels.detect import NOOP_OPS
    from hwnas.profilers.graph import load_graph

    torch.manual_seed(0)
    path = to_onnx(create_model("cifar_resnet20"), model_input_shape("cifar_resnet20")).path
    graph = load_graph(path)
    ks = detect_kernels(graph)
    covered = [n for k in ks for n in k.nodes]
    assert len(covered) == len(set(covered))  # no node in two kernels
    costly = {n.name for n in graph.nodes if n.op_type not in NOOP_OPS}
    assert costly == set(covered)
    types = [k.type for k in ks]
    assert types.count("conv") == 19 + 2 and types.count("add") == 9
    assert types[-2:] == ["gap", "fc"]


# ---- numpy trees --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rf", "gbdt", "extra", "tree"])
def test_numpy_trees_predict_like_sklearn(kind):
    from sklearn.ensemble import (
        ExtraTreesRegressor,
        GradientBoostingRegressor,
        RandomForestRegressor,
    )
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 6)) * [1, 10, 100, 1e3, 1e6, 0.01]
    y = np.sin(X[:, 0]) + np.log1p(np.abs(X[:, 1])) + (X[:, 4] > 0) + rng.normal(0, 0.1, 200)
    model = {
        "rf": RandomForestRegressor(n_estimators=20, random_state=0),
        "gbdt": GradientBoostingRegressor(n_estimators=30, random_state=0),
        "extra": ExtraTreesRegressor(n_estimators=10, random_state=0),
        "tree": DecisionTreeRegressor(random_state=0),
    }[kind].fit(X, y)
    Xt = rng.standard_normal((200, 6)) * [1, 10, 100, 1e3, 1e6, 0.01]
    ens = TreeEnsemble.from_sklearn(model)
    np.testing.assert_allclose(ens.predict(Xt), model.predict(Xt), rtol=1e-12, atol=1e-12)
    # round trip through plain arrays
    back = TreeEnsemble.from_arrays(ens.to_arrays("t."), "t.")
    np.testing.assert_array_equal(back.predict(Xt), ens.predict(Xt))


def test_damaged_tree_arrays_are_refused():
    from sklearn.tree import DecisionTreeRegressor

    X = np.arange(20, dtype=float)[:, None]
    ens = TreeEnsemble.from_sklearn(DecisionTreeRegressor().fit(X, X[:, 0] ** 2))
    arrays = ens.to_arrays("t.")
    arrays["t.left"] = arrays["t.left"].copy()
    arrays["t.left"][0] = 0  # a cycle: the root is its own child
    with pytest.raises(PredictorError, match="parent-before-child"):
        TreeEnsemble.from_arrays(arrays, "t.")


# ---- fit / predict / save / load ------------------------------------------------------------


def _synthetic(n: int, seed: int = 0) -> tuple[list[KernelRecord], np.ndarray]:
    """Conv/dwconv/add kernels with a roofline-like latency and a channel cliff."""
    from hwnas.predictors.kernels.campaign import planned_kernels

    recs = []
    for kind, cfg in planned_kernels(n, seed, ("conv", "dwconv", "add")):
        if kind == "conv":
            hw, cin, cout, k, s, act = cfg[:6]
            o = math.ceil(hw / s)
            recs.append(KernelRecord("conv", hw, hw, cin, cout, k, s, 1, o, o, act))
        elif kind == "dwconv":
            hw, c, k, s, act = cfg
            o = math.ceil(hw / s)
            recs.append(KernelRecord("dwconv", hw, hw, c, c, k, s, c, o, o, act))
        else:
            hw, c, act = cfg
            recs.append(KernelRecord("add", hw, hw, c, c, out_h=hw, out_w=hw, act=act, n_inputs=2))
    rng = np.random.default_rng(seed)

    def truth(r: KernelRecord) -> float:
        eff = 1.6 if r.type == "dwconv" else 1.0
        cliff = 1.3 if r.cout % 16 else 1.0
        return 0.005 + r.macs / 4e6 * eff * cliff / 1e3 + (r.in_bytes + r.out_bytes) / 1e10 * 1e3

    y = np.asarray([truth(r) for r in recs]) * rng.lognormal(0, 0.02, len(recs))
    return recs, y


def test_kernel_predictor_is_registered():
    assert "kernel" in list_predictors()
    assert isinstance(create_predictor("kernel", n_estimators=5), KernelPredictor)


def test_fit_predicts_held_out_kernels_and_round_trips(tmp_path):
    recs, y = _synthetic(500)
    tr, te = slice(0, 400), slice(400, 500)
    p = KernelPredictor(n_estimators=40).fit(recs[tr], y[tr])
    pred = p.predict(recs[te])
    err = np.abs(pred / y[te] - 1)
    assert np.mean(err < 0.10) >= 0.85, np.sort(err)[-10:]
    assert p.meta["train_counts"]["conv"] > 100 and set(p.types) == {"conv", "dwconv", "add"}

    path = p.save(tmp_path / "k.npz")
    with np.load(path, allow_pickle=False) as z:  # no object arrays anywhere
        assert all(z[k].dtype != object for k in z.files)
    q = load_predictor(path)
    assert isinstance(q, KernelPredictor)
    np.testing.assert_array_equal(q.predict(recs[te]), pred)
    net = NetworkRecord(tuple(recs[400:430]))
    assert q.predict([net])[0] == pytest.approx(p.predict_network(net.kernels), rel=1e-12)
    assert p.predict_network(net.kernels) == pytest.approx(float(pred[:30].sum()), rel=1e-9)


def test_calibration_learns_in_model_scale_from_networks(tmp_path):
    recs, y = _synthetic(400)
    rng = np.random.default_rng(3)
    nets, yn = [], []
    for _ in range(40):
        idx = rng.choice(len(recs), size=int(rng.integers(5, 40)), replace=False)
        ks = tuple(recs[i] for i in idx)
        # inside a model: convs cost 70 %, every kernel saves 2 us of call overhead, +0.05 ms once
        total = sum(
            (0.7 if k.type == "conv" else 1.0) * y[i] - 0.002 for k, i in zip(ks, idx, strict=True)
        )
        nets.append(NetworkRecord(ks))
        yn.append(total + 0.05)
    X = list(recs) + nets
    Y = np.concatenate([y, yn])
    p = KernelPredictor(n_estimators=40).fit(X, Y)
    assert p.calibration["conv"] == pytest.approx(0.7, abs=0.08)
    assert p.meta["calibration_networks"] == 40
    got = np.asarray([p.predict_network(n.kernels) for n in nets])
    err = np.median(np.abs(got / np.asarray(yn) - 1))
    assert err < 0.05
    raw = KernelPredictor(n_estimators=40, calibrate=False).fit(X, Y)
    assert raw.calibration["conv"] == 1.0
    got_raw = np.asarray([raw.predict_network(n.kernels) for n in nets])
    err_raw = np.median(np.abs(got_raw / np.asarray(yn) - 1))
    assert err_raw > 0.08 and err < err_raw / 2
    # the richer form (a cost per activation megabyte per type) saves and loads too
    rich = KernelPredictor(n_estimators=20, calibration="scale+bytes").fit(X, Y)
    again = load_predictor(rich.save(tmp_path / "rich.npz"))
    assert again.bytes_ms_per_mb == rich.bytes_ms_per_mb and rich.bytes_ms_per_mb
    assert [again.predict_network(n.kernels) for n in nets[:5]] == [
        rich.predict_network(n.kernels) for n in nets[:5]
    ]


def test_unsampled_kernel_type_is_reported_with_its_fallback_not_zero(tmp_path):
    recs, y = _synthetic(60)
    p = KernelPredictor(n_estimators=5).fit(recs, y)
    assert "se" not in p.types and "reorder" not in p.types
    se = KernelRecord("se", 7, 7, 96, 96, out_h=7, out_w=7, mid=24)
    reorder = KernelRecord("reorder", 28, 28, 64, 64, out_h=28, out_w=28, op="ReorderInput")
    rows = p.explain([recs[0], se, reorder])
    assert rows[0].sampled and rows[0].regressor == recs[0].type
    for row, kind in zip(rows[1:], ("se", "reorder"), strict=True):
        assert not row.sampled and f"type {kind} never sampled" in row.note
        assert row.regressor in p.types and row.regressor != kind
        assert row.alone_ms > 0 and np.isfinite(row.alone_ms)  # never silently 0
    # the fallback and its note survive a save/load round trip
    again = load_predictor(p.save(tmp_path / "k.npz"))
    assert [r.note for r in again.explain([se, reorder])] == [r.note for r in rows[1:]]
    with pytest.raises(PredictorError, match="not trained"):
        KernelPredictor().predict_kernels(recs[:2])
    with pytest.raises(PredictorError, match="positive"):
        KernelPredictor().fit(recs[:3], [1.0, 0.0, 2.0])


def test_unsampled_elementwise_op_is_reported():
    recs, y = _synthetic(60)
    ew = [KernelRecord("elementwise", 14, 14, 32, 32, out_h=14, out_w=14, op="Sigmoid")] * 6
    p = KernelPredictor(n_estimators=5).fit(recs + ew, np.concatenate([y, np.full(6, 0.01)]))
    (known, unknown) = p.explain(
        [ew[0], KernelRecord("elementwise", 14, 14, 32, 32, out_h=14, out_w=14, op="Transpose")]
    )
    assert known.sampled
    assert "op Transpose never sampled" in unknown.note and unknown.alone_ms > 0


# ---- sampling and the store ------------------------------------------------------------------


def test_sampled_configs_are_deterministic_and_in_range():
    from hwnas.predictors.kernels.campaign import planned_kernels
    from hwnas.predictors.kernels.sampling import SAMPLED_TYPES

    a = planned_kernels(300, seed=4)
    assert a == planned_kernels(300, seed=4)
    assert a[:50] == planned_kernels(50, seed=4)  # a larger -n extends, never reshuffles
    assert {k for k, _ in a} == set(SAMPLED_TYPES)
    for kind, cfg in a:
        if kind == "conv":  # drawn from the zoo's layers (SE convs run at 1x1) or the prior
            hw, cin, cout, k, s, _ = cfg[:6]
            assert 1 <= hw <= 224 and k in (1, 3, 5, 7) and s in (1, 2)
            assert 3 <= cin <= 2048 and 1 <= cout <= 2048
            if len(cfg) > 6:  # grouped: channels split evenly
                assert cin % cfg[6] == 0 and cout % cfg[6] == 0


def test_sample_kernels_stores_and_resumes(tmp_path):
    from hwnas.predictors.kernels.campaign import kernel_training_data, sample_kernels
    from hwnas.profilers.latency import MeasureSettings
    from hwnas.store import Store

    fast = MeasureSettings(warmup=1, runs=3)
    store = Store(tmp_path / "k.db")
    s1 = sample_kernels(
        store, "cpu-ort", 2, seed=1, types=("add", "elementwise"), settings=fast, isolate=False
    )
    assert s1.measured == 2 and s1.failed == 0
    s2 = sample_kernels(
        store, "cpu-ort", 2, seed=1, types=("add", "elementwise"), settings=fast, isolate=False
    )
    assert s2.measured == 0 and s2.skipped == 2
    X, y = kernel_training_data(store, "cpu-ort", source="rules")
    assert len(X) == 2 and all(isinstance(r, KernelRecord) for r in X) and (y > 0).all()
    assert {r.type for r in X} <= {"add", "elementwise"} and {r.reader for r in X} == {""}
    # the kernels ORT runs were read and stored beside the rules' (the default source)
    Xr, yr = kernel_training_data(store, "cpu-ort", networks=True)
    assert len(Xr) == 2 and sorted(yr) == sorted(y)
    readers = {k.reader for r in Xr for k in (r.kernels if isinstance(r, NetworkRecord) else [r])}
    assert len(readers) == 1 and readers.pop().startswith("onnxruntime ")
    with pytest.raises(PredictorError, match="sample-kernels --device cpu-torch"):
        kernel_training_data(store, "cpu-torch")
    store.close()


@pytest.mark.slow
def test_every_sampled_type_exports_to_exactly_that_kernel():
    from hwnas.predictors.kernels.sampling import SAMPLED_TYPES, build_kernel, sample_config

    rng = np.random.default_rng(0)
    for kind in SAMPLED_TYPES:
        cfg = sample_config(kind, rng)
        module, shape = build_kernel(kind, cfg)
        ks = detect_kernels(to_onnx(module, shape, label=kind).path)
        assert [k.type for k in ks] == [kind], (kind, cfg)


def test_cli_kernels_shows_a_models_kernels_and_prediction(tmp_path, capsys):
    import json

    from hwnas.cli import main

    recs, y = _synthetic(120)
    extra = [KernelRecord("gap", 8, 8, c, c, k=8, stride=8) for c in (16, 32, 64, 128, 256)]
    extra += [KernelRecord("fc", 1, 1, c, 10) for c in (16, 32, 64, 128, 256)]
    X = recs + extra
    Y = np.concatenate([y, [1e-3 * (1 + r.in_bytes / 4096) for r in extra]])
    pfile = KernelPredictor(n_estimators=10).fit(X, Y).save(tmp_path / "k.npz")

    assert main(["kernels", "cifar_resnet20", "--json", "--predictor", str(pfile)]) == 0
    out = json.loads(capsys.readouterr().out)
    types = [k["type"] for k in out["kernels"]]
    assert types.count("conv") == 21 and types[-2:] == ["gap", "fc"]
    total = sum(k["in_model_ms"] for k in out["kernels"])
    assert out["predicted_ms"] == pytest.approx(total, rel=1e-9) and total > 0
    assert main(["sample-kernels", "--db", str(tmp_path / "x.db"), "--types", "conv,bogus"]) == 2
    assert "unknown kernel type(s) bogus" in capsys.readouterr().err


def test_many_tiny_kernels_are_never_predicted_at_a_negative_latency():
    """Networks whose kernels each cost less inside than alone give a negative per-kernel
    overhead; a model of many kernels far smaller than that must still come out positive."""
    recs, y = _synthetic(300)
    rng = np.random.default_rng(5)
    nets, yn = [], []
    for _ in range(30):
        idx = rng.choice(len(recs), size=int(rng.integers(5, 30)), replace=False)
        nets.append(NetworkRecord(tuple(recs[i] for i in idx)))
        yn.append(max(0.02, sum(max(0.3 * y[i], y[i] - 0.05) for i in idx)))
    p = KernelPredictor(n_estimators=20).fit(list(recs) + nets, np.concatenate([y, yn]))
    assert p.model_overhead_ms >= 0.0
    tiny = sorted(range(len(recs)), key=lambda i: y[i])[:10]
    many = [recs[i] for i in tiny] * 20
    rows = p.explain(many)
    assert all(r.in_model_ms >= 0.0 for r in rows)
    assert p.predict_network(many) > 0.0
