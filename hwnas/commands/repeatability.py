"""`hwnas repeatability --db F -n 50`: re-measure a random subset and store the noise ceiling."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hwnas.commands._common import (
    add_measure_options,
    console,
    count,
    err_console,
    print_json,
    progress,
    seed,
    settings_from_args,
    table,
)
from hwnas.commands._trust import add_interference_options, guard_device
from hwnas.errors import ConfigError
from hwnas.export import EXPORTERS


def split_store_name(name: str) -> tuple[str, int]:
    """``cpu-ort-2t`` -> (``cpu-ort``, 2); a name without a thread suffix -> (name, 1)."""
    m = re.fullmatch(r"(.+)-(\d+)t", name)
    return (m.group(1), int(m.group(2))) if m else (name, 1)


def _stored_artifact(store: Any, sha: str | None) -> Any:
    """The exact file measured before, when it is still on disk and unchanged."""
    if not sha:
        return None
    from hwnas.export.artifact import Artifact, sha256_file

    row = store.conn.execute(
        "SELECT path, format, input_shapes FROM artifacts WHERE sha256=?", (sha,)
    ).fetchone()
    if row is None or not Path(row["path"]).exists() or sha256_file(row["path"]) != sha:
        return None
    shapes = tuple((n, tuple(s)) for n, s in json.loads(row["input_shapes"]))
    return Artifact(
        path=row["path"], format=row["format"], sha256=sha, input_shapes=shapes, label=sha[:12]
    )


def run(args) -> int:
    from hwnas.campaigns.repeatability import choose_rows, repeat_rows, unflagged_rows
    from hwnas.campaigns.step import prepare_arch
    from hwnas.devices import DEVICES, create_device
    from hwnas.devices.isolated import IsolatedDevice
    from hwnas.spaces import get_space
    from hwnas.store import Store

    if args.n < 2:
        raise ConfigError(f"-n must be >= 2 (pairs to compare), got {args.n}")
    db = Path(args.db)
    if not db.exists():
        raise ConfigError(f"no database at {db}; give the --db file a campaign wrote")
    with Store(db) as store:
        measured = [
            r[0]
            for r in store.conn.execute(
                "SELECT DISTINCT device FROM measurements WHERE status='ok' AND source='measured'"
            )
        ]
        name = args.device_name or (measured[0] if len(measured) == 1 else None)
        if name is None:
            raise ConfigError(
                f"{db} holds measurements of {', '.join(measured) or 'no device'}; choose one with --device-name"
            )
        run_on, threads = split_store_name(name)
        run_on = args.device or run_on
        threads = args.threads or threads
        DEVICES.factory(run_on)
        rows = unflagged_rows(store, name)
        if len(rows) < 2:
            raise ConfigError(f"{db} has fewer than 2 measured rows for {name}; nothing to repeat")
        chosen = choose_rows(rows, args.n, args.seed)
        settings = settings_from_args(args)
        kwargs = {"threads": threads}
        device = (
            IsolatedDevice(run_on, **kwargs) if args.isolate else create_device(run_on, **kwargs)
        )
        device = guard_device(args, device, run_on, threads, err_console.print)
        spaces: dict[tuple[str, str], Any] = {}

        def remeasure(arch_id: str) -> Any:
            row = next(r for r in chosen if r["arch_id"] == arch_id)
            art = (
                None
                if run_on.endswith("torch")
                else _stored_artifact(store, row.get("artifact_sha256"))
            )
            if art is None:
                arch = store.arch(arch_id)
                key = (arch.space, row["input_shape"])
                if key not in spaces:
                    size = int(row["input_shape"].split("x")[-1])
                    spaces[key] = get_space(arch.space, input_size=size)
                prep = prepare_arch(spaces[key], arch, check=False, exporter=args.exporter)
                art = prep.artifact
            if art is None:
                return None
            m = device.measure(art, settings)
            bar.advance(status=f"{arch_id}: {row['median_ms']:.2f} -> {m.median:.2f} ms")
            return m

        try:
            with progress(
                len(chosen), f"re-measuring {len(chosen)} of {len(rows)} on {name}"
            ) as bar:
                res = repeat_rows(store, chosen, remeasure, device_name=name)
        finally:
            device.close()
    if args.json:
        print_json({k: v for k, v in res.items() if k != "pairs"} | {"device": name})
        return 0
    t = table(
        f"noise ceiling of {name} in {db.name}: stored vs re-measured (shuffled order)",
        ["archs", "within +-5%", "within +-10%", "Spearman", "median |diff|"],
        [
            (
                res["n"],
                f"{res['within5']:.1%}",
                f"{res['within10']:.1%}",
                res["spearman"],
                f"{res['median_rel_diff']:.1%}",
            )
        ],
    )
    t.caption = "stored in the repeatability table; `hwnas eval-predictor --db` prints it beside a predictor"
    console.print(t)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "repeatability",
        help="re-measure a random subset of a database and store the noise ceiling",
        description=(
            "Re-measure N random architectures of a device's rows in a shuffled order and store "
            "how well the two agree (+-5%, +-10%, Spearman): the ceiling any predictor trained "
            "on these rows is bounded by."
        ),
    )
    p.add_argument("--db", default="hwnas.db", help="SQLite file (default hwnas.db)")
    p.add_argument("-n", type=count, default=50, help="architectures to re-measure (default 50)")
    add_measure_options(p)
    p.set_defaults(device=None)
    p.add_argument(
        "--device-name", default=None, help="stored device name (default: the only one measured)"
    )
    p.add_argument("--seed", type=seed, default=0, help="which rows and in what order (default 0)")
    p.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default="dynamo",
        help="exporter for archs whose file is gone (use the campaign's; default dynamo)",
    )
    p.add_argument(
        "--isolate",
        action=__import__("argparse").BooleanOptionalAction,
        default=True,
        help="measure in a worker process (default on)",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_interference_options(p)
    p.set_defaults(func=run)
