"""`hwnas zoo`: the built-in reference models, grouped by family."""

from __future__ import annotations

from hwnas.commands._common import console, human, print_json, table


def run(args) -> int:
    from hwnas.models import count_params, create_model, list_models, model_info, model_input_shape

    rows = []
    for name in list_models():
        info = model_info(name)
        rows.append(
            {
                "model": name,
                "family": info.family,
                "demo": info.demo,
                "input_shape": model_input_shape(name),
                "params": count_params(create_model(name)),
            }
        )
    rows.sort(key=lambda r: (r["family"], r["model"]))
    if args.json:
        print_json(rows)
        return 0
    t = table(
        "hwnas model zoo",
        ["model", "family", "input", "params", "demo"],
        [
            (
                r["model"],
                r["family"],
                "x".join(map(str, r["input_shape"])),
                human(r["params"]),
                "yes" if r["demo"] else "",
            )
            for r in rows
        ],
    )
    families = sorted({r["family"] for r in rows})
    t.caption = (
        f"{len(rows)} models in {len(families)} families: {', '.join(families)}. "
        "`hwnas profile demo` profiles the demo set, `hwnas profile all` every model."
    )
    console.print(t)
    return 0


def register(sub) -> None:
    p = sub.add_parser("zoo", help="list the built-in models and their families")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
