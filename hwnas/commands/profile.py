"""`hwnas profile MODEL...`: measure models on a device, with FLOPs, MACs and params."""

from __future__ import annotations

import warnings
from pathlib import Path

from hwnas.commands._common import (
    add_measure_options,
    console,
    count,
    err_console,
    expand_models,
    human,
    input_shape,
    out_file,
    print_json,
    progress,
    resolve_model,
    seed,
    settings_from_args,
    table,
)
from hwnas.commands._trust import add_interference_options, guard_device
from hwnas.errors import ConfigError


def profile_models(args) -> list[dict]:
    """Resolve, count and measure every model named in ``args``; store if ``--db``."""
    from hwnas.devices import DEVICES, create_device
    from hwnas.devices.isolated import IsolatedDevice, MeasurementFailed
    from hwnas.profilers.flops import count
    from hwnas.store import Store

    names = expand_models(args.models)
    if not names:
        raise ConfigError("give at least one MODEL (a zoo name, 'all', or a .onnx path)")
    DEVICES.factory(args.device)  # unknown device: fail before exporting anything
    if args.interleave is not None and args.interleave < 2:
        raise ConfigError(f"--interleave needs R >= 2 rounds, got {args.interleave}")
    check_models(args.device, names, args.input_shape)  # bad shape / device: fail before measuring
    settings = settings_from_args(args)
    device_kwargs = {"threads": args.threads}
    device = (
        IsolatedDevice(args.device, **device_kwargs)
        if args.isolate
        else create_device(args.device, **device_kwargs)
    )
    device = guard_device(args, device, args.device, args.threads or 1, err_console.print)
    store = Store(args.db) if args.db else None
    results: list[dict] = []
    try:
        if args.interleave:
            return _interleaved(args, names, device, settings, store)
        with progress(len(names), f"profiling on {args.device}") as bar:
            for name in names:
                model = resolve_model(name, args.input_shape)
                fl = count(model.artifact.path, model.artifact.shapes_dict())
                row = _static_row(model, fl)
                try:
                    m = device.measure(model.artifact, settings)
                except MeasurementFailed as exc:
                    row.update(status="failed", reason=str(exc))
                    if store:
                        store.add_arch(model.arch, label=model.name)
                        store.add_measurement(
                            model.arch.id, exc.failure, model.artifact.input_shape
                        )
                    results.append(row)
                    bar.advance(status=f"{name}: failed")
                    continue
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    m.warn_if_noisy()
                for w in caught:
                    err_console.print(f"[yellow]warning:[/] {w.message}")
                row.update(_measured_fields(m))
                if store:
                    _store_measured(store, model, fl, m)
                results.append(row)
                bar.advance(status=f"{name}: {m.median:.2f} ms")
    finally:
        device.close()
        if store:
            store.close()
    return results


def _interleaved(args, names: list[str], device, settings, store) -> list[dict]:
    """R shuffled rounds, each measuring every model once; ratios to the first model."""
    from hwnas.profilers.flops import count
    from hwnas.profilers.latency import Measurement
    from hwnas.profilers.paired import ratios_to_first, round_orders

    models = [resolve_model(n, args.input_shape) for n in names]
    samples: dict[int, list[float]] = {i: [] for i in range(len(models))}
    medians: dict[int, list[float]] = {i: [] for i in range(len(models))}
    last: dict[int, Measurement] = {}
    orders = round_orders(len(models), args.interleave, seed=args.seed)
    with progress(len(orders) * len(models), f"{len(orders)} interleaved rounds") as bar:
        for order in orders:
            for i in order:
                m = device.measure(models[i].artifact, settings)
                samples[i].extend(m.samples_ms)
                medians[i].append(m.median)
                last[i] = m
                bar.advance(status=f"{models[i].name}: {m.median:.2f} ms")
    ratios = ratios_to_first({str(i): medians[i] for i in range(len(models))}, seed=args.seed)
    results = []
    for i, model in enumerate(models):
        fl = count(model.artifact.path, model.artifact.shapes_dict())
        pooled = Measurement(
            samples_ms=tuple(samples[i]),
            device=last[i].device,
            label=model.name,
            artifact_sha256=model.artifact.sha256,
            settings=last[i].settings,
            environment=last[i].environment,
            extra={"interleave_rounds": len(orders), "round_medians_ms": medians[i]},
        )
        rc = ratios[str(i)]
        row = _static_row(model, fl)
        row.update(_measured_fields(pooled))
        row.update(
            round_medians_ms=medians[i], ratio=rc.ratio, ratio_low=rc.low, ratio_high=rc.high
        )
        results.append(row)
        if store:
            _store_measured(store, model, fl, pooled)
    return results


def _static_row(model, fl) -> dict:
    """The table row's columns known before measuring: name, shape, params, MACs, FLOPs."""
    return {
        "model": model.name,
        "arch_id": model.arch.id,
        "input_shape": list(model.artifact.input_shape),
        "params": fl.params,
        "macs": fl.macs,
        "flops": fl.flops,
    }


def _measured_fields(m) -> dict:
    """A successful measurement's columns: statistics (ms, cv, n), device and environment."""
    stats = {k: v for k, v in m.to_dict().items() if k.endswith("_ms") or k in ("cv", "n")}
    return {"status": "ok", "device": m.device, **stats, "environment": m.environment}


def _store_measured(store, model, fl, m) -> None:
    """Device, architecture, artifact, static metrics and the measurement, one commit each."""
    store.add_device(m.device, m.environment)
    store.add_arch(model.arch, label=model.name)
    store.add_artifact(model.artifact, model.arch.id)
    store.set_metrics(
        model.arch.id, model.artifact.input_shape, flops=fl.flops, macs=fl.macs, params=fl.params
    )
    store.add_measurement(model.arch.id, m, model.artifact.input_shape)


def check_models(device: str, names: list[str], input_shape: str | None) -> None:
    """Shape and device mismatches are bad input (hwnas.export.shapes), caught before measuring."""
    from hwnas.export.artifact import parse_shape
    from hwnas.export.shapes import check_device_accepts, check_input_shape

    shape = parse_shape(input_shape) if input_shape else None
    for name in names:
        check_device_accepts(device, name)
        check_input_shape(name, shape)


def run(args) -> int:
    results = profile_models(args)
    if args.json:
        print_json(results)
    else:
        env = next((r["environment"] for r in results if r.get("environment")), {})
        caption = (
            f"{args.device}, {env.get('threads', args.threads or 1)} thread(s) on {env.get('cpu_model', '?')}; "
            "1 MAC = 2 FLOPs; latency in ms"
        )
        t = table(
            "hwnas profile",
            ["model", "params", "MACs", "FLOPs", "median", "IQR", "p90", "CV", "runs"],
            [
                (
                    r["model"],
                    human(r["params"]),
                    human(r["macs"]),
                    human(r["flops"]),
                    r.get("median_ms", "failed"),
                    r.get("iqr_ms"),
                    r.get("p90_ms"),
                    f"{r['cv']:.1%}" if "cv" in r else "-",
                    r.get("n"),
                )
                for r in results
            ],
        )
        t.caption = caption
        console.print(t)
        if args.interleave:
            first = results[0]["model"]
            rt = table(
                f"ratio to {first}: median over {args.interleave} shuffled rounds, 95% bootstrap CI",
                ["model", "ratio", "95% CI"],
                [
                    (r["model"], f"{r['ratio']:.3f}", f"{r['ratio_low']:.3f}-{r['ratio_high']:.3f}")
                    for r in results
                ],
            )
            console.print(rt)
        for r in results:  # reasons below the table, never inside a number column
            if r.get("status") != "ok":
                err_console.print(f"[red]failed:[/] {r['model']}: {r.get('reason', '?')}")
    if args.plot:
        ok = [r for r in results if r.get("status") == "ok"]
        if len(ok) < 2:
            err_console.print(
                "[yellow]warning:[/] --plot needs at least two measured models; no plot written"
            )
        else:
            from hwnas.report.flops_latency import plot_flops_vs_latency

            out = plot_flops_vs_latency(
                [r["model"] for r in ok],
                [r["flops"] for r in ok],
                [r["median_ms"] for r in ok],
                args.plot,
                title=f"FLOPs vs measured latency on {args.device}",
                spread_ms=[r["iqr_ms"] for r in ok],
            )
            if not args.json:
                console.print(f"wrote {Path(out)}")
    return 0 if all(r.get("status") == "ok" for r in results) else 1


def register(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="measure latency of zoo models or .onnx files",
        description="Measure latency (median, IQR, p90, CV over adaptive runs) with params, MACs and FLOPs.",
    )
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="zoo name, 'all', 'demo' (the short set), or path to a .onnx file",
    )
    add_measure_options(p)
    p.add_argument(
        "--input-shape", type=input_shape, default=None, help="static input shape, e.g. 1,3,224,224"
    )
    p.add_argument("--db", default=None, help="SQLite file to store measurements in")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--interleave",
        type=count,
        default=None,
        metavar="R",
        help="measure the models in R shuffled rounds and print ratios to the first model with "
        "95%% bootstrap intervals (paired: a slow stretch of the machine hits a whole round)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the round orders (default 0)")
    add_interference_options(p)
    p.add_argument(
        "--plot",
        type=out_file,
        default=None,
        metavar="PNG",
        help="write a FLOPs-vs-latency scatter",
    )
    p.add_argument(
        "--isolate",
        action=__import__("argparse").BooleanOptionalAction,
        default=True,
        help="measure in a worker process so a crash or hang is a recorded failure (default on)",
    )
    p.set_defaults(func=run)
