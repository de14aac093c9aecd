"""`hwnas memory MODEL`: peak activation memory, arena plan, best order, lifetime chart."""

from __future__ import annotations

from hwnas.commands._common import (
    console,
    count,
    err_console,
    input_shape,
    nonneg_int,
    out_file,
    print_json,
    resolve_model,
    seconds,
    table,
)
from hwnas.errors import ConfigError

_ACCOUNTING = (
    "MemNAS accounting: activations = graph inputs + every computed tensor, each alive from "
    "its node to its last reader; parameters counted apart"
)


def _bytes(n: float | None) -> str:
    # MiB, as the lifetime plot: one convention for the table and the figure.
    from hwnas.profilers.memory.plot import human_bytes

    return "-" if n is None else human_bytes(n)


def run(args) -> int:
    from hwnas.profilers.graph import load_graph
    from hwnas.profilers.memory import build_memgraph, estimate_memgraph, plan_arena
    from hwnas.profilers.memory.order import optimal_order, write_reordered

    if args.time_limit <= 0:
        raise ConfigError(f"--time-limit must be positive seconds, got {args.time_limit}")
    if args.limit < 0:
        raise ConfigError(f"--limit must be >= 0 (0 lists every tensor), got {args.limit}")
    model = resolve_model(args.model, args.input_shape)
    graph = load_graph(model.artifact.path, model.artifact.shapes_dict())
    options = {
        "alias_views": args.alias_views,
        "inplace": args.inplace,
        "include_inputs": not args.exclude_inputs,
    }
    mg = build_memgraph(graph, alias_views=args.alias_views, include_inputs=not args.exclude_inputs)
    best = None
    if args.order == "optimal" or args.write_reordered:
        best = optimal_order(mg, time_limit_s=args.time_limit)
    order = best.order if args.order == "optimal" and best else "onnx"
    report = estimate_memgraph(mg, order, inplace=args.inplace, label=model.name, options=options)
    if best is not None:
        report.order_info = {"kind": args.order, **best.summary()}
    plan = plan_arena(report, alignment=args.alignment)
    plan.verify()
    reordered = None
    if args.write_reordered:
        reordered = write_reordered(model.artifact.path, best.order, args.write_reordered)
    chart = None
    if args.plot:
        from hwnas.profilers.memory.plot import plot_lifetimes

        chart = plot_lifetimes(report, args.plot, plan=plan)
    measured = None
    if args.measure:
        from hwnas.profilers.memory.runtime import measure_ort

        measured = measure_ort(
            model.artifact.path, model.artifact.shapes_dict(), optimization=args.ort_optimization
        )
    if args.json:
        out = {
            "model": model.name,
            **{k: v for k, v in report.to_dict().items() if k not in ("steps",)},
            "arena_bytes": plan.size,
            "arena_offsets": plan.offsets,
        }
        if measured is not None:
            out["ort"] = measured.to_dict()
        print_json(out)
        return 0
    steps = report.steps
    peak_node = steps[report.peak_step][0] if steps else "-"
    summary = table(
        None,
        ["model", "order", "params", "peak activations", "planned arena", "arena/peak", "total"],
        [
            (
                model.name,
                args.order,
                _bytes(report.param_bytes),
                _bytes(report.peak_activation_bytes),
                _bytes(plan.size),
                f"{1 + plan.overhead:.3f}",
                _bytes(report.total_bytes),
            )
        ],
    )
    summary.caption = f"peak at step {report.peak_step} ({peak_node}); " + _ACCOUNTING
    console.print(summary)
    if best is not None:
        how = "exact (dynamic programme)" if best.exact else f"heuristic, gap <= {best.gap:.1%}"
        console.print(
            f"optimal order: peak {_bytes(best.peak_bytes)} vs ONNX order "
            f"{_bytes(best.onnx_peak_bytes)} ({best.reduction:.3f}x), {how}, "
            f"{best.pieces} pieces, {best.elapsed_s:.2f} s"
        )
        for note in best.notes:
            err_console.print(f"[yellow]note:[/] {note}")
    alive = set(report.alive_at_peak)
    rows = sorted((b for b in report.buffers if b.nbytes), key=lambda b: (b.birth, b.death, b.name))
    shown = rows
    if args.limit and len(rows) > args.limit:
        keep = {b.name for b in sorted(rows, key=lambda b: -b.nbytes)[: args.limit]} | alive
        shown = [b for b in rows if b.name in keep]
    kinds = {t.name: t.kind for t in report.tensors}
    tensor_table = table(
        "tensors (buffers), by birth" + ("" if shown is rows else f": {len(shown)} of {len(rows)}"),
        ["tensor", "kind", "bytes", "birth", "death", "offset", "at peak"],
        [
            (
                b.name if len(b.tensors) <= 1 else f"{b.name} (+{len(b.tensors) - 1} views)",
                kinds.get(b.name, "activation"),
                b.nbytes,
                b.birth,
                b.death,
                plan.offsets.get(b.name, 0),
                "*" if b.name in alive else "",
            )
            for b in shown
        ],
    )
    console.print(tensor_table)
    if measured is not None:
        console.print(
            table(
                f"ONNX Runtime {measured.ort_version} (optimization={measured.optimization})",
                ["figure", "bytes"],
                [
                    ("live-tensor peak (run 1)", _bytes(measured.live_peak_bytes)),
                    ("memory-pattern arena (run 2)", _bytes(measured.pattern_bytes)),
                    ("arena chunks peak (run 1)", _bytes(measured.chunk_peak_bytes)),
                    ("inputs (caller's memory)", _bytes(measured.input_bytes)),
                    ("peak RSS of the process", _bytes(measured.peak_rss_bytes)),
                    ("RSS growth during the runs", _bytes(measured.rss_run_growth_bytes)),
                ],
            )
        )
        err_console.print(
            "ORT runs its optimised graph (fused kernels, NCHWc layouts) without the graph "
            "inputs in its arena; compare with --alias-views --inplace --exclude-inputs, or "
            "see benchmarks/memory_vs_ort.py for the executed-graph estimate"
        )
    if reordered:
        console.print(
            f"reordered model: {reordered} (ORT follows it with execution_order=PRIORITY_BASED)"
        )
    if chart:
        console.print(f"lifetime chart: {chart}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "memory",
        help="peak activation memory, arena plan and memory-optimal order of a model",
        description=(
            "Estimate a model's memory before running it: parameter bytes, tensor lifetimes "
            "under an execution order, the peak of live activation bytes, and a TFLite-style "
            "arena plan. --order optimal searches the topological order with the smallest peak. "
            + _ACCOUNTING
            + "."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="zoo model name (see `hwnas zoo`) or .onnx path")
    p.add_argument(
        "--input-shape",
        type=input_shape,
        default=None,
        metavar="N,C,H,W",
        help="input shape (default: the zoo model's own; needed for ONNX files with dynamic inputs)",
    )
    p.add_argument(
        "--order",
        choices=("onnx", "optimal"),
        default="onnx",
        help="execution order: the file's (default) or the memory-optimal one",
    )
    p.add_argument(
        "--time-limit",
        type=seconds,
        default=10.0,
        metavar="S",
        help="seconds for the exact order search before the heuristic takes over (default 10)",
    )
    p.add_argument(
        "--plot", type=out_file, metavar="FILE", help="write the lifetime chart (PNG/SVG/PDF)"
    )
    p.add_argument(
        "--write-reordered",
        type=out_file,
        metavar="FILE",
        help="write the model with its nodes in the optimal order",
    )
    p.add_argument(
        "--alias-views",
        action="store_true",
        help="Reshape/Flatten/Squeeze/Unsqueeze/Identity share their input's bytes (as ORT, TFLite)",
    )
    p.add_argument(
        "--inplace",
        action="store_true",
        help="unary element-wise ops overwrite an input read for the last time (as ORT)",
    )
    p.add_argument(
        "--exclude-inputs",
        action="store_true",
        help="leave graph inputs out (runtimes read them from the caller's buffer)",
    )
    p.add_argument(
        "--alignment", type=count, default=64, help="arena offset alignment in bytes (default 64)"
    )
    p.add_argument(
        "--limit",
        type=nonneg_int,
        default=30,
        help="tensor rows to list: the largest N plus those alive at the peak (0 = all; default 30)",
    )
    p.add_argument(
        "--measure", action="store_true", help="also measure ONNX Runtime's memory (child process)"
    )
    p.add_argument(
        "--ort-optimization",
        choices=("disable", "basic", "extended", "all"),
        default="all",
        help="ORT graph optimisation level for --measure (default all, ORT's own default)",
    )
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=run)


__all__ = ["register", "run"]
