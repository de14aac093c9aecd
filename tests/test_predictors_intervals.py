"""Prediction intervals: split-conformal calibration, ensemble spread, files and the CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.errors import ConfigError, PredictorError
from hwnas.predictors import create_predictor, load_predictor
from hwnas.predictors.base import Predictor, conformal_quantile
from hwnas.predictors.data import (
    calibrate_dataset,
    predict_dataset_interval,
    split,
    split_calibration,
)
from hwnas.predictors.metrics import interval_metrics
from hwnas.spaces import get_space

COST = np.array([0.05, 0.0, 1.0, 3.0, 0.6])  # per-op ms of a made-up device (nb201 op order)


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


class ColumnPredictor(Predictor):
    """Predicts feature 0 as the latency: a predictor that knows nothing of intervals.

    Stands for any predictor (``kernel`` included) that only implements the
    abstract methods: calibration must work for it through the base class alone.
    """

    name = "column"

    def fit(self, X, y_ms, **kwargs):
        return self

    def predict(self, X):
        return np.asarray(X, dtype=np.float64)[:, 0]

    def get_state(self):
        return {"unused": np.zeros(1)}

    def set_state(self, arrays):
        pass


def synthetic(space, n: int, seed: int = 0, noise: float = 0.1):
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n)]
    ch = np.array([a.choices for a in archs])
    y = (2.0 + COST[ch].sum(axis=1)) * np.exp(noise * rng.standard_normal(n))
    return space.encode_many(archs), y


# ---- the conformal quantile ------------------------------------------------------------------


def test_conformal_quantile_ranks_by_hand():
    s = np.arange(1.0, 10.0)  # n = 9 sorted scores
    assert conformal_quantile(s, 0.9) == 9.0  # ceil(10 * 0.9) = 9
    assert conformal_quantile(s, 0.5) == 5.0
    assert conformal_quantile(s, 0.95) == math.inf  # rank 10 > n: no finite bound
    assert conformal_quantile(s, 0.1) == 1.0  # floor(10 * 0.1) = 1
    assert conformal_quantile(s, 0.05) == -math.inf


def test_calibrate_generic_predictor_by_hand():
    p = ColumnPredictor()
    assert p.uncertainty == "none"
    yhat = np.full(19, 10.0)
    r = np.linspace(-0.2, 0.3, 19)  # log ratios y/yhat, sorted
    p.calibrate(yhat[:, None], yhat * np.exp(r[::-1]))
    assert p.uncertainty == "conformal" and p.calibration_size == 19
    assert p.meta["calibration"] == {"method": "split-conformal", "score": "log", "n": 19}
    X = np.array([[4.0], [20.0]])
    # 90 %: levels 0.05 and 0.95 -> ranks floor(20*0.05)=1 and ceil(20*0.95)=19
    lo, hi = p.predict_interval(X, 0.9)
    np.testing.assert_allclose(lo, X[:, 0] * math.exp(r[0]))
    np.testing.assert_allclose(hi, X[:, 0] * math.exp(r[18]))
    np.testing.assert_allclose(p.predict_quantile(X, 0.5), X[:, 0] * math.exp(r[9]))
    # the linear score: the same offsets in ms, whatever the prediction
    p.calibrate(yhat[:, None], yhat + r, score="linear")
    lo, hi = p.predict_interval(X, 0.9)
    np.testing.assert_allclose(hi - X[:, 0], [r[18], r[18]])


def test_conformal_coverage_holds_on_exchangeable_data():
    """Averaged over many calibration draws, coverage is at least nominal and at most 1/(n+1) above."""
    rng = np.random.default_rng(1)
    p = ColumnPredictor()
    n_cal, covs = 49, {0.8: [], 0.9: []}
    for _ in range(300):
        yhat = rng.uniform(1, 50, size=n_cal + 200)
        y = yhat * np.exp(0.2 * rng.standard_t(3, size=yhat.size))  # heavy tails
        p.calibrate(yhat[:n_cal, None], y[:n_cal])
        for c in covs:
            lo, hi = p.predict_interval(yhat[n_cal:, None], c)
            covs[c].append(np.mean((y[n_cal:] >= lo) & (y[n_cal:] <= hi)))
    for c, v in covs.items():
        assert c - 0.01 <= np.mean(v) <= c + 2 / (n_cal + 1) + 0.01, (c, np.mean(v))


def test_bad_levels_and_no_uncertainty(nb201):
    X, y = synthetic(nb201, 60)
    p = create_predictor("gbdt", n_estimators=20).fit(X, y)
    with pytest.raises(PredictorError, match="--calibrate 0.2"):
        p.predict_interval(X)
    with pytest.raises(PredictorError, match="ensemble"):
        p.predict_quantile(X, 0.9)
    p.calibrate(X[:30], y[:30])
    for bad in (0, 1, 1.5, -0.1, float("nan"), "x", None, True):
        with pytest.raises(ConfigError, match="strictly between 0 and 1"):
            p.predict_quantile(X, bad)
        with pytest.raises(ConfigError, match="coverage"):
            p.predict_interval(X, bad)
    with pytest.raises(ConfigError, match="score"):
        p.calibrate(X[:30], y[:30], score="sqrt")
    with pytest.raises(PredictorError, match="finite and > 0"):
        p.calibrate(X[:3], [1.0, -1.0, 2.0])
    with pytest.raises(PredictorError, match="predictions for"):
        p.calibrate(X[:3], [1.0, 2.0])


def test_every_arch_predictor_calibrates_and_roundtrips(nb201, tmp_path):
    X, y = synthetic(nb201, 160, noise=0.05)
    flops = X @ np.tile([0.0, 0.0, 1.0, 3.0, 0.6], 6)[:, None]  # a FLOPs-like feature
    cases = {
        "gbdt": (create_predictor("gbdt", n_estimators=40), X),
        "mlp": (create_predictor("mlp", hidden=[16], epochs=40), X),
        "flops-linear": (create_predictor("flops-linear"), flops),
    }
    src = create_predictor("gbdt", n_estimators=40).fit(X[:80], y[:80])
    tr = create_predictor("transfer").fit(X[:30], y[:30], sources=[src], space=nb201)
    for p, F in cases.values():
        p.fit(F[:80], y[:80])
    cases["transfer"] = (tr, X)
    for name, (p, F) in cases.items():
        p.calibrate(F[80:120], y[80:120])
        lo, hi = p.predict_interval(F[120:], 0.8)
        point = p.predict(F[120:])
        assert np.all(lo <= point) and np.all(point <= hi), name
        path = p.save(tmp_path / f"{name}.npz")
        q = load_predictor(path)
        assert q.uncertainty == "conformal" and q.calibration_size == 40, name
        lo2, hi2 = q.predict_interval(F[120:], 0.8)
        np.testing.assert_allclose(lo2, lo, rtol=1e-6)
        np.testing.assert_allclose(hi2, hi, rtol=1e-6)
        q.clear_calibration()
        assert q.uncertainty == "none" and "calibration" not in q.meta


def test_mlp_ensemble_spread_then_conformal_wins(nb201, tmp_path):
    X, y = synthetic(nb201, 120)
    p = create_predictor("mlp", hidden=[16], epochs=30, ensemble=3).fit(X[:80], y[:80])
    assert p.uncertainty == "ensemble"
    point = p.predict(X[80:])
    lo8, hi8 = p.predict_interval(X[80:], 0.8)
    lo9, hi9 = p.predict_interval(X[80:], 0.9)
    assert np.all(lo9 <= lo8) and np.all(lo8 <= point) and np.all(point <= hi8)
    assert np.all(hi8 <= hi9) and np.all(hi9 > lo9)
    mu, sd = p.log_spread(X[80:])
    np.testing.assert_allclose(np.exp(mu), point, rtol=1e-9)
    np.testing.assert_allclose(hi9, point * np.exp(1.6448536 * sd), rtol=1e-6)
    q = load_predictor(p.save(tmp_path / "e.npz"))
    assert q.uncertainty == "ensemble"
    p.calibrate(X[80:100], y[80:100])
    assert p.uncertainty == "conformal"
    lo, hi = p.predict_interval(X[100:], 0.8)
    assert np.all(hi / p.predict(X[100:]) == pytest.approx(hi[0] / p.predict(X[100:])[0]))
    with pytest.raises(PredictorError, match="ensemble=5"):
        create_predictor("mlp", hidden=[8], epochs=5).fit(X[:20], y[:20]).log_spread(X)


@pytest.fixture(scope="module")
def nb201_table(nb201_csv, nb201):
    """The shared table's architectures (parsed once) and its latency columns."""
    with open(nb201_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    archs = [nb201.parse(r["arch"]) for r in rows]
    return archs, rows


@pytest.mark.parametrize("device", ["gold_6226", "raspi4", "samsung_s7", "fpga"])
def test_coverage_on_nb201_table(nb201_table, nb201, device):
    """Calibrated on 300 held-out cells, 90 % intervals cover 90 +- 5 % of 3000 other cells."""
    from hwnas.predictors.data import Dataset

    archs, rows = nb201_table
    y = np.array([float(r[f"latency_ms_{device}"] or "nan") for r in rows])
    keep = [i for i, a in enumerate(archs) if y[i] > 0 and not nb201.is_degenerate(a)]
    ds = Dataset("nb201", device, [archs[i] for i in keep], y[keep], np.full(len(keep), np.nan))
    train, test = split(ds, 500, seed=3)
    fit, cal = split_calibration(train, 0.6, seed=3)
    test = test.subset(np.arange(3000))
    p = create_predictor("gbdt", n_estimators=100, seed=3)
    p.fit(fit.features("onehot", nb201), fit.y_ms)
    p.meta.update(space="nb201", encoding="onehot")
    calibrate_dataset(p, cal, nb201)
    assert p.calibration_size == 300
    point, lo, hi = predict_dataset_interval(p, test, nb201, 0.9)
    m = interval_metrics(test.y_ms, lo, hi, point, 0.9)
    assert 85.0 <= m.coverage <= 95.0, m
    assert m.width < 100.0


def test_split_calibration_errors(nb201):
    X, y = synthetic(nb201, 10)
    from hwnas.predictors.data import Dataset

    archs = [nb201.sample(np.random.default_rng(i)) for i in range(10)]
    ds = Dataset("nb201", "d", archs, y, np.full(10, np.nan))
    fit, cal = split_calibration(ds, 0.3)
    assert len(fit) == 7 and len(cal) == 3
    assert not {a.id for a in fit.archs} & {a.id for a in cal.archs}
    with pytest.raises(ConfigError, match="at least 2"):
        split_calibration(ds, 0.05)
    with pytest.raises(ConfigError, match="strictly between"):
        split_calibration(ds, 1.0)


# ---- files that must be refused --------------------------------------------------------------


def _rewrite(src, dst, **changes):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)
    return dst


@pytest.fixture(scope="module")
def saved_mlp(nb201, tmp_path_factory):
    X, y = synthetic(nb201, 40)
    p = create_predictor("mlp", hidden=[8], epochs=5).fit(X, y)
    p.calibrate(X[:20], y[:20])
    return p.save(tmp_path_factory.mktemp("files") / "m.npz")


def test_load_refuses_nonfinite_weights(saved_mlp, tmp_path):
    with np.load(saved_mlp) as z:
        w = z["m0.l0.weight"].copy()
    for bad in (np.nan, np.inf):
        w[0, 0] = bad
        f = _rewrite(saved_mlp, tmp_path / "nan.npz", **{"m0.l0.weight": w})
        with pytest.raises(PredictorError, match=r"nan\.npz.*NaN or infinite.*retrain") as e:
            load_predictor(f)
        assert "\n" not in str(e.value)


def test_load_refuses_config_not_an_object(saved_mlp, tmp_path):
    for doc in (b"[1, 2]", b'"mlp"', b"3"):
        f = _rewrite(saved_mlp, tmp_path / "cfg.npz", __config__=np.frombuffer(doc, np.uint8))
        with pytest.raises(PredictorError, match=r"cfg\.npz.*not an object"):
            load_predictor(f)
    with np.load(saved_mlp) as z:
        cfg = json.loads(z["__config__"].tobytes())
    cfg["meta"] = ["not", "a", "dict"]
    doc = np.frombuffer(json.dumps(cfg).encode(), np.uint8)
    with pytest.raises(PredictorError, match="meta entry is not a JSON object"):
        load_predictor(_rewrite(saved_mlp, tmp_path / "meta.npz", __config__=doc))


def test_load_refuses_wrong_type_or_rank(saved_mlp, tmp_path):
    f = _rewrite(saved_mlp, tmp_path / "str.npz", target_mu=np.array(["a"]))
    with pytest.raises(PredictorError, match=r"str\.npz.*'target_mu'.*not numbers"):
        load_predictor(f)
    f = _rewrite(saved_mlp, tmp_path / "rank.npz", **{"m0.l0.weight": np.zeros(30)})
    with pytest.raises(PredictorError, match=r"rank\.npz.*do not fit.*retrain") as e:
        load_predictor(f)
    assert "\n" not in str(e.value)
    f = _rewrite(saved_mlp, tmp_path / "cal.npz", __conformal__=np.zeros((2, 3)))
    with pytest.raises(PredictorError, match=r"cal\.npz.*calibration scores"):
        load_predictor(f)
    f = _rewrite(saved_mlp, tmp_path / "uns.npz", __conformal__=np.array([2.0, 1.0]))
    with pytest.raises(PredictorError, match="not sorted"):
        load_predictor(f)
    assert load_predictor(saved_mlp).uncertainty == "conformal"


# ---- CLI -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table(nb201, tmp_path_factory):
    """200 nb201 cells of a made-up device with 10 % log-normal noise."""
    path = tmp_path_factory.mktemp("tbl") / "t.csv"
    rng = np.random.default_rng(0)
    archs = []
    while len(archs) < 200:
        a = nb201.sample(rng)
        if not nb201.is_degenerate(a) and a not in archs:
            archs.append(a)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "latency_ms_dev"])
        for a in archs:
            lat = (2.0 + COST[np.array(a.choices)].sum()) * np.exp(0.1 * rng.standard_normal())
            w.writerow([nb201.format(a), f"{lat:.5f}"])
    return path


def _train(table, out, *extra):
    argv = ["train-predictor", "--table", str(table), "--latency-column", "latency_ms_dev"]
    argv += ["--space", "nb201", "--predictor", "gbdt", "--set", "n_estimators=60"]
    return main([*argv, "--out", str(out), *extra])


def test_cli_calibrate_predict_eval(table, tmp_path, capsys):
    out = tmp_path / "g.npz"
    assert _train(table, out, "--train-size", "120", "--calibrate", "0.25", "--json") == 0
    text = capsys.readouterr().out
    assert "calibrated on 30 held-out architectures" in text
    res = json.loads(text[text.index("{") :])
    assert res["uncertainty"] == "conformal" and res["calibration_size"] == 30
    assert res["test"]["n"] == 80 and res["interval"]["nominal"] == 0.9
    assert 70.0 <= res["interval"]["coverage"] <= 100.0
    p = load_predictor(out)
    assert p.meta["train_size"] == 90 and len(p.meta["train_arch_ids"]) == 120

    # eval leaves out the 120 cells used for fitting and calibration
    ev = ["eval-predictor", str(out), "--table", str(table), "--latency-column", "latency_ms_dev"]
    assert main([*ev, "--json", "--coverage", "0.8"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["n"] == 80 and got["interval"]["nominal"] == 0.8
    assert got["interval"]["coverage"] == pytest.approx(
        100 - got["interval"]["below"] - got["interval"]["above"]
    )
    assert main(ev) == 0
    assert "90% covered (%)" in capsys.readouterr().out

    a = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    assert main(["predict", str(out), a, "1", "--json", "--coverage", "0.8"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["arch"] == a and rows[1]["arch"] == a  # nb201 index 1 is this cell
    lo, hi = rows[0]["interval_ms"]
    assert lo < rows[0]["latency_ms"] < hi and rows[0]["coverage"] == 0.8
    assert rows[0]["uncertainty"] == "conformal"
    assert main(["predict", str(out), a]) == 0
    assert "90% high (ms)" in capsys.readouterr().out


def test_cli_bad_levels_exit_2_one_line(table, tmp_path, capsys):
    out = tmp_path / "g.npz"
    for bad in ("0", "1", "1.5", "abc", "-0.2"):
        assert _train(table, out, "--train-size", "60", "--calibrate", bad) == 2
        err = capsys.readouterr().err.strip()
        assert "--calibrate" in err and len(err.splitlines()) == 1
    assert _train(table, out, "--train-size", "60", "--calibrate", "0.01") == 2
    assert "at least 2" in capsys.readouterr().err
    assert _train(table, out, "--train-size", "60", "--no-eval") == 0
    capsys.readouterr()
    for cmd in (["predict", str(out), "1"], ["eval-predictor", str(out), "--table", str(table)]):
        assert main([*cmd, "--coverage", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert "--coverage must be" in err and len(err.splitlines()) == 1
    # an uncalibrated predictor still predicts its point, and says how to get an interval
    assert main(["predict", str(out), "1", "--json"]) == 0
    cap = capsys.readouterr()
    assert "interval_ms" not in json.loads(cap.out)[0] and "--calibrate 0.2" in cap.err


def test_cli_too_few_calibration_points_says_so(table, tmp_path, capsys):
    out = tmp_path / "small.npz"
    assert _train(table, out, "--train-size", "60", "--calibrate", "0.1", "--json") == 0
    cap = capsys.readouterr()
    assert "needs at least 19 calibration architectures" in cap.err  # n = 6
    res = json.loads(cap.out[cap.out.index("{") :])
    assert res["interval"]["width"] is None and res["interval"]["coverage"] == 100.0
    assert main(["predict", str(out), "1", "--json", "--coverage", "0.5"]) == 0
    lo, hi = json.loads(capsys.readouterr().out)[0]["interval_ms"]
    assert 0 < lo < hi  # a 50 % interval needs only 3 points
    assert main(["predict", str(out), "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["interval_ms"][1] is None


def test_kernel_predictor_inherits_calibration(tmp_path):
    """kernel.py knows nothing of intervals; calibrating it on whole networks works through the base class."""
    kernel = pytest.importorskip("hwnas.predictors.kernel")
    from hwnas.predictors.kernels.detect import KernelRecord

    rng = np.random.default_rng(0)
    recs = []
    for _ in range(200):
        hw, cin, cout = int(rng.choice([7, 14, 28])), int(rng.choice([16, 32, 64])), 32
        recs.append(KernelRecord("conv", hw, hw, cin, cout, 3, 1, 1, hw, hw, "relu"))
    y = np.array([0.01 + r.macs / 4e9 for r in recs]) * rng.lognormal(0, 0.05, len(recs))
    p = kernel.KernelPredictor(n_estimators=10, calibrate=False).fit(recs, y)
    nets, yn = [], []
    for _ in range(40):
        idx = rng.choice(len(recs), size=10, replace=False)
        nets.append(kernel.NetworkRecord(tuple(recs[i] for i in idx)))
        yn.append(y[idx].sum() * rng.lognormal(0.1, 0.05))  # in a model: ~10 % slower
    p.calibrate(nets[:30], yn[:30])
    lo, hi = p.predict_interval(nets[30:], 0.8)
    assert p.uncertainty == "conformal" and np.all(lo < hi)
    assert np.mean((np.array(yn[30:]) >= lo) & (np.array(yn[30:]) <= hi)) >= 0.5
    q = load_predictor(p.save(tmp_path / "k.npz"))
    np.testing.assert_allclose(q.predict_interval(nets[30:], 0.8)[1], hi)


def test_kernel_calibration_split_keeps_whole_networks_aside():
    """`train-predictor --predictor kernel --calibrate S` holds out a share of the networks only."""
    kernel = pytest.importorskip("hwnas.predictors.kernel")
    from argparse import Namespace

    from hwnas.commands.predictors import _kernel_calibration_split
    from hwnas.predictors.kernels.detect import KernelRecord

    k = KernelRecord("conv", 7, 7, 16, 16, 3, 1, 1, 7, 7, "relu")
    X = [k] * 50 + [kernel.NetworkRecord((k, k))] * 20
    idx = _kernel_calibration_split(X, Namespace(calibrate="0.25", seed=0, db="k.db"))
    assert len(idx) == 5 and all(i >= 50 for i in idx)
    assert _kernel_calibration_split(X, Namespace(calibrate=None, seed=0, db="k.db")) == []
    with pytest.raises(ConfigError, match="at least 2"):
        _kernel_calibration_split(X[:52], Namespace(calibrate="0.2", seed=0, db="k.db"))
