"""Ray: campaigns over several devices and fanned-out search evaluations, on a real local cluster.

One cluster serves the whole session (starting Ray costs seconds). It has 2
CPUs, no dashboard, no token auth and no usage reporting, and the custom
resources of two stand-in devices (``bench:a``, ``bench:b``: ONNX Runtime on
this CPU, stored as ``bench-a``/``bench-b``) and of ``device:cpu-ort``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from campaign_helpers import TinySpace
from search_helpers import write_synthetic_nb201

from hwnas.arch import Arch
from hwnas.distributed import DeviceSpec, RayCampaign, as_specs, device_resource
from hwnas.errors import ConfigError, MissingExtraError
from hwnas.profilers.latency import MeasureSettings
from hwnas.store import Store

FAST = MeasureSettings(warmup=1, runs=5)
BENCH = [
    DeviceSpec("cpu-ort", store_as="bench-a", resource="bench:a", isolate=False),
    DeviceSpec("cpu-ort", store_as="bench-b", resource="bench:b", isolate=False),
]


class SlowTinySpace(TinySpace):
    """TinySpace whose build takes a while, so a worker can be killed mid-architecture.

    Same name and networks as TinySpace: the same architectures, the same
    exported files (the export cache is warm from the local run).
    """

    def build(self, arch: Arch):
        import time

        time.sleep(1.2)
        return super().build(arch)


def _pairs(db: Path) -> Counter:
    con = sqlite3.connect(db)
    try:
        return Counter(con.execute("SELECT arch_id, device, status FROM measurements").fetchall())
    finally:
        con.close()


# ---- without a cluster -------------------------------------------------------------------


def test_device_resources_name_the_physical_device():
    assert device_resource("adb:R5CT1") == "adb:R5CT1"
    assert device_resource("ssh:pi@board1:2222") == "ssh:board1"
    assert device_resource("ssh:board1") == "ssh:board1"
    assert device_resource("cpu-ort") == "device:cpu-ort"
    with pytest.raises(ConfigError, match="no host"):
        device_resource("ssh:pi@")
    # Two actors on one device are refused before anything starts.
    with pytest.raises(ConfigError, match="share one device"):
        as_specs(["adb:R5CT1", "adb:R5CT1=other-name"])
    s = DeviceSpec.parse("cpu-ort=bench-a", kwargs={"threads": 2})
    assert (s.store_name, s.ray_resource, s.cpus) == ("bench-a", "device:cpu-ort", 2.0)
    assert DeviceSpec("cpu-ort", kwargs={"threads": 2}).store_name == "cpu-ort-2t"
    assert DeviceSpec("adb:R5CT1").cpus == 0.0  # a phone times on its own CPU


def test_missing_ray_names_the_extra(monkeypatch, tmp_path):
    from hwnas.distributed import connect, run_campaign_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingExtraError, match=r"hwnas\[ray\]"):
        connect()
    with Store(tmp_path / "x.db") as store, pytest.raises(MissingExtraError, match="--ray"):
        run_campaign_ray(TinySpace(), 2, ["cpu-ort"], store)


# ---- campaigns ---------------------------------------------------------------------------


@pytest.mark.ray
def test_campaign_on_two_devices_survives_a_killed_worker_and_resumes(ray_cluster, tmp_path):
    """Ray measures what the local path measures; a killed actor loses nothing; a
    restarted driver (a new RayCampaign on the same store) only does what is missing."""
    from hwnas.campaigns import run_campaign
    from hwnas.devices import create_device

    # The local path, per device name (this also warms the export cache for the workers).
    local_db = tmp_path / "local.db"
    with Store(local_db) as store:
        dev = create_device("cpu-ort")
        for name in ("bench-a", "bench-b"):
            s = run_campaign(TinySpace(), 4, dev, store, seed=1, settings=FAST, device_name=name)
            assert s.measured == 4
    local = _pairs(local_db)

    ray_db = tmp_path / "ray.db"
    seen: list[str] = []
    killed: dict[str, object] = {}
    with Store(ray_db) as store:
        rc = RayCampaign(SlowTinySpace(), 4, BENCH, store, seed=1, settings=FAST)

        def kill_then_stop(_n: int, status: str) -> None:
            seen.append(status)
            if len(seen) == 1:
                # Kill the actor that just answered, while it builds its next architecture.
                w = next(x for x in rc.workers if status.startswith(x.store_name + ":"))
                killed.update(pid=w.pid, store=w.store_name)
                threading.Timer(0.5, os.kill, (w.pid, signal.SIGKILL)).start()
            if len(seen) == 7:
                raise KeyboardInterrupt  # the driver "dies" one architecture before the end

        try:
            rc.start()
            s1 = rc.run(progress=kill_then_stop)
        finally:
            rc.close()
        assert s1.interrupted and s1.processed == 7 and s1.failed == 0
        assert s1.requeued >= 1
        victim = next(w for w in s1.workers if w["store_as"] == killed["store"])
        assert victim["lost"] >= 1 and not victim["dead"]
        assert victim["pid"] != killed["pid"] and victim["processed"] >= 2  # restarted, went on
        assert set(_pairs(ray_db).values()) == {1}  # nothing recorded twice

        # The driver is restarted: the same campaign measures only what is missing.
        rc = RayCampaign(TinySpace(), 4, BENCH, store, seed=1, settings=FAST)
        try:
            rc.start()
            s2 = rc.run()
        finally:
            rc.close()
        assert (s2.skipped, s2.measured, s2.failed) == (7, 1, 0)
        assert s2.overhead_per_task_s >= 0 and len(s2.task_s) == 1
    assert _pairs(ray_db) == local  # the same (arch, device, status) rows, each exactly once


def _ids(n: int) -> set[str]:
    from hwnas.campaigns import sample_distinct

    return {a.id for a in sample_distinct(TinySpace(), n, seed=1)}


@pytest.mark.ray
def test_a_device_on_no_node_is_a_clear_error(ray_cluster, tmp_path):
    with Store(tmp_path / "x.db") as store:
        rc = RayCampaign(TinySpace(), 2, ["adb:NOT-ATTACHED"], store)
        with pytest.raises(ConfigError, match=r"adb:NOT-ATTACHED.*ray start"):
            rc.start()
        rc.close()


# ---- searches ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_nb201(tmp_path_factory) -> Path:
    """Every NB201 cell with a made-up accuracy and latency (deterministic, no shared data)."""
    return write_synthetic_nb201(tmp_path_factory.mktemp("table") / "nb201_synthetic.csv")


def _objective(table: Path):
    from hwnas.evaluators.table import TableEvaluator
    from hwnas.objectives import Objective, TableLatency

    return Objective(
        TableEvaluator(table, "acc"),
        TableLatency(table, "lat"),
        latency_target_ms=12.0,
        reward="soft",
    )


def _trace(history) -> list[tuple]:
    return [
        (r.step, r.arch.id, r.origin, r.repeat, r.terms.accuracy, r.terms.latency_ms, r.reward)
        for r in history.records
    ]


@pytest.mark.ray
@pytest.mark.parametrize(
    ("algo", "settings", "budget"),
    [
        ("evolution", {"population_size": 8, "sample_size": 3, "batch_size": 4}, 40),
        ("random", {"batch_size": 8}, 24),
        ("mnasnet-rl", {"batch_size": 6}, 18),
    ],
)
def test_search_on_ray_has_the_local_history(ray_cluster, synthetic_nb201, algo, settings, budget):
    from hwnas.distributed import run_search_ray
    from hwnas.searchers import create_searcher
    from hwnas.spaces import get_space

    space = get_space("nb201")
    local = create_searcher(algo, **settings).run(
        space, _objective(synthetic_nb201), budget, seed=7
    )
    remote = run_search_ray(
        create_searcher(algo, **settings),
        space,
        _objective(synthetic_nb201),
        budget,
        seed=7,
        max_in_flight=3,
    )
    assert len({r.arch.id for r in remote.records}) == budget
    assert _trace(remote) == _trace(local)
    stats = remote.meta["ray"]
    assert 1 <= stats["max_in_flight"] <= 3
    assert stats["tasks"] == budget  # each distinct architecture evaluated once, remotely
    assert stats["tasks"] + stats["cache_hits"] == len(remote)  # repeats: the driver's cache


@pytest.mark.ray
def test_search_on_ray_records_every_term_the_local_loop_records(ray_cluster, synthetic_nb201):
    """The same records, field by field (timings aside), and the same accounting, with
    candidates rejected on cheap terms in the driver and repeats served from its cache."""
    from hwnas.distributed import run_search_ray
    from hwnas.searchers import create_searcher
    from hwnas.spaces import get_space

    def obj():
        from hwnas.evaluators.table import TableEvaluator
        from hwnas.objectives import Objective, TableLatency

        return Objective(
            TableEvaluator(synthetic_nb201, "acc"),
            TableLatency(synthetic_nb201, "lat"),
            latency_target_ms=12.0,
            reward="hard",  # screens on cheap terms before any task
        )

    space = get_space("nb201")
    local = create_searcher("random", batch_size=6).run(space, obj(), 12, seed=2)
    remote = run_search_ray(
        create_searcher("random", batch_size=6), space, obj(), 12, seed=2, max_in_flight=2
    )

    def rows(h):
        return [
            {k: v for k, v in r.row().items() if k not in ("eval_s", "elapsed_s")}
            for r in h.records
        ]

    assert rows(remote) == rows(local)
    keys = ("run_id", "accuracy_evaluations", "screened", "latency_predictions", "converged")
    assert {k: remote.meta[k] for k in keys} == {k: local.meta[k] for k in keys}
    assert local.meta["screened"] > 0
    assert remote.meta["ray"]["tasks"] == remote.meta["accuracy_evaluations"] == 12


@pytest.mark.ray
def test_search_on_ray_resumes_from_its_log(ray_cluster, synthetic_nb201, tmp_path):
    """A search stopped half-way resumes on Ray exactly as the local loop resumes it, and
    ends with the history of an uninterrupted run."""
    from hwnas.distributed import run_search_ray
    from hwnas.searchers import SearchLog, create_searcher
    from hwnas.spaces import get_space

    space = get_space("nb201")
    settings = {"population_size": 6, "sample_size": 2, "batch_size": 3}

    def resumed(on_ray: bool, db: Path):
        log = SearchLog(db)
        try:
            out = []
            for budget in (15, 30):
                searcher = create_searcher("evolution", **settings)
                obj = _objective(synthetic_nb201)
                if on_ray:
                    out.append(run_search_ray(searcher, space, obj, budget, seed=3, log=log))
                else:
                    out.append(searcher.run(space, obj, budget, seed=3, log=log))
            return out
        finally:
            log.close()

    full = create_searcher("evolution", **settings).run(
        space, _objective(synthetic_nb201), 30, seed=3
    )
    local_first, local_resumed = resumed(False, tmp_path / "local.db")
    ray_first, ray_resumed = resumed(True, tmp_path / "ray.db")
    assert _trace(ray_first) == _trace(local_first)
    n_first = len(ray_first)
    assert ray_resumed.meta["replayed"] == local_resumed.meta["replayed"] == n_first
    assert _trace(ray_resumed) == _trace(local_resumed) == _trace(full)
    stats = ray_resumed.meta["ray"]
    # the logged steps were replayed, not sent out again
    assert stats["tasks"] + stats["cache_hits"] == len(ray_resumed) - n_first


@pytest.mark.ray
def test_measured_latency_on_ray_is_stored_once_by_the_driver(ray_cluster, tmp_path):
    """Workers measure; the driver writes the store; a second search measures nothing."""
    from hwnas.distributed import run_search_ray
    from hwnas.evaluators.table import TableEvaluator
    from hwnas.objectives import DeviceLatency, Objective
    from hwnas.searchers import create_searcher

    space = TinySpace()
    table = tmp_path / "tiny.csv"
    rows = [
        f"{space.format(space.arch([w, k]))},{50 + 10 * w + k}" for w in range(3) for k in range(2)
    ]
    table.write_text("arch,acc\n" + "\n".join(rows) + "\n")
    db = tmp_path / "search.db"
    from hwnas.campaigns import prepare_arch

    for w in range(3):  # warm the export cache here, where the exporter is already loaded
        for k in range(2):
            assert prepare_arch(space, space.arch([w, k]), with_metrics=False).artifact is not None

    def run(store: Store):
        obj = Objective(
            TableEvaluator(table, "acc"),
            DeviceLatency("cpu-ort", store=store, settings=FAST),
            latency_target_ms=1.0,
        )
        return run_search_ray(
            create_searcher("random", batch_size=6), space, obj, 6, seed=0, max_in_flight=2
        )

    with Store(db) as store:
        h1 = run(store)
        rows1 = store.measurements(device="cpu-ort", status=None)
        assert len(rows1) == 6 and Counter(r["arch_id"] for r in rows1).most_common(1)[0][1] == 1
        assert all(r["median_ms"] > 0 for r in rows1)
        assert {r.arch.id for r in h1.records} == {r["arch_id"] for r in rows1}
        h2 = run(store)
        assert len(store.measurements(device="cpu-ort", status=None)) == 6  # nothing re-measured
    assert all("(cached)" in r.terms.sources["latency"] for r in h2.records)
    assert [r.terms.latency_ms for r in h2.records] == [r.terms.latency_ms for r in h1.records]


@pytest.mark.ray
def test_asynchronous_evolution_keeps_workers_busy_and_says_it_is_not_reproducible(
    ray_cluster, synthetic_nb201, tmp_path
):
    from hwnas.distributed import run_search_ray_async
    from hwnas.evaluators.table import load_table
    from hwnas.searchers import SearchLog, create_searcher
    from hwnas.spaces import get_space

    space = get_space("nb201")
    table = load_table(synthetic_nb201)
    settings = {"population_size": 6, "sample_size": 2}  # batch_size=1: one child per step
    log = SearchLog(tmp_path / "a.db")
    try:
        first, h = [
            run_search_ray_async(
                create_searcher("evolution", **settings),
                space,
                _objective(synthetic_nb201),
                budget,
                log=log,
            )
            for budget in (10, 20)
        ]
    finally:
        log.close()
    assert first.meta["variant"] == "async" and first.meta["reproducible"] is False
    assert first.meta["ray"]["max_in_flight"] == 2  # both CPUs busy although batch_size is 1
    assert h.meta["replayed"] == len(first) and _trace(h)[: len(first)] == _trace(first)
    assert len({r.arch.id for r in h.records}) == 20 == h.meta["evaluated"]
    assert [r.step for r in h.records] == list(range(len(h)))
    for r in h.records:  # whatever the order, every record carries its own terms
        assert r.terms.accuracy == table.value(space, r.arch, "acc")
        assert r.terms.latency_ms == table.value(space, r.arch, "lat")
    # while the population fills, up to (in flight - 1) extra random samples may start
    assert sum(r.origin == "mutation" for r in h.records) >= 20 - 6 - 2
    with pytest.raises(ConfigError, match="whole batches"):
        run_search_ray_async(create_searcher("mnasnet-rl"), space, _objective(synthetic_nb201), 4)


@pytest.mark.ray
def test_sample_command_with_ray(ray_cluster, tmp_path, capsys):
    """``hwnas sample ... --ray``: the same rows as without it; two actors on one device refused."""
    import json

    from hwnas.cli import main

    argv = ["sample", "tiny-campaign", "-n", "3", "--seed", "1", "--runs", "5", "--warmup", "1"]
    argv += ["--no-isolate", "--json"]
    assert main([*argv, "--db", str(tmp_path / "local.db")]) == 0
    capsys.readouterr()
    assert main([*argv, "--db", str(tmp_path / "ray.db"), "--ray"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["measured"] == 3 and out["workers"][0]["resource"] == "device:cpu-ort"
    assert _pairs(tmp_path / "ray.db") == _pairs(tmp_path / "local.db")
    bad = [*argv, "--db", str(tmp_path / "x.db"), "--ray", "--device", "cpu-ort,cpu-ort=twin"]
    assert main(bad) == 2
    assert "share one device" in capsys.readouterr().err


@pytest.mark.ray
def test_search_command_with_ray(ray_cluster, synthetic_nb201, tmp_path, capsys):
    """``hwnas search ... --ray``: the history of the same command without it."""
    import csv

    from hwnas.cli import main

    argv = ["search", "evolution", "--space", "nb201", "--accuracy", f"table:{synthetic_nb201}:acc"]
    argv += ["--latency", "table:lat", "--latency-target", "12ms", "--budget", "24", "--seed", "5"]
    argv += ["--set", "population_size=8", "--set", "batch_size=4", "--quiet", "--json"]
    rows = {}
    for tag, extra in (("local", []), ("ray", ["--ray"])):
        out = tmp_path / tag
        assert main([*argv, "--db", str(tmp_path / f"{tag}.db"), "--out", str(out), *extra]) == 0
        with open(out / "history.csv", newline="") as f:
            rows[tag] = [(r["arch_id"], r["reward"], r["repeat"]) for r in csv.DictReader(f)]
    capsys.readouterr()
    assert len(rows["ray"]) >= 24 and rows["ray"] == rows["local"]


@pytest.mark.ray
def test_search_on_ray_screens_and_verifies_in_the_driver(ray_cluster, synthetic_nb201, tmp_path):
    """Cheap-first and --verify on Ray: the same history, answer and verifications as the
    local loop; no task is spent on a candidate rejected on cheap terms; a resumed run
    replays its verifications without measuring again."""
    from hwnas.distributed import run_search_ray
    from hwnas.evaluators.table import TableEvaluator
    from hwnas.objectives import Objective, TableLatency
    from hwnas.objectives.verify import Verifier
    from hwnas.searchers import SearchLog, create_searcher
    from hwnas.spaces import get_space

    space = get_space("nb201")
    settings = {"population_size": 6, "sample_size": 3, "batch_size": 3}

    def obj(store=None):
        o = Objective(
            TableEvaluator(synthetic_nb201, "acc"),
            TableLatency(synthetic_nb201, "lat"),
            latency_target_ms=12.0,
            reward="hard",
        )
        o.verifier = Verifier(TableLatency(synthetic_nb201, "lat"), "table:lat", 10, store)
        return o

    local = create_searcher("evolution", **settings).run(space, obj(), 20, seed=5)
    db = tmp_path / "v.db"
    remote = run_search_ray(
        create_searcher("evolution", **settings),
        space,
        obj(Store(db)),
        20,
        seed=5,
        log=SearchLog(db),
        max_in_flight=3,
    )
    assert _trace(remote) == _trace(local)
    assert remote.meta["ray"]["tasks"] == remote.meta["accuracy_evaluations"] == 20
    assert remote.meta["screened"] > 0
    assert remote.meta["verification"] == local.meta["verification"]
    assert remote.answer().arch.id == local.answer().arch.id
    again = create_searcher("evolution", **settings).run(
        space, obj(Store(db)), 20, seed=5, log=SearchLog(db)
    )
    assert again.meta["replayed"] == len(remote) and _trace(again) == _trace(remote)
    assert again.meta["verification"] == remote.meta["verification"]
    assert (
        len(SearchLog(db).verifications(remote.meta["run_id"]))
        == (remote.meta["verification"]["verified"])
    )
