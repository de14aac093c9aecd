"""`hwnas search ALGO ...`: hardware-aware architecture search, resumable from its --db.

Every registered searcher is a valid ALGO; its own settings are given as
``--set key=value`` pairs and checked against the searcher's settings
dataclass (``--show-settings`` lists them). Adding a searcher to the
registry adds it here, nothing else to edit.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from hwnas.commands._common import (
    add_seconds_option,
    count,
    finite_float,
    input_size,
    nonneg_int,
    num_classes,
    out_dir,
    probability,
    seconds,
    seed,
)
from hwnas.commands._search_summary import (
    ARCH_WIDTH,
    accuracy_label,
    final_tables,
    records_table,
    reward_line,
)
from hwnas.errors import ConfigError

_EPILOG = """\
accuracy:  table:FILE[:COLUMN]   look up a benchmark CSV (column default: accuracy/cifar10_acc)
           naswot[:DATA]         NASWOT score at init on 'digits' (bundled) or an image folder
           proxy[:DATA]          accuracy after a short seeded training (digits or a folder)
latency:   device:NAME           measured (cached in --db: never measured twice), e.g. device:cpu-ort
           predictor:FILE.npz    a trained latency predictor
           table:COLUMN          a column of the --accuracy table (or table:FILE:COLUMN)
verify:    device:NAME           measure deciding candidates on a device (cpu-ort, adb:SERIAL, ssh:HOST)
           table:FILE:COLUMN     a published table acting as the device
units:     --latency-target 20ms | 0.02s | 500us;  --memory-target 2MB | 512KB | 2MiB
rewards:   soft (MnasNet, alpha=beta=-0.07), hard (alpha=0, beta=-1), constraint,
           memnas (MemNAS memory-efficiency vs --memnas-base), accuracy
With --reward hard|constraint cheap terms come first: a candidate whose predicted latency's
upper bound (--latency-quantile) breaks the target costs no accuracy evaluation; --budget
counts accuracy evaluations. Re-running the same command with the same --db resumes the
search (verifications included: none is repeated, none lost).
"""


# The built-in searchers, named here so that `hwnas --help` does not import
# torch; tests/test_searchers_cli.py checks the list against the registry.
BUILTIN_SEARCHERS = (
    "autoslim",
    "evolution",
    "latency-darts",
    "memnas",
    "mnasnet-rl",
    "naswot",
    "npenas",
    "random",
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search",
        help="search a space for accurate, fast, small networks (resumable)",
        description="Search a space with ALGO under latency/memory targets; every candidate's "
        "terms are committed to --db as they arrive.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "algo", metavar="ALGO", help=f"searcher: {', '.join(BUILTIN_SEARCHERS)} (or a plug-in)"
    )
    p.add_argument("--space", help="search space (nb201, mnasnet, mobilenetv2-channels, ...)")
    p.add_argument(
        "--input-size", type=input_size, default=None, help="override the space's input side"
    )
    p.add_argument(
        "--num-classes", type=num_classes, default=None, help="override the space's classes"
    )
    p.add_argument("--accuracy", help="accuracy term: table:FILE[:COLUMN] | naswot | proxy")
    p.add_argument(
        "--accuracy-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="evaluator setting (naswot: batch_size, data, seed...; proxy: epochs, batch_size, seed...)",
    )
    p.add_argument("--latency", help="latency term: device:D | predictor:FILE | table:COLUMN")
    p.add_argument("--latency-target", help="latency bound T, with a unit (20ms, 0.02s)")
    p.add_argument("--memory-target", help="memory bound M, with a unit (2MB, 512KiB)")
    p.add_argument(
        "--memory-metric",
        choices=("total", "activations", "params"),
        default="total",
        help="what is compared with --memory-target (default: params + peak activations)",
    )
    p.add_argument(
        "--reward",
        choices=("soft", "hard", "constraint", "memnas", "accuracy"),
        default=None,
        help="default: soft when a target is given, else accuracy",
    )
    p.add_argument("--alpha", type=finite_float, default=None, help="override the reward's alpha")
    p.add_argument("--beta", type=finite_float, default=None, help="override the reward's beta")
    p.add_argument("--memnas-lambda", type=finite_float, default=0.5, help="MemNAS accuracy weight")
    p.add_argument(
        "--memnas-base", default=None, help="base architecture (string) of the memnas reward"
    )
    p.add_argument(
        "--latency-quantile",
        type=probability,
        default=None,
        help="with --reward hard|constraint, skip the accuracy of candidates whose predicted "
        "latency at this quantile already breaks the target (default 0.9, the cautious end; "
        "0.1 with --verify: only what even the optimistic end breaks is skipped, and the "
        "device catches the optimists)",
    )
    p.add_argument(
        "--verify",
        default=None,
        metavar="SOURCE",
        help="measure the candidates that decide the answer: device:NAME or table:FILE:COLUMN",
    )
    p.add_argument(
        "--verify-budget",
        type=count,
        default=50,
        help="device measurements --verify may make (default 50)",
    )
    p.add_argument(
        "--budget",
        type=count,
        help="accuracy evaluations (distinct architectures; a time budget per measurement is "
        "--seconds)",
    )
    p.add_argument("--db", help="SQLite file: measurements cache and the resumable search log")
    p.add_argument("--seed", type=seed, default=0, help="random seed of the search (default 0)")
    p.add_argument(
        "--out",
        type=out_dir,
        default=None,
        help="folder for history.csv, summary.json and figures",
    )
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="searcher setting (see --show-settings)",
    )
    p.add_argument("--show-settings", action="store_true", help="list ALGO's settings and exit")
    g = p.add_argument_group("measuring (--latency device:...)")
    g.add_argument("--threads", type=count, default=None, help="runtime threads (default 1)")
    g.add_argument(
        "--runs", type=count, default=None, help="timed runs per model (default adaptive)"
    )
    g.add_argument(
        "--warmup", type=nonneg_int, default=None, help="warm-up runs (default adaptive)"
    )
    add_seconds_option(
        g, help="seconds of timed runs per model", dest="measure_seconds", old="--measure-seconds"
    )
    g.add_argument(
        "--timeout", type=seconds, default=None, help="seconds before a hung run is killed"
    )
    g.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure in a worker process so a crash or hang is a recorded failure (default "
        "on, as in hwnas sample)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="evaluate each batch of candidates on Ray tasks (extra 'ray'): the same history "
        "as without; a local cluster without ADDRESS (HOST:PORT or auto)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON (no bars)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--wide", action="store_true", help="full architecture strings in the summary tables"
    )
    p.set_defaults(func=run)


def _show_settings(algo: str) -> int:
    from hwnas.commands._common import console, table
    from hwnas.evaluators.base import settings_fields
    from hwnas.searchers import SEARCHERS, searcher_class

    cls = searcher_class(algo)
    rows = [(n, t, d) for n, d, t in settings_fields(cls.Settings)]
    console.print(table(f"{algo}: {SEARCHERS.help(algo)}", ["setting", "type", "default"], rows))
    doc = (cls.Settings.__doc__ or "").strip()
    if doc:
        console.print(doc)
    console.print(f"give them as: hwnas search {algo} ... --set KEY=VALUE")
    return 0


def _measure_settings(args) -> Any:
    from hwnas.profilers.latency import MeasureSettings

    for opt in ("runs", "threads"):
        v = getattr(args, opt)
        if v is not None and v < 1:
            raise ConfigError(f"--{opt} must be >= 1, got {v}")
    if args.warmup is not None and args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
    kw = {
        "runs": args.runs,
        "warmup": args.warmup,
        "budget_s": args.measure_seconds,
        "timeout_s": args.timeout,
    }
    return MeasureSettings(**{k: v for k, v in kw.items() if v is not None})


def build_objective(args, space, store) -> Any:
    """The :class:`~hwnas.objectives.Objective` described by the command line."""
    from hwnas.evaluators import create_evaluator
    from hwnas.evaluators.table import TableEvaluator
    from hwnas.objectives import Objective, create_latency_source, parse_bytes, parse_latency_ms

    lat_target = parse_latency_ms(args.latency_target) if args.latency_target else None
    mem_target = parse_bytes(args.memory_target) if args.memory_target else None
    accuracy = create_evaluator(args.accuracy, args.accuracy_set)
    latency = None
    if args.latency:
        table_path = accuracy.table.path if isinstance(accuracy, TableEvaluator) else None
        latency = create_latency_source(
            args.latency,
            table_path=table_path,
            store=store,
            settings=_measure_settings(args),
            threads=args.threads,
            isolate=args.isolate,
        )
    reward = args.reward or ("soft" if (lat_target or mem_target) else "accuracy")
    quantile = getattr(args, "latency_quantile", None)
    if quantile is None:
        # Without a device to catch it, an optimistic screen would hand back networks
        # over the target; with --verify it only costs a few more measurements and
        # keeps the accurate cells just under T (benchmarks/RESULTS.md, "Closed loop").
        quantile = 0.1 if getattr(args, "verify", None) else 0.9
    if not 0.0 < float(quantile) < 1.0:
        raise ConfigError(f"--latency-quantile must be in (0, 1), got {quantile}; e.g. 0.9")
    verifier = None
    if getattr(args, "verify", None):
        from hwnas.objectives.verify import create_verifier

        verifier = create_verifier(
            args.verify,
            budget=args.verify_budget,
            store=store,
            settings=_measure_settings(args),
            threads=args.threads,
            isolate=args.isolate,
        )
    elif getattr(args, "verify_budget", 50) != 50:
        raise ConfigError(
            "--verify-budget needs --verify SOURCE (device:NAME or table:FILE:COLUMN)"
        )
    obj = Objective(
        accuracy,
        latency,
        latency_target_ms=lat_target,
        memory_target_bytes=mem_target,
        reward=reward,
        alpha=args.alpha,
        beta=args.beta,
        memory_metric=args.memory_metric,
        memnas_lambda=args.memnas_lambda,
        store=store,
        latency_quantile=quantile,
    )
    obj.verifier = verifier
    if verifier is not None:
        verifier.check(obj, space)
    if args.memnas_base:
        base = space.parse(args.memnas_base)
        t = obj.evaluate(space, [base])[0]
        if t.accuracy is None or t.peak_activation_bytes is None or t.param_bytes is None:
            raise ConfigError("the memnas base network needs accuracy and memory terms")
        obj.set_memnas_base(t.accuracy, t.peak_activation_bytes, t.param_bytes)
    elif reward == "memnas":
        raise ConfigError(
            "--reward memnas ranks candidates against a base network; give --memnas-base ARCH"
        )
    return obj


def _bar_total_from_searcher(searcher: Any, budget: int, bar: Any, show: bool) -> None:
    """Once the searcher is reset, size the bar by what it will propose, and say so.

    Latency-DARTS proposes ``snapshots`` cells, MemNAS 1 + rounds x (top_k + explore),
    AutoSlim one per target: with a larger ``--budget`` the bar would end at ``1/5``.
    The searcher's own ``reset`` is wrapped on this instance only (the run loop is not
    touched); a searcher without ``expected_evaluations`` keeps the budget.
    """
    expected = getattr(searcher, "expected_evaluations", None)
    if expected is None:
        return
    reset = searcher.reset

    def reset_then_size(*a: Any, **kw: Any) -> None:
        reset(*a, **kw)
        n = int(expected())
        if n < budget:
            bar.update(total=max(1, n))
            if show:
                from hwnas.commands._common import err_console

                err_console.print(
                    f"{searcher.name} will evaluate at most {n} candidate(s) with these "
                    f"settings; --budget {budget} is an upper bound"
                )

    searcher.reset = reset_then_size


def run(args) -> int:
    if args.show_settings:
        return _show_settings(args.algo)
    from hwnas.commands._common import console, err_console, print_json, progress
    from hwnas.searchers import SearchLog, create_searcher
    from hwnas.spaces import get_space
    from hwnas.store import Store

    searcher = create_searcher(args.algo, args.settings)  # unknown ALGO/setting: fail first
    missing = [
        opt
        for opt, v in (
            ("--space", args.space),
            ("--accuracy", args.accuracy),
            ("--budget", args.budget),
            ("--db", args.db),
        )
        if v is None
    ]
    if missing:
        raise ConfigError(f"hwnas search needs {', '.join(missing)} (see hwnas search --help)")
    if args.budget < 1:
        raise ConfigError(f"--budget must be >= 1, got {args.budget}")
    space = get_space(args.space, input_size=args.input_size, num_classes=args.num_classes)
    store = Store(args.db)
    log = SearchLog(args.db)
    objective = build_objective(args, space, store)
    show = not (args.quiet or args.json)
    try:
        with progress(args.budget, f"{args.algo} on {space.name}", enabled=show) as bar:
            seen: set[str] = set()
            _bar_total_from_searcher(searcher, args.budget, bar, show)

            def on_record(rec, history) -> None:
                if rec.arch.id not in seen:
                    seen.add(rec.arch.id)
                    best = history.best()
                    bar.advance(
                        status=f"best {best.terms.accuracy:.2f}"
                        if best and best.terms.accuracy is not None
                        else ""
                    )

            if getattr(args, "ray", None) is not None:  # --ray: evaluations on Ray tasks
                from hwnas.distributed.cli import search_on_ray

                history = search_on_ray(
                    searcher,
                    space,
                    objective,
                    args.budget,
                    args.seed,
                    address=args.ray,
                    log=log,
                    progress=on_record,
                )
            else:
                history = searcher.run(
                    space, objective, args.budget, args.seed, log=log, progress=on_record
                )
            bar.finish()  # a searcher that proposed fewer than --budget ends at N/N
    finally:
        objective.close()
    summary = history.summary()
    if history.meta.get("verification"):
        summary["verification"] = history.meta["verification"]
    summary["replayed"] = history.meta.get("replayed", 0)
    summary["converged"] = history.meta.get("converged", False)
    if args.out:
        from hwnas.report.search import plot_front, plot_reward_over_time

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        history.write_csv(out / "history.csv")
        plot_reward_over_time(history, out / "reward.png")
        if any(
            r.terms.latency_ms is not None or r.terms.memory_bytes is not None
            for r in history.records
        ):
            plot_front(
                history,
                out / "front.png",
                latency_target_ms=objective.latency_target_ms,
                memory_target_bytes=objective.memory_target_bytes,
            )
        with open(out / "summary.json", "w") as f:
            json.dump(_plain({**summary, "meta": history.meta}), f, indent=1, default=str)
        summary["out"] = str(out)
    if args.json:
        print_json(_plain(summary))
        return 0
    console.print(
        f"run {history.meta['run_id']}: {summary['evaluated']} records, {summary['unique']} distinct "
        f"architectures ({summary['replayed']} replayed from {args.db}), {summary['feasible']} feasible"
        + (" — converged early" if summary["converged"] else "")
    )
    console.print(
        f"accuracy evaluations {summary['accuracy_evaluations']} (--budget), rejected on cheap "
        f"terms {summary['screened']}, latency predictions {summary['latency_predictions']}, "
        f"device measurements {summary['device_measurements']}"
    )
    if summary.get("stopped"):
        err_console.print(f"[yellow]{summary['stopped']}[/]")
    verified = bool(history.meta.get("verify"))
    acc = accuracy_label(objective, args.algo)
    console.print(reward_line(objective, args.algo))
    best = history.answer()
    if best is None and verified:
        v = summary.get("verification") or {}
        err_console.print(
            f"[yellow]no candidate was verified feasible: {v.get('verified', 0)} measured on "
            f"{history.meta['verify']}, none met the target; the search has no answer whose "
            "measured latency meets it (raise --verify-budget or --latency-target)[/]"
        )
    elif best is None:
        err_console.print("[yellow]no evaluated candidate met the constraints[/]")
    elif args.algo != "naswot":  # naswot's answer is its pick, in its own table below
        title = (
            f"answer: measured on {history.meta['verify']} within the target"
            if verified
            else "answer: best feasible by reward"
        )
        console.print(records_table(title, [best], acc, verified, args.wide))
    if history.final:
        for t in final_tables(args.algo, history.final, history, objective, args.wide):
            console.print(t)
    front = history.pareto_front()
    if front:
        console.print(
            records_table(f"Pareto front ({len(front)})", front[:20], acc, verified, args.wide)
        )
    longest = max((len(r.arch_str) for r in history.records), default=0)
    if not args.wide and longest > ARCH_WIDTH:
        err_console.print(
            "architectures shortened: --wide prints them in full (--out DIR: history.csv has them)"
        )
    if args.out:
        err_console.print(
            f"wrote {summary['out']}/history.csv, summary.json, reward.png, front.png"
        )
    return 0


def _plain(v: Any) -> Any:
    """Strict JSON: non-finite floats (a failed measurement's inf) become strings."""
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v
