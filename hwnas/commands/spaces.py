"""`hwnas spaces`: list the search spaces, sample architectures, inspect one."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import numpy as np

from hwnas.commands._common import (
    console,
    count,
    human,
    input_size,
    num_classes,
    print_json,
    seed,
    table,
)
from hwnas.errors import ConfigError


def _space(args):
    from hwnas.spaces import get_space

    return get_space(args.space, input_size=args.input_size, num_classes=args.num_classes)


def _describe(space, arch) -> dict:
    from hwnas.models import count_params

    row = {
        "space": space.name,
        "id": arch.id,
        "arch": space.format(arch),
        "choices": list(arch.choices),
        "params": count_params(space.build(arch)),
        "input_shape": list(space.input_shape),
    }
    if hasattr(space, "index_of"):
        row["benchmark_index"] = space.index_of(arch)
    if hasattr(space, "is_degenerate"):
        row["degenerate"] = space.is_degenerate(arch)
    if callable(getattr(space, "channels", None)):  # memnas-cells: an int (stem width)
        row["channels"] = space.channels(arch)
    return row


def run_list(args) -> int:
    from hwnas.spaces import SPACES, get_space, list_spaces

    rows = []
    for name in list_spaces():
        s = get_space(name)
        rows.append(
            {
                "space": name,
                "decisions": len(s.decisions()),
                "size": s.size(),
                "encoding_length": s.encoding_length,
                "input_shape": list(s.input_shape),
                "num_classes": s.num_classes,
                "help": SPACES.help(name),
            }
        )
    if args.json:
        print_json(rows)
        return 0
    console.print(
        table(
            "hwnas search spaces",
            ["space", "decisions", "architectures", "encoding", "input", "classes", "about"],
            [
                (
                    r["space"],
                    r["decisions"],
                    f"{r['size']:.3g}",
                    r["encoding_length"],
                    "x".join(map(str, r["input_shape"])),
                    r["num_classes"],
                    r["help"],
                )
                for r in rows
            ],
        )
    )
    return 0


def _distinct(space, n: int, seed: int) -> Iterator:
    """``n`` distinct architectures, one at a time (nothing but their ids is kept)."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    misses = 0
    while len(seen) < n:
        arch = space.sample(rng)
        if arch.id in seen:
            misses += 1
            if misses > 50 * n + 1000:  # a space far smaller than it claims
                raise ConfigError(
                    f"found only {len(seen)} distinct architectures of '{space.name}' in "
                    f"{misses} draws; ask for fewer"
                )
            continue
        seen.add(arch.id)
        yield arch


def run_sample(args) -> int:
    if args.n < 1:
        raise ConfigError(f"-n must be at least 1, got {args.n}")
    space = _space(args)
    size = space.size()
    if args.n > size:
        raise ConfigError(
            f"space '{space.name}' has only {size} distinct architectures; ask for -n {size} or fewer"
        )
    # Streamed: each architecture is printed as soon as it is built, so a large -n
    # shows progress at once and holds nothing but the ids seen.
    if args.json:
        sys.stdout.write("[")
    for i, arch in enumerate(_distinct(space, args.n, args.seed)):
        r = _describe(space, arch)
        if args.json:
            sys.stdout.write(("," if i else "") + "\n" + json.dumps(r, default=str))
            sys.stdout.flush()
            continue
        extra = f"  index {r['benchmark_index']}" if "benchmark_index" in r else ""
        console.print(f"{r['id']}  {human(r['params'])} params{extra}  {r['arch']}", soft_wrap=True)
    if args.json:
        sys.stdout.write("\n]\n")
    return 0


def run_show(args) -> int:
    space = _space(args)
    text = args.arch.strip()
    if text.isdigit() and hasattr(space, "from_index"):
        arch = space.from_index(int(text))
    else:
        arch = space.parse(text)
    row = _describe(space, arch)
    if args.json:
        print_json(row)
        return 0
    for key, value in row.items():
        console.print(f"{key:>16}: {value}", soft_wrap=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("spaces", help="list search spaces, sample or inspect architectures")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_list)
    actions = p.add_subparsers(dest="spaces_command", metavar="ACTION")

    def common(q) -> None:
        q.add_argument("space", help="space name (see `hwnas spaces`)")
        q.add_argument("--input-size", type=input_size, default=None, help="input resolution")
        q.add_argument("--num-classes", type=num_classes, default=None, help="classifier outputs")
        q.add_argument("--json", action="store_true", help="print JSON")

    q = actions.add_parser("list", help="list the search spaces (the default)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=run_list)
    q = actions.add_parser("sample", help="sample architectures uniformly")
    common(q)
    q.add_argument(
        "-n",
        type=count,
        default=5,
        help="how many distinct architectures (default 5; at most the space's size)",
    )
    q.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    q.set_defaults(func=run_sample)
    q = actions.add_parser(
        "show", help="parse an architecture string (or a NAS-Bench-201 index) and describe it"
    )
    common(q)
    q.add_argument("arch", help="the space's string form, or a benchmark index for nb201")
    q.set_defaults(func=run_show)
