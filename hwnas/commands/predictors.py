"""`hwnas train-predictor`, `hwnas eval-predictor`, `hwnas predict`: latency predictors.

Thin front for :mod:`hwnas.predictors`: read measurements (an hwnas store or
a CSV table), train on a random subset, save one ``.npz`` (no pickle), report
the metrics on the architectures left out, and predict new architectures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hwnas.commands._common import console, err_console, print_json, table
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
    )


def _metrics_table(title: str, rows: list[tuple[str, Any]]) -> Any:
    from hwnas.predictors.metrics import FIELDS, HEADERS

    return table(title, ["data", *[HEADERS[f] for f in FIELDS]], [(n, *m.row()) for n, m in rows])


def _dropped_note(ds) -> str:
    if not ds.dropped:
        return ""
    parts = ", ".join(f"{v} {k}" for k, v in ds.dropped.items())
    hint = " (keep them with --include-degenerate)" if "degenerate" in ds.dropped else ""
    return f"left out: {parts}{hint}"


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
    X, y = kernel_training_data(Store(args.db), args.device)
    hparams.setdefault("seed", args.seed)
    pred = create_predictor("kernel", **hparams)
    pred.fit(X, y)
    pred.meta.setdefault("device", args.device)
    pred.meta.setdefault("source", str(args.db))
    out = pred.save(args.out)
    console.print(
        f"trained [bold]kernel[/] on {len(y)} measurements from {args.device}; saved {out}"
    )
    return 0


def run_train(args) -> int:
    import numpy as np

    from hwnas.predictors import PREDICTORS, create_predictor, load_predictor
    from hwnas.predictors.data import (
        default_encoding,
        fit_predictor,
        predict_dataset,
        record_meta,
        split,
    )
    from hwnas.predictors.metrics import evaluate
    from hwnas.predictors.transfer import finetune
    from hwnas.spaces import get_space

    PREDICTORS.factory(args.predictor)  # unknown name: fail before reading data
    hparams = _parse_sets(args.set)
    if args.predictor == "kernel":
        return _train_kernel(args, hparams)
    if not args.space:
        raise ConfigError("give --space (the search space the architectures belong to)")
    if args.train_size is None:
        raise ConfigError("give --train-size N (how many architectures to train on)")
    space = get_space(args.space)
    ds = _load_dataset(args, space)
    train, test = split(ds, args.train_size, args.seed)
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
    out = pred.save(args.out)
    console.print(
        f"trained [bold]{pred.name}[/] ({pred.meta.get('encoding')} encoding) on {len(train)} "
        f"'{space.name}' architectures measured on {ds.device}; saved {out}"
    )
    note = _dropped_note(ds)
    if note:
        err_console.print(note)
    if len(test) >= 2 and not args.no_eval:
        m = evaluate(test.y_ms, predict_dataset(pred, test, space))
        console.print(_metrics_table(None, [(f"held out ({len(test)})", m)]))
        if args.json:
            print_json({"predictor": str(out), "test": m.to_dict()})
    return 0


def run_eval(args) -> int:
    import numpy as np

    from hwnas.predictors import load_predictor
    from hwnas.predictors.data import predict_dataset
    from hwnas.predictors.metrics import evaluate, plot_predicted_vs_measured
    from hwnas.spaces import get_space

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
    y = predict_dataset(pred, ds, space)
    m = evaluate(ds.y_ms, y)
    note = _dropped_note(ds)
    if note:
        err_console.print(note)
    if args.json:
        print_json({"predictor": args.predictor_file, "device": ds.device, **m.to_dict()})
    else:
        trained_on = pred.meta.get("device", "?")
        console.print(
            _metrics_table(
                f"{pred.name} predictor (trained on {trained_on}) vs {ds.device} measurements",
                [(ds.source, m)],
            )
        )
    if args.plot:
        path = plot_predicted_vs_measured(
            ds.y_ms, y, args.plot, title=f"{pred.name} on {ds.device} ({len(ds)} archs)"
        )
        err_console.print(f"plot: {path}")
    return 0


def run_predict(args) -> int:
    from hwnas.predictors import load_predictor
    from hwnas.predictors.encoders import get_encoding
    from hwnas.spaces import get_space

    pred = load_predictor(args.predictor_file)
    enc = get_encoding(pred.meta.get("encoding") or "onehot")
    space_name = pred.meta.get("space")
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
            arch = space.parse(text)
            X = enc.encode_archs(space, [arch])
            label = space.format(arch)
        rows.append((label, float(pred.predict(X)[0])))
    if args.json:
        print_json([{"arch": a, "latency_ms": v} for a, v in rows])
    else:
        dev = pred.meta.get("device", "?")
        console.print(table(f"{pred.name} predictor, device {dev}", ["architecture", "ms"], rows))
    return 0


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
    p.add_argument(
        "--space",
        required=with_space_required,
        default=None,
        help="search space of the architectures (see `hwnas spaces`); "
        "train-predictor needs it, except for --predictor kernel",
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
        type=int,
        default=None,
        metavar="N",
        help="architectures to train on (required, except for --predictor kernel)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
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
    p.add_argument("--out", required=True, metavar="FILE", help="where to save the .npz")
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
    p.add_argument("--plot", default=None, metavar="PNG", help="predicted-vs-measured figure")
    p.add_argument(
        "--include-train", action="store_true", help="also evaluate on the training architectures"
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run_eval)

    p = sub.add_parser(
        "predict",
        help="predicted latency of architectures (space strings) or .onnx files",
        description="Predict latency with a saved predictor: ARCH is in the space's string "
        "form (e.g. '|nor_conv_3x3~0|+|...|' for nb201) or a .onnx path (graph encodings).",
    )
    p.add_argument("predictor_file", metavar="FILE", help="a .npz saved by train-predictor")
    p.add_argument("archs", nargs="+", metavar="ARCH", help="architecture strings or .onnx files")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_predict)
