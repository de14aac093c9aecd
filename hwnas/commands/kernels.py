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
    probability,
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


#: Calibration networks per sampled kernel by default: a network costs several kernels
#: (a longer timing budget, at least 10 runs of a whole network, a larger export), so
#: this keeps them a minor share of a campaign, however small -n is. An interval needs
#: 8 of them (-n 96 or more, or --networks 8).
KERNELS_PER_NETWORK = 12
MAX_NETWORKS = 40


def default_networks(n: int) -> int:
    """Calibration networks for ``-n N`` kernels: one per 12, at most 40 (0 when N is 0)."""
    if n <= 0:
        return 0
    return min(MAX_NETWORKS, -(-n // KERNELS_PER_NETWORK))


def _rough_time(args, settings, net_settings) -> str:
    """A plan line's range from step counts and budgets (not a measured figure): each
    kernel its budget plus 1-3 s of export; each network its budget plus 3 s, up to a
    minute for a large random network (at least 10 timed runs of it)."""
    kernels = args.n + args.adaptive * args.rounds
    lo = kernels * (settings.budget_s + 1.0) + args.networks * (net_settings.budget_s + 3.0)
    hi = kernels * (settings.budget_s + 3.0) + args.networks * 60.0

    def words(s: float) -> str:
        return f"{max(1, round(s / 60))} min" if s >= 60 else f"{max(1, round(s))} s"

    return f"{words(lo)} to {words(hi)}"


def run_sample(args) -> int:
    from hwnas.predictors.kernels.campaign import (
        KERNEL_SETTINGS,
        NETWORK_SETTINGS,
        planned_kernels,
        sample_kernels,
    )
    from hwnas.store import Store

    if args.networks is None:
        args.networks = default_networks(args.n)
    if args.n < 0 or args.networks < 0 or args.adaptive < 0 or args.rounds < 0:
        raise ConfigError("-n, --networks, --adaptive and --rounds must be >= 0")
    if args.budget is not None and args.budget <= 0:
        raise ConfigError(f"--budget must be > 0 seconds, got {args.budget}")
    types = _types(args.types)
    planned_kernels(0, args.seed, types)  # validates --types before anything runs
    settings, net_settings = KERNEL_SETTINGS, NETWORK_SETTINGS
    if args.budget is not None:
        from dataclasses import replace

        settings = replace(settings, budget_s=args.budget)
        net_settings = replace(net_settings, budget_s=max(args.budget, net_settings.budget_s))
    total = args.n + args.networks + args.adaptive * args.rounds
    if not args.json:
        err_console.print(
            f"sample-kernels: {args.n} kernels (~{settings.budget_s:g} s of timed runs each), "
            f"{args.networks} calibration networks (~{net_settings.budget_s:g} s each, longer "
            f"for a slow one) and up to {args.adaptive * args.rounds} adaptive kernels on "
            f"{args.device}, each exported first: roughly {_rough_time(args, settings, net_settings)}"
            f" on a 2-core CPU; stored as measured in {args.db} (re-run to resume)"
        )
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
                rounds=args.rounds,
                settings=settings,
                network_settings=net_settings,
                threads=args.threads,
                isolate=args.isolate,
                on_progress=tick,
            )
            bar.finish()  # adaptive rounds skipped (too little data) end the bar at N/N
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
        console.print(t)
        console.print(
            f"{summary.measured} kernels + {summary.networks_measured} calibration networks measured, "
            f"{summary.skipped} already in {args.db}, {summary.failed} failed, {summary.seconds:.0f} s"
        )
        for f in summary.failures[:10]:
            err_console.print(f"[yellow]failed:[/] {f}")
        console.print(
            f"train with: hwnas train-predictor --predictor kernel --db {args.db} "
            f"--device {args.device} --out kernel.npz"
        )
    return 0 if summary.failed == 0 else 1


def model_report(model_arg: str, predictor_file: str | None, input_shape: str | None = None,
                 coverage: float = 0.9) -> dict:  # fmt: skip
    """A model's kernels (as its predictor reads them) and, with a predictor, their latencies.

    Used by ``hwnas kernels`` and by ``hwnas predict MODEL.onnx --predictor K.npz``
    when K is a ``kernel`` predictor: the total, an interval, and per kernel
    the regressor used and what was never sampled.
    """
    from hwnas.predictors.kernels.runtime import read_kernels

    model = resolve_model(model_arg, input_shape)
    shape = model.artifact.input_shape
    pred = None
    if predictor_file:
        from hwnas.predictors import load_predictor
        from hwnas.predictors.kernel import KernelPredictor

        pred = load_predictor(predictor_file)
        if not isinstance(pred, KernelPredictor):
            raise ConfigError(
                f"{predictor_file} is a '{pred.name}' predictor; --predictor needs a 'kernel' one"
            )
    tflite = (
        _tflite_of(model) if pred is not None and pred.meta.get("runtime") == "litert" else None
    )
    if pred is None:
        ks = read_kernels(model.artifact.path, "runtime", "ort", {"": tuple(shape)})
    elif pred.meta.get("kernel_source") == "runtime":
        ks = pred.read_kernels(model.artifact.path, shape, tflite=tflite)
    else:
        ks = read_kernels(model.artifact.path, "rules", input_shapes={"": tuple(shape)})
    out: dict = {
        "model": model.name,
        "kernel_source": ks.source,
        "kernel_reader": ks.reader,
        "fallback_reason": ks.fallback_reason or None,
        "kernels": [],
    }
    if pred is None:
        out["kernels"] = [
            {"kernel": k.describe(), "type": k.type, "op": k.op, "macs": k.macs,
             "nodes": list(k.nodes)}
            for k in ks.kernels
        ]  # fmt: skip
        return out
    rows = pred.explain(ks.kernels)
    total = float(sum(r.in_model_ms for r in rows) + pred.model_overhead_ms)
    fallback_ms = float(sum(max(r.in_model_ms, 0.0) for r in rows if not r.sampled))
    lo, hi, basis = pred.interval(total, fallback_ms, coverage)
    unsampled: dict[str, dict] = {}
    for r in rows:
        if not r.sampled:
            u = unsampled.setdefault(r.note, {"note": r.note, "kernels": 0, "ms": 0.0})
            u["kernels"] += 1
            u["ms"] += r.in_model_ms
    out.update(
        {
            "predictor": predictor_file,
            "device": pred.meta.get("device"),
            "trained_on": pred.meta.get("kernel_reader", "hand-written rules"),
            "predicted_ms": total,
            "interval_ms": [lo, hi],
            "interval_basis": basis,
            "unsampled": list(unsampled.values()),
            "kernels": [
                {
                    "kernel": r.kernel.describe(), "type": r.kernel.type, "op": r.kernel.op,
                    "macs": r.kernel.macs, "nodes": list(r.kernel.nodes),
                    "alone_ms": r.alone_ms, "in_model_ms": r.in_model_ms,
                    "regressor": r.regressor, "note": r.note,
                }
                for r in rows
            ],
        }
    )  # fmt: skip
    return out


def _tflite_of(model):
    """The .tflite form of a zoo model (exported, cached) for a LiteRT-trained predictor, or None."""
    from hwnas.errors import HwnasError

    if model.artifact.format == "tflite":
        return model.artifact.path
    try:
        from hwnas.export.tflite import ensure_tflite

        return ensure_tflite(model.artifact).path
    except (HwnasError, ImportError):
        return None  # no torch source (a user's .onnx): the rules are used, and said so


def print_report(rep: dict) -> None:
    """The per-kernel table, the total with its interval, and every fallback used."""
    with_pred = "predicted_ms" in rep
    cols = ["#", "kernel", "MACs", "nodes"]
    if with_pred:
        cols += ["alone ms", "in model ms", "regressor"]
    rows = []
    for i, r in enumerate(rep["kernels"]):
        row = [i, r["kernel"] + ("  *" if with_pred and r["note"] else ""), fmt(r["macs"]),
               len(r["nodes"])]  # fmt: skip
        if with_pred:
            row += [r["alone_ms"], r["in_model_ms"], r["regressor"]]
        rows.append(row)
    t = table(f"kernels of {rep['model']} ({rep['kernel_reader']})", cols, rows)
    console.print(t)
    if rep.get("fallback_reason"):
        err_console.print(
            f"[yellow]note:[/] kernels from the hand-written rules, not the runtime: "
            f"{rep['fallback_reason']}"
        )
    if not with_pred:
        return
    lo, hi = rep["interval_ms"]
    if lo == lo:  # not NaN
        hi_s = "inf" if hi == float("inf") else f"{hi:.3f}"
        console.print(
            f"predicted latency [bold]{rep['predicted_ms']:.3f} ms[/] on {rep['device']} "
            f"(interval {lo:.3f} - {hi_s} ms: {rep['interval_basis']})"
        )
    else:
        console.print(f"predicted latency [bold]{rep['predicted_ms']:.3f} ms[/] on {rep['device']}")
        err_console.print(f"[yellow]{rep['interval_basis']}[/]")
    if rep["kernel_reader"] != rep["trained_on"]:
        err_console.print(
            f"[yellow]note:[/] the predictor was trained on kernels read by {rep['trained_on']}, "
            f"this model's were read by {rep['kernel_reader']}"
        )
    for u in rep["unsampled"]:
        err_console.print(
            f"[yellow]* not sampled:[/] {u['kernels']} kernel(s), {u['ms']:.3f} ms in model: {u['note']}"
        )


def predict_models(predictor_file: str, models: list[str], as_json: bool, args=None) -> int:
    """``hwnas predict K.npz MODEL...`` for a ``kernel`` predictor: each model's report.

    ``args`` may carry ``coverage`` and ``input_shape`` (the predict command's options).
    """
    coverage = float(getattr(args, "coverage", None) or 0.9)
    shape = getattr(args, "input_shape", None)
    reports = [model_report(m, predictor_file, shape, coverage) for m in models]
    if as_json:
        print_json(reports if len(reports) > 1 else reports[0])
    else:
        for rep in reports:
            print_report(rep)
    return 0


def run_show(args) -> int:
    rep = model_report(args.model, args.predictor, args.input_shape, args.coverage)
    if args.json:
        print_json(rep)
    else:
        print_report(rep)
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
        default=None,
        help="random calibration networks measured whole (default: one per 12 kernels of -n, "
        "at most 40; an interval needs 8; 0 = no calibration)",
    )
    p.add_argument(
        "--adaptive",
        type=nonneg_int,
        default=0,
        help="extra kernels sampled around the worst-predicted ones (nn-Meter's adaptive sampling)",
    )
    p.add_argument(
        "--rounds",
        type=nonneg_int,
        default=1,
        help="adaptive rounds of --adaptive kernels each (resumable; default 1)",
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
        description=(
            "Split a model into the kernels the runtime executes (ONNX Runtime's optimised "
            "graph; with a predictor, the way its training data was read) and, with "
            "--predictor, predict each, the total and an interval."
        ),
    )
    k.add_argument("model", metavar="MODEL", help="zoo name or path to a .onnx file")
    k.add_argument(
        "--input-shape", type=input_shape, default=None, help="static input shape, e.g. 1,3,224,224"
    )
    k.add_argument("--predictor", default=None, help="a trained 'kernel' predictor file")
    k.add_argument(
        "--coverage",
        type=probability,
        default=0.9,
        help="interval coverage with --predictor (default 0.9)",
    )
    k.add_argument("--json", action="store_true", help="print JSON instead of a table")
    k.set_defaults(func=run_show)
