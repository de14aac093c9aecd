"""The closed loop: cheap terms first, verification on the device, resume, bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from search_helpers import CountingAccuracy

from hwnas.cli import main
from hwnas.errors import DeviceError
from hwnas.evaluators.table import TableEvaluator
from hwnas.objectives import DeviceLatency, Objective, PredictorLatency, TableLatency
from hwnas.objectives.verify import Verifier
from hwnas.predictors.encoders import get_encoding
from hwnas.searchers import SearchLog, create_searcher
from hwnas.spaces import get_space
from hwnas.store import Store

COST = np.array([0.0, 0.1, 1.0, 2.0, 0.5])  # per NB201 op: none, skip, conv1x1, conv3x3, pool
T = 5.0
RL_FAST = {"batch_size": 8, "hidden": 8, "ppo_epochs": 2}


def _true_ms(choices) -> float:
    return 1.0 + float(COST[np.asarray(choices)].sum())


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Every NB201 cell: additive made-up accuracy, latency by op cost (known optimum)."""
    space = get_space("nb201")
    rng = np.random.default_rng(0)
    value = rng.normal(size=(6, 5))
    path = tmp_path_factory.mktemp("loop") / "t.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "cifar10_acc", "lat_ms"])
        for i in range(space.size()):
            a = space.from_index(i)
            c = np.array(a.choices)
            # Slower cells are more accurate, as on the real benchmark: a search is drawn
            # to the target, where an optimistic predictor does its harm.
            acc = 70 + value[np.arange(6), c].sum() + 2 * _true_ms(c) + (int(a.id, 16) % 97) / 97

            w.writerow([space.format(a), f"{acc:.4f}", f"{_true_ms(c):.4f}"])
    return path


@pytest.fixture
def space():
    return get_space("nb201")


class FakePredictor:
    """A calibrated-looking predictor: the true latency times ``lie`` (times ``lie`` again
    where edge 0 holds a 3x3 convolution), with a +-20 % interval."""

    uncertainty = "conformal"

    def __init__(self, lie: float = 1.0):
        self.lie = lie
        self.meta = {"space": "nb201", "device": "lat_ms"}

    def _choices(self, X):
        return np.asarray(X).reshape(len(X), 6, 5).argmax(-1)

    def predict(self, X):
        c = self._choices(X)
        base = np.array([_true_ms(row) for row in c])
        return base * self.lie * np.where(c[:, 0] == 3, self.lie, 1.0)

    def predict_quantiles(self, X, qs):
        p = self.predict(X)
        return [p * (0.8 if q < 0.5 else 1.2) for q in qs]


def _predicted(lie: float = 1.0, device: str = "lat_ms") -> PredictorLatency:
    src = PredictorLatency("fake.npz")
    src._pred, src._encoding = FakePredictor(lie), get_encoding("onehot")
    src._pred.meta["device"] = device
    return src


def _objective(table, latency, accuracy=None, reward="hard", verify=None, store=None):
    obj = Objective(
        accuracy or TableEvaluator(table, "cifar10_acc"),
        latency,
        latency_target_ms=T,
        reward=reward,
    )
    if verify is not None:
        obj.verifier = Verifier(verify, "table:lat_ms", 20, store)
    return obj


# ---- cheap terms first -------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["random", "evolution", "mnasnet-rl"])
def test_no_accuracy_is_spent_on_a_candidate_whose_upper_bound_breaks_the_target(
    table, space, algo
):
    acc = CountingAccuracy(table)
    obj = _objective(table, _predicted(), accuracy=acc)
    s = create_searcher(algo, **(RL_FAST if algo == "mnasnet-rl" else {}))
    budget = 12 if algo == "mnasnet-rl" else 25
    h = s.run(space, obj, budget=budget, seed=0)
    asked = set(acc.asked)
    assert len(asked) == budget == h.meta["accuracy_evaluations"]  # the budget counts accuracy
    screened = [r for r in h.records if r.terms.screened]
    assert screened and h.meta["screened"] == len({r.arch.id for r in screened})
    for r in screened:
        assert r.arch.id not in asked and r.terms.accuracy is None and not r.feasible
        assert r.terms.latency_upper_ms > T and r.reward < 0
    for r in h.records:
        if r.arch.id in asked:
            assert r.terms.latency_upper_ms <= T
    assert h.meta["latency_predictions"] >= len(asked) + h.meta["screened"]
    assert h.meta["device_measurements"] == 0


def test_a_quantile_below_half_screens_at_the_optimistic_end(table, space):
    """--latency-quantile 0.1 rejects unpaid only what even the optimistic end breaks;
    with verification the answer is still truly feasible."""
    archs = [space.from_index(i) for i in range(0, space.size(), 97)]
    src = _predicted()
    point = [p for p, *_ in src.interval(space, archs, 0.9)]
    for q, factor in ((0.9, 1.2), (0.1, 0.8)):
        for (p, lo, hi, _), want in zip(src.interval(space, archs, q), point, strict=True):
            assert p == pytest.approx(want)
            assert hi == pytest.approx(want * factor)  # the bound a screen compares with T
            assert lo == pytest.approx(want * 0.8)
    cautious = create_searcher("random").run(
        space, _objective(table, _predicted()), budget=40, seed=3
    )
    obj = _objective(table, _predicted(), verify=TableLatency(table, "lat_ms"))
    obj.latency_quantile = 0.1
    bold = create_searcher("random").run(space, obj, budget=40, seed=3)
    # optimistic screening pays accuracy for cells the 0.9 bound would have rejected ...
    assert any(
        T < r.terms.latency_predicted_ms <= T / 0.8 for r in bold.records if not r.terms.screened
    )
    assert cautious.meta["screened"] > bold.meta["screened"]
    # ... and verification keeps the answer truly feasible
    ans = bold.answer()
    assert ans is not None and _true_ms(ans.arch.choices) <= T


def test_soft_reward_screens_nothing(table, space):
    h = create_searcher("random").run(
        space, _objective(table, _predicted(), reward="soft"), budget=10, seed=0
    )
    assert not any(r.terms.screened for r in h.records) and len(h.records) == 10


def test_nearly_nothing_feasible_stops_with_a_clear_message(table, space):
    obj = Objective(
        TableEvaluator(table, "cifar10_acc"),
        TableLatency(table, "lat_ms"),
        latency_target_ms=0.5,  # below every cell
        reward="constraint",
    )
    h = create_searcher("random").run(space, obj, budget=10, seed=0, max_rejections=200)
    assert h.meta["accuracy_evaluations"] == 0
    assert "nearly nothing" in h.meta["stopped"] and "--latency-target" in h.meta["stopped"]


# ---- verification ------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["random", "evolution"])
def test_a_lying_predictor_is_caught_and_corrected(table, space, algo):
    """The predictor halves every latency (and halves again with a 3x3 convolution on edge
    0): without verification the answer breaks T on the device; with it the answer meets T,
    and the predictor's correction moves its predictions towards the truth."""
    blind = create_searcher(algo).run(space, _objective(table, _predicted(0.5)), 60, seed=1)
    lied = blind.best()
    assert lied is not None and _true_ms(lied.arch.choices) > T  # the classic failure

    lat = _predicted(0.5)
    obj = _objective(table, lat, verify=TableLatency(table, "lat_ms"))
    h = create_searcher(algo).run(space, obj, 60, seed=1)
    ans = h.answer()
    assert ans is not None and ans.terms.verified == "ok"
    assert ans.terms.latency_measured_ms == pytest.approx(_true_ms(ans.arch.choices))
    assert ans.terms.latency_measured_ms <= T and ans.terms.latency_ms <= T
    v = h.meta["verification"]
    assert 1 <= v["verified"] <= 20 and v["device_measurements"] == v["verified"]
    assert v["infeasible"] >= 1  # it did measure a lie
    assert h.meta["device_measurements"] == v["device_measurements"]
    # Trust: the predictions of lied-about cells now lie less.
    rng = np.random.default_rng(5)
    probe = [space.sample(rng) for _ in range(100)]
    truth = np.array([_true_ms(a.choices) for a in probe])
    raw = np.array([p for p, _ in _predicted(0.5).latency_ms(space, probe)])
    fixed = np.array([p for p, _ in lat.latency_ms(space, probe)])
    assert lat.trust.n >= 1
    assert np.mean(np.abs(np.log(fixed / truth))) < np.mean(np.abs(np.log(raw / truth)))
    summary = h.summary()["best"]
    assert {"latency_ms", "latency_predicted_ms", "latency_measured_ms"} <= set(summary)


def test_no_verified_answer_is_said_plainly(table, space, capsys):
    obj = _objective(table, _predicted(0.5), verify=TableLatency(table, "lat_ms"))
    obj.verifier.budget = 1
    h = create_searcher("random").run(space, obj, 30, seed=2)
    if h.answer() is None:  # the single measurement was of a lie
        assert h.meta["verification"]["verified"] == 1


class FlakyDevice(DeviceLatency):
    """A device that drops out on its first measurement, then answers from the table."""

    def __init__(self, table):
        super().__init__("cpu-ort")
        self.truth = TableLatency(table, "lat_ms")
        self.calls = 0

    def latency_ms(self, space, archs):
        self.calls += 1
        if self.calls == 1:
            raise DeviceError("device went away (adb: device offline); reconnect it")
        self.measured += len(archs)
        return self.truth.latency_ms(space, archs)


def test_a_device_failing_mid_verification_is_recorded_and_the_search_goes_on(
    table, space, tmp_path
):
    store = Store(tmp_path / "v.db")
    obj = _objective(table, _predicted(0.5, device="cpu-ort"))
    obj.verifier = Verifier(FlakyDevice(table), "cpu-ort", 20, store)
    h = create_searcher("evolution").run(space, obj, 40, seed=3)
    failed = [r for r in h.records if r.terms.verified == "failed"]
    assert len({r.arch.id for r in failed}) == 1
    assert h.meta["verification"]["failed"] == 1 and h.meta["verification"]["verified"] > 1
    ans = h.answer()
    assert ans is None or (ans.terms.verified == "ok" and ans.terms.latency_ms <= T)
    rows = store.measurements(device="cpu-ort", status="failed")
    assert len(rows) == 1 and "offline" in rows[0]["reason"]


# ---- resume ------------------------------------------------------------------------------


class Killed(Exception):
    pass


@pytest.mark.parametrize("algo", ["evolution", "mnasnet-rl"])
def test_a_resumed_search_neither_repeats_nor_loses_verifications(table, space, tmp_path, algo):
    kw = RL_FAST if algo == "mnasnet-rl" else {}

    def obj(store):
        return _objective(table, _predicted(0.5), verify=TableLatency(table, "lat_ms"), store=store)

    full = create_searcher(algo, **kw).run(space, obj(None), 40, seed=4)
    db = tmp_path / "r.db"

    def kill(rec, history):
        if len(history) == len(full.records) // 2:
            raise Killed

    with pytest.raises(Killed):
        create_searcher(algo, **kw).run(
            space, obj(Store(db)), 40, seed=4, log=SearchLog(db), progress=kill
        )
    first = SearchLog(db)
    run_id = full.meta["run_id"]
    made_before = len(first.verifications(run_id))
    assert made_before >= 1
    resumed = create_searcher(algo, **kw).run(space, obj(Store(db)), 40, seed=4, log=SearchLog(db))
    assert [r.arch.id for r in resumed.records] == [r.arch.id for r in full.records]
    assert resumed.meta["replayed"] >= len(full.records) // 2
    rows = SearchLog(db).verifications(run_id)
    assert [r["arch_id"] for r in rows] == [r["arch_id"] for r in full.meta["verification_rows"]]
    # Each verification measured once on the device, across the kill.
    assert sum(r["new_measurement"] for r in rows) == len(rows)
    assert resumed.meta["verification"] == full.meta["verification"]
    assert len(Store(db).measurements(device="table:lat_ms")) == len(rows)
    ans, ans_full = resumed.answer(), full.answer()
    assert (ans and ans.arch.id) == (ans_full and ans_full.arch.id)


# ---- the command line --------------------------------------------------------------------


def _cli(table, tmp_path, *extra, pred=None):
    return [
        "search",
        "evolution",
        "--space",
        "nb201",
        "--accuracy",
        f"table:{table}:cifar10_acc",
        "--latency",
        f"predictor:{pred}" if pred else "table:lat_ms",
        "--latency-target",
        "5ms",
        "--reward",
        "hard",
        "--budget",
        "20",
        "--db",
        str(tmp_path / "c.db"),
        "--quiet",
        *extra,
    ]


@pytest.mark.parametrize(("extra", "want"), [((), 0.9), (("--verify", "table"), 0.1)])
def test_cli_screens_cautiously_unless_a_device_verifies(table, tmp_path, extra, want):
    import argparse

    from hwnas.commands.search import build_objective, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    extra = tuple(f"table:{table}:lat_ms" if e == "table" else e for e in extra)
    args = parser.parse_args(_cli(table, tmp_path, *extra))
    obj = build_objective(args, get_space("nb201"), Store(tmp_path / "o.db"))
    assert obj.latency_quantile == want
    args = parser.parse_args(_cli(table, tmp_path, *extra, "--latency-quantile", "0.5"))
    assert (
        build_objective(args, get_space("nb201"), Store(tmp_path / "o.db")).latency_quantile == 0.5
    )


def test_cli_verify_prints_predicted_and_measured_side_by_side(table, tmp_path, capsys):
    args = _cli(table, tmp_path, "--verify", f"table:{table}:lat_ms")
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    best = out["best"]
    assert best["verified"] == "ok" and best["latency_measured_ms"] <= 5.0
    assert best["latency_ms"] == best["latency_measured_ms"]
    assert best["latency_predicted_ms"] == pytest.approx(best["latency_measured_ms"])  # a table
    assert out["accuracy_evaluations"] == 20 and out["device_measurements"] >= 1
    assert out["verification"]["verified"] <= 50
    assert main(args) == 0  # resumed, printed as a table
    text = capsys.readouterr().out
    assert "predicted ms" in text and "measured ms" in text and "device measurements" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--verify", "device:no-such-device"), "no-such-device"),
        (("--verify", "table:{table}:nope"), "nope"),
        (("--verify", "table:/no/such.csv:lat_ms"), "no table"),
        (("--verify", "gpu"), "device:NAME"),
        (("--verify", "table:{table}:lat_ms", "--verify-budget", "0"), "--verify-budget"),
        (("--verify-budget", "5"), "needs --verify"),
        (("--latency-quantile", "1.5"), "between 0 and 1"),
        (("--latency-quantile", "0"), "between 0 and 1"),
        (("--verify", "table:{table}:cifar100_x"), "cifar100_x"),
    ],
)
def test_cli_bad_verify_input_is_one_line_and_exit_2(table, tmp_path, capsys, extra, message):
    extra = tuple(e.replace("{table}", str(table)) for e in extra)
    assert main(_cli(table, tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_predictor_of_another_device_or_space_is_refused(table, space):
    from hwnas.errors import ConfigError

    obj = _objective(table, _predicted(device="phone_ms"), verify=TableLatency(table, "lat_ms"))
    with pytest.raises(ConfigError, match="trained on device 'phone_ms'.*table:lat_ms"):
        create_searcher("random").run(space, obj, 5, seed=0)
    lat = _predicted()
    lat._pred.meta["space"] = "mnasnet"
    obj = _objective(table, lat, verify=TableLatency(table, "lat_ms"))
    with pytest.raises(ConfigError, match="trained for space 'mnasnet'"):
        create_searcher("random").run(space, obj, 5, seed=0)


def test_a_table_column_named_latency_ms_device_verifies_that_device(table, tmp_path):
    """`train-predictor --table ... --latency-column latency_ms_X --device X` then
    `--verify table:FILE:latency_ms_X`: the README's journey must not be refused."""
    from hwnas.objectives.verify import Verifier

    renamed = tmp_path / "renamed.csv"
    renamed.write_text(Path(table).read_text().replace("lat_ms", "latency_ms_phone", 1))
    v = Verifier(TableLatency(renamed, "latency_ms_phone"), "table:latency_ms_phone")
    assert "phone" in v.device_names()
    assert "pixel" not in v.device_names()


def test_verification_of_an_architecture_missing_from_the_table_is_bad_input(
    table, tmp_path, capsys
):
    short = tmp_path / "short.csv"
    with open(table) as f:
        lines = f.readlines()
    short.write_text("".join(lines[:2]))  # one architecture only
    args = _cli(table, tmp_path, "--verify", f"table:{short}:lat_ms")
    assert main(args) == 2
    assert "not in benchmark table" in capsys.readouterr().err


def test_terms_with_verification_fields_round_trip(table, space):
    from hwnas.objectives import Terms

    t = Terms(latency_ms=4.0, latency_measured_ms=math.inf, verified="failed", screened=True)
    back = Terms.from_dict(json.loads(json.dumps(t.to_dict())))
    assert math.isinf(back.latency_measured_ms) and back.verified == "failed" and back.screened
