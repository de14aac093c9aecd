"""`hwnas flops MODEL`: MACs, FLOPs and parameters of a zoo model or an ONNX file."""

from __future__ import annotations

from hwnas.commands._common import (
    console,
    err_console,
    human,
    input_shape,
    print_json,
    resolve_model,
    table,
)

_CONVENTION = "1 MAC = 2 FLOPs; fvcore/thop call MACs 'FLOPs', so compare their figure with MACs"


def run(args) -> int:
    from hwnas.profilers.flops import count

    model = resolve_model(args.model, args.input_shape)
    report = count(model.artifact.path, model.artifact.shapes_dict())
    uncounted = report.uncounted
    if args.json:
        print_json({"model": model.name, **report.to_dict()})
        return 0
    shapes = "; ".join("x".join(map(str, s)) for s in report.input_shapes.values())
    summary = table(
        None,
        ["model", "input", "params", "MACs", "FLOPs"],
        [
            (
                model.name,
                shapes,
                human(report.params),
                human(report.macs),
                human(report.flops),
            )
        ],
    )
    summary.caption = _CONVENTION
    console.print(summary)
    if args.by_op:
        rows = [
            (r.op_type, r.count, human(r.macs), human(r.flops), human(r.params))
            for r in report.by_op_type().values()
        ]
        rows.append(
            (
                "total",
                len(report.nodes),
                human(report.macs),
                human(report.flops),
                human(report.params),
            )
        )
        console.print(table("per op type", ["op type", "nodes", "MACs", "FLOPs", "params"], rows))
    if uncounted:
        notes = sorted({f"{n.op_type} ({n.note})" for n in report.nodes if not n.counted})
        err_console.print(
            "[yellow]warning:[/] not counted (0 FLOPs assumed, totals are a lower bound): "
            + ", ".join(notes)
        )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "flops",
        help="count MACs, FLOPs and params of a zoo model or an .onnx file",
        description=(
            "Count MACs, FLOPs and parameters on the ONNX graph after shape inference. "
            + _CONVENTION
            + "."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="zoo model name (see `hwnas zoo`) or .onnx path")
    p.add_argument(
        "--input-shape",
        type=input_shape,
        default=None,
        metavar="N,C,H,W",
        help="input shape, e.g. 1,3,224,224 (default: the zoo model's own; needed for "
        "ONNX files with dynamic inputs)",
    )
    p.add_argument("--json", action="store_true", help="print JSON (totals, per op type, per node)")
    p.add_argument("--by-op", action="store_true", help="also print totals per op type")
    p.set_defaults(func=run)
