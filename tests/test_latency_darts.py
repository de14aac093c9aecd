"""Latency-DARTS: the supernet, the latency gradient on alpha, the derived cell, the searcher."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from hwnas.errors import ConfigError
from hwnas.evaluators import create_evaluator
from hwnas.objectives import Objective, TableLatency
from hwnas.predictors.mlp import MLPPredictor
from hwnas.searchers import create_searcher
from hwnas.searchers.latency_darts import (
    DartsSearch,
    LatencyDartsSettings,
    resolve_latency_module,
)
from hwnas.searchers.supernet import DartsSupernet
from hwnas.spaces import get_space
from hwnas.spaces.nb201 import OPS

# per-op cost (ms) of the synthetic device: convolutions dear, skip and none cheap
COST = np.array([0.05, 0.1, 0.6, 1.5, 0.3])
TINY = dict(epochs=2, channels=4, cells=1, max_samples=160, batch_size=32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small networks on a shared CPU: one torch thread, as the searchers use."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


def linear_predictor(space) -> MLPPredictor:
    """An mlp predictor whose log-latency is exactly linear in the encoding (no training)."""
    pred = MLPPredictor(hidden=())
    w = np.tile(COST, len(space.decisions()))[None, :].astype(np.float32)
    pred.set_state(
        {
            "target_mu": np.array(0.0),
            "target_sd": np.array(1.0),
            "m0.l0.weight": w,
            "m0.l0.bias": np.zeros(1, dtype=np.float32),
        }
    )
    pred.meta = {
        "space": space.name,
        "encoding": "onehot",
        "encoding_length": space.encoding_length,
    }
    return pred


def synthetic_table(path, space):
    """Every nb201 cell with a made-up accuracy and the synthetic device's latency."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "acc", "lat_ms"])
        for a in space.all_archs():
            c = np.asarray(a.choices)
            w.writerow([space.format(a), 50.0 + 5.0 * (c >= 2).sum(), float(np.exp(COST[c].sum()))])
    return path


def test_supernet_forward_and_relaxed_encoding_order(nb201):
    net = DartsSupernet(channels=4, cells=1, generator=torch.Generator().manual_seed(0))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    arch = nb201.parse(
        "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
    )
    with torch.no_grad():
        net.alpha.zero_()
        for e, c in enumerate(arch.choices):
            net.alpha[e, c] = 30.0
    # the relaxed weights of a saturated alpha are the space's own one-hot encoding
    np.testing.assert_allclose(
        net.relaxed_encoding().detach().numpy(), nb201.encode(arch), atol=1e-6
    )
    # argmax ignores 'none' (DARTS' rule) unless told otherwise
    assert net.derive(exclude_none=False).choices == arch.choices
    derived = net.derive(exclude_none=True).choices
    assert OPS[derived[3]] != "none" and derived[:3] == arch.choices[:3]
    assert all(p is not net.alpha for p in net.weight_parameters())


def test_latency_term_moves_alpha_towards_cheap_ops(nb201):
    lat = linear_predictor(nb201).torch_module()
    # a few steps only: a large alpha learning rate makes them count
    s = DartsSearch(nb201, lat, LatencyDartsSettings(lam=20.0, arch_lr=0.05, **TINY), seed=0)
    start = s.predicted_latency_ms()  # near-uniform alpha
    s.run()
    # the latency gradient reached alpha: the relaxed latency fell, the dearest op lost weight
    assert s.predicted_latency_ms() < 0.8 * start
    w = s.net.edge_weights().detach().numpy()
    conv3 = OPS.index("nor_conv_3x3")
    assert (w[:, conv3] < 1.0 / len(OPS)).all()
    assert OPS.index("nor_conv_3x3") not in s.derive().choices
    assert len(s.logs) == TINY["epochs"] and s.logs[-1].arch == s.derive()


def test_search_is_deterministic(nb201):
    lat = linear_predictor(nb201).torch_module()
    a = DartsSearch(nb201, lat, LatencyDartsSettings(lam=1.0, **TINY), seed=3)
    b = DartsSearch(nb201, lat, LatencyDartsSettings(lam=1.0, **TINY), seed=3)
    la, lb = a.run_epoch(), b.run_epoch()
    assert la.edge_weights == lb.edge_weights and la.train_ce == lb.train_ce


def test_bad_configurations(nb201):
    with pytest.raises(ConfigError, match="nb201"):
        DartsSearch(get_space("memnas-cells"), None, LatencyDartsSettings(lam=0.0, **TINY))
    with pytest.raises(ConfigError, match="latency"):
        DartsSearch(nb201, None, LatencyDartsSettings(lam=1.0, **TINY))
    with pytest.raises(ConfigError, match="latency"):
        resolve_latency_module(nb201, None, LatencyDartsSettings(lam=1.0))
    with pytest.raises(ConfigError, match="lam"):
        LatencyDartsSettings(lam=-1)
    with pytest.raises(ConfigError, match="latency_term"):
        LatencyDartsSettings(latency_term="us")


def test_searcher_with_table_accuracy_and_predictor_file(nb201, tmp_path):
    table = synthetic_table(tmp_path / "bench.csv", nb201)
    pfile = linear_predictor(nb201).save(tmp_path / "lat.npz")
    obj = Objective(
        create_evaluator(f"table:{table}:acc"),
        TableLatency(table, "lat_ms"),
        latency_target_ms=10.0,
        reward="soft",
    )
    searcher = create_searcher(
        "latency-darts",
        [f"predictor={pfile}", "lam=5", "snapshots=2", *(f"{k}={v}" for k, v in TINY.items())],
    )
    hist = searcher.run(nb201, obj, budget=5, seed=0)
    assert [r.origin for r in hist.records] == ["darts", "darts"]
    assert [r.info["epoch"] for r in hist.records] == [1, 2]
    last = hist.records[-1]
    c = np.asarray(last.arch.choices)
    # accuracy and latency are the table's values for the derived cell
    assert last.terms.accuracy == pytest.approx(50.0 + 5.0 * (c >= 2).sum())
    assert last.terms.latency_ms == pytest.approx(np.exp(COST[c].sum()), rel=1e-6)
    assert last.info["predicted_latency_ms"] == pytest.approx(np.exp(COST[c].sum()), rel=1e-4)
    final = hist.final
    assert final["arch"] == last.arch_str and final["latency_predictor"]["kind"] == "file"
    assert np.allclose(np.asarray(final["edge_weights"]).sum(axis=1), 1.0, atol=1e-3)


def test_predictor_trained_from_the_objectives_latency_source(nb201, tmp_path):
    """Without a predictor file, LAT is fitted on sampled cells measured by the latency source."""
    table = synthetic_table(tmp_path / "bench.csv", nb201)
    obj = Objective(
        create_evaluator(f"table:{table}:acc"),
        TableLatency(table, "lat_ms"),
        reward="soft",
        latency_target_ms=10.0,
    )
    lat, info = resolve_latency_module(
        nb201, obj, LatencyDartsSettings(lam=1.0, predictor_samples=60), seed=0
    )
    assert info["kind"] == "trained" and info["samples"] == 60
    cheap = nb201.parse(
        "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
    )
    dear = nb201.parse(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    )
    with torch.no_grad():
        assert float(lat(torch.from_numpy(nb201.encode(cheap)))) < float(
            lat(torch.from_numpy(nb201.encode(dear)))
        )
