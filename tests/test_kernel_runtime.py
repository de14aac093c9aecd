"""Kernels read from the runtime (ORT's optimised graph, .tflite operators), the empirical
prior, resumable adaptive rounds and the honest report of never-sampled kernels."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwnas.models.blocks import ConvBNAct
from hwnas.predictors.kernel import KernelPredictor, NetworkRecord
from hwnas.predictors.kernels.detect import KernelRecord, detect_kernels
from hwnas.predictors.kernels.runtime import (
    optimized_onnx,
    ort_kernels,
    ort_reader_name,
    read_kernels,
)


class _ResBlock(nn.Module):
    """conv-bn-relu, then a residual pair whose add + relu ORT can fuse into the conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(8, 16, 3, act=nn.ReLU)
        self.a = ConvBNAct(16, 16, 3, act=nn.ReLU)
        self.b = ConvBNAct(16, 16, 3, act=None)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.b(self.a(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def resblock_onnx(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("rt") / "res.onnx"
    m = _ResBlock().eval()
    torch.onnx.export(m, (torch.randn(1, 8, 16, 16),), str(path), dynamo=False, opset_version=17)
    return str(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ort_kernels_are_the_fused_nodes_of_its_optimised_graph(resblock_onnx):
    original = onnx.load(resblock_onnx)
    assert sum(n.op_type == "Relu" for n in original.graph.node) == 3  # separate nodes here

    # extended: ORT fuses Conv+BN(+Relu) into FusedConv nodes; each is one conv kernel
    opt = optimized_onnx(resblock_onnx, "extended")
    fused = [n.name for n in opt.graph.node if n.op_type == "FusedConv"]
    assert fused, [n.op_type for n in opt.graph.node]
    ks = ort_kernels(resblock_onnx, optimization="extended")
    convs = [k for k in ks if k.type == "conv"]
    assert len(convs) == 3 and not any(k.type == "bn" for k in ks)
    assert {k.nodes[0] for k in convs if k.act == "relu"} == set(fused)
    assert (convs[0].cin, convs[0].cout, convs[0].h, convs[0].k) == (8, 16, 16, 3)
    assert all(k.reader == ort_reader_name("extended") for k in ks)
    assert ks[-1].type == "fc" and ks[-1].cin == 16 and ks[-1].cout == 10
    assert len(ks) < len(
        original.graph.node
    )  # fewer kernels than ONNX ops: fusion read, not guessed

    # all: with the NCHWc transformer (x86 with AVX2), the residual add and its relu
    # fuse into the second conv and layout reorders appear as kernels of their own
    opt_all = optimized_onnx(resblock_onnx, "all")
    ks_all = ort_kernels(resblock_onnx, optimization="all")
    if any(n.domain == "com.microsoft.nchwc" for n in opt_all.graph.node):
        summed = [k for k in ks_all if k.op == "conv+sum"]
        assert len(summed) == 1 and summed[0].act == "relu" and summed[0].n_inputs == 2
        assert not any(k.type == "add" for k in ks_all)
        assert any(k.type == "reorder" for k in ks_all)
    # the hand-written rules see the same graph differently (a separate add kernel)
    assert "add" in [k.type for k in detect_kernels(resblock_onnx)]


def test_read_kernels_falls_back_to_the_rules_and_says_why(resblock_onnx):
    ks = read_kernels(resblock_onnx, source="runtime", runtime="litert")
    assert ks.source == "rules" and ".tflite" in ks.fallback_reason
    assert [k.type for k in ks.kernels] == [k.type for k in detect_kernels(resblock_onnx)]
    ok = read_kernels(resblock_onnx)
    assert ok.source == "runtime" and ok.fallback_reason == "" and ok.reader.startswith("onnx")


def _runtime_training(reader: str, n: int = 90) -> tuple[list, np.ndarray]:
    """Synthetic kernels 'read by' a runtime, and calibration networks made of them."""
    rng = np.random.default_rng(0)
    recs, y = [], []
    for i in range(n):
        c = int(rng.choice([16, 32, 64, 128]))
        hw = int(rng.choice([8, 16, 32]))
        kind = ("conv", "add", "gap", "fc")[i % 4]
        if kind == "conv":
            r = KernelRecord("conv", hw, hw, c, c, 3, 1, 1, hw, hw, "relu", reader=reader)
        elif kind == "add":
            r = KernelRecord("add", hw, hw, c, c, out_h=hw, out_w=hw, n_inputs=2, reader=reader)
        elif kind == "gap":
            r = KernelRecord("gap", hw, hw, c, c, k=hw, stride=hw, reader=reader)
        else:
            r = KernelRecord("fc", 1, 1, c, 10, reader=reader)
        recs.append(r)
        y.append(1e-3 + r.macs / 2e9 + (r.in_bytes + r.out_bytes) / 5e9)
    nets, yn = [], []
    for _ in range(12):
        idx = rng.choice(n, size=6, replace=False)
        ks = tuple(recs[i] for i in idx)
        nets.append(NetworkRecord(ks))
        yn.append(1.2 * sum(y[i] for i in idx) * rng.lognormal(0, 0.03))
    return recs + nets, np.asarray(y + yn)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_runtime_trained_predictor_reports_unsampled_kernels_and_an_interval(
    resblock_onnx, tmp_path, capsys
):
    from hwnas.cli import main
    from hwnas.predictors import load_predictor

    X, y = _runtime_training(ort_reader_name("all"))
    p = KernelPredictor(n_estimators=10).fit(X, y)
    assert p.meta["kernel_source"] == "runtime" and p.meta["runtime"] == "ort"
    assert p.network_log_residuals.size == 12
    path = p.save(tmp_path / "k.npz")
    q = load_predictor(path)
    assert q.meta["kernel_reader"] == ort_reader_name("all")
    np.testing.assert_allclose(q.network_log_residuals, p.network_log_residuals)

    rows = q.breakdown(resblock_onnx)  # read by ORT, as the training data was
    assert rows and all(r.kernel.reader == ort_reader_name("all") for r in rows)
    assert all(r.alone_ms > 0 and math.isfinite(r.alone_ms) for r in rows)
    for r in rows:
        if r.kernel.type == "reorder":
            assert "type reorder never sampled" in r.note and r.regressor != "reorder"
        if r.kernel.op == "conv+sum":
            assert "fused residual sum" in r.note and r.regressor == "conv+add"

    assert main(["predict", str(path), resblock_onnx, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    total = sum(k["in_model_ms"] for k in rep["kernels"]) + q.model_overhead_ms
    assert rep["predicted_ms"] == pytest.approx(total) and total > 0
    lo, hi = rep["interval_ms"]
    assert lo <= rep["predicted_ms"] <= hi and "calibration networks" in rep["interval_basis"]
    notes = {u["note"] for u in rep["unsampled"]}
    assert notes == {k["note"] for k in rep["kernels"] if k["note"]}

    # the table form names every fallback
    assert main(["kernels", resblock_onnx, "--predictor", str(path)]) == 0
    out = capsys.readouterr()
    assert "predicted latency" in out.out
    if notes:
        assert "not sampled" in out.err


def test_predictor_refuses_mixed_kernel_sources():
    from hwnas.errors import PredictorError

    X, y = _runtime_training(ort_reader_name("all"), n=20)
    X[0] = KernelRecord("conv", 8, 8, 16, 16, 3, 1, 1, 8, 8, "relu")  # read by the rules
    with pytest.raises(PredictorError, match="mixes kernels"):
        KernelPredictor(n_estimators=5).fit(X, y)


# ---- the empirical prior and resumable adaptive rounds ------------------------------------


def test_prior_holds_the_zoos_configurations_and_feeds_the_sampler():
    from hwnas.predictors.kernels.campaign import planned_kernels
    from hwnas.predictors.kernels.prior import empirical_prior

    prior = empirical_prior()
    grouped = [c for c in prior["conv"] if len(c) > 6 and c[6] > 1]
    assert grouped  # RegNet's grouped 3x3 convs
    assert any(c[1] == 3 and c[0] == 224 for c in prior["conv"])  # ImageNet stems
    assert any(c[0] == 7 for c in prior["dwconv"]) and any(c[0] == 2048 for c in prior["fc"])
    plan = planned_kernels(200, seed=3, types=("conv", "dwconv"))
    exact = {("conv", c) for c in prior["conv"]} | {("dwconv", c[:4]) for c in prior["dwconv"]}
    hits = sum((k, c) in exact or (k, c[:4]) in exact for k, c in plan)
    hits_act = sum(
        1 for k, c in plan if k == "conv" and (c[:5] + ("relu",) + c[6:]) in set(prior["conv"])
    )
    assert hits + hits_act >= 40  # a good share comes straight from real networks
    assert any(k == "conv" and len(c) > 6 for k, c in plan)  # and grouped convs are sampled


@pytest.mark.slow
def test_frozen_prior_file_is_current():
    from hwnas.predictors.kernels.prior import _to_json, compute_prior

    data = json.loads(
        __import__("hwnas.predictors.kernels.prior", fromlist=["PRIOR_FILE"]).PRIOR_FILE.read_text()
    )
    assert data["configs"] == json.loads(json.dumps(_to_json(compute_prior())))


def _fake_measure(store, kind: str, cfg: tuple, ms: float, extra: dict | None = None) -> None:
    from hwnas.predictors.kernels.sampling import kernel_arch
    from hwnas.profilers.latency import Measurement

    if kind == "conv":
        hw, cin, cout, k, s, act = cfg[:6]
        o = math.ceil(hw / s)
        rec = KernelRecord("conv", hw, hw, cin, cout, k, s, 1, o, o, act)
    else:
        hw, c, act = cfg
        rec = KernelRecord("add", hw, hw, c, c, out_h=hw, out_w=hw, act=act, n_inputs=2)
    arch = kernel_arch(kind, cfg)
    store.add_arch(arch, label=f"{kind}:{arch.id}")
    m = Measurement(
        samples_ms=(ms, ms * 1.01, ms * 0.99),
        device="cpu-ort",
        label=arch.id,
        extra={"kernel": rec.to_dict(), **(extra or {})},
    )
    store.add_measurement(arch.id, m, (1, 1, hw, hw))


def test_adaptive_rounds_are_planned_from_what_preceded_them_so_they_resume(tmp_path):
    from hwnas.predictors.kernels.campaign import _adaptive_plan, planned_kernels
    from hwnas.store import Store

    store = Store(tmp_path / "a.db")
    rng = np.random.default_rng(0)
    for kind, cfg in planned_kernels(40, seed=2, types=("conv", "add")):
        # a latency the roofline cannot fit: a cliff on odd channel counts
        c = cfg[2] if kind == "conv" else cfg[1]
        _fake_measure(
            store, kind, cfg, (0.02 + c / 1e4) * (3.0 if c % 16 else 1.0) * rng.lognormal(0, 0.3)
        )
    plan0 = _adaptive_plan(store, "cpu-ort", 6, seed=2, types=None, round_=0)
    assert len(plan0) == 6 and {k for k, _ in plan0} <= {"conv", "add"}
    # an interrupted round 0: half of it measured (tagged), then re-planned identically
    for kind, cfg in plan0[:3]:
        _fake_measure(store, kind, cfg, 0.05, {"adaptive_round": 0})
    assert _adaptive_plan(store, "cpu-ort", 6, seed=2, types=None, round_=0) == plan0
    # the next round sees round 0's samples and is planned with its own generator
    plan1 = _adaptive_plan(store, "cpu-ort", 6, seed=2, types=None, round_=1)
    assert len(plan1) == 6 and plan1 != plan0
    store.close()


# ---- LiteRT: the .tflite operators are the kernels ----------------------------------------


@pytest.mark.slow
@pytest.mark.tflite
@pytest.mark.skipif(
    importlib.util.find_spec("litert_torch") is None
    or importlib.util.find_spec("ai_edge_litert") is None,
    reason="needs the tflite extra (litert-torch, ai-edge-litert)",
)
def test_litert_kernels_are_the_tflite_operators(tmp_path, resblock_onnx):
    from hwnas.export import to_tflite
    from hwnas.predictors.kernels.runtime import LITERT_READER, litert_kernels

    torch.manual_seed(0)
    art = to_tflite(_ResBlock().eval(), (1, 8, 16, 16), label="res", cache_dir=tmp_path)
    ks = litert_kernels(art.path)
    convs = [k for k in ks if k.type == "conv"]
    assert len(convs) == 3 and all(k.reader == LITERT_READER for k in ks)
    assert (convs[0].cin, convs[0].cout, convs[0].h, convs[0].k) == (8, 16, 16, 3)
    assert ks[-1].type == "fc" and ks[-1].cin == 16 and ks[-1].cout == 10
    got = read_kernels(resblock_onnx, runtime="litert", tflite=art.path)
    assert got.source == "runtime" and got.reader == LITERT_READER


def test_ort_reading_is_cached_by_content_and_runtime_version(resblock_onnx, tmp_path, monkeypatch):
    """A second reading of the same file comes from the cache (no ORT session); a copy
    with other content, another ORT version or a damaged cache file is read afresh."""
    import shutil

    from hwnas.predictors.kernels import runtime as rt

    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))
    rt._MEMO.clear()
    first = ort_kernels(resblock_onnx, optimization="all")
    assert list((tmp_path / "cache" / "kernels").glob("*.json"))

    def no_session(*a, **k):
        raise AssertionError("the cached reading should not create an ORT session")

    monkeypatch.setattr(rt, "_read_optimized", no_session)
    assert ort_kernels(resblock_onnx, optimization="all") == first
    rt._MEMO.clear()  # a new process: the disk cache answers
    again = ort_kernels(resblock_onnx, optimization="all")
    assert again == first and [k.reader for k in again] == [k.reader for k in first]
    # the same bytes under another name hit; other bytes, another ORT version miss
    same = tmp_path / "same.onnx"
    shutil.copy(resblock_onnx, same)
    assert ort_kernels(same, optimization="all") == first
    other = onnx.load(resblock_onnx)
    other.doc_string = "changed"
    onnx.save(other, str(tmp_path / "other.onnx"))
    with pytest.raises(AssertionError, match="cached reading"):
        ort_kernels(tmp_path / "other.onnx", optimization="all")
    monkeypatch.setattr(rt, "ort_reader_name", lambda opt="all": f"onnxruntime 0.0.0 {opt}")
    with pytest.raises(AssertionError, match="cached reading"):
        ort_kernels(resblock_onnx, optimization="all")
    monkeypatch.undo()
    # a damaged cache file is ignored and rewritten
    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))
    rt._MEMO.clear()
    for f in (tmp_path / "cache" / "kernels").glob("*.json"):
        f.write_text("{not json")
    assert ort_kernels(resblock_onnx, optimization="all") == first
    assert ort_kernels(resblock_onnx, optimization="all", cache=False) == first


def test_sampled_modules_are_reproducible_so_their_exports_are_cached():
    """Same configuration -> same weights (same export cache entry); the global RNG untouched."""
    from hwnas.export.onnx_export import module_fingerprint
    from hwnas.predictors.kernels.campaign import planned_kernels, planned_networks
    from hwnas.predictors.kernels.sampling import build_kernel, build_network

    kind, cfg = planned_kernels(1, seed=3)[0]
    spec = planned_networks(1, seed=3)[0]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = build_kernel(kind, cfg)
    n1, _ = build_network(spec)
    assert torch.equal(torch.rand(1), before)  # the caller's RNG stream is unchanged
    b, _ = build_kernel(kind, cfg)
    n2, _ = build_network(spec)
    assert module_fingerprint(a) == module_fingerprint(b)
    assert module_fingerprint(n1) == module_fingerprint(n2)
    other_kind, other_cfg = planned_kernels(2, seed=3)[1]
    if other_kind == kind:
        assert module_fingerprint(build_kernel(other_kind, other_cfg)[0]) != module_fingerprint(a)


def test_calibration_networks_hold_the_branchy_families_blocks():
    """SqueezeNet's Fire, DenseNet's dense layer, ShuffleNetV2's unit and GoogLeNet's
    Inception block appear among the calibration networks, and such networks build and run."""
    from hwnas.predictors.kernels.campaign import planned_networks
    from hwnas.predictors.kernels.sampling import BRANCHY_KINDS, build_network

    specs = planned_networks(120, seed=0)
    kinds = {b[0] for s in specs for b in s[2]}
    assert set(BRANCHY_KINDS) <= kinds
    branchy = sorted(
        (s for s in specs if any(b[0] in BRANCHY_KINDS for b in s[2])), key=lambda s: s[0]
    )
    shown: set[str] = set()
    for spec in branchy:
        here = {b[0] for b in spec[2]} & set(BRANCHY_KINDS)
        if here <= shown:
            continue
        shown |= here
        net, shape = build_network(spec)
        with torch.no_grad():
            out = net(torch.zeros(shape))
        assert out.shape == (1, spec[4])
    assert shown == set(BRANCHY_KINDS)
