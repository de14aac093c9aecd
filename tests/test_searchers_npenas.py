"""NPENAS (predictor-guided evolution): budget, hard constraint, determinism, its predictor."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from search_helpers import CountingAccuracy

from hwnas.cli import main
from hwnas.errors import ConfigError
from hwnas.evaluators.table import TableEvaluator, load_table
from hwnas.objectives import Objective, TableLatency
from hwnas.searchers import create_searcher
from hwnas.searchers.npenas import gp_predict
from hwnas.spaces import get_space

COST = np.array([0.0, 0.1, 1.0, 2.0, 0.5])  # per NB201 op: none, skip, conv1x1, conv3x3, pool
T = 5.0


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Every NB201 cell: made-up accuracy with pairwise structure, latency by op cost."""
    space = get_space("nb201")
    rng = np.random.default_rng(0)
    single, pair = rng.normal(size=(6, 5)), rng.normal(scale=0.5, size=(5, 5))
    path = tmp_path_factory.mktemp("npenas") / "t.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "cifar10_acc", "lat_ms"])
        for i in range(space.size()):
            a = space.from_index(i)
            c = np.array(a.choices)
            lat = 1.0 + float(COST[c].sum())
            acc = 70 + single[np.arange(6), c].sum() + pair[c[0], c[5]] + 1.5 * lat
            w.writerow([space.format(a), f"{acc:.4f}", f"{lat:.4f}"])
    return path


def _objective(table, accuracy=None):
    return Objective(
        accuracy or TableEvaluator(table, "cifar10_acc"),
        TableLatency(table, "lat_ms"),
        latency_target_ms=T,
        reward="hard",
    )


def _best_feasible(table, space) -> float:
    tab = load_table(table)
    lat, acc = tab.column("lat_ms"), tab.column("cifar10_acc")
    return float(acc[lat <= T].max())


def test_budget_counts_accuracy_evaluations_and_only_feasible_cells_are_evaluated(table):
    space = get_space("nb201")
    acc = CountingAccuracy(table)
    hist = create_searcher("npenas", init=10).run(space, _objective(table, acc), 40, seed=0)
    tab = load_table(table)
    assert len(acc.asked) == len(set(acc.asked)) == 40  # no cell evaluated twice
    assert hist.meta["accuracy_evaluations"] == 40
    by_id = {a.id: a for a in (r.arch for r in hist.records)}
    assert all(tab.value(space, by_id[i], "lat_ms") <= T for i in acc.asked)
    assert hist.answer() is not None and hist.answer().feasible


def test_same_seed_same_search_other_seed_other_search(table):
    space = get_space("nb201")

    def ids(seed):
        h = create_searcher("npenas", init=8).run(space, _objective(table), 30, seed=seed)
        return [r.arch.id for r in h.records]

    assert ids(3) == ids(3)
    assert ids(3) != ids(4)


def test_the_predictor_guides_it_closer_to_the_best_feasible_cell_than_random(table):
    space = get_space("nb201")
    best = _best_feasible(table, space)

    def regret(algo, seed):
        settings = {"init": 10} if algo == "npenas" else {}
        h = create_searcher(algo, **settings).run(space, _objective(table), 40, seed=seed)
        return best - float(h.answer().terms.accuracy)

    npenas = [regret("npenas", s) for s in range(3)]
    rand = [regret("random", s) for s in range(3)]
    assert np.mean(npenas) < np.mean(rand)


def test_gp_interpolates_the_data_and_is_less_sure_away_from_it():
    space = get_space("nb201")
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(40)]
    X = space.encode_many(archs).astype(np.float64)
    y = X @ rng.normal(size=X.shape[1])
    mean, std = gp_predict(X, y, X, lengthscale=2.0, noise=1e-4)
    assert np.allclose(mean, y, atol=0.05 * y.std())
    far = space.encode_many([space.sample(rng) for _ in range(40)]).astype(np.float64)
    _, std_far = gp_predict(X, y, far, lengthscale=2.0, noise=1e-4)
    assert std.mean() < std_far.mean()


@pytest.mark.parametrize(
    "bad", [{"acquisition": "ucb"}, {"init": 1}, {"top_k": 300}, {"double_mutation": 2.0}]
)
def test_bad_settings_are_a_config_error(bad):
    with pytest.raises(ConfigError):
        create_searcher("npenas", **bad)


def test_cli_search_npenas(table, tmp_path, capsys):
    code = main(
        [
            "search",
            "npenas",
            "--space",
            "nb201",
            "--accuracy",
            f"table:{table}:cifar10_acc",
            "--latency",
            "table:lat_ms",
            "--latency-target",
            "5ms",
            "--reward",
            "hard",
            "--budget",
            "25",
            "--set",
            "init=10",
            "--db",
            str(tmp_path / "n.db"),
            "--quiet",
        ]
    )
    assert code == 0
