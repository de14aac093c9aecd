"""Latency runs read from pytest-benchmark JSON files or hwnas stores, and compared.

A *run* is one session's results: per test (or stored model) the raw samples in
milliseconds, the reference model's samples measured beside them (when the
``hwnas_latency`` fixture recorded them), and the identity of what they ran on.
``hwnas compare`` and the ``--hwnas-fail-regression`` check both read runs
through this module, so a file the one accepts the other accepts too.

Where the samples are found in a pytest-benchmark JSON entry:
``extra_info["hwnas"]["samples_ms"]`` (written by ``hwnas_latency``; kept even
by ``--benchmark-autosave`` without ``--benchmark-save-data``), else
``stats["data"]`` (seconds per iteration; present with ``--benchmark-json`` or
``--benchmark-save-data``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.errors import ConfigError

#: The keys of a device's identity: what must match for two latencies to be
#: comparable. The host name is left out on purpose: CI runners of one machine
#: type get a new name per job, and the same CPU model, runtime and threads
#: make the latencies comparable.
IDENTITY_KEYS = (
    "device", "runtime", "threads", "cpu_model", "machine", "logical_cores",
    "model", "board_model", "soc_model",
)  # fmt: skip


def identity_of(info: dict[str, Any]) -> dict[str, Any]:
    """The identity (see :data:`IDENTITY_KEYS`) of a device's ``info()``; absent keys left out."""
    return {k: info[k] for k in IDENTITY_KEYS if info.get(k) not in (None, "")}


def identity_from_machine_info(machine_info: dict[str, Any]) -> dict[str, Any]:
    """An identity from pytest-benchmark's session ``machine_info`` (plain ``benchmark`` tests)."""
    cpu = machine_info.get("cpu") or {}
    out = {
        "cpu_model": cpu.get("brand_raw") or machine_info.get("processor"),
        "machine": machine_info.get("machine"),
        "logical_cores": cpu.get("count"),
        "system": machine_info.get("system"),
    }
    return {k: v for k, v in out.items() if v not in (None, "")}


def identity_mismatch(base: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: base-value != new-value`` for every identity key the two both know and disagree on."""
    return [
        f"{k}: {base[k]!r} != {new[k]!r}"
        for k in sorted(set(base) & set(new))
        if str(base[k]) != str(new[k])
    ]


@dataclass
class Entry:
    """One model's latency in one run."""

    name: str
    samples_ms: list[float] | None
    identity: dict[str, Any] = field(default_factory=dict)
    reference_ms: list[float] | None = None
    reference_sha256: str | None = None
    reference_label: str | None = None
    device: str = ""
    round_sizes: list[int] | None = None
    reference_round_sizes: list[int] | None = None
    #: the sha256 of the model file measured (a kept copy lets a later session time it again)
    artifact_sha256: str | None = None

    def rounds(self) -> list[list[float]] | list[float] | None:
        """The samples split into their rounds where the sizes are known, else flat."""
        return split_rounds(self.samples_ms, self.round_sizes)

    def reference_rounds(self) -> list[list[float]] | list[float] | None:
        return split_rounds(self.reference_ms, self.reference_round_sizes)


def split_rounds(samples: list[float] | None, sizes: list[int] | None):
    """``samples`` cut into consecutive rounds of ``sizes``; flat if the sizes do not fit."""
    if not samples or not sizes or len(sizes) < 2 or sum(sizes) != len(samples):
        return samples
    out, i = [], 0
    for k in sizes:
        out.append(samples[i : i + k])
        i += k
    return out


@dataclass
class Run:
    """The entries of one file, by name (pytest ``fullname`` or ``device/model/shape``)."""

    path: str
    kind: str  # "json" or "store"
    entries: dict[str, Entry]


def _entry_from_bench(bench: dict[str, Any], machine_identity: dict[str, Any]) -> Entry:
    hw = (bench.get("extra_info") or {}).get("hwnas") or {}
    name = str(bench["fullname"])
    if hw.get("samples_ms"):
        samples = [float(s) for s in hw["samples_ms"]]
    else:
        data = (bench.get("stats") or {}).get("data")
        samples = [float(s) * 1e3 for s in data] if data else None
    ref = hw.get("reference") or {}
    return Entry(
        name=name,
        samples_ms=samples,
        identity=dict(hw.get("identity") or machine_identity),
        reference_ms=[float(s) for s in ref["samples_ms"]] if ref.get("samples_ms") else None,
        reference_sha256=ref.get("sha256"),
        reference_label=ref.get("label"),
        device=str(hw.get("device") or ""),
        round_sizes=[int(k) for k in hw["round_sizes"]] if hw.get("round_sizes") else None,
        reference_round_sizes=[int(k) for k in ref["round_sizes"]]
        if ref.get("round_sizes")
        else None,
        artifact_sha256=hw.get("artifact_sha256"),
    )


def parse_benchmark_json(data: Any, path: str) -> Run:
    """A loaded pytest-benchmark JSON document -> :class:`Run`.

    Raises:
        ConfigError: the document is not a pytest-benchmark report.
    """
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ConfigError(
            f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list); give a file written "
            "by --benchmark-json, --benchmark-save or --benchmark-autosave"
        )
    machine = identity_from_machine_info(data.get("machine_info") or {})
    entries = {}
    for i, bench in enumerate(data["benchmarks"]):
        if not isinstance(bench, dict) or "fullname" not in bench:
            raise ConfigError(f"{path}: benchmark #{i} has no 'fullname'; the file is damaged")
        try:
            e = _entry_from_bench(bench, machine)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"{path}: benchmark {bench.get('fullname')!r} has malformed samples ({exc}); the file is damaged"
            ) from None
        entries[e.name] = e
    return Run(path, "json", entries)


def load_json_run(path: str | Path) -> Run:
    """Read a pytest-benchmark JSON file.

    Raises:
        ConfigError: missing, unreadable or malformed file.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no such file: {p}; give a pytest-benchmark JSON file or an hwnas store")
    try:
        data = json.loads(p.read_text(encoding="utf8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{p} is not valid JSON ({exc}); give a file written by --benchmark-json or --benchmark-autosave"
        ) from None
    return parse_benchmark_json(data, str(p))


def load_store_run(path: str | Path) -> Run:
    """Read an hwnas store, read-only: per (device, model label, input shape) the latest
    successful measurement with raw samples.

    Raises:
        ConfigError: not an SQLite file, or not an hwnas store.
    """
    p = Path(path)
    try:
        conn = sqlite3.connect(f"file:{p.resolve()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open {p} read-only ({exc}); give an hwnas --db file") from None
    try:
        rows = conn.execute(
            "SELECT m.device, COALESCE(a.label, m.arch_id), m.input_shape, m.samples, "
            "m.environment, m.id FROM measurements m LEFT JOIN archs a ON a.id = m.arch_id "
            "WHERE m.status = 'ok' AND m.samples IS NOT NULL "
            "AND COALESCE(m.source, 'measured') != 'imported' ORDER BY m.id"
        ).fetchall()
    except sqlite3.Error as exc:
        raise ConfigError(
            f"{p} is not an hwnas store ({exc}); give a --db file written by hwnas profile/sample"
        ) from None
    finally:
        conn.close()
    entries: dict[str, Entry] = {}
    for device, label, shape, samples, env, _ in rows:
        try:
            s = [float(v) for v in json.loads(samples)]
            info = json.loads(env) if env else {}
        except (TypeError, ValueError):
            raise ConfigError(
                f"{p}: malformed samples of {label} on {device}; the store is damaged"
            ) from None
        name = f"{device}/{label}/{shape}"
        entries[name] = Entry(name, s, identity_of({**info, "device": device}), device=device)
    return Run(str(p), "store", entries)


def load_run(path: str | Path) -> Run:
    """A pytest-benchmark JSON file or an hwnas store, told apart by the file's first bytes."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no such file: {p}; give a pytest-benchmark JSON file or an hwnas store")
    with open(p, "rb") as f:
        head = f.read(16)
    if head.startswith(b"SQLite format 3"):
        return load_store_run(p)
    return load_json_run(p)


@dataclass
class Comparison:
    """One model in two runs: the estimate and its verdict, or why there is none."""

    name: str
    estimate: Any = None  # hwnas.testing.stats.RatioEstimate
    verdict: str = ""
    note: str = ""


def compare_entries(
    base: Entry,
    new: Entry,
    *,
    threshold: float,
    confidence: float = 0.95,
    force: bool = False,
    force_option: str = "--force",
    n_boot: int = 2000,
    seed: int = 0,
    base_model_now: Any = None,
) -> Comparison:
    """Compare one model's two runs, taking the reference's drift out when both have the same one.

    ``base_model_now``: the baseline's own model timed again in the new session,
    interleaved with the new one (raw samples, flat or per round); the verdict is
    then on that in-session ratio (:func:`~hwnas.testing.stats.ratio_to_baseline_model`).

    Raises:
        ConfigError: no raw samples; the runs come from different devices or
            machines (unless ``force``).
    """
    from hwnas.testing.stats import median_ratio_ci, ratio_to_baseline_model

    for which, e in (("the baseline", base), ("the new run", new)):
        if not e.samples_ms:
            raise ConfigError(
                f"{which} has no raw samples for {e.name}; save runs with --benchmark-save-data "
                "or --benchmark-json (hwnas_latency keeps them always)"
            )
    notes = []
    diff = identity_mismatch(base.identity, new.identity)
    if diff:
        text = "; ".join(diff)
        if not force:
            raise ConfigError(
                f"{base.name}: the baseline ran on another device or machine ({text}); refusing to "
                f"judge: record a baseline on this one, or pass {force_option} to compare anyway"
            )
        notes.append(f"forced across devices ({text})")
    if base_model_now is not None:
        est = ratio_to_baseline_model(
            base.rounds(),
            base_model_now,
            new.rounds(),
            confidence=confidence,
            n_boot=n_boot,
            seed=seed,
        )
        notes.append("judged against the baseline's own model, timed again in this session")
        return Comparison(base.name, est, est.verdict(threshold), "; ".join(notes))
    refs = None
    if base.reference_ms and new.reference_ms:
        if base.reference_sha256 and base.reference_sha256 != new.reference_sha256:
            notes.append("the baseline's reference model differs, drift not corrected")
        else:
            refs = (base.reference_rounds(), new.reference_rounds())
    elif base.reference_ms or new.reference_ms:
        notes.append("only one run has a reference, drift not corrected")
    else:  # e.g. two stores: the machine's own drift between the runs stays in the ratio
        notes.append("no reference model in either run, drift not corrected")
    est = median_ratio_ci(
        base.rounds(),
        new.rounds(),
        *(refs or (None, None)),
        confidence=confidence,
        n_boot=n_boot,
        seed=seed,
    )
    return Comparison(base.name, est, est.verdict(threshold), "; ".join(notes))


def _n(e: Entry) -> int:
    return len(e.samples_ms or ())


def compare_runs(
    base: Run,
    new: Run,
    *,
    threshold: float,
    confidence: float = 0.95,
    force: bool = False,
    force_option: str = "--force",
    only: Iterable[str] | None = None,
) -> tuple[list[Comparison], list[str]]:
    """Every model in both runs, compared; and notes on models found in one run only.

    Raises:
        ConfigError: no model in common (see also :func:`compare_entries`).
    """
    names = [n for n in new.entries if n in base.entries]
    if only:
        wanted = set(only)
        names = [n for n in names if n in wanted or n.split("::")[-1] in wanted]
    if not names:
        what = f"no test or model named {', '.join(only)}" if only else "no test or model"
        raise ConfigError(
            f"{base.path} and {new.path} have {what} in common; compare runs of the same tests"
        )
    notes = []
    for label, a, b in (("BASE", base, new), ("NEW", new, base)):
        missing = [n for n in a.entries if n not in b.entries]
        if missing:
            notes.append(
                f"only in {label}: " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            )
    few = [n for n in names if min(_n(base.entries[n]), _n(new.entries[n])) < 3]
    if few and len(few) < len(names):  # e.g. one-sample adb rows of a store: skipped, said so
        notes.append("fewer than 3 raw samples, not compared: " + ", ".join(few[:5]))
        names = [n for n in names if n not in few]
    out = [
        compare_entries(
            base.entries[n],
            new.entries[n],
            threshold=threshold,
            confidence=confidence,
            force=force,
            force_option=force_option,
        )
        for n in names
    ]
    return out, notes
