"""Campaign overhead: how much of a campaign's wall time is not spent timing models.

Runs ``run_campaign`` on ``mnasnet`` architectures on ``cpu-ort`` (1 thread,
measured in an isolated worker) once per mode, each with a fresh export
cache so every export is really paid for:

* ``seq``  - export in the campaign process between measurements (``--export-workers 0``);
* ``pool`` - one export worker pinned to the core(s) the measurement does not use,
  exporting the next architecture while the current one is timed (``--export-mode pinned``);
* ``phase`` - a pool on every core exports a batch, then the batch is timed with the
  pool idle (``--export-mode phase``, the default on machines with < 2 spare cores);
  exports are checked against torch on a sample (``--verify-export sample``, the default).

Prints, per mode: wall time, architectures per minute, the share of wall time
outside the timed runs (target <= 25%) and where that time went. Both modes
sample the same architectures (same seed), so the table also shows how much a
concurrent export moved the measured medians (pool/seq ratio per architecture),
which is the cost of hiding the export.

Usage::

    .venv/bin/python benchmarks/campaign_overhead.py --n 100 --input-size 128 --modes pool,seq [--exporter torchscript]
    .venv/bin/python benchmarks/campaign_overhead.py --n 300 --input-size 128 --modes phase,seq --exporter torchscript

The adaptive timing stops at ``--rel-ci`` (default: ``hwnas sample``'s 0.02); the
RESULTS table before the new stop rule used 0.01 and the old rule.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hwnas.campaigns import run_campaign
from hwnas.commands.campaign import CAMPAIGN_REL_CI
from hwnas.devices.hostinfo import cpu_model
from hwnas.devices.isolated import IsolatedDevice
from hwnas.export import EXPORTERS
from hwnas.profilers.latency import MeasureSettings
from hwnas.spaces import get_space
from hwnas.store import Store


def run_mode(mode: str, args, workdir: Path) -> tuple[object, dict[str, float]]:
    space = get_space("mnasnet", input_size=args.input_size)
    n = args.n if mode != "seq" or args.seq_n is None else args.seq_n
    tag = "" if args.exporter == "dynamo" else f"_{args.exporter}"
    db = workdir / f"overhead_{mode}{tag}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    settings = MeasureSettings(
        rel_ci=args.rel_ci,
        **{k: v for k, v in {"budget_s": args.budget, "runs": args.runs}.items() if v is not None},
    )
    done = [0]
    t0 = time.perf_counter()

    def tick(k: int, status: str) -> None:
        done[0] += k
        if done[0] % 10 == 0 or done[0] == n:
            rate = done[0] / (time.perf_counter() - t0) * 60
            print(
                f"  [{mode}] {done[0]}/{n} ({rate:.2f}/min) {status}", file=sys.stderr, flush=True
            )

    with tempfile.TemporaryDirectory(dir=workdir, prefix=f"cache_{mode}_") as cache:
        load0 = os.getloadavg()[0]
        with Store(db) as store, IsolatedDevice("cpu-ort", threads=1) as device:
            summary = run_campaign(
                space,
                n,
                device,
                store,
                seed=args.seed,
                settings=settings,
                export_workers={"pool": 1, "phase": len(os.sched_getaffinity(0))}.get(mode, 0),
                export_mode={"pool": "pinned", "phase": "phase"}.get(mode, "inline"),
                verify_export="sample" if mode == "phase" else "all",
                cache_dir=cache,
                discard_artifacts=True,
                progress=tick,
                exporter=args.exporter,
            )
            medians = {r["arch_id"]: r["median_ms"] for r in store.measurements(device="cpu-ort")}
        summary.notes.append(f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    return summary, medians


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100, help="architectures per mode (default 100)")
    ap.add_argument(
        "--seq-n", type=int, default=None, help="architectures of the seq mode (default --n)"
    )
    ap.add_argument("--input-size", type=int, default=128, help="mnasnet input size (default 128)")
    ap.add_argument(
        "--modes", default="pool,seq", help="comma-separated: pool, phase, seq (default pool,seq)"
    )
    ap.add_argument(
        "--budget", type=float, default=None, help="seconds of timed runs per arch (default 10)"
    )
    ap.add_argument(
        "--runs", type=int, default=None, help="fixed timed runs per arch (default adaptive)"
    )
    ap.add_argument(
        "--rel-ci",
        type=float,
        default=CAMPAIGN_REL_CI,
        help=f"median precision of the adaptive timing, as `hwnas sample --rel-ci` "
        f"(default {CAMPAIGN_REL_CI})",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="dynamo",
        help="ONNX exporter of every mode (default dynamo, torch's default)",
    )
    ap.add_argument(
        "--workdir",
        default="/tmp/hwnas_bench",
        help="dbs and export caches (default /tmp/hwnas_bench)",
    )
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    import torch

    print(
        f"# campaign overhead: mnasnet @ {args.input_size}px on cpu-ort (1 thread, isolated worker), "
        f"{args.exporter} exporter\n"
        f"# {cpu_model()}, {os.cpu_count()} logical cores (usable {sorted(os.sched_getaffinity(0))}), "
        f"python {platform.python_version()}, torch {torch.__version__}\n"
        f"# timing: {'runs=' + str(args.runs) if args.runs else f'adaptive to +-{args.rel_ci:.1%}'}, budget "
        f"{args.budget or MeasureSettings().budget_s:g} s/arch; load average now "
        f"{os.getloadavg()[0]:.1f} (the machine is shared)"
    )
    results = {}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        if mode not in ("pool", "phase", "seq"):
            ap.error(f"unknown mode {mode!r}; use pool, phase or seq")
        results[mode] = run_mode(mode, args, workdir)

    head = (
        f"{'mode':5} {'archs':>5} {'failed':>6} {'wall s':>8} {'archs/min':>9} {'timed':>6} "
        f"{'outside':>7} {'exp.wait':>8} {'init+warm':>9} {'worker':>7} {'store':>6} {'sample':>6} "
        f"{'export s/arch':>13}"
    )
    print(head)
    print("-" * len(head))
    for mode, (s, _) in results.items():
        t, w = s.timings, s.wall_s
        other = t["measure"] - t["timed_runs"] - t["warmup"] - t["session_init"]
        print(
            f"{mode:5} {s.processed:5d} {s.failed:6d} {w:8.0f} {s.archs_per_minute:9.2f} "
            f"{t['timed_runs'] / w:6.1%} {s.overhead_share:7.1%} {t['export_wait'] / w:8.1%} "
            f"{(t['session_init'] + t['warmup']) / w:9.1%} {other / w:7.1%} {t['store'] / w:6.1%} "
            f"{t['sample'] / w:6.1%} {(t['build'] + t['export'] + t['count']) / max(1, s.processed):13.1f}"
        )
    for mode, (s, _) in results.items():
        for note in s.notes:
            print(f"# {mode}: {note}")
    if "pool" in results and "seq" in results:
        a, b = results["pool"][1], results["seq"][1]
        common = sorted(set(a) & set(b))
        if common:
            r = np.array([a[k] / b[k] for k in common])
            q1, med, q3 = np.percentile(r, [25, 50, 75])
            print(
                f"# concurrent export vs none, same {len(common)} archs: median latency ratio pool/seq "
                f"{med:.3f} (IQR {q1:.3f}-{q3:.3f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
