"""The one search loop (hwnas.searchers.loop) and its executors, without a Ray cluster.

An executor only evaluates what the loop submits and hands results back as
they finish; everything that decides the history (budget, screening, order,
log, stop rules) is the loop's. So an executor that finishes tasks in any
order must give the history of the in-process one in the synchronous mode,
and the asynchronous mode must stay a valid search whatever the order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from search_helpers import OutOfOrder, write_synthetic_nb201

from hwnas.errors import ConfigError, DeviceError
from hwnas.evaluators.table import TableEvaluator, load_table
from hwnas.objectives import Objective, TableLatency
from hwnas.objectives.verify import Verifier
from hwnas.searchers import SearchLog, create_searcher
from hwnas.spaces import get_space
from hwnas.store import Store

#: Per-run figures: wall-clock ones differ between any two runs.
TIMING = ("eval_s", "elapsed_s")


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """Every NB201 cell with a made-up accuracy and latency (deterministic, no shared data)."""
    return write_synthetic_nb201(tmp_path_factory.mktemp("loop") / "nb201_synthetic.csv")


def _objective(table: Path, reward: str = "hard") -> Objective:
    return Objective(
        TableEvaluator(table, "acc"),
        TableLatency(table, "lat"),
        latency_target_ms=12.0,
        reward=reward,
    )


def _rows(history) -> list[dict]:
    return [{k: v for k, v in r.row().items() if k not in TIMING} for r in history.records]


@pytest.mark.parametrize(
    ("algo", "settings", "budget"),
    [
        ("evolution", {"population_size": 8, "sample_size": 3, "batch_size": 4}, 30),
        ("random", {"batch_size": 8}, 20),
        ("mnasnet-rl", {"batch_size": 6}, 12),
    ],
)
def test_an_executor_finishing_out_of_order_gives_the_in_process_history(
    table, algo, settings, budget
):
    space = get_space("nb201")
    local = create_searcher(algo, **settings).run(space, _objective(table), budget, seed=7)
    ex = OutOfOrder()
    other = create_searcher(algo, **settings).run(
        space, _objective(table), budget, seed=7, executor=ex
    )
    assert _rows(other) == _rows(local)
    keys = ("accuracy_evaluations", "screened", "latency_predictions", "converged", "stopped")
    assert {k: other.meta[k] for k in keys} == {k: local.meta[k] for k in keys}
    assert local.meta["screened"] > 0  # the hard target rejected some on cheap terms
    # Only what the objective did not know was submitted, each architecture once; the
    # screened ones and repeats never reached the executor.
    assert len(ex.submitted) == len(set(ex.submitted)) == budget
    evaluated = [r for r in other.records if not r.terms.screened]
    assert {r.arch.id for r in evaluated} == set(ex.submitted)
    assert len(ex.submitted) + ex.hits == len(evaluated)
    assert 1 < ex.most <= 3 and ex.cancelled == 1


def test_the_asynchronous_mode_records_each_result_as_it_arrives_and_resumes(table, tmp_path):
    space = get_space("nb201")
    values = load_table(table)
    settings = {"population_size": 6, "sample_size": 2}  # batch_size=1: one child per step
    log = SearchLog(tmp_path / "a.db")
    try:
        first = create_searcher("evolution", **settings).run(
            space, _objective(table), 10, log=log, executor=OutOfOrder(seed=1), asynchronous=True
        )
        ex = OutOfOrder(seed=2)
        h = create_searcher("evolution", **settings).run(
            space, _objective(table), 20, log=log, executor=ex, asynchronous=True
        )
    finally:
        log.close()
    assert first.meta["algorithm"] == "evolution/async"
    assert first.meta["variant"] == "async" and first.meta["reproducible"] is False
    assert h.meta["run_id"] == first.meta["run_id"]
    assert h.meta["replayed"] == len(first) and _rows(h)[: len(first)] == _rows(first)
    fresh = h.records[len(first) :]
    assert {r.arch.id for r in fresh if not r.terms.screened} == set(ex.submitted)
    assert len({r.arch.id for r in h.records if not r.terms.screened}) == 20 == h.meta["evaluated"]
    assert ex.most == 3  # every worker busy although the searcher proposes one at a time
    assert [r.step for r in h.records] == list(range(len(h)))
    for r in h.records:  # whatever the order, every record carries its own terms
        assert r.terms.latency_ms == values.value(space, r.arch, "lat")
        if not r.terms.screened:
            assert r.terms.accuracy == values.value(space, r.arch, "acc")


def test_the_asynchronous_mode_is_refused_where_it_would_change_the_algorithm(table):
    space = get_space("nb201")
    with pytest.raises(ConfigError, match="whole batches.*evolution"):
        create_searcher("mnasnet-rl").run(space, _objective(table), 4, asynchronous=True)
    obj = _objective(table)
    obj.verifier = Verifier(TableLatency(table, "lat"), "table:lat", 5)
    with pytest.raises(ConfigError, match="--verify needs the synchronous loop"):
        create_searcher("evolution").run(space, obj, 4, asynchronous=True)


def test_a_failed_evaluation_stops_the_search_and_cancels_what_is_running(table):
    class Failing(OutOfOrder):
        def wait(self, tickets):
            raise DeviceError("the device went away")

    ex = Failing()
    with pytest.raises(DeviceError, match="went away"):
        create_searcher("random", batch_size=4).run(
            get_space("nb201"), _objective(table), 8, executor=ex
        )
    assert ex.cancelled == 1 and not ex.queued


# ---- shipping an objective to a worker ------------------------------------------------------


def test_an_objective_ships_without_its_stores_and_the_driver_replays_their_writes(tmp_path):
    pytest.importorskip("ray")
    from hwnas.distributed.search import STORE_WRITES, RecordingStore, ship, unship
    from hwnas.objectives import DeviceLatency, MemoryEstimator

    space = get_space("nb201")
    arch = space.from_index(123)
    with Store(tmp_path / "d.db") as store:
        obj = Objective(
            TableEvaluator.__new__(TableEvaluator),  # never evaluated here
            DeviceLatency("cpu-ort", store=store),
            MemoryEstimator(store),
            reward="accuracy",
        )
        obj.extra = {"nested": [store]}  # wherever a store sits, it stays behind
        blob, stores = ship(obj, space)
        assert stores == [store]  # one slot for the one database
        journal: list = []
        shipped, shipped_space = unship(blob, journal)
        rec = shipped.latency.store
        assert isinstance(rec, RecordingStore)
        assert shipped.memory.store is rec and shipped.extra["nested"][0] is rec
        assert shipped_space.name == space.name
        assert obj.latency.store is store  # the driver's objective is untouched
        rec.add_arch(arch, label="x")
        assert rec.arch(arch.id) == arch  # the worker reads back its own write
        assert [(i, name) for i, name, _, _ in journal] == [(0, "add_arch")]
        for index, name, args, kwargs in journal:
            STORE_WRITES[name](stores[index], *args, **kwargs)
        assert store.arch(arch.id) == arch
