"""`hwnas sample-kernels` (measure kernels for the ``kernel`` predictor) and
`hwnas kernels MODEL` (show a model's kernels, with predicted latencies)."""

from __future__ import annotations

import argparse

from hwnas.commands._common import (
    add_seconds_option,
    console,
    count,
    err_console,
    fmt,
    input_shape,
    nonneg_int,
    print_json,
    progress,
    resolve_model,
    seed,
    table,
)
from hwnas.errors import ConfigError


def _types(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    return tuple(t.strip() for t in text.split(",") if t.strip())


def run_sample(args) -> int:
    from hwnas.predictors.kernels.campaign import (
        KERNEL_SETTINGS,
        NETWORK_SETTINGS,
        planned_kernels,
        sample_kernels,
    )
    from hwnas.store import Store

    if args.n < 0 or args.networks < 0 or args.adaptive < 0:
        raise ConfigError("-n, --networks and --adaptive must be >= 0")
    if args.budget is not None and args.budget <= 0:
        raise ConfigError(f"--budget must be > 0 seconds, got {args.budget}")
    types = _types(args.types)
    planned_kernels(0, args.seed, types)  # validates --types before anything runs
    settings, net_settings = KERNEL_SETTINGS, NETWORK_SETTINGS
    if args.budget is not None:
        from dataclasses import replace

        settings = replace(settings, budget_s=args.budget)
        net_settings = replace(net_settings, budget_s=max(args.budget, net_settings.budget_s))
    total = args.n + args.networks + args.adaptive
    store = Store(args.db)
    try:
        with progress(total, f"kernels on {args.device}", enabled=not args.json) as bar:

            def tick(what: str, label: str, status: str) -> None:
                bar.advance(status=f"{label}: {status}")

            summary = sample_kernels(
                store,
                args.device,
                args.n,
                seed=args.seed,
                types=types,
                networks=args.networks,
                adaptive=args.adaptive,
                settings=settings,
                network_settings=net_settings,
                threads=args.threads,
                isolate=args.isolate,
                on_progress=tick,
            )
    finally:
        store.close()
    result = {
        "device": args.device,
        "db": args.db,
        "measured": summary.measured,
        "networks_measured": summary.networks_measured,
        "skipped": summary.skipped,
        "failed": summary.failed,
        "seconds": round(summary.seconds, 1),
        "by_type": summary.by_type,
        "failures": summary.failures[:20],
    }
    if args.json:
        print_json(result)
    else:
        t = table(
            f"hwnas sample-kernels on {args.device}",
            ["kernel type", "measured now"],
            sorted(summary.by_type.items()),
        )
        t.caption = (
            f"{summary.measured} kernels + {summary.networks_measured} calibration networks measured, "
            f"{summary.skipped} already in {args.db}, {summary.failed} failed, {summary.seconds:.0f} s"
        )
        console.print(t)
        for f in summary.failures[:10]:
            err_console.print(f"[yellow]failed:[/] {f}")
        console.print(
            f"train with: hwnas train-predictor --predictor kernel --db {args.db} "
            f"--device {args.device} --out kernel.npz"
        )
    return 0 if summary.failed == 0 else 1


def run_show(args) -> int:
    from hwnas.predictors.kernels.detect import detect_kernels

    model = resolve_model(args.model, args.input_shape)
    kernels = detect_kernels(model.artifact.path, model.artifact.shapes_dict())
    pred = None
    if args.predictor:
        from hwnas.predictors import load_predictor
        from hwnas.predictors.kernel import KernelPredictor

        p = load_predictor(args.predictor)
        if not isinstance(p, KernelPredictor):
            raise ConfigError(
                f"{args.predictor} is a '{p.name}' predictor; --predictor needs a 'kernel' one"
            )
        pred = p.breakdown(model.artifact.path)
        total = p.predict_network(kernels)
    rows = []
    for i, k in enumerate(kernels):
        row = {"kernel": k.describe(), "type": k.type, "macs": k.macs, "nodes": list(k.nodes)}
        if pred is not None:
            row["alone_ms"], row["in_model_ms"] = pred[i][1], pred[i][2]
        rows.append(row)
    if args.json:
        out = {"model": model.name, "kernels": rows}
        if pred is not None:
            out["predicted_ms"] = total
        print_json(out)
        return 0
    cols = ["#", "kernel", "MACs", "nodes"] + (["alone ms", "in model ms"] if pred else [])
    t = table(
        f"kernels of {model.name}",
        cols,
        [
            [i, r["kernel"], fmt(r["macs"]), len(r["nodes"])]
            + ([r["alone_ms"], r["in_model_ms"]] if pred else [])
            for i, r in enumerate(rows)
        ],
    )
    if pred is not None:
        t.caption = f"predicted latency {total:.3f} ms ({args.predictor})"
    console.print(t)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "sample-kernels",
        help="measure sampled kernels on a device, to train the 'kernel' predictor",
        description=(
            "Sample kernel configurations (conv, dwconv, SE, fc, pooling, add, ...) from a prior "
            "of real networks, export each as a one-kernel ONNX model, measure it on the device "
            "and store it. Re-running with the same --seed skips what is stored."
        ),
    )
    p.add_argument("--device", default="cpu-ort", help="device name (see `hwnas devices`)")
    p.add_argument("--db", required=True, help="SQLite file to store the measurements in")
    p.add_argument(
        "-n", type=nonneg_int, default=500, help="kernels sampled from the prior (default 500)"
    )
    p.add_argument("--seed", type=seed, default=0, help="sampling seed (default 0)")
    p.add_argument("--types", default=None, help="comma-separated kernel types (default: all)")
    p.add_argument(
        "--networks",
        type=nonneg_int,
        default=40,
        help="random calibration networks measured whole (default 40; 0 = no calibration)",
    )
    p.add_argument(
        "--adaptive",
        type=nonneg_int,
        default=0,
        help="extra kernels sampled around the worst-predicted ones (nn-Meter's adaptive sampling)",
    )
    p.add_argument("--threads", type=count, default=None, help="runtime threads (default 1)")
    add_seconds_option(p, help="seconds of timed runs per kernel (default 0.5)", dest="budget")
    p.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure in a worker process so a crash is a recorded failure (default on)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run_sample)

    k = sub.add_parser(
        "kernels",
        help="show the fused kernels of a model (and their predicted latency)",
        description="Split a model into the kernels a runtime fuses (nn-Meter's kernel detection).",
    )
    k.add_argument("model", metavar="MODEL", help="zoo name or path to a .onnx file")
    k.add_argument(
        "--input-shape", type=input_shape, default=None, help="static input shape, e.g. 1,3,224,224"
    )
    k.add_argument("--predictor", default=None, help="a trained 'kernel' predictor file")
    k.add_argument("--json", action="store_true", help="print JSON instead of a table")
    k.set_defaults(func=run_show)
