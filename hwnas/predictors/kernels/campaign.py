"""Measure sampled kernels (and calibration networks) on a device, into the store.

A campaign is resumable: configuration ``i`` of seed ``s`` is always the same
(it is drawn from its own generator seeded with ``(s, i)``), so re-running
``hwnas sample-kernels`` with the same seed skips what the database already
holds and a larger ``-n`` only adds the new ones.

Each kernel is exported with :func:`hwnas.export.to_onnx` (cached, parity
checked), split with :func:`detect_kernels` to check that it really is the
one kernel it was meant to be, measured, and stored with the detected
:class:`KernelRecord` in the measurement's ``extra`` so training needs
neither torch nor the exported files. The kernels the *runtime* executes are
stored beside them (``runtime_kernels``, :mod:`.runtime`): ONNX Runtime's
optimised graph for ONNX devices, the ``.tflite`` operators for TFLite
devices (``cpu-litert``, ``adb``), which are given the ``.tflite`` export of
the same module. Training then picks either (:mod:`.data`).

Adaptive rounds (nn-Meter's fine-grained sampling) are resumable too: round
``r`` is planned from what was measured before it (the prior sample and
rounds ``< r``, each adaptive measurement is tagged with its round) with its
own generator, so an interrupted round is planned identically on re-run and
only its missing configurations are measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwnas.arch import Arch
from hwnas.errors import ConfigError, ExportError, HwnasError
from hwnas.predictors.kernels.data import (
    KERNEL_SPACE_PREFIX,
    has_runtime_kernels,
    kernel_training_data,
    measured_items,
)
from hwnas.predictors.kernels.detect import KernelRecord, detect_kernels
from hwnas.predictors.kernels.sampling import (
    SAMPLED_TYPES,
    build_kernel,
    build_network,
    kernel_arch,
    network_arch,
    perturb_config,
    sample_config,
    sample_network,
    sample_type,
)
from hwnas.profilers.latency import MeasurementFailure, MeasureSettings

# A kernel is small: a short budget is enough for a stable median, and keeps a
# campaign of a thousand kernels within an hour on a phone.
KERNEL_SETTINGS = MeasureSettings(
    budget_s=0.5, min_runs=10, max_runs=400, rel_ci=0.02, timeout_s=120
)
NETWORK_SETTINGS = MeasureSettings(
    budget_s=2.0, min_runs=10, max_runs=400, rel_ci=0.01, timeout_s=300
)


@dataclass
class CampaignSummary:
    """What a :func:`sample_kernels` call did."""

    measured: int = 0
    skipped: int = 0
    failed: int = 0
    networks_measured: int = 0
    seconds: float = 0.0
    by_type: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)  # planned kernels per adaptive round


def planned_kernels(
    n: int, seed: int = 0, types: tuple[str, ...] | None = None
) -> list[tuple[str, tuple]]:
    """The first ``n`` (type, configuration) pairs of seed ``seed``; deterministic."""
    if types is not None:
        bad = [t for t in types if t not in SAMPLED_TYPES]
        if bad:
            raise ConfigError(
                f"unknown kernel type(s) {', '.join(bad)}; choose among {', '.join(SAMPLED_TYPES)}"
            )
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        kind = sample_type(rng, types)
        out.append((kind, sample_config(kind, rng)))
    return out


def planned_networks(n: int, seed: int = 0) -> list[tuple]:
    """The first ``n`` calibration-network specs of seed ``seed``; deterministic."""
    return [sample_network(np.random.default_rng([seed, 1_000_003, i])) for i in range(n)]


def _interleave(kernels: list, networks: list) -> list:
    """Kernels with the networks spread evenly among them (network j after kernel ~j*n/m)."""
    if not networks:
        return list(kernels)
    out: list = []
    step = len(kernels) / len(networks)
    j = 0
    for i, k in enumerate(kernels):
        while j < len(networks) and j * step <= i:
            out.append(networks[j])
            j += 1
        out.append(k)
    out.extend(networks[j:])
    return out


def _record_failure(
    store, arch: Arch, label: str, device: str, kind: str, reason: str, shape
) -> None:
    store.add_arch(arch, label=label)
    store.add_measurement(arch.id, MeasurementFailure(device, label, kind, reason), shape)


def device_runtime(device_name: str) -> str:
    """``litert`` for devices that run .tflite files (cpu-litert, adb), else ``ort``."""
    if device_name.split(":", 1)[0] in ("cpu-litert", "adb"):
        return "litert"
    from hwnas.devices import create_device

    try:
        fmt = getattr(create_device(device_name), "artifact_format", "onnx")
    except HwnasError:
        return "ort"
    return "litert" if fmt == "tflite" else "ort"


def _read_runtime(art, tflite_art, runtime: str, optimization: str) -> tuple[list, str]:
    """The runtime's own kernels of one exported item, or ``([], reason)`` when unreadable."""
    from hwnas.predictors.kernels.runtime import litert_kernels, ort_kernels, ort_reader_name

    try:
        if runtime == "litert":
            return litert_kernels(tflite_art.path), ""
        return ort_kernels(art.path, art.shapes_dict(), optimization), ort_reader_name(optimization)
    except HwnasError as exc:
        return [], str(exc)


def measure_one(
    store,
    device,
    device_name: str,
    arch: Arch,
    label: str,
    build: Callable[[], tuple[Any, tuple[int, ...]]],
    expect: str | None,
    settings: MeasureSettings,
    runtime: str = "ort",
    optimization: str = "all",
    extra: dict | None = None,
) -> tuple[str, str]:
    """Export, check, measure and store one kernel or network.

    Args:
        runtime: ``ort`` (the device runs ONNX) or ``litert`` (it runs .tflite:
            the module is exported to .tflite too and that file is measured).
        optimization: ONNX Runtime's optimisation level, to read its kernels.
        extra: stored with the measurement (e.g. the adaptive round).

    Returns:
        (status, message): status is ``ok``, ``skipped`` or ``failed``.
    """
    from hwnas.devices.isolated import MeasurementFailed
    from hwnas.export import to_onnx, to_tflite
    from hwnas.profilers.flops import count

    module, shape = build()
    if store.has_measurement(arch.id, device_name, shape):
        return "skipped", ""
    tfl = None
    try:
        art = to_onnx(module, shape, label=label, check=True)
        kernels = detect_kernels(art.path)
        if runtime == "litert":
            tfl = to_tflite(module, shape, label=label, check=True)
    except ExportError as exc:
        _record_failure(store, arch, label, device_name, "export", str(exc), shape)
        return "failed", str(exc)
    if expect is not None:
        found = [k.type for k in kernels]
        if found != [expect]:
            reason = f"exported as kernels {found}, not one '{expect}' kernel"
            _record_failure(store, arch, label, device_name, "export", reason, shape)
            return "failed", reason
    run_kernels, reader_note = _read_runtime(art, tfl, runtime, optimization)
    try:
        m = device.measure(tfl if tfl is not None else art, settings)
    except MeasurementFailed as exc:
        store.add_arch(arch, label=label)
        store.add_measurement(arch.id, exc.failure, shape)
        return "failed", str(exc)
    except HwnasError as exc:
        _record_failure(store, arch, label, device_name, "runtime", str(exc), shape)
        return "failed", str(exc)
    if expect is not None:
        m.extra["kernel"] = kernels[0].to_dict()
    else:
        m.extra["kernels"] = [k.to_dict() for k in kernels]
    if run_kernels:
        m.extra["runtime_kernels"] = [k.to_dict() for k in run_kernels]
        m.extra["kernel_reader"] = run_kernels[0].reader
    else:
        m.extra["runtime_kernels_error"] = reader_note
    m.extra.update(extra or {})
    fl = count(art.path)
    store.add_device(m.device, m.environment)
    store.add_arch(arch, label=label)
    store.add_artifact(art, arch.id)
    if tfl is not None:
        store.add_artifact(tfl, arch.id)
    store.set_metrics(arch.id, shape, flops=fl.flops, macs=fl.macs, params=fl.params)
    store.add_measurement(arch.id, m, shape)
    return "ok", f"{m.median:.3f} ms"


def _adaptive_plan(
    store,
    device_name: str,
    n: int,
    seed: int,
    types: tuple[str, ...] | None,
    round_: int = 0,
    source: str = "rules",
) -> list[tuple[str, tuple]]:
    """nn-Meter's adaptive sampling: neighbours of the worst-predicted kernels.

    Each kernel measured before round ``round_`` (the prior sample and earlier
    rounds) is predicted by a regressor trained on the others (5-fold
    cross-validation, per type); kernels with more than 10 % held-out error
    are the seeds, and ``n`` new configurations are drawn around them in
    proportion to their error, so the types and regions the regressors get
    most wrong receive the most new samples.
    """
    from hwnas.predictors.kernel import KernelPredictor

    rounds = _rounds_of(store, device_name)
    rows = []  # (record, configuration, latency, sampled type)
    for arch_id, (rec, cfg, lat) in measured_items(
        store, device_name, False, source=source
    ).items():
        if not isinstance(rec, KernelRecord) or rounds.get(arch_id, -1) >= round_:
            continue
        kind = store.arch(arch_id).space[len(KERNEL_SPACE_PREFIX) :]
        if types is None or kind in types:
            rows.append((rec, cfg, lat, kind))
    X = [r[0] for r in rows]
    cfgs = [r[1] for r in rows]
    sampled_kind = [r[3] for r in rows]
    y = np.asarray([v[2] for v in rows], dtype=np.float64)
    if len(X) < 10 or n <= 0:
        return []
    rng = np.random.default_rng([seed, 7_777, round_])
    fold = rng.integers(0, 5, len(X))
    pred = np.full(len(X), np.nan)
    for f in range(5):
        tr, te = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
        if not len(te) or not len(tr):
            continue
        kp = KernelPredictor(n_estimators=30, seed=seed).fit([X[i] for i in tr], y[tr])
        known = [i for i in te if X[i].type in kp.roofline]
        if known:
            pred[known] = kp.predict_kernels([X[i] for i in known])
    err = np.where(np.isnan(pred), 1.0, np.abs(pred / y - 1))  # never predicted: worst
    bad = np.nonzero(err > 0.10)[0]
    if not len(bad):
        return []
    weights = err[bad] / err[bad].sum()
    plan = []
    for j in rng.choice(bad, size=n, p=weights):
        kind = sampled_kind[int(j)]
        plan.append((kind, perturb_config(kind, cfgs[int(j)], rng)))
    return plan


def _rounds_of(store, device_name: str) -> dict[str, int]:
    """arch id -> the adaptive round that measured it (absent: the prior sample)."""
    out = {}
    for row in store.measurements(device=device_name):
        r = (row.get("extra") or {}).get("adaptive_round")
        if r is not None:
            out[row["arch_id"]] = int(r)
    return out


def sample_kernels(
    store,
    device_name: str,
    n: int,
    *,
    seed: int = 0,
    types: tuple[str, ...] | None = None,
    networks: int = 0,
    adaptive: int = 0,
    rounds: int = 1,
    source: str = "runtime",
    settings: MeasureSettings | None = None,
    network_settings: MeasureSettings | None = None,
    threads: int | None = None,
    isolate: bool = True,
    on_progress: Callable[[str, str, str], None] | None = None,
) -> CampaignSummary:
    """Measure ``n`` sampled kernels (+ ``networks`` calibration networks, + ``adaptive``
    neighbours of badly predicted kernels) on ``device_name`` into ``store``.

    Args:
        store: an open :class:`hwnas.store.Store`.
        device_name: registry name (``cpu-ort``...).
        n: number of prior-sampled kernels (the first ``n`` of ``seed``).
        types: restrict to these kernel types (default: all of :data:`SAMPLED_TYPES`).
        networks: number of calibration networks to measure whole.
        adaptive: kernels added per adaptive round around the worst-predicted ones.
        rounds: adaptive rounds (each planned from everything measured before it;
            resumable: a re-run measures only what a round still misses).
        source: which kernels the adaptive rounds judge the regressors on:
            ``runtime`` (the runtime's own, the default) or ``rules``.
        settings / network_settings: timing of kernels / networks (short budgets by default).
        isolate: measure in a worker process, so a crash is a recorded failure.
        on_progress: called with ``(what, label, status)`` after each item.
    """
    from hwnas.devices import DEVICES, create_device
    from hwnas.devices.isolated import IsolatedDevice

    DEVICES.factory(device_name)  # unknown device: fail before exporting anything
    settings = settings or KERNEL_SETTINGS
    network_settings = network_settings or NETWORK_SETTINGS
    if rounds < 0 or adaptive < 0:
        raise ConfigError("adaptive samples and rounds must be >= 0")
    kw = {"threads": threads}
    runtime = device_runtime(device_name)
    device = IsolatedDevice(device_name, **kw) if isolate else create_device(device_name, **kw)
    optimization = str(getattr(device, "optimization", "all"))
    summary = CampaignSummary()
    t0 = time.perf_counter()

    def run(
        arch: Arch,
        label: str,
        build,
        expect: str | None,
        sett: MeasureSettings,
        extra: dict | None = None,
    ) -> None:
        status, msg = measure_one(
            store, device, device_name, arch, label, build, expect, sett,
            runtime=runtime, optimization=optimization, extra=extra,
        )  # fmt: skip
        if status == "ok":
            if expect is None:
                summary.networks_measured += 1
            else:
                summary.measured += 1
                summary.by_type[expect] = summary.by_type.get(expect, 0) + 1
        elif status == "skipped":
            summary.skipped += 1
        else:
            summary.failed += 1
            summary.failures.append(f"{label}: {msg}")
        if on_progress is not None:
            on_progress("network" if expect is None else expect, label, msg or status)

    try:
        # Networks are spread evenly among the kernels rather than measured
        # after them: a shared machine drifts (others' load, clocks), and the
        # calibration compares kernels with networks, so both should sample
        # the same periods.
        for item in _interleave(planned_kernels(n, seed, types), planned_networks(networks, seed)):
            if isinstance(item[0], str):
                kind, cfg = item
                arch = kernel_arch(kind, cfg)
                build = lambda k=kind, c=cfg: build_kernel(k, c)  # noqa: E731
                run(arch, f"{kind}:{arch.id}", build, kind, settings)
            else:
                arch = network_arch(item)
                run(arch, f"net:{arch.id}", lambda s=item: build_network(s), None, network_settings)
        src = source if source == "rules" or has_runtime_kernels(store, device_name) else "rules"
        for r in range(rounds if adaptive > 0 else 0):
            plan = _adaptive_plan(store, device_name, adaptive, seed, types, r, src)
            summary.rounds.append(len(plan))
            for kind, cfg in plan:
                arch = kernel_arch(kind, cfg)
                run(
                    arch,
                    f"{kind}:{arch.id}",
                    lambda k=kind, c=cfg: build_kernel(k, c),
                    kind,
                    settings,
                    {"adaptive_round": r},
                )
    finally:
        close = getattr(device, "close", None)
        if close is not None:
            close()
    summary.seconds = time.perf_counter() - t0
    return summary


__all__ = [
    "CampaignSummary",
    "kernel_training_data",
    "measure_one",
    "planned_kernels",
    "planned_networks",
    "sample_kernels",
]
