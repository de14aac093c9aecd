"""Local loop vs Ray with K workers: a measurement campaign and an evolution search.

Prints one table: wall time of each workload run locally and on a local Ray
cluster with ``--workers`` workers, the speed-up, and Ray's scheduling
overhead per task (time from submission to the result in the driver's hand,
minus the time the worker spent on it). A second table gives the round trip
of an empty Ray task, the floor under every remote evaluation.

Workloads:

* **campaign**: ``--n`` distinct ``nb201`` architectures (32x32) built,
  exported, counted and measured on ``cpu-ort`` (1 thread, ``--runs`` timed
  runs after ``--warmup``). Local: :func:`hwnas.campaigns.run_campaign`.
  Ray: :class:`hwnas.distributed.RayCampaign` with ``--workers`` stand-in
  devices (ONNX Runtime on this CPU, each holding its own custom resource,
  stored under one name so they share the queue). Each path exports into its
  own empty cache, so neither profits from the other's exports. The
  measured latencies of the Ray run are perturbed by the other worker's
  exports on the same machine; the point is the wall time.
* **search**: regularised evolution, ``--queries`` distinct architectures, population 20,
  tournament 5, ``batch_size = --workers`` children per round (the
  synchronous batched variant, so both paths produce the same history,
  which is checked). Two accuracy terms: the NB201 table (a lookup of
  microseconds: pure Ray overhead) and the NASWOT score of the network at
  initialisation (real work: a forward pass of ``--naswot-batch`` digits
  images, one thread in both paths). Latency from the table's
  ``latency_ms_gold_6226`` column (target: its 25th percentile), or from a
  synthetic table when ../shared/data/nb201 is absent. A last row runs the
  paper's sequential evolution (one child per step) locally against the
  *asynchronous* variant on Ray (:func:`hwnas.distributed.run_search_ray_async`),
  whose history differs and is not reproducible: only the time compares.

Usage::

    .venv/bin/python benchmarks/ray_vs_local.py                  # everything
    .venv/bin/python benchmarks/ray_vs_local.py --only search
    .venv/bin/python benchmarks/ray_vs_local.py --n 40 --cells 1 # a quicker campaign
    .venv/bin/python benchmarks/ray_vs_local.py --exporter torchscript

``--cells N`` (< 5) shrinks the NB201 skeleton to N cells per stage: the
exporter's cost grows with the graph, and on a loaded 2-core machine a full
NB201 network takes seconds to export.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NB201_CSV = REPO.parent / "shared" / "data" / "nb201" / "nb201_benchmark.csv"

sys.path.insert(0, str(REPO))

from hwnas.arch import Arch  # noqa: E402
from hwnas.export import EXPORTERS  # noqa: E402
from hwnas.spaces.nb201 import NB201Network, NB201Space  # noqa: E402


class SmallNB201(NB201Space):
    """NB201 cells in a shorter skeleton (``cells`` per stage instead of 5): same
    architectures and strings, a graph the exporter handles faster."""

    def __init__(self, cells: int = 5, **kw):
        super().__init__(**kw)
        self.cells = cells

    def build(self, arch: Arch) -> NB201Network:
        if self.cells == 5:
            return super().build(arch)
        self.validate(arch)
        return NB201Network(self.op_names(arch), self.num_classes, cells=self.cells)


def _table(tmp: Path) -> tuple[Path, str, str]:
    """(csv, accuracy column, latency column): the shared NB201 table or a synthetic one."""
    if NB201_CSV.exists():
        return NB201_CSV, "cifar10_acc", "latency_ms_gold_6226"
    space = NB201Space()
    path = tmp / "nb201_synthetic.csv"
    lines = ["arch,acc,lat"]
    for a in space.all_archs():
        h = hashlib.sha256(a.id.encode()).digest()
        lines.append(
            f"{space.format(a)},{70 + int.from_bytes(h[:4]) % 2500 / 100:.2f},"
            f"{4 + int.from_bytes(h[4:8]) % 2000 / 100:.2f}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path, "acc", "lat"


# ---- campaign ---------------------------------------------------------------------------


def campaign(args, tmp: Path) -> list[dict]:
    from hwnas.campaigns import run_campaign
    from hwnas.devices import create_device
    from hwnas.distributed import DeviceSpec, RayCampaign
    from hwnas.profilers.latency import MeasureSettings
    from hwnas.store import Store

    space = SmallNB201(cells=args.cells)
    settings = MeasureSettings(warmup=args.warmup, runs=args.runs)
    print(
        f"campaign: {args.n} nb201 archs ({args.cells} cells/stage, {args.exporter} export), "
        "local ...",
        flush=True,
    )
    with Store(tmp / "local.db") as store:
        local = run_campaign(
            space,
            args.n,
            create_device("cpu-ort", threads=1),
            store,
            settings=settings,
            cache_dir=tmp / "cache-local",
            check=args.check,
            exporter=args.exporter,
        )
        local_ids = {r["arch_id"] for r in store.measurements(status=None)}
    print(f"  local: {local.wall_s:.1f} s; Ray with {args.workers} workers ...", flush=True)
    specs = [
        DeviceSpec(
            "cpu-ort",
            kwargs={"threads": 1},
            store_as="cpu-ort",
            resource=f"bench:{i}",
            isolate=False,
        )
        for i in range(args.workers)
    ]
    with Store(tmp / "ray.db") as store:
        rc = RayCampaign(
            space,
            args.n,
            specs,
            store,
            settings=settings,
            cache_dir=tmp / "cache-ray",
            check=args.check,
            exporter=args.exporter,
        )
        try:
            rc.start()
            remote = rc.run()
        finally:
            rc.close()
        ray_ids = {r["arch_id"] for r in store.measurements(status=None)}
    print(f"  ray: {remote.wall_s:.1f} s", flush=True)
    return [
        {
            "workload": f"campaign, {args.n} archs, {args.exporter}",
            "local_s": local.wall_s,
            "ray_s": remote.wall_s,
            "ray_startup_s": remote.startup_s,
            "tasks": len(remote.task_s),
            "overhead_ms": 1e3 * remote.overhead_per_task_s,
            "overhead_median_ms": 1e3 * remote.overhead_median_s,
            "same": "same archs" if local_ids == ray_ids else "DIFFERENT archs",
            "note": f"local {local.measured} ok/{local.failed} failed; ray {remote.measured} ok/"
            f"{remote.failed} failed, {remote.requeued} requeued",
        }
    ]


# ---- search -------------------------------------------------------------------------------


def search(args, tmp: Path) -> list[dict]:
    from hwnas.distributed import run_search_ray
    from hwnas.evaluators.naswot import NaswotEvaluator, NaswotSettings
    from hwnas.evaluators.table import TableEvaluator, load_table
    from hwnas.objectives import Objective, TableLatency
    from hwnas.searchers import create_searcher

    space = NB201Space()
    csv, acc_col, lat_col = _table(tmp)
    target = float(np.percentile(load_table(csv).column(lat_col), 25))
    settings = {"population_size": 20, "sample_size": 5, "batch_size": args.workers}
    rows = []
    # Untimed warm-up: the workers import hwnas/torch once, as the local process already has.
    warm = Objective(
        TableEvaluator(csv, acc_col), TableLatency(csv, lat_col), latency_target_ms=target
    )
    run_search_ray(
        create_searcher("random", batch_size=8), space, warm, 8, seed=99, max_in_flight=8
    )
    for label, make_acc in (
        ("table", lambda: TableEvaluator(csv, acc_col)),
        (
            f"naswot ({args.naswot_batch} imgs)",
            lambda: NaswotEvaluator(NaswotSettings(batch_size=args.naswot_batch, threads=1)),
        ),
    ):

        def objective(make_acc=make_acc):
            return Objective(make_acc(), TableLatency(csv, lat_col), latency_target_ms=target)

        print(f"search: evolution, {args.queries} queries, accuracy {label}, local ...", flush=True)
        t0 = time.perf_counter()
        local = create_searcher("evolution", **settings).run(
            space, objective(), args.queries, seed=0
        )
        local_s = time.perf_counter() - t0
        print(f"  local: {local_s:.1f} s; Ray ...", flush=True)
        t0 = time.perf_counter()
        remote = run_search_ray(
            create_searcher("evolution", **settings),
            space,
            objective(),
            args.queries,
            seed=0,
            max_in_flight=args.workers,
        )
        ray_s = time.perf_counter() - t0
        print(f"  ray: {ray_s:.1f} s", flush=True)

        def trace(h):
            return [(r.arch.id, r.reward) for r in h.records]

        st = remote.meta["ray"]
        rows.append(
            {
                "workload": f"evolution, {args.queries} queries, {label}",
                "local_s": local_s,
                "ray_s": ray_s,
                "ray_startup_s": None,
                "tasks": st["tasks"],
                "overhead_ms": 1e3 * st["overhead_per_task_s"],
                "overhead_median_ms": 1e3 * st["overhead_median_s"],
                "same": "same history" if trace(local) == trace(remote) else "DIFFERENT history",
                "note": f"{st['cache_hits']} repeats answered from the cache",
            }
        )
    # Asynchronous variant: the paper's one child per step locally, vs. K workers told in
    # completion order on Ray. Not the same history (and not reproducible), so only time.
    from hwnas.distributed import run_search_ray_async

    seq = {"population_size": 20, "sample_size": 5, "batch_size": 1}

    def naswot_objective():
        acc = NaswotEvaluator(NaswotSettings(batch_size=args.naswot_batch, threads=1))
        return Objective(acc, TableLatency(csv, lat_col), latency_target_ms=target)

    print(f"search: evolution batch 1, {args.queries} queries, naswot, local ...", flush=True)
    t0 = time.perf_counter()
    local = create_searcher("evolution", **seq).run(space, naswot_objective(), args.queries, seed=0)
    local_s = time.perf_counter() - t0
    print(f"  local: {local_s:.1f} s; Ray async ...", flush=True)
    t0 = time.perf_counter()
    remote = run_search_ray_async(
        create_searcher("evolution", **seq),
        space,
        naswot_objective(),
        args.queries,
        seed=0,
        max_in_flight=args.workers,
    )
    ray_s = time.perf_counter() - t0
    print(f"  ray: {ray_s:.1f} s", flush=True)
    st = remote.meta["ray"]
    best_l, best_r = local.best(), remote.best()
    rows.append(
        {
            "workload": f"evolution bs=1, {args.queries} q, naswot, Ray async",
            "local_s": local_s,
            "ray_s": ray_s,
            "ray_startup_s": None,
            "tasks": st["tasks"],
            "overhead_ms": 1e3 * st["overhead_per_task_s"],
            "overhead_median_ms": 1e3 * st["overhead_median_s"],
            "same": "differs (async)",
            "note": "asynchronous: a different, non-reproducible history; best reward "
            f"local {best_l.reward if best_l else float('nan'):.2f}, "
            f"Ray {best_r.reward if best_r else float('nan'):.2f}",
        }
    )
    return rows


def noop_roundtrip(n: int = 300) -> tuple[float, float]:
    """(ms per empty task awaited one by one, ms per task with all in flight)."""
    import ray

    @ray.remote(num_cpus=1)
    def noop(x):
        return x

    ray.get([noop.remote(i) for i in range(20)])  # warm the worker pool
    t0 = time.perf_counter()
    for i in range(n):
        ray.get(noop.remote(i))
    serial = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    ray.get([noop.remote(i) for i in range(n)])
    batched = (time.perf_counter() - t0) / n
    return 1e3 * serial, 1e3 * batched


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="campaign architectures (default 200)")
    p.add_argument("--queries", type=int, default=200, help="evolution queries (default 200)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers / CPUs (default 2)")
    p.add_argument("--cells", type=int, default=5, help="NB201 cells per stage for the campaign")
    p.add_argument("--runs", type=int, default=10, help="timed runs per model (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up runs per model (default 2)")
    p.add_argument("--naswot-batch", type=int, default=32, help="images per NASWOT score")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="dynamo",
        help="torch -> ONNX exporter of the campaign (torchscript: ~9x faster to export)",
    )
    p.add_argument("--only", choices=("campaign", "search"), default=None)
    args = p.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a loopback benchmark cluster
    from hwnas.distributed import connect

    t0 = time.perf_counter()
    cluster = connect(
        num_cpus=args.workers, resources={f"bench:{i}": 1 for i in range(args.workers)}
    )
    init_s = time.perf_counter() - t0
    rows: list[dict] = []
    load0 = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="hwnas-ray-bench-") as d:
            tmp = Path(d)
            if args.only in (None, "search"):
                rows += search(args, tmp)
            if args.only in (None, "campaign"):
                rows += campaign(args, tmp)
        serial_ms, batched_ms = noop_roundtrip()
    finally:
        cluster.close()
    load1 = os.getloadavg()

    print()
    print(
        f"machine: {platform.node()}, {os.cpu_count()} logical CPUs, python {platform.python_version()}; "
        f"load average at start {load0[0]:.1f}, at end {load1[0]:.1f} (shared machine)"
    )
    print(
        f"Ray local cluster: {args.workers} CPUs, started in {init_s:.1f} s (not in the times below)"
    )
    head = (
        f"| {'workload':44} | {'local s':>8} | {'Ray s':>8} | {'speed-up':>8} | {'tasks':>5} "
        f"| {'overhead/task mean':>18} | {'median':>9} | check |"
    )
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        print(
            f"| {r['workload']:44} | {r['local_s']:8.1f} | {r['ray_s']:8.1f} | "
            f"{r['local_s'] / r['ray_s']:7.2f}x | {r['tasks']:5d} | {r['overhead_ms']:15.1f} ms "
            f"| {r['overhead_median_ms']:6.1f} ms | {r['same']} |"
        )
    for r in rows:
        extra = (
            f"; actor start-up {r['ray_startup_s']:.1f} s included" if r["ray_startup_s"] else ""
        )
        print(f"  {r['workload']}: {r['note']}{extra}")
    print(
        f"empty Ray task round trip: {serial_ms:.2f} ms awaited one by one, "
        f"{batched_ms:.2f} ms each with {300} in flight"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
