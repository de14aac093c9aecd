"""Latency predictors: metrics, the registry, safe save/load, mlp (and its torch form), baselines, transfer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hwnas.errors import PredictorError
from hwnas.predictors import PREDICTORS, create_predictor, list_predictors, load_predictor
from hwnas.predictors.base import read_predictor_file
from hwnas.predictors.metrics import evaluate, plot_predicted_vs_measured, summarize, within
from hwnas.predictors.mlp import MLPPredictor, relaxed_weights
from hwnas.predictors.transfer import TransferPredictor, finetune, option_count_matrix
from hwnas.spaces import get_space

# Per-op costs (ms) of a made-up device; op order is nb201's (none, skip, 1x1, 3x3, pool).
COST_A = np.array([0.05, 0.0, 1.0, 3.0, 0.6])
COST_B = np.array([0.02, 0.01, 0.7, 4.5, 1.2])  # another device: other relative costs


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


def synthetic(space, n: int, cost: np.ndarray, seed: int = 0, noise: float = 0.01):
    """n random nb201 cells, their one-hot and an additive latency with mild noise."""
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n)]
    X = space.encode_many(archs)
    ch = np.array([a.choices for a in archs])
    y = 2.0 + cost[ch].sum(axis=1) + 0.3 * (ch == 3).sum(axis=1) ** 2 / 6
    return archs, X, y * np.exp(noise * rng.standard_normal(n))


# ---- metrics ------------------------------------------------------------------------------


def test_metrics_by_hand():
    t = np.array([10.0, 20.0, 30.0, 40.0])
    p = np.array([10.4, 21.5, 26.0, 40.0])  # errors: 4 %, 7.5 %, 13.3 %, 0 %
    m = evaluate(t, p)
    assert m.n == 4
    assert m.rmse_ms == pytest.approx(math.sqrt((0.4**2 + 1.5**2 + 4.0**2) / 4))
    assert m.mape == pytest.approx((4 + 7.5 + 40 / 3 + 0) / 4)
    assert m.acc5 == 50.0 and m.acc10 == 75.0
    assert m.spearman == pytest.approx(1.0) and m.kendall == pytest.approx(1.0)
    assert within(t, p, 0.08) == 75.0
    swapped = evaluate(t, np.array([20.0, 10.0, 30.0, 40.0]))
    assert swapped.spearman == pytest.approx(0.8) and swapped.kendall == pytest.approx(2 / 3)
    s = summarize([m, swapped])
    assert s["spearman"][0] == pytest.approx(0.9) and s["spearman"][1] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "t, p",
    [([1.0, 2.0], [1.0]), ([1.0], [1.0]), ([1.0, 0.0], [1.0, 1.0]), ([1.0, np.nan], [1.0, 1.0])],
)
def test_metrics_refuse_bad_input(t, p):
    with pytest.raises(PredictorError):
        evaluate(np.array(t), np.array(p))


def test_plot_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.uniform(1, 10, 200)
    out = plot_predicted_vs_measured(t, t * rng.uniform(0.85, 1.15, 200), tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- registry and file format -------------------------------------------------------------


def test_registry_lists_builtins():
    names = list_predictors()
    for n in ("mlp", "flops-linear", "gbdt", "transfer"):
        assert n in names
    with pytest.raises(Exception, match="Valid predictors"):
        create_predictor("mpl")


def _fit(name: str, X: np.ndarray, y: np.ndarray):
    fast = {
        "mlp": {"hidden": [32, 32], "epochs": 60, "ensemble": 2},
        "gbdt": {"n_estimators": 60},
        "flops-linear": {},
    }[name]
    Xf = X if name != "flops-linear" else (X @ np.arange(X.shape[1]))[:, None]
    p = create_predictor(name, **fast).fit(Xf, y)
    p.meta.update(space="nb201", encoding="onehot", encoding_length=X.shape[1])
    return p, Xf


@pytest.mark.parametrize("name", ["mlp", "gbdt", "flops-linear"])
def test_save_load_roundtrip_identical(name, nb201, tmp_path):
    _, X, y = synthetic(nb201, 120, COST_A)
    p, Xf = _fit(name, X, y)
    path = p.save(tmp_path / f"{name}.npz")
    q = load_predictor(path, space="nb201", encoding="onehot", encoding_length=30)
    assert q.name == name and q.meta["space"] == "nb201"
    np.testing.assert_array_equal(q.predict(Xf), p.predict(Xf))
    cfg, arrays = read_predictor_file(path)
    assert cfg["predictor"] == name and all(a.dtype != object for a in arrays.values())


def test_load_refuses_other_space_or_encoding(nb201, tmp_path):
    _, X, y = synthetic(nb201, 60, COST_A)
    path = _fit("gbdt", X, y)[0].save(tmp_path / "g.npz")
    with pytest.raises(PredictorError, match="space 'nb201', not 'mnasnet'"):
        load_predictor(path, space="mnasnet")
    with pytest.raises(PredictorError, match="encoding 'onehot', not 'graph'"):
        load_predictor(path, encoding="graph")
    with pytest.raises(PredictorError, match="encoding_length"):
        load_predictor(path, encoding_length=31)


class _Boom:
    """Unpickling this would create a marker file: the test fails if loading ran it."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_load_executes_no_code(tmp_path):
    _Boom.marker = tmp_path / "pwned"
    cfg = json.dumps({"predictor": "mlp", "format_version": 1, "hparams": {}, "meta": {}})
    path = tmp_path / "evil.npz"
    np.savez(
        path,
        __config__=np.frombuffer(cfg.encode(), dtype=np.uint8),
        **{"m0.l0.weight": np.array([_Boom()], dtype=object)},
    )
    with pytest.raises(PredictorError, match="not an hwnas predictor file"):
        load_predictor(path)
    assert not _Boom.marker.exists()


def test_load_refuses_foreign_files(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(PredictorError):
        load_predictor(tmp_path / "x.npz")
    np.savez(tmp_path / "nocfg.npz", a=np.zeros(2))
    with pytest.raises(PredictorError, match="__config__"):
        load_predictor(tmp_path / "nocfg.npz")
    cfg = json.dumps({"predictor": "nonesuch", "format_version": 1}).encode()
    np.savez(tmp_path / "unk.npz", __config__=np.frombuffer(cfg, dtype=np.uint8))
    with pytest.raises(PredictorError, match="does not know"):
        load_predictor(tmp_path / "unk.npz")
    cfg = json.dumps({"predictor": "gbdt", "format_version": 1, "hparams": {}}).encode()
    np.savez(tmp_path / "part.npz", __config__=np.frombuffer(cfg, dtype=np.uint8))
    with pytest.raises(PredictorError, match="lacks the array"):
        load_predictor(tmp_path / "part.npz")
    with pytest.raises(PredictorError, match="no such predictor file"):
        load_predictor(tmp_path / "missing.npz")


# ---- gbdt: numpy prediction equals scikit-learn's -----------------------------------------


def test_gbdt_numpy_predict_equals_sklearn():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 7))
    X[:, 2] = rng.integers(0, 3, 400)  # ties on thresholds
    y = np.exp(0.5 * X[:, 0] + np.sin(X[:, 1]) + 0.2 * X[:, 2] + 0.05 * rng.normal(size=400))
    p = create_predictor("gbdt", n_estimators=80, max_depth=5, subsample=0.7).fit(X, y)
    Xt = np.vstack([rng.normal(size=(300, 7)), X[:50]]).astype(np.float64)
    np.testing.assert_allclose(p.predict_log(Xt), p.sklearn_model.predict(Xt), rtol=0, atol=1e-12)
    with pytest.raises(PredictorError, match="7 features"):
        p.predict(Xt[:, :6])


# ---- mlp ------------------------------------------------------------------------------------


def test_mlp_learns_additive_latency(nb201):
    _, X, y = synthetic(nb201, 500, COST_A)
    p = MLPPredictor(hidden=[64, 64], epochs=200, patience=30, seed=1).fit(X[:350], y[:350])
    m = evaluate(y[350:], p.predict(X[350:]))
    assert m.spearman > 0.97 and m.acc10 > 90
    assert p.history[0]["epochs"] <= 200
    with pytest.raises(PredictorError, match="takes 30 features"):
        p.predict(X[:, :29])


def test_mlp_rejects_bad_training_data():
    with pytest.raises(PredictorError, match="> 0 ms"):
        MLPPredictor().fit(np.eye(3), np.array([1.0, 0.0, 2.0]))
    with pytest.raises(PredictorError, match="one per row"):
        MLPPredictor().fit(np.eye(3), np.array([1.0, 2.0]))
    with pytest.raises(PredictorError, match="unknown mlp loss"):
        MLPPredictor(loss="l7")


def test_mlp_torch_module_is_differentiable_and_matches_predict(nb201):
    _, X, y = synthetic(nb201, 150, COST_A)
    p = MLPPredictor(hidden=[32, 32], epochs=40, ensemble=3).fit(X, y)
    lat = p.torch_module()
    ms = lat(torch.from_numpy(X[:10]))
    np.testing.assert_allclose(ms.detach().numpy(), p.predict(X[:10]), rtol=1e-5)
    alphas = [torch.zeros(5, requires_grad=True) for _ in range(6)]
    w = relaxed_weights(alphas)
    assert w.shape == (30,)
    np.testing.assert_allclose(w.detach().numpy().reshape(6, 5).sum(1), 1.0, rtol=1e-6)
    out = lat(w)
    assert out.dim() == 0 and out.item() > 0
    out.backward()
    assert all(a.grad is not None and torch.any(a.grad != 0) for a in alphas)
    assert not any(prm.requires_grad for prm in lat.parameters())
    with pytest.raises(PredictorError, match="relaxed weights have 29"):
        lat(torch.zeros(29))


# ---- baselines ------------------------------------------------------------------------------


def test_flops_linear_recovers_line():
    f = np.linspace(10, 500, 40)[:, None]
    y = 0.02 * f[:, 0] + 1.5
    p = create_predictor("flops-linear").fit(f, y)
    np.testing.assert_allclose(p.coef, [0.02, 1.5], rtol=1e-9)
    np.testing.assert_allclose(p.predict([[1000.0]]), [21.5])
    with pytest.raises(PredictorError, match="same FLOPs"):
        create_predictor("flops-linear").fit(np.ones((5, 1)), np.arange(1.0, 6.0))


# ---- transfer -------------------------------------------------------------------------------


def test_option_count_matrix(nb201):
    M = option_count_matrix(nb201)
    assert M.shape == (30, 5)
    a = nb201.parse(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|"
    )
    np.testing.assert_array_equal(nb201.encode(a) @ M, [2, 1, 0, 2, 1])
    mn = get_space("mnasnet")
    Mm = option_count_matrix(mn)
    # op(4) kernel(2) se(2) skip(3) filters(3) layers(3), each counted over the 7 blocks
    assert Mm.shape == (mn.encoding_length, 17)
    counts = mn.encode(mn.sample(np.random.default_rng(0))) @ Mm
    np.testing.assert_array_equal(counts.reshape(-1)[[0, 1, 2, 3]].sum(), 7)


def test_transfer_adapts_from_few_samples_and_roundtrips(nb201, tmp_path):
    _, Xs, ys = synthetic(nb201, 300, COST_A, seed=1)
    src = MLPPredictor(hidden=[32, 32], epochs=80, seed=0).fit(Xs, ys)
    src.meta.update(space="nb201", encoding="onehot", encoding_length=30, device="A")
    _, Xt, yt = synthetic(nb201, 400, COST_B, seed=2)
    k = 20
    t = TransferPredictor().fit(Xt[:k], yt[:k], sources=[src], space=nb201)
    m = evaluate(yt[k:], t.predict(Xt[k:]))
    assert m.spearman > 0.9, m
    assert m.spearman > evaluate(yt[k:], src.predict(Xt[k:])).spearman
    t.meta.update(space="nb201", encoding="onehot", encoding_length=30)
    path = t.save(tmp_path / "t.npz")
    q = load_predictor(path, space="nb201")
    np.testing.assert_allclose(q.predict(Xt[k:]), t.predict(Xt[k:]), rtol=1e-6)
    assert q.sources[0].meta["device"] == "A"
    with pytest.raises(PredictorError, match="needs source predictors"):
        TransferPredictor().fit(Xt[:k], yt[:k], sources=[], space=nb201)
    other = MLPPredictor(hidden=[8], epochs=2).fit(Xs, ys)
    other.meta.update(space="mnasnet")
    with pytest.raises(PredictorError, match="space 'mnasnet'"):
        TransferPredictor().fit(Xt[:k], yt[:k], sources=[other], space=nb201)


def test_finetune_moves_towards_target(nb201):
    _, Xs, ys = synthetic(nb201, 200, COST_A, seed=1)
    src = MLPPredictor(hidden=[32, 32], epochs=60).fit(Xs, ys)
    src.meta.update(space="nb201", encoding="onehot", encoding_length=30)
    _, Xt, yt = synthetic(nb201, 200, COST_B, seed=2)
    tuned = finetune(src, Xt[:30], yt[:30], epochs=60)
    before = evaluate(yt[30:], src.predict(Xt[30:])).mape
    after = evaluate(yt[30:], tuned.predict(Xt[30:])).mape
    assert after < before
    assert tuned.meta["space"] == "nb201" and "finetuned_from" in tuned.meta
    with pytest.raises(PredictorError, match="starts from an 'mlp'"):
        finetune(create_predictor("flops-linear"), Xt, yt)


def test_every_registered_arch_predictor_has_a_working_factory():
    # timm-style: parametrising over the registry catches an entry that cannot be built
    for name in PREDICTORS.names():
        assert create_predictor(name).name == name


def test_mlp_training_is_seeded_and_leaves_global_rng_alone(nb201):
    _, X, y = synthetic(nb201, 80, COST_A)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = MLPPredictor(hidden=[16], epochs=5, seed=4).fit(X, y)
    after = torch.rand(3)
    assert torch.equal(before, after)
    b = MLPPredictor(hidden=[16], epochs=5, seed=4).fit(X, y)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
