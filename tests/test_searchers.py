"""Searchers: the shared contract (parametrised from the registry), resume, and each algorithm."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from hwnas.arch import Arch
from hwnas.errors import ConfigError
from hwnas.evaluators.table import TableEvaluator
from hwnas.objectives import Objective, TableLatency, Terms
from hwnas.searchers import SEARCHERS, SearchLog, create_searcher, pareto_front
from hwnas.searchers.base import Record
from hwnas.searchers.evolution import RegularizedEvolution
from hwnas.searchers.mnasnet_rl import Controller, MnasNetRL
from hwnas.spaces import get_space, list_spaces
from hwnas.spaces.nb201 import OPS

# The searchers this module knows how to drive on a table objective. Searchers
# added later (latency-darts, memnas, autoslim) need their own objective
# (a supernet, memory terms) and bring their own tests.
TABULAR = [n for n in SEARCHERS.names() if n in ("random", "evolution", "mnasnet-rl", "naswot")]
FAST = {"naswot": {"batch_size": 4, "input_size": 8}}


def _synthetic_nb201(path):
    """A made-up NB201 table: additive op values plus a hash term; latency by op cost.

    It has the real table's shape (every cell, ``arch`` strings) without
    depending on the shared data, and a known optimum under any bound.
    """
    space = get_space("nb201")
    rng = np.random.default_rng(0)
    value = rng.normal(size=(6, len(OPS)))
    cost = np.array([0.0, 0.1, 1.0, 2.0, 0.5])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "arch", "cifar10_acc", "latency_ms"])
        for i in range(space.size()):
            a = space.from_index(i)
            c = np.array(a.choices)
            acc = 80 + 2 * value[np.arange(6), c].sum() + (int(a.id, 16) % 97) / 97.0
            lat = 1.0 + cost[c].sum()
            w.writerow([i, space.format(a), f"{acc:.4f}", f"{lat:.4f}"])
    return path


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
    return _synthetic_nb201(tmp_path_factory.mktemp("tab") / "synthetic.csv")


@pytest.fixture
def space():
    return get_space("nb201")


def _objective(table_csv, reward="hard", target=5.0):
    return Objective(
        TableEvaluator(table_csv, "cifar10_acc"),
        TableLatency(table_csv, "latency_ms"),
        latency_target_ms=target,
        reward=reward,
    )


def _arch_seq(history):
    return [r.arch.id for r in history.records]


# ---- the contract, for every tabular searcher in the registry -------------------------


@pytest.mark.parametrize("name", TABULAR)
def test_searcher_contract(name, table_csv, space):
    s = create_searcher(name, **FAST.get(name, {}))
    h = s.run(space, _objective(table_csv), budget=8, seed=3)
    ids = {r.arch.id for r in h.records if not r.terms.screened}
    assert len(ids) == 8 or h.meta["converged"]
    assert h.meta["accuracy_evaluations"] == len(ids)
    for r in h.records:
        space.validate(r.arch)
        assert r.terms.latency_ms is not None
        # The table's latency is exact, so cheap-first rejects exactly what breaks T.
        assert r.terms.screened == (r.terms.latency_ms > 5.0)
        assert (r.terms.accuracy is None) == r.terms.screened
        assert r.feasible == (r.terms.latency_ms <= 5.0)
    assert [r.step for r in h.records] == list(range(len(h.records)))
    # Same seed, same sequence; another seed, another one.
    h2 = create_searcher(name, **FAST.get(name, {})).run(space, _objective(table_csv), 8, seed=3)
    assert _arch_seq(h) == _arch_seq(h2)
    h3 = create_searcher(name, **FAST.get(name, {})).run(space, _objective(table_csv), 8, seed=4)
    assert _arch_seq(h) != _arch_seq(h3)


@pytest.mark.parametrize("name", TABULAR)
def test_killed_search_resumes_to_the_same_sequence(name, table_csv, space, tmp_path):
    db = tmp_path / "s.db"
    full = create_searcher(name, **FAST.get(name, {})).run(space, _objective(table_csv), 14, seed=1)

    class Killed(Exception):
        pass

    def kill_after_5(rec, history):
        if len(history) == 5:
            raise Killed

    log = SearchLog(db)
    with pytest.raises(Killed):
        create_searcher(name, **FAST.get(name, {})).run(
            space, _objective(table_csv), 14, seed=1, log=log, progress=kill_after_5
        )
    evaluated = []

    class Counting(TableEvaluator):
        def evaluate(self, space, archs):
            evaluated.extend(archs)
            return super().evaluate(space, archs)

    obj = Objective(
        Counting(table_csv, "cifar10_acc"),
        TableLatency(table_csv, "latency_ms"),
        latency_target_ms=5.0,
        reward="hard",
    )
    resumed = create_searcher(name, **FAST.get(name, {})).run(
        space, obj, 14, seed=1, log=SearchLog(db)
    )
    assert resumed.meta["replayed"] == 5
    assert not resumed.meta["diverged"]
    assert _arch_seq(resumed) == _arch_seq(full)
    assert [r.reward for r in resumed.records] == pytest.approx([r.reward for r in full.records])
    # The five logged candidates were not evaluated again.
    logged = {r.arch.id for r in full.records[:5]}
    assert not logged & {a.id for a in evaluated} or name == "naswot"


def test_budget_counts_distinct_architectures(table_csv, space):
    h = create_searcher("evolution", population_size=4, sample_size=4).run(
        space, _objective(table_csv), budget=30, seed=0
    )
    distinct = {r.arch.id for r in h.records if not r.terms.screened}
    assert len(distinct) == 30
    repeats = [r for r in h.records if r.repeat]
    screened = [r for r in h.records if r.terms.screened and not r.repeat]
    assert len(h.records) == 30 + len(repeats) + len(screened) and screened
    assert all(r.terms.eval_s == 0.0 for r in repeats)


def test_budget_below_one_is_refused(table_csv, space):
    with pytest.raises(ConfigError, match="budget"):
        create_searcher("random").run(space, _objective(table_csv), budget=0)


def test_unknown_searcher_and_setting_name_the_valid_ones():
    with pytest.raises(ConfigError, match="evolution"):
        create_searcher("evolutoin")
    with pytest.raises(ConfigError, match="population_size"):
        create_searcher("evolution", ["populaton_size=3"])
    s = create_searcher("evolution", ["population_size=7", "sample_size=2"])
    assert s.settings.population_size == 7 and s.settings.sample_size == 2
    with pytest.raises(ConfigError, match="sample_size"):
        create_searcher("evolution", ["population_size=3", "sample_size=9"])


# ---- regularised evolution -------------------------------------------------------------


def _rec(step, arch, reward, feasible=True, **terms):
    t = Terms(reward=reward, feasible=feasible, **terms)
    return Record(step=step, arch=arch, arch_str=str(step), terms=t)


def test_evolution_removes_the_oldest_not_the_worst(space, table_csv):
    ev = RegularizedEvolution(population_size=3, sample_size=3)
    ev.reset(space, 0, 100, _objective(table_csv))
    rng = np.random.default_rng(0)
    recs = [_rec(i, space.sample(rng), r) for i, r in enumerate([99.0, 1.0, 2.0, 3.0])]
    ev.update(recs)
    assert [r.step for r in ev.population] == [1, 2, 3]  # the best (step 0) aged out


def test_evolution_mutates_the_tournament_winner(space, table_csv):
    """Tournaments draw S members with replacement (Real et al., Algorithm 1) and the
    best drawn one is mutated: with S = P = 4 the population's best wins with
    probability 1 - (3/4)^4 = 0.68, never a member below every drawn one."""
    ev = RegularizedEvolution(population_size=4, sample_size=4, batch_size=400)
    ev.reset(space, 0, 1000, _objective(table_csv))
    rng = np.random.default_rng(1)
    recs = [_rec(i, space.sample(rng), r) for i, r in enumerate([1.0, 5.0, 2.0, 3.0])]
    assert ev.batch_size() == 4 and all(c.origin == "sample" for c in ev.propose(4))
    ev.update(recs)
    kids = ev.propose(400)
    wins = np.bincount([k.info["parent_step"] for k in kids], minlength=4) / len(kids)
    assert 0.6 < wins[1] < 0.76
    assert wins[0] < 0.01  # the worst only wins when drawn four times: (1/4)^4
    for k in kids:
        parent = recs[k.info["parent_step"]].arch
        assert k.origin == "mutation"
        assert sum(a != b for a, b in zip(k.arch.choices, parent.choices, strict=True)) == 1


def test_evolution_beats_random_on_the_synthetic_table(table_csv, space):
    """A smoke check that selection works (5 seeds, budget 150): not a benchmark."""

    def best(name, seed):
        h = create_searcher(name).run(space, _objective(table_csv, target=4.0), 150, seed)
        return h.best(key="accuracy").terms.accuracy

    ev = np.mean([best("evolution", s) for s in range(5)])
    rnd = np.mean([best("random", s) for s in range(5)])
    assert ev > rnd


# ---- the RL controller ----------------------------------------------------------------


@pytest.mark.parametrize("space_name", list_spaces())
def test_controller_emits_one_valid_decision_per_step_of_any_space(space_name):
    sp = get_space(space_name)
    ctrl = Controller(sp.decisions(), hidden=16)
    acts = ctrl.sample(5, torch.Generator().manual_seed(0))
    assert acts.shape == (5, len(sp.decisions()))
    for row in acts.tolist():
        sp.validate(sp.arch(row))
    logp, ent = ctrl.log_prob(acts)
    assert logp.shape == (5,) and torch.all(logp <= 0) and torch.all(ent > 0)


def test_ppo_update_raises_the_probability_of_rewarded_architectures(space, table_csv):
    rl = MnasNetRL(batch_size=8, lr=0.05)
    rl.reset(space, 0, 100, _objective(table_csv))
    rng = np.random.default_rng(0)
    good = space.sample(rng)
    others = [space.sample(rng) for _ in range(7)]
    acts = torch.tensor([list(good.choices)])
    before = float(rl.controller.log_prob(acts)[0][0].detach())
    for k in range(5):
        recs = [_rec(8 * k, good, 90.0)] + [
            _rec(8 * k + i + 1, a, 50.0) for i, a in enumerate(others)
        ]
        rl.update(recs)
    after = float(rl.controller.log_prob(acts)[0][0].detach())
    assert after > before + 1.0
    assert rl.updates == 5 and rl.baseline is not None


def test_rl_update_survives_failed_candidates(space, table_csv):
    rl = MnasNetRL(batch_size=4)
    rl.reset(space, 0, 10, _objective(table_csv))
    rng = np.random.default_rng(0)
    recs = [_rec(i, space.sample(rng), r) for i, r in enumerate([math.nan, -math.inf, 50.0, 60.0])]
    rl.update(recs)
    assert rl.updates == 1
    for p in rl.controller.parameters():
        assert torch.isfinite(p).all()


def test_rl_improves_reward_on_the_synthetic_table(table_csv, space):
    h = create_searcher("mnasnet-rl").run(space, _objective(table_csv, "soft"), 120, seed=0)
    r = h.rewards()
    assert np.mean(r[-20:]) > np.mean(r[:20])


# ---- NASWOT search -------------------------------------------------------------------


def test_naswot_search_keeps_the_best_feasible_score_and_looks_up_its_accuracy(table_csv, space):
    s = create_searcher("naswot", n=6, batch_size=4, input_size=8)
    obj = _objective(table_csv, "hard", target=4.0)
    h = s.run(space, obj, budget=50, seed=0)
    # Six scored; cheaply rejected samples (table latency over T) cost no score.
    assert len([r for r in h.records if not r.terms.screened]) == 6 and s.done()
    assert all(r.terms.latency_ms > 4.0 for r in h.records if r.terms.screened)
    feasible = [r for r in h.records if r.feasible]
    final = h.final
    if not feasible:
        assert final["arch"] is None
        return
    best = max(feasible, key=lambda r: r.terms.accuracy)
    assert final["arch"] == best.arch_str
    assert final["naswot_score"] == best.terms.accuracy
    # The pick's accuracy is the table's, not the score.
    table = TableEvaluator(table_csv, "cifar10_acc")
    assert final["terms"]["accuracy"] == pytest.approx(table.evaluate(space, [best.arch])[0])
    assert final["seconds_per_arch"] > 0


# ---- history, front, log -------------------------------------------------------------


def test_pareto_front_keeps_exactly_the_non_dominated(space):
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(5)]
    recs = [
        _rec(0, archs[0], 0, accuracy=90.0, latency_ms=10.0),
        _rec(1, archs[1], 0, accuracy=80.0, latency_ms=5.0),
        _rec(2, archs[2], 0, accuracy=85.0, latency_ms=12.0),  # dominated by 0
        _rec(3, archs[3], 0, accuracy=80.0, latency_ms=6.0),  # dominated by 1
        _rec(4, archs[4], 0, accuracy=95.0, latency_ms=20.0),
    ]
    front = pareto_front(recs)
    assert [r.step for r in front] == [1, 0, 4]  # sorted by latency
    # With memory, a slower but smaller network joins the front.
    recs2 = [
        _rec(0, archs[0], 0, accuracy=90.0, latency_ms=10.0, memory_bytes=100),
        _rec(1, archs[1], 0, accuracy=85.0, latency_ms=12.0, memory_bytes=50),
        _rec(2, archs[2], 0, accuracy=85.0, latency_ms=12.0, memory_bytes=60),
    ]
    assert {r.step for r in pareto_front(recs2)} == {0, 1}


def test_history_best_is_the_best_feasible(table_csv, space):
    h = create_searcher("random").run(space, _objective(table_csv, target=3.0), 40, seed=0)
    best = h.best()
    feas = [r for r in h.records if r.feasible]
    assert best is not None and best.feasible
    assert best.reward == max(r.reward for r in feas)
    curve = h.best_so_far("accuracy")
    assert np.all(np.diff(curve[np.isfinite(curve)]) >= 0)


def test_search_log_round_trips_records_and_runs(tmp_path, space, table_csv):
    db = tmp_path / "log.db"
    log = SearchLog(db)
    h = create_searcher("random").run(space, _objective(table_csv), 8, seed=0, log=log)
    back = SearchLog(db).records(h.meta["run_id"], space.name)
    assert [r.arch for r in back] == [r.arch for r in h.records]
    assert [r.terms.reward for r in back] == pytest.approx([r.terms.reward for r in h.records])
    runs = SearchLog(db).runs()
    assert runs[0]["run_id"] == h.meta["run_id"] and runs[0]["n"] == len(h.records)
    # Records with an infinite latency (failed measurement) survive the JSON round trip.
    rec = Record(0, Arch("nb201", (0,) * 6), "x", Terms(latency_ms=math.inf, reward=-math.inf))
    log.open_run("r", "random", "nb201", 0, {})
    log.append("r", rec)
    got = log.records("r", "nb201")[0]
    assert math.isinf(got.terms.latency_ms) and got.terms.reward == -math.inf


def test_plots_are_written(tmp_path, table_csv, space):
    from hwnas.report.search import plot_front, plot_reward_over_time

    h = create_searcher("evolution").run(space, _objective(table_csv), 30, seed=0)
    a = plot_reward_over_time(h, tmp_path / "r.png")
    b = plot_front(h, tmp_path / "f.png", latency_target_ms=5.0)
    assert a.stat().st_size > 5000 and b.stat().st_size > 5000
