"""`hwnas compare BASE NEW`: did latency change between two runs, model by model, with confidence.

(The module is not ``compare.py``: that one holds ``hwnas compare-flops``.)
"""

from __future__ import annotations

from hwnas.commands._common import (
    console,
    err_console,
    out_file,
    print_json,
    probability,
    table,
)

_COLORS = {"slower": "red", "faster": "green", "same": "default"}


def run(args) -> int:
    from hwnas.errors import ConfigError
    from hwnas.testing.runs import compare_runs, load_run
    from hwnas.testing.stats import parse_threshold

    threshold = parse_threshold(args.threshold, "--threshold")
    if not 0.0 < args.confidence < 1.0:
        raise ConfigError(f"--confidence {args.confidence} must lie between 0 and 1, e.g. 0.95")
    base, new = load_run(args.base), load_run(args.new)
    rows, notes = compare_runs(
        base,
        new,
        threshold=threshold,
        confidence=args.confidence,
        force=args.force,
        only=args.model,
    )
    plot = None
    if args.plot:
        from hwnas.report.regression import plot_comparisons

        try:
            plot = plot_comparisons(rows, args.plot, threshold=threshold)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot write the figure {args.plot} ({exc}); give a writable file name such as cmp.png"
            ) from None
    if args.json:
        print_json(
            {
                "base": base.path,
                "new": new.path,
                "threshold": threshold,
                "confidence": args.confidence,
                "models": [
                    {
                        "name": c.name,
                        "verdict": c.verdict,
                        "ratio": c.estimate.ratio,
                        "ci": [c.estimate.lo, c.estimate.hi],
                        "model_ratio": c.estimate.model_ratio,
                        "drift": c.estimate.drift,
                        "base_median_ms": c.estimate.base_median,
                        "new_median_ms": c.estimate.new_median,
                        "n_base": c.estimate.n_base,
                        "n_new": c.estimate.n_new,
                        "note": c.note,
                    }
                    for c in rows
                ],
                "notes": notes,
                "plot": str(plot) if plot else None,
            }
        )
    else:
        t = table(
            f"{new.path} vs {base.path}: median ratio new/base, {args.confidence:.0%} CI, "
            f"threshold {threshold:.1%}",
            ["model", "base ms", "new ms", "ratio", "CI", "ref drift", "verdict", "note"],
            [
                (
                    c.name,
                    f"{c.estimate.base_median:.4g}",
                    f"{c.estimate.new_median:.4g}",
                    f"{c.estimate.ratio:.3f}",
                    f"{c.estimate.lo:.3f}-{c.estimate.hi:.3f}",
                    "-" if c.estimate.drift is None else f"{c.estimate.drift:.3f}",
                    f"[{_COLORS[c.verdict]}]{c.verdict}[/]",
                    c.note,
                )
                for c in rows
            ],
        )
        console.print(t)
        for n in notes:
            err_console.print(f"[yellow]note:[/] {n}")
        if plot:
            console.print(f"wrote {plot}")
    slower = [c.name for c in rows if c.verdict == "slower"]
    return 1 if args.fail_on_slower and slower else 0


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="per model: median latency ratio of two runs with its confidence interval and verdict",
        description=(
            "Compare two pytest-benchmark JSON files (--benchmark-json/--benchmark-autosave, e.g. "
            "written by the hwnas_latency fixture) or two hwnas stores (--db files, opened read-only). "
            "Per model: the ratio of median latencies new/base with a bootstrap confidence interval "
            "over the raw samples, divided by the reference model's drift when both runs measured "
            "one, and a verdict: slower (a slowdown is certain and one beyond --threshold is not "
            "ruled out), faster (the mirror image) or same."
        ),
    )
    p.add_argument("base", help="baseline: a pytest-benchmark JSON file or an hwnas store")
    p.add_argument("new", help="new run: a pytest-benchmark JSON file or an hwnas store")
    p.add_argument("--threshold", default="5%", help="tolerated change, a percentage (default 5%%)")
    p.add_argument(
        "--confidence", type=probability, default=0.95, help="two-sided CI level (default 0.95)"
    )
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="only this test/model (full name or test name; repeatable)",
    )
    p.add_argument(
        "--plot", type=out_file, metavar="FILE", help="write a figure of the ratios and their CIs"
    )
    p.add_argument(
        "--force", action="store_true", help="compare even runs from different devices or machines"
    )
    p.add_argument(
        "--fail-on-slower", action="store_true", help="exit with status 1 if any model is slower"
    )
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=run)
