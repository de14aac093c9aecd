"""What `hwnas search` prints at the end: readable tables, never raw JSON (that is --json).

One table for the answer and one for the front, as for every searcher, plus, for the
searchers whose run has a structure of its own (NASWOT's pick, Latency-DARTS' epochs,
MemNAS' rounds, AutoSlim's greedy path), one table of that. Each table says which
reward decided and where each latency came from (measured on a device, predicted, or
looked up in a table); architecture strings are shortened unless ``--wide``.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from hwnas.commands._common import fmt

#: Characters of an architecture string shown without --wide (the other columns need the rest).
ARCH_WIDTH = 60


def latency_kind(source: str | None) -> str:
    """``measured`` / ``measured (cached)`` / ``predicted`` / ``looked up`` from a term's source."""
    if not source:
        return "-"
    if source.startswith("device:"):
        return "measured (cached)" if "cached" in source else "measured"
    if source.startswith("predictor:"):
        return "predicted" + (" (corrected)" if "corrected" in source else "")
    if source.startswith("table:"):
        return "looked up"
    return source


def accuracy_label(objective: Any, algo: str) -> str:
    """The accuracy column's name: ``score`` for NASWOT and other unit-less terms."""
    if algo == "naswot":
        return "score"  # the search's records hold the NASWOT score, whatever --accuracy is
    unit = getattr(getattr(objective, "accuracy", None), "unit", "%")
    return "accuracy %" if unit == "%" else "score"


def reward_line(objective: Any, algo: str) -> str:
    """One sentence: the reward that decided the answer, and what the targets meant for it."""
    kind = "memnas" if algo == "memnas" else getattr(objective, "reward_kind", None) or "accuracy"
    t = getattr(objective, "latency_target_ms", None)
    m = getattr(objective, "memory_target_bytes", None)
    targets = ", ".join(
        x for x in (f"latency <= {t:g} ms" if t else "", f"memory <= {m} B" if m else "") if x
    )
    alpha = getattr(objective, "alpha", None)
    beta = getattr(objective, "beta", None)
    if kind == "soft":
        text = (
            f"soft (MnasNet ACC x (LAT/T)^w, alpha {alpha:g}, beta {beta:g}): {targets} is a "
            "preference, not a bound (--reward hard|constraint makes it one)"
            if alpha is not None and beta is not None
            else "soft (MnasNet)"
        )
    elif kind == "hard":
        text = f"hard (MnasNet alpha 0, beta -1): {targets} penalised steeply above it"
    elif kind == "constraint":
        text = f"constraint: the accuracy when {targets or 'every target'} holds, else minus the excess"
    elif kind == "memnas":
        text = "memnas: MemNAS' memory efficiency against the base network"
    else:
        text = "accuracy alone" + (f"; {targets} decides feasibility only" if targets else "")
    if algo == "naswot":
        return (
            "decided by: the highest NASWOT score among feasible networks"
            + (f" ({targets})" if targets else "")
            + "; the reward column is recorded, not used for the pick"
        )
    return f"decided by: reward {text}"


def _arch_column(t: Table, wide: bool) -> None:
    t.add_column("architecture", justify="left", overflow="fold" if wide else "ellipsis",
                 no_wrap=not wide, max_width=None if wide else ARCH_WIDTH)  # fmt: skip


def records_table(
    title: str, records: list[Any], acc_label: str, verified: bool, wide: bool
) -> Table:
    """Step, architecture, accuracy or score, latency (and where from), memory, reward, feasible."""
    t = Table(title=title, header_style="bold")
    t.add_column("step", justify="right")
    _arch_column(t, wide)
    t.add_column(acc_label, justify="right")
    if verified:
        t.add_column("predicted ms", justify="right")
        t.add_column("measured ms", justify="right")
    else:
        t.add_column("latency ms", justify="right")
        t.add_column("latency from", justify="left")
    t.add_column("memory MiB", justify="right")
    t.add_column("reward", justify="right")
    t.add_column("feasible", justify="left")
    for r in records:
        x = r.terms
        mem = None if x.memory_bytes is None else x.memory_bytes / 2**20
        if verified:
            lat = [
                x.latency_predicted_ms,
                x.latency_measured_ms if x.verified == "ok" else x.verified,
            ]
        else:
            lat = [x.latency_ms, latency_kind(x.sources.get("latency"))]
        row = [r.step, r.arch_str, x.accuracy, *lat, mem, x.reward, "yes" if x.feasible else "no"]
        t.add_row(*[fmt(v) for v in row])
    return t


def _kv_table(title: str, rows: list[tuple[str, Any]], wide: bool) -> Table:
    t = Table(title=title, header_style="bold", show_header=False)
    t.add_column("", justify="left", style="bold")
    t.add_column("", justify="left", overflow="fold" if wide else "ellipsis",
                 no_wrap=not wide, max_width=None if wide else 100)  # fmt: skip
    for k, v in rows:
        t.add_row(k, fmt(v))
    return t


def _mib(v: Any) -> Any:
    return None if v is None else f"{float(v) / 2**20:.3f}"


def naswot_tables(final: dict, history: Any, objective: Any, wide: bool) -> list[Table]:
    if not final.get("arch"):
        return [_kv_table("naswot pick", [("pick", final.get("reason", "none"))], wide)]
    terms = final.get("terms") or {}
    acc_unit = getattr(getattr(objective, "accuracy", None), "unit", "%")
    rows: list[tuple[str, Any]] = [
        ("step", final.get("step")),
        ("architecture", final.get("arch")),
        ("NASWOT score", final.get("naswot_score")),
    ]
    name = getattr(objective.accuracy, "name", "accuracy")
    if name != "naswot":  # the pick's accuracy from the objective's own term
        rows.append(
            (f"{name} " + ("accuracy %" if acc_unit == "%" else "score"), terms.get("accuracy"))
        )
    rows += [
        ("latency ms", terms.get("latency_ms")),
        ("latency from", latency_kind((terms.get("sources") or {}).get("latency"))),
        ("memory MiB", _mib(terms.get("memory_bytes"))),
        ("feasible", "yes" if terms.get("feasible") else "no"),
        ("seconds per scored network", final.get("seconds_per_arch")),
    ]
    return [_kv_table("naswot pick: highest score among feasible networks", rows, wide)]


def latency_darts_tables(final: dict, history: Any, objective: Any, wide: bool) -> list[Table]:
    lat = final.get("latency_predictor") or {}
    if lat.get("kind") == "trained":
        src = lat.get("source") or {}
        where = src.get("device") or src.get("column") or "the latency source"
        module = f"mlp trained here on {lat.get('samples')} cells of {where}"
    elif lat.get("kind") == "file":
        module = f"mlp from {lat.get('path')}"
    else:
        module = "none (lambda 0: plain DARTS)"
    rec = next((r for r in reversed(history.records) if r.arch_str == final.get("arch")), None)
    rows: list[tuple[str, Any]] = [
        ("derived cell", final.get("arch")),
        ("lambda", final.get("lambda")),
        ("latency module", module),
        ("predicted latency ms (module)", final.get("predicted_latency_ms")),
    ]
    if rec is not None:
        rows += [
            (
                f"latency ms ({latency_kind(rec.terms.sources.get('latency'))})",
                rec.terms.latency_ms,
            ),
            (accuracy_label(objective, "latency-darts"), rec.terms.accuracy),
        ]
    out = [_kv_table("latency-darts: the derived cell", rows, wide)]
    epochs = final.get("epochs") or []
    if epochs:
        t = Table(title="latency-darts epochs", header_style="bold")
        for c in ("epoch", "train CE", "val CE", "relaxed LAT ms", "derived LAT ms",
                  "supernet val acc %"):  # fmt: skip
            t.add_column(c, justify="right")
        _arch_column(t, wide)
        for e in epochs:
            t.add_row(*[fmt(e.get(k)) for k in ("epoch", "train_ce", "val_ce", "latency_relaxed_ms",
                        "latency_derived_ms", "supernet_val_acc", "arch")])  # fmt: skip
        out.append(t)
    return out


def memnas_tables(final: dict, history: Any, objective: Any, wide: bool) -> list[Table]:
    t = Table(
        title=f"memnas rounds (lambda {final.get('lambda')}, memory weights "
        f"{final.get('memory_weights')}, grow {final.get('grow')})",
        header_style="bold",
    )
    for c in ("round", "candidates (grow/trim)", "evaluated", "tau"):
        t.add_column(c, justify="right")
    _arch_column(t, wide)
    t.add_column("move", justify="left", overflow="fold" if wide else "ellipsis", no_wrap=not wide)
    for c in ("reward", "accuracy", "params MiB", "peak MiB", "feasible"):
        t.add_column(c, justify="right")
    init = final.get("initial") or {}
    t.add_row("0", "-", "1", "-", fmt(init.get("arch")), "base", "-", fmt(init.get("accuracy")),
              _mib(init.get("param_bytes")), _mib(init.get("peak_activation_bytes")), "-")  # fmt: skip
    for r in final.get("rounds") or []:
        move = str(r.get("move") or "-")
        t.add_row(
            fmt(r.get("round")), f"{r.get('candidates')} ({r.get('grow')}/{r.get('trim')})",
            fmt(r.get("evaluated")), fmt(r.get("kendall_tau")), fmt(r.get("chosen")),
            move if wide else move.split(":")[0], fmt(r.get("reward")), fmt(r.get("accuracy")),
            _mib(r.get("param_bytes")), _mib(r.get("peak_activation_bytes")),
            "yes" if r.get("feasible") else "no",
        )  # fmt: skip
    t.caption = "tau: Kendall's tau of the controller's ranking against the realised rewards"
    return [t]


def autoslim_tables(final: dict, history: Any, objective: Any, wide: bool) -> list[Table]:
    t = Table(title="autoslim: the configuration at each target", header_style="bold")
    for c in ("targets", "greedy step", "FLOPs", "share of widest", "slimmable val acc %",
              "latency ms", "memory MiB"):  # fmt: skip
        t.add_column(c, justify="right")
    widest = float(final.get("widest_flops") or 0) or 1.0
    for h in final.get("configs") or []:
        t.add_row(", ".join(h.get("targets", [])), fmt(h.get("step")), f"{h.get('flops', 0):.4g}",
                  f"{h.get('flops', 0) / widest:.0%}", fmt(h.get("slimmable_val_acc")),
                  fmt(h.get("latency_ms")), _mib(h.get("memory_bytes")))  # fmt: skip
    cal = final.get("bn_calibration") or {}
    unmet = [x for x in final.get("targets") or [] if x.get("met_at") is None]
    t.caption = f"BN recalibration: {cal.get('note', '-')}" + (
        f"; never met: {', '.join(x['kind'] + '<=' + x['text'] for x in unmet)}" if unmet else ""
    )
    return [t]


FINAL_TABLES = {
    "naswot": naswot_tables,
    "latency-darts": latency_darts_tables,
    "memnas": memnas_tables,
    "autoslim": autoslim_tables,
}


def final_tables(algo: str, final: dict, history: Any, objective: Any, wide: bool) -> list[Table]:
    """The searcher's own tables; a plug-in's ``final`` dict as a key/value table."""
    fn = FINAL_TABLES.get(algo)
    if fn is not None:
        return fn(final, history, objective, wide)
    rows = [(str(k), v if isinstance(v, int | float | str) else str(v)) for k, v in final.items()]
    return [_kv_table(f"{algo}: final", rows, wide)]
