"""`hwnas sample`, `hwnas import-table`, `hwnas export`: build and read a measurement database."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from hwnas.commands._common import (
    add_measure_options,
    console,
    count,
    err_console,
    fmt,
    human,
    in_file,
    input_size,
    nonneg_int,
    num_classes,
    open_store,
    out_file,
    print_json,
    probability,
    progress,
    seconds,
    seed,
    settings_from_args,
    table,
)
from hwnas.commands._trust import (
    QualityView,
    add_canary_options,
    add_interference_options,
    add_quality_read_options,
    canary_from_args,
    check_quality_read,
    export_rows,
    guard_device,
    repeat_n,
)
from hwnas.errors import ConfigError
from hwnas.export import EXPORTERS

#: The median precision a campaign times each architecture to (``--rel-ci``): the
#: predictor and the noise ceiling judge agreement at +-5% / +-10%, and a 95% CI of
#: +-2% per median keeps two measurements of one network within +-5% unless the
#: machine itself changed, which the interference guard and the canary catch.
CAMPAIGN_REL_CI = 0.02


def _space(args):
    from hwnas.spaces import get_space

    return get_space(args.space, input_size=args.input_size, num_classes=args.num_classes)


# ---- sample ------------------------------------------------------------------------


def run_sample(args) -> int:
    from hwnas.campaigns import run_campaign, store_device_name
    from hwnas.devices import DEVICES, create_device
    from hwnas.devices.isolated import IsolatedDevice

    space = _space(args)
    if args.n < 1:
        raise ConfigError(f"-n must be >= 1, got {args.n}")
    settings = dataclasses.replace(settings_from_args(args), rel_ci=args.rel_ci)
    if getattr(args, "ray", None) is not None:  # --ray: every --device at once, on Ray
        from hwnas.commands._ray import sample_on_ray

        return sample_on_ray(args, space, settings, _print_summary)
    DEVICES.factory(args.device)  # an unknown device fails before anything is exported
    threads = args.threads or 1
    device_kwargs = {"threads": args.threads}
    device = (
        IsolatedDevice(args.device, **device_kwargs)
        if args.isolate
        else create_device(args.device, **device_kwargs)
    )
    name = args.device_name or store_device_name(args.device, threads)
    canary = canary_from_args(args)
    log = err_console.print if not args.json else (lambda _m: None)
    device = guard_device(args, device, args.device, threads, log)
    with open_store(args.db) as store:
        try:
            with progress(args.n, f"{space.name} on {name}", enabled=not args.json) as bar:
                summary = run_campaign(
                    space,
                    args.n,
                    device,
                    store,
                    seed=args.seed,
                    settings=settings,
                    device_name=name,
                    campaign=args.campaign,
                    export_workers=args.export_workers,
                    retry_failed=args.retry_failed,
                    retry_after_s=args.retry_after,
                    discard_artifacts=args.discard_artifacts,
                    check=args.check,
                    exporter=args.exporter,
                    export_mode=args.export_mode,
                    verify_export=args.verify_export if args.check else "none",
                    canary=canary,
                    repeat_n=repeat_n(args),
                    log=log,
                    progress=lambda n, status: bar.advance(n, status=status),
                    on_plan=lambda todo, skipped: bar.update(
                        total=todo,
                        description=f"{space.name} on {name}"
                        + (f" ({skipped} already stored)" if skipped else ""),
                    ),
                )
        finally:
            device.close()
    if args.json:
        print_json(summary.to_dict())
    else:
        _print_summary(summary, args.db)
    if summary.interrupted:
        err_console.print(
            "interrupted: everything measured so far is stored; run the same command again to continue"
        )
        return 130
    return 0 if summary.failed == 0 else 1


def _print_summary(s, db: str) -> None:
    t = s.timings
    rows = [
        ("requested", s.requested),
        ("measured now", s.measured),
        ("failed now", s.failed),
        ("skipped (already stored)", s.skipped),
        ("left (interrupted)", s.remaining if s.interrupted else 0),
    ]
    counts = table(f"hwnas sample {s.space} on {s.device}", ["", "archs"], rows)
    counts.caption = f"campaign {s.campaign}, input {'x'.join(map(str, s.input_shape))}, db {db}"
    console.print(counts)
    if s.processed:
        wall = s.wall_s or 1.0
        stages = [
            ("sampling + resume check", t["sample"]),
            (
                "waiting for export" if s.export_workers else "build + export + count",
                t["export_wait"],
            ),
            ("measure: session set-up", t["session_init"]),
            ("measure: warm-up runs", t["warmup"]),
            ("measure: timed runs", t["timed_runs"]),
            (
                "measure: other (worker, feeds)",
                t["measure"] - t["timed_runs"] - t["warmup"] - t["session_init"],
            ),
            ("storing", t["store"]),
        ]
        tt = table(
            "where the time went",
            ["stage", "seconds", "share"],
            [(k, v, f"{v / wall:.1%}") for k, v in stages],
        )
        tt.caption = (
            f"wall {s.wall_s:.1f} s, {s.archs_per_minute:.2f} archs/min, "
            f"{s.overhead_share:.1%} of the wall time outside timed runs"
            + (
                f"; exporters ({s.export_workers}) spent build {t['build']:.0f} s, "
                f"export {t['export']:.0f} s, count {t['count']:.0f} s"
                if s.export_workers
                else ""
            )
        )
        console.print(tt)
        ok = [r for r in s.results if r["status"] == "ok"]
        if ok:
            med = sorted(r["median_ms"] for r in ok)
            fl = sorted(r["flops"] for r in ok if r.get("flops") is not None)
            console.print(
                f"latency median over archs {fmt(med[len(med) // 2])} ms "
                f"(range {fmt(med[0])}-{fmt(med[-1])}); FLOPs "
                + (f"{human(fl[0])}-{human(fl[-1])}" if fl else "not counted")
            )
    if s.failures:
        ft = table(
            "failures",
            ["arch", "kind", "reason"],
            [(a, k, r.splitlines()[0][:110]) for a, k, r in s.failures[:20]],
        )
        if len(s.failures) > 20:
            ft.caption = f"... and {len(s.failures) - 20} more (hwnas export --status failed)"
        console.print(ft)
    if s.repeatability:
        r = s.repeatability
        console.print(
            f"noise ceiling: {r['n']} archs re-measured in a new order agree +-5% {r['within5']:.1%}, "
            f"+-10% {r['within10']:.1%}, Spearman {r['spearman']:.3f}"
        )
    for note in s.notes:
        err_console.print(f"[yellow]note:[/] {note}")


# ---- import-table -----------------------------------------------------------------


def run_import(args) -> int:
    from hwnas.campaigns.tables import import_table

    space = _space(args)
    names = args.device_name or [c.removeprefix("latency_ms_") for c in args.latency_column]
    with open_store(args.db) as store:
        s = import_table(
            store,
            args.csv,
            space,
            arch_column=args.arch_column,
            latency_columns=args.latency_column,
            device_names=names,
            unit=args.unit,
            campaign=args.campaign,
            skip_bad_rows=args.skip_bad_rows,
        )
    if not any(s.added[d] or s.already[d] for d in names):
        raise ConfigError(
            f"{args.csv}: no usable latency in column(s) {', '.join(args.latency_column)} "
            f"({s.rows} rows read, {len(s.bad_rows)} unparsable); check --latency-column, "
            "--arch-column and --space"
        )
    rows = [
        (dev, col, s.added[dev], s.already[dev], s.missing.get(dev, 0))
        for dev, col in zip(names, args.latency_column, strict=True)
    ]
    t = table(
        f"imported {Path(args.csv).name} ({s.rows} rows, space {s.space})",
        ["device", "column", "added", "already stored", "no latency"],
        rows,
    )
    t.caption = f"source=imported, db {args.db}" + (
        f"; {len(s.bad_rows)} rows skipped (unparsable)" if s.bad_rows else ""
    )
    console.print(t)
    return 0


# ---- export -------------------------------------------------------------------------


def run_export(args) -> int:
    from hwnas.store import Store

    db = Path(args.db)
    if not db.exists():
        raise ConfigError(f"no database at {db}; give the --db file a campaign wrote")
    out = Path(args.out)
    fmt_ = args.format or ("json" if out.suffix.lower() == ".json" else "csv")
    status = None if args.status == "all" else args.status
    filters = {
        "device": args.device,
        "space": args.space,
        "campaign": args.campaign,
        "status": status,
    }
    check_quality_read(args)
    with Store(db, readonly=True) as store:
        view = QualityView(store, args.flagged, args.normalize)
        n = export_rows(view, out, fmt_, filters)
    console.print(f"wrote {n} measurements to {out} ({fmt_}); {view.note}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="measure N distinct architectures of a search space (resumable)",
        description=(
            "Sample N distinct architectures (the same ones for the same --seed), build, export, "
            "count and measure each, committing every result as it arrives. Re-running the same "
            "command continues where it stopped and never measures an architecture twice."
        ),
    )
    p.add_argument("space", help="search space (mnasnet, nb201, mobilenetv2-channels, ...)")
    p.add_argument("-n", type=count, required=True, help="number of distinct architectures")
    add_measure_options(p)
    p.add_argument("--db", default="hwnas.db", help="SQLite file (default hwnas.db)")
    p.add_argument("--seed", type=seed, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--input-size",
        type=input_size,
        default=None,
        help="input resolution (default: the space's)",
    )
    p.add_argument(
        "--num-classes",
        type=num_classes,
        default=None,
        help="classifier outputs (default: the space's)",
    )
    p.add_argument(
        "--export-workers",
        type=nonneg_int,
        default=None,
        help="export processes (default: every core in phase mode, the spare cores in pinned "
        "mode; 0 = export in this process between measurements)",
    )
    p.add_argument(
        "--export-mode",
        choices=("auto", "inline", "phase", "pinned"),
        default="auto",
        help="phase: export a batch on all cores, then time it (nothing of ours runs while "
        "timing); pinned: export on spare cores while timing; auto: pinned only with >= 2 "
        "spare cores, else phase (default auto)",
    )
    p.add_argument(
        "--rel-ci",
        type=probability,
        default=CAMPAIGN_REL_CI,
        metavar="F",
        help="stop timing an architecture once the 95%% CI of its median is within F of it "
        f"(default {CAMPAIGN_REL_CI}: two medians each known to +-2%% agree within +-5%% unless "
        "the machine changed; `hwnas profile` keeps 0.01)",
    )
    p.add_argument(
        "--verify-export",
        choices=("sample", "all", "none"),
        default="sample",
        help="compare exports with torch: the first and one in ten archs (sample, default), "
        "every arch (all), none",
    )
    add_interference_options(p)
    add_canary_options(p)
    p.add_argument(
        "--device-name",
        default=None,
        help="name to store results under (default DEVICE, DEVICE-Nt with N threads)",
    )
    p.add_argument(
        "--campaign", default=None, help="label stored with each row (default SPACE-SIZEpx-seedS)"
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="measure again architectures that failed before (also build/export failures)",
    )
    p.add_argument(
        "--retry-after",
        type=seconds,
        default=3600.0,
        metavar="SECONDS",
        help="a device failure (runtime error, crash, timeout) older than this is measured "
        "again by the next run (default 3600)",
    )
    p.add_argument(
        "--discard-artifacts",
        action="store_true",
        help="delete each .onnx once measured (saves disk)",
    )
    p.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare each export with torch (default on)",
    )
    p.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="dynamo",
        help="torch's default exporter (dynamo) or the older tracing one (torchscript): "
        "about 9x faster to export; its graphs measured 1-2%% slower and count ~0.6%% more "
        "FLOPs here, so keep one exporter per dataset (default dynamo)",
    )
    p.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure in a worker process so a crash or hang is a recorded failure (default on)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray (extra 'ray'): one actor per device of --device A,B,... on the node "
        "holding its resource (adb:SERIAL, ssh:HOST); a local cluster without ADDRESS",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run_sample)

    p = sub.add_parser(
        "import-table",
        help="load published latencies from a CSV (e.g. the NAS-Bench-201 table)",
        description="Load measured latencies published by others into the store (source=imported).",
    )
    p.add_argument("csv", type=in_file, help="CSV file with a header line")
    p.add_argument("--space", required=True, help="space whose parser reads --arch-column")
    p.add_argument(
        "--arch-column",
        default="arch",
        help="column of architecture strings (or benchmark indices)",
    )
    p.add_argument(
        "--latency-column",
        action="append",
        required=True,
        help="column of latencies; repeat for several devices",
    )
    p.add_argument(
        "--device-name",
        action="append",
        default=None,
        help="device name of each --latency-column, in order (default: the column name without 'latency_ms_')",
    )
    p.add_argument(
        "--unit", default="ms", help="unit of the latency columns: ms, s or us (default ms)"
    )
    p.add_argument("--db", default="hwnas.db", help="SQLite file (default hwnas.db)")
    p.add_argument(
        "--input-size",
        type=input_size,
        default=None,
        help="input resolution the table was measured at",
    )
    p.add_argument(
        "--num-classes",
        type=num_classes,
        default=None,
        help="classifier outputs of the measured networks",
    )
    p.add_argument("--campaign", default=None, help="label of the rows (default import:FILE)")
    p.add_argument(
        "--skip-bad-rows", action="store_true", help="skip rows whose architecture does not parse"
    )
    p.set_defaults(func=run_import)

    p = sub.add_parser(
        "export",
        help="write a measurement database as CSV or JSON",
        description="Write measurements (with arch, metrics and, in JSON, raw samples and environments).",
    )
    p.add_argument("--db", default="hwnas.db", help="SQLite file (default hwnas.db)")
    p.add_argument("--out", type=out_file, required=True, help="output file (.csv or .json)")
    p.add_argument(
        "--format", choices=("csv", "json"), default=None, help="default: from --out's suffix"
    )
    p.add_argument("--device", default=None, help="only this device")
    p.add_argument("--space", default=None, help="only this space")
    p.add_argument("--campaign", default=None, help="only this campaign")
    p.add_argument("--status", choices=("ok", "failed", "all"), default="all", help="default all")
    add_quality_read_options(p)
    p.set_defaults(func=run_export)
