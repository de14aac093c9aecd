"""`hwnas compare-flops`: how well FLOPs, MACs, params and memory predict latency, per device."""

from __future__ import annotations

from pathlib import Path

from hwnas.commands._common import (
    console,
    count,
    err_console,
    fraction,
    nonneg_int,
    open_store,
    out_dir,
    print_json,
    seed,
    table,
)
from hwnas.commands._trust import QualityView, add_quality_read_options, check_quality_read
from hwnas.errors import ConfigError


def run(args) -> int:
    from hwnas.report.compare import summary_rows
    from hwnas.report.compare_store import compare_store
    from hwnas.store import Store

    db = Path(args.db)
    if not db.exists():
        raise ConfigError(f"no database at {db}; give the --db file a campaign or import wrote")
    check_quality_read(args)
    # Checked read-only first: a file that is not an hwnas store (or is a newer one)
    # is refused untouched. The FLOPs counted for imported architectures are then
    # cached in the store, which needs it open for writing.
    Store(db, readonly=True).close()
    with open_store(db) as store:
        view = QualityView(store, args.flagged, args.normalize)
        res = compare_store(
            view,
            args.out,
            devices=args.device,
            space=args.space,
            sample=args.sample,
            seed=args.seed,
            flops_method=args.flops_method,
            include_degenerate=args.include_degenerate,
            rel_tol=args.tol,
            pairs=args.pairs,
            log=None if args.json else err_console.print,
        )
        res.notes.append(view.note)
    if args.json:
        print_json(
            {
                "summary": summary_rows(res.comparisons),
                "pairs": [r for c in res.comparisons for r in c.pair_rows()],
                "files": {k: str(v) for k, v in res.files.items()},
                "notes": res.notes,
            }
        )
        return 0
    for cmp in res.comparisons:
        t = table(
            f"{cmp.device}: latency vs proxies ({cmp.space}, {cmp.input_shape}, {cmp.source})",
            ["proxy", "n", "Pearson r", "Spearman rho", "Kendall tau", "R^2"],
            [(c.proxy, c.n, c.pearson, c.spearman, c.kendall, c.r2) for c in cmp.correlations],
        )
        extra = []
        if cmp.excluded:
            extra.append(f"{cmp.excluded} degenerate cells excluded")
        if cmp.without_flops:
            extra.append(f"{cmp.without_flops} without FLOPs left out")
        if len(cmp.flops_methods) > 1:
            extra.append(
                "FLOPs from " + ", ".join(f"{m} ({n})" for m, n in cmp.flops_methods.items())
            )
        if cmp.dropped:
            extra.append("not reported: " + ", ".join(cmp.dropped))
        for r in cmp.pair_rows()[:1]:
            extra.append(
                f"same FLOPs within {args.tol:.0%}: {r['fast']} {r['fast_ms']:.3g} ms vs "
                f"{r['slow']} {r['slow_ms']:.3g} ms ({r['ratio']:.2f}x)"
            )
        t.caption = "; ".join(extra)
        console.print(t)
    for n in res.notes:
        err_console.print(f"[yellow]note:[/] {n}")
    files = res.files
    console.print(
        f"wrote {files['markdown']}, {files['csv']}, {files['pairs']} and "
        f"{len(res.comparisons)} plot(s) in {args.out}"
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "compare-flops",
        help="correlate latency with FLOPs, MACs, params and peak memory, per device",
        description=(
            "For each device in a database: Pearson r, Spearman rho, Kendall tau and R^2 of latency "
            "against FLOPs, MACs, params and (when present) peak activation memory; a scatter plot "
            "per device with the fitted line and the same-FLOPs pairs of most different latency."
        ),
    )
    p.add_argument("--db", default="hwnas.db", help="SQLite file (default hwnas.db)")
    p.add_argument("--device", action="append", default=None, help="only this device (repeatable)")
    p.add_argument("--space", default=None, help="only this space")
    p.add_argument(
        "--out",
        type=out_dir,
        required=True,
        help="directory for plots, summary.csv, summary.md, pairs.csv",
    )
    p.add_argument(
        "--sample",
        type=count,
        default=None,
        metavar="K",
        help="count FLOPs for at most K random imported architectures that lack them (default: all)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of --sample (default 0)")
    p.add_argument(
        "--flops-method",
        choices=("auto", "additive", "torch"),
        default="auto",
        help="how imported architectures are counted: per-decision terms when the space is "
        "additive (verified), else one torch module each (default auto)",
    )
    p.add_argument(
        "--tol",
        type=fraction,
        default=0.01,
        help="relative FLOPs difference of 'same FLOPs' pairs (default 0.01)",
    )
    p.add_argument(
        "--pairs",
        type=nonneg_int,
        default=3,
        help="same-FLOPs pairs to label per device (default 3)",
    )
    p.add_argument(
        "--include-degenerate",
        action="store_true",
        help="keep cells whose output ignores the input",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_quality_read_options(p)
    p.set_defaults(func=run)
