"""`hwnas train-predictor`, `hwnas eval-predictor`, `hwnas predict`: latency predictors.

Thin front for :mod:`hwnas.predictors`: read measurements (an hwnas store or
a CSV table), train on a random subset, save one ``.npz`` (no pickle), report
the metrics on the architectures left out, and predict new architectures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hwnas.commands._common import (
    check_settings,
    console,
    count,
    err_console,
    out_file,
    print_json,
    seed,
    table,
)
from hwnas.errors import ConfigError, PredictorError


def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; VALUE is read as JSON when it parses (numbers, lists), else a string."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set takes KEY=VALUE, got '{item}' (e.g. --set ensemble=5)")
        key, value = item.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def _load_dataset(args, space) -> Any:
    from hwnas.predictors.data import load_store, load_table

    if bool(args.db) == bool(args.table):
        raise ConfigError("give exactly one data source: --db FILE or --table CSV")
    if args.table:
        if not args.latency_column:
            raise ConfigError("--table needs --latency-column (the CSV column holding ms)")
        return load_table(
            args.table,
            space,
            args.latency_column,
            arch_column=args.arch_column,
            device=args.device,
            include_degenerate=args.include_degenerate,
        )
    return load_store(
        args.db,
        space,
        device=args.device,
        input_shape=args.input_shape,
        include_degenerate=args.include_degenerate,
        include_flagged=args.include_flagged,
    )


def _level(value: Any, option: str) -> float:
    """A --coverage / --calibrate value, or a one-line ConfigError (exit 2)."""
    from hwnas.predictors.base import check_level

    return check_level(value, option)


def _finite(v: float) -> float | None:
    """JSON has no infinity: an unbounded interval end is written as null."""
    import math

    return v if math.isfinite(v) else None


def _json_interval(im) -> dict[str, Any] | None:
    """Interval metrics for JSON: an unbounded width (inf) becomes null, JSON has no infinity."""
    if im is None:
        return None
    return {k: (_finite(v) if isinstance(v, float) else v) for k, v in im.to_dict().items()}


def _interval_table(title: str | None, rows: list[tuple[str, Any, Any]]) -> Any:
    """Point metrics and interval metrics side by side, one row per data set."""
    from hwnas.predictors.metrics import FIELDS, HEADERS, INTERVAL_FIELDS, INTERVAL_HEADERS

    cols = ["data", *[HEADERS[f] for f in FIELDS]]
    if any(im is not None for _, _, im in rows):
        nominal = next(im.nominal for _, _, im in rows if im is not None)
        cols += [f"{nominal:.0%} " + INTERVAL_HEADERS[f] for f in INTERVAL_FIELDS]
    body = [(n, *m.row(), *(im.row() if im is not None else [])) for n, m, im in rows]
    return table(title, cols, body)


def _no_interval_note(pred) -> str:
    return (
        f"no interval: this {pred.name} predictor is neither calibrated nor an ensemble "
        "(retrain with --calibrate 0.2 or --set ensemble=5)"
    )


def _interval_note(pred, coverage: float) -> str | None:
    """A warning when the interval's coverage is not backed: an uncalibrated ensemble's
    spread, or a calibration set too small for a bounded ``coverage`` interval."""
    import math

    n = pred.calibration_size
    if pred.uncertainty == "ensemble":
        return (
            "interval from the ensemble's spread: no coverage guarantee (members agree more than "
            "the device varies); retrain with --calibrate 0.2 for a calibrated one"
        )
    if pred.uncertainty != "conformal":
        return None
    need = math.ceil(2.0 / (1.0 - coverage) - 1.0 - 1e-9)
    if n >= need:
        return None
    return (
        f"a {coverage:.0%} interval needs at least {need} calibration architectures, this "
        f"predictor has {n}: its upper end is unbounded (calibrate on more, or lower --coverage)"
    )


def _dropped_note(ds) -> str:
    from hwnas.predictors.data import dropped_note

    return dropped_note(ds)


def _train_kernel(args, hparams: dict[str, Any]) -> int:
    """The kernel predictor learns from kernel-level measurements, not from architectures."""
    from hwnas.predictors import create_predictor
    from hwnas.predictors.kernel import kernel_training_data
    from hwnas.store import Store

    if not args.db or not args.device or args.table:
        raise ConfigError(
            "--predictor kernel trains on what `hwnas sample-kernels` measured: "
            "give --db FILE --device D"
        )
    if not Path(args.db).exists():
        raise ConfigError(f"no such database: {args.db}; run `hwnas sample-kernels --db {args.db}`")
    X, y = kernel_training_data(Store(args.db, readonly=True), args.device)
    hparams.setdefault("seed", args.seed)
    pred = create_predictor("kernel", **hparams)
    cal_idx = _kernel_calibration_split(X, args)
    held = set(cal_idx)
    fit_idx = [i for i in range(len(y)) if i not in held]
    pred.fit([X[i] for i in fit_idx], y[fit_idx])
    if cal_idx:
        # What the kernel predictor is asked for is a whole network's latency, so
        # its interval is calibrated on whole networks it did not train on.
        pred.calibrate([X[i] for i in cal_idx], y[cal_idx])
        pred.meta["calibration"]["source"] = str(args.db)
    pred.meta.setdefault("device", args.device)
    pred.meta.setdefault("source", str(args.db))
    out = pred.save(args.out)
    cal = f"; calibrated on {len(cal_idx)} held-out networks" if cal_idx else ""
    console.print(
        f"trained [bold]kernel[/] on {len(fit_idx)} measurements from {args.device}{cal}; saved {out}"
    )
    return 0


def _kernel_calibration_split(X: list[Any], args) -> list[int]:
    """Indices of the calibration networks kept aside by ``--calibrate`` (none without it)."""
    import numpy as np

    from hwnas.predictors.kernel import NetworkRecord

    if args.calibrate is None:
        return []
    share = _level(args.calibrate, "--calibrate")
    nets = [i for i, x in enumerate(X) if isinstance(x, NetworkRecord)]
    n_cal = int(round(share * len(nets)))
    if n_cal < 2:
        raise ConfigError(
            f"--calibrate {share} keeps {n_cal} of the {len(nets)} measured networks in {args.db} "
            "for calibration; it needs at least 2 (measure more networks with "
            "`hwnas sample-kernels`, or give a larger share)"
        )
    perm = np.random.default_rng([args.seed, 1]).permutation(len(nets))
    return sorted(nets[j] for j in perm[:n_cal])


def run_train(args) -> int:
    import numpy as np

    from hwnas.predictors import PREDICTORS, create_predictor, load_predictor
    from hwnas.predictors.data import (
        calibrate_dataset,
        default_encoding,
        fit_predictor,
        record_meta,
        split,
        split_calibration,
    )
    from hwnas.predictors.transfer import finetune
    from hwnas.spaces import get_space

    PREDICTORS.factory(args.predictor)  # unknown name: fail before reading data
    coverage = _level(args.coverage, "--coverage")
    if args.calibrate is not None:
        _level(args.calibrate, "--calibrate")
    hparams = _parse_sets(args.set)
    check_settings(PREDICTORS.factory(args.predictor), hparams, f"predictor {args.predictor}")
    if args.predictor == "kernel":
        return _train_kernel(args, hparams)
    if not args.space:
        raise ConfigError("give --space (the search space the architectures belong to)")
    if args.train_size is None:
        raise ConfigError("give --train-size N (how many architectures to train on)")
    space = get_space(args.space)
    ds = _load_dataset(args, space)
    train, test = split(ds, args.train_size, args.seed)
    cal = None
    if args.calibrate is not None:
        train, cal = split_calibration(train, args.calibrate, args.seed)
    sources = [s for s in (args.transfer_from or "").split(",") if s]
    encoding = args.encoding or default_encoding(args.predictor)
    if args.predictor == "flops-linear" and not args.encoding:
        # Recorded FLOPs are free; so are those space_cost counts per cell/layer (hook);
        # otherwise torch-flops avoids one export per architecture.
        from hwnas.profilers.space_cost import supports

        fast = np.isfinite(ds.flops).all() or supports(space)
        encoding = "flops" if fast else "torch-flops"
    if args.predictor == "transfer":
        if not sources:
            raise ConfigError(
                "--predictor transfer adapts trained predictors: give --transfer-from A.npz[,B.npz]"
            )
        srcs = [load_predictor(f, space=space.name) for f in sources]
        pred = create_predictor("transfer", **hparams)
        fit_predictor(pred, train, space, "onehot", {"sources": srcs, "space": space})
    elif sources:
        if args.predictor != "mlp" or len(sources) != 1:
            raise ConfigError(
                "--transfer-from with --predictor mlp fine-tunes ONE source mlp; to combine "
                "several source predictors (of any kind) use --predictor transfer"
            )
        src = load_predictor(sources[0], space=space.name, encoding="onehot")
        hparams.pop("seed", None)
        try:
            pred = finetune(
                src, train.features("onehot", space), train.y_ms, seed=args.seed, **hparams
            )
        except TypeError as exc:
            raise ConfigError(f"--set: {exc}; fine-tuning takes anchor= and epochs=") from exc
        record_meta(pred, train, space, "onehot")
    else:
        if args.predictor in ("mlp", "gbdt"):
            hparams.setdefault("seed", args.seed)
        try:
            pred = create_predictor(args.predictor, **hparams)
        except TypeError as exc:
            raise ConfigError(
                f"--set: {exc}; see the predictor's docstring for its settings"
            ) from exc
        fit_predictor(pred, train, space, encoding)
    if cal is not None:
        calibrate_dataset(pred, cal, space)
    out = pred.save(args.out)
    cal_text = f"; calibrated on {len(cal)} held-out architectures (split-conformal)" if cal else ""
    console.print(
        f"trained [bold]{pred.name}[/] ({pred.meta.get('encoding')} encoding) on {len(train)} "
        f"'{space.name}' architectures measured on {ds.device}{cal_text}; saved {out}"
    )
    for note in (_dropped_note(ds), _interval_note(pred, coverage)):
        if note:
            err_console.print(note)
    if len(test) >= 2 and not args.no_eval:
        m, im = _evaluate(pred, test, space, coverage)
        console.print(_interval_table(None, [(f"held out ({len(test)})", m, im)]))
        if args.json:
            print_json(
                {
                    "predictor": str(out),
                    "uncertainty": pred.uncertainty,
                    "calibration_size": pred.calibration_size,
                    "test": m.to_dict(),
                    "interval": _json_interval(im),
                }
            )
    elif args.json:
        print_json(
            {
                "predictor": str(out),
                "uncertainty": pred.uncertainty,
                "calibration_size": pred.calibration_size,
            }
        )
    return 0


def _evaluate(pred, ds, space, coverage: float) -> tuple[Any, Any]:
    """Point metrics, and interval metrics when the predictor gives intervals (else None)."""
    from hwnas.predictors.data import predict_dataset, predict_dataset_interval
    from hwnas.predictors.metrics import evaluate, interval_metrics

    if pred.uncertainty == "none":
        return evaluate(ds.y_ms, predict_dataset(pred, ds, space)), None
    point, lo, hi = predict_dataset_interval(pred, ds, space, coverage)
    return evaluate(ds.y_ms, point), interval_metrics(ds.y_ms, lo, hi, point, coverage)


def run_eval(args) -> int:
    import numpy as np

    from hwnas.predictors import load_predictor
    from hwnas.predictors.data import predict_dataset
    from hwnas.predictors.metrics import plot_predicted_vs_measured
    from hwnas.spaces import get_space

    coverage = _level(args.coverage, "--coverage")
    pred = load_predictor(args.predictor_file, space=args.space)
    space_name = args.space or pred.meta.get("space")
    if not space_name:
        raise PredictorError(f"{args.predictor_file} records no space; give --space")
    space = get_space(space_name)
    ds = _load_dataset(args, space)
    train_ids = set(pred.meta.get("train_arch_ids") or [])
    if train_ids and not args.include_train:
        keep = np.array([a.id not in train_ids for a in ds.archs])
        n_train = int((~keep).sum())
        ds = ds.subset(np.flatnonzero(keep))
        if n_train:
            err_console.print(
                f"left out {n_train} architectures the predictor was trained on "
                "(keep them with --include-train)"
            )
    if len(ds) < 2:
        raise ConfigError("fewer than 2 architectures to evaluate on; give more data")
    m, im = _evaluate(pred, ds, space, coverage)
    notes = [_dropped_note(ds), _interval_note(pred, coverage)]
    if im is None:
        notes.append(_no_interval_note(pred))
    for note in notes:
        if note:
            err_console.print(note)
    if args.json:
        print_json(
            {
                "predictor": args.predictor_file,
                "device": ds.device,
                **m.to_dict(),
                "uncertainty": pred.uncertainty,
                "calibration_size": pred.calibration_size,
                "interval": _json_interval(im),
            }
        )
    else:
        trained_on = pred.meta.get("device", "?")
        console.print(
            _interval_table(
                f"{pred.name} predictor (trained on {trained_on}) vs {ds.device} measurements",
                [(ds.source, m, im)],
            )
        )
        if args.db:  # the data's own agreement, so a weak predictor is told from weak data
            from hwnas.store.quality import ceiling_line

            missing = (
                f"no noise ceiling stored for {ds.device} (hwnas repeatability --db {args.db})"
            )
            console.print(ceiling_line(args.db, ds.device) or missing)
    if args.plot:
        path = plot_predicted_vs_measured(
            ds.y_ms,
            predict_dataset(pred, ds, space),
            args.plot,
            title=f"{pred.name} on {ds.device} ({len(ds)} archs)",
        )
        err_console.print(f"plot: {path}")
    return 0


def run_predict(args) -> int:
    from hwnas.predictors import load_predictor
    from hwnas.predictors.encoders import get_encoding
    from hwnas.spaces import get_space

    coverage = _level(args.coverage, "--coverage")
    pred = load_predictor(args.predictor_file)
    if pred.name == "kernel":  # models, not space strings: total, kernels, interval (kernels.py)
        from hwnas.commands.kernels import predict_models

        return predict_models(args.predictor_file, args.archs, args.json, args)
    enc = get_encoding(pred.meta.get("encoding") or "onehot")
    space_name = pred.meta.get("space")
    with_interval = pred.uncertainty != "none"
    rows = []
    for text in args.archs:
        is_file = text.lower().endswith(".onnx") or Path(text).is_file()
        if is_file:
            X = enc.encode_onnx([text])
            label = text
        else:
            if not space_name:
                raise PredictorError(
                    f"{args.predictor_file} records no search space, so '{text}' cannot be parsed; "
                    "give .onnx files"
                )
            space = get_space(space_name)
            arch = _parse_arch(space, text)
            X = enc.encode_archs(space, [arch])
            label = space.format(arch)
        point = float(pred.predict(X)[0])
        if with_interval:
            lo, hi = pred.predict_interval(X, coverage)
            rows.append((label, point, float(lo[0]), float(hi[0])))
        else:
            rows.append((label, point))
    notes = [_interval_note(pred, coverage)]
    if not with_interval:
        notes.append(_no_interval_note(pred))
    for note in notes:
        if note:
            err_console.print(note)
    if args.json:
        out = []
        for row in rows:
            item: dict[str, Any] = {"arch": row[0], "latency_ms": row[1]}
            if with_interval:
                item["interval_ms"] = [_finite(row[2]), _finite(row[3])]
            item.update(coverage=coverage if with_interval else None, uncertainty=pred.uncertainty)
            out.append(item)
        print_json(out)
    else:
        dev = pred.meta.get("device", "?")
        cols = ["architecture", "ms"]
        if with_interval:
            cols += [f"{coverage:.0%} low (ms)", f"{coverage:.0%} high (ms)"]
        title = f"{pred.name} predictor, device {dev}"
        if with_interval:
            title += f", {pred.uncertainty} interval"
        console.print(table(title, cols, rows))
    return 0


def _parse_arch(space, text: str):
    """An architecture string in the space's own form, or a benchmark index (nb201: 0..15624)."""
    t = text.strip()
    if t.isdigit() and hasattr(space, "from_index"):
        return space.from_index(int(t))
    return space.parse(text)


def _add_data_options(p, with_space_required: bool) -> None:
    src = p.add_argument_group("data (one of --db or --table)")
    src.add_argument("--db", default=None, metavar="FILE", help="hwnas store (SQLite file)")
    src.add_argument("--table", default=None, metavar="CSV", help="CSV table of measured archs")
    src.add_argument(
        "--latency-column", default=None, metavar="C", help="CSV column with latency (ms)"
    )
    src.add_argument(
        "--arch-column",
        default="arch",
        metavar="C",
        help="CSV column with the architecture string (default: arch)",
    )
    src.add_argument(
        "--device",
        default=None,
        help="with --db: which device's measurements; with --table: a name for the device",
    )
    src.add_argument(
        "--input-shape", default=None, help="with --db: which input shape, e.g. 1x3x224x224"
    )
    src.add_argument(
        "--include-degenerate",
        action="store_true",
        help="keep degenerate architectures (output cut off from input; ~0 ms on some devices)",
    )
    src.add_argument(
        "--include-flagged",
        action="store_true",
        help="with --db: keep rows the interference guard or the canary flagged and that were "
        "not re-measured (left out by default: they may be 2-5x too slow)",
    )
    p.add_argument(
        "--space",
        required=with_space_required,
        default=None,
        help="search space of the architectures (see `hwnas spaces`); "
        "train-predictor needs it, except for --predictor kernel",
    )


def _add_coverage_option(p, what: str) -> None:
    # A string checked in run(): a bad value then gets the one-line error, not argparse's usage.
    p.add_argument(
        "--coverage",
        default="0.9",
        metavar="C",
        help=f"nominal coverage, strictly between 0 and 1 (default 0.9), {what}",
    )


def register(sub) -> None:
    p = sub.add_parser(
        "train-predictor",
        help="train a latency predictor from a store or a CSV table",
        description=(
            "Train a latency predictor on N random architectures, save it as one .npz "
            "(no pickle) and report its metrics on the architectures left out."
        ),
    )
    _add_data_options(p, with_space_required=False)
    p.add_argument(
        "--predictor",
        default="mlp",
        help="mlp (default), flops-linear, gbdt, transfer, kernel (see hwnas.predictors)",
    )
    p.add_argument(
        "--encoding",
        default=None,
        help="onehot, flops, torch-flops or graph (default: the predictor's own)",
    )
    p.add_argument(
        "--train-size",
        type=count,
        default=None,
        metavar="N",
        help="architectures to train on (required, except for --predictor kernel)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the split and of training")
    p.add_argument(
        "--transfer-from",
        default=None,
        metavar="FILE[,FILE]",
        help="source-device predictors: with --predictor transfer, adapt them to this device "
        "from the N samples; with --predictor mlp, fine-tune one",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="predictor setting, repeatable (e.g. --set ensemble=5 --set hidden=[128,128])",
    )
    p.add_argument(
        "--calibrate",
        default=None,
        metavar="SHARE",
        help="keep this share of the training set aside (e.g. 0.2), fit on the rest and "
        "calibrate split-conformal intervals on it",
    )
    _add_coverage_option(p, "of the interval reported on the held-out architectures")
    p.add_argument(
        "--out", type=out_file, required=True, metavar="FILE", help="where to save the .npz"
    )
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.add_argument("--json", action="store_true", help="also print held-out metrics as JSON")
    p.set_defaults(func=run_train)

    p = sub.add_parser(
        "eval-predictor",
        help="metrics of a saved predictor on measured architectures (and a plot)",
        description=(
            "RMSE, MAPE, share within +-5%% and +-10%%, Spearman and Kendall of a saved predictor "
            "against measurements. Architectures it was trained on are left out."
        ),
    )
    p.add_argument("predictor_file", metavar="FILE", help="a .npz saved by train-predictor")
    _add_data_options(p, with_space_required=False)
    p.add_argument(
        "--plot", type=out_file, default=None, metavar="PNG", help="predicted-vs-measured figure"
    )
    p.add_argument(
        "--include-train", action="store_true", help="also evaluate on the training architectures"
    )
    _add_coverage_option(p, "of the interval whose empirical coverage is reported")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run_eval)

    p = sub.add_parser(
        "predict",
        help="predicted latency of architectures (space strings) or .onnx files",
        description="Predict latency with a saved predictor: ARCH is in the space's string "
        "form (e.g. '|nor_conv_3x3~0|+|...|' for nb201), a benchmark index (nb201: 0..15624) "
        "or a .onnx path (graph encodings). A calibrated or ensemble predictor also prints "
        "the central --coverage interval.",
    )
    p.add_argument("predictor_file", metavar="FILE", help="a .npz saved by train-predictor")
    p.add_argument(
        "archs",
        nargs="+",
        metavar="ARCH",
        help="architecture strings, benchmark indices (nb201) or .onnx files",
    )
    _add_coverage_option(p, "of the printed interval")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_predict)
