"""Measure sampled kernels (and calibration networks) on a device, into the store.

A campaign is resumable: configuration ``i`` of seed ``s`` is always the same
(it is drawn from its own generator seeded with ``(s, i)``), so re-running
``hwnas sample-kernels`` with the same seed skips what the database already
holds and a larger ``-n`` only adds the new ones.

Each kernel is exported with :func:`hwnas.export.to_onnx` (cached, parity
checked), split with :func:`detect_kernels` to check that it really is the
one kernel it was meant to be, measured, and stored with the detected
:class:`KernelRecord` in the measurement's ``extra`` so training needs
neither torch nor the exported files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwnas.arch import Arch
from hwnas.errors import ConfigError, ExportError, HwnasError
from hwnas.predictors.kernels.detect import KernelRecord, detect_kernels
from hwnas.predictors.kernels.sampling import (
    KERNEL_SPACE_PREFIX,
    NETWORK_SPACE,
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


def measure_one(
    store,
    device,
    device_name: str,
    arch: Arch,
    label: str,
    build: Callable[[], tuple[Any, tuple[int, ...]]],
    expect: str | None,
    settings: MeasureSettings,
) -> tuple[str, str]:
    """Export, check, measure and store one kernel or network.

    Returns:
        (status, message): status is ``ok``, ``skipped`` or ``failed``.
    """
    from hwnas.devices.isolated import MeasurementFailed
    from hwnas.export import to_onnx
    from hwnas.profilers.flops import count

    module, shape = build()
    if store.has_measurement(arch.id, device_name, shape):
        return "skipped", ""
    try:
        art = to_onnx(module, shape, label=label, check=True)
        kernels = detect_kernels(art.path)
    except ExportError as exc:
        _record_failure(store, arch, label, device_name, "export", str(exc), shape)
        return "failed", str(exc)
    if expect is not None:
        found = [k.type for k in kernels]
        if found != [expect]:
            reason = f"exported as kernels {found}, not one '{expect}' kernel"
            _record_failure(store, arch, label, device_name, "export", reason, shape)
            return "failed", reason
    try:
        m = device.measure(art, settings)
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
    fl = count(art.path)
    store.add_device(m.device, m.environment)
    store.add_arch(arch, label=label)
    store.add_artifact(art, arch.id)
    store.set_metrics(arch.id, shape, flops=fl.flops, macs=fl.macs, params=fl.params)
    store.add_measurement(arch.id, m, shape)
    return "ok", f"{m.median:.3f} ms"


def _adaptive_plan(
    store, device_name: str, n: int, seed: int, types: tuple[str, ...] | None
) -> list[tuple[str, tuple]]:
    """nn-Meter's adaptive sampling: neighbours of the worst-predicted kernels.

    Each measured kernel is predicted by a regressor trained on the others
    (5-fold cross-validation, per type); kernels with more than 10 % error
    are the seeds, and ``n`` new configurations are drawn around them in
    proportion to their error.
    """
    from hwnas.predictors.kernel import KernelPredictor

    rows = [v for v in _measured(store, device_name, networks=False).values()]
    if types is not None:
        rows = [v for v in rows if v[0].type in types]
    X = [v[0] for v in rows]
    cfgs = [v[1] for v in rows]
    y = np.asarray([v[2] for v in rows], dtype=np.float64)
    if len(X) < 10 or n <= 0:
        return []
    rng = np.random.default_rng([seed, 7_777])
    fold = rng.integers(0, 5, len(X))
    pred = np.zeros(len(X))
    for f in range(5):
        tr, te = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
        if not len(te):
            continue
        kp = KernelPredictor(n_estimators=30, seed=seed).fit([X[i] for i in tr], y[tr])
        known = [i for i in te if X[i].type in kp.roofline]
        if known:
            pred[known] = kp.predict_kernels([X[i] for i in known])
    err = np.abs(pred / y - 1)
    bad = np.nonzero(err > 0.10)[0]
    if not len(bad):
        return []
    weights = err[bad] / err[bad].sum()
    plan = []
    for j in rng.choice(bad, size=n, p=weights):
        kind = X[int(j)].type
        plan.append((kind, perturb_config(kind, cfgs[int(j)], rng)))
    return plan


def sample_kernels(
    store,
    device_name: str,
    n: int,
    *,
    seed: int = 0,
    types: tuple[str, ...] | None = None,
    networks: int = 0,
    adaptive: int = 0,
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
        adaptive: number of extra kernels sampled around the worst-predicted ones
            (after the prior sample; a re-run adds this many again).
        settings / network_settings: timing of kernels / networks (short budgets by default).
        isolate: measure in a worker process, so a crash is a recorded failure.
        on_progress: called with ``(what, label, status)`` after each item.
    """
    from hwnas.devices import DEVICES, create_device
    from hwnas.devices.isolated import IsolatedDevice

    DEVICES.factory(device_name)  # unknown device: fail before exporting anything
    settings = settings or KERNEL_SETTINGS
    network_settings = network_settings or NETWORK_SETTINGS
    kw = {"threads": threads}
    device = IsolatedDevice(device_name, **kw) if isolate else create_device(device_name, **kw)
    summary = CampaignSummary()
    t0 = time.perf_counter()

    def run(arch: Arch, label: str, build, expect: str | None, sett: MeasureSettings) -> None:
        status, msg = measure_one(store, device, device_name, arch, label, build, expect, sett)
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
        if adaptive > 0:
            for kind, cfg in _adaptive_plan(store, device_name, adaptive, seed, types):
                arch = kernel_arch(kind, cfg)
                run(
                    arch,
                    f"{kind}:{arch.id}",
                    lambda k=kind, c=cfg: build_kernel(k, c),
                    kind,
                    settings,
                )
    finally:
        close = getattr(device, "close", None)
        if close is not None:
            close()
    summary.seconds = time.perf_counter() - t0
    return summary


STATISTICS = ("median", "p10", "min", "mean")


def _measured(
    store, device: str, networks: bool, statistic: str = "median"
) -> dict[str, tuple[Any, tuple, float]]:
    """arch id -> (record, configuration, latency ms); the latest measurement wins."""
    if statistic not in STATISTICS:
        raise ConfigError(f"unknown statistic '{statistic}'; use one of {', '.join(STATISTICS)}")
    col = f"{statistic}_ms"
    from hwnas.predictors.kernel import NetworkRecord

    latest: dict[str, tuple[Any, tuple, float]] = {}
    for row in store.measurements(device=device, status="ok"):
        space = row["space"]
        extra = row.get("extra") or {}
        cfg = tuple(_thaw(row["choices"]))
        if space.startswith(KERNEL_SPACE_PREFIX) and "kernel" in extra:
            latest[row["arch_id"]] = (
                KernelRecord.from_dict(extra["kernel"]),
                cfg,
                float(row[col]),
            )
        elif networks and space == NETWORK_SPACE and "kernels" in extra:
            kernels = tuple(KernelRecord.from_dict(d) for d in extra["kernels"])
            net = NetworkRecord(kernels, row.get("label") or "")
            latest[row["arch_id"]] = (net, cfg, float(row[col]))
    return latest


def kernel_training_data(
    store, device: str, networks: bool = True, statistic: str = "median"
) -> tuple[list[Any], np.ndarray]:
    """Kernels (and calibration networks) measured on ``device``, for ``KernelPredictor.fit``.

    Args:
        store: an open :class:`hwnas.store.Store`.
        device: the device name the measurements were stored under.
        networks: include the calibration networks (:class:`NetworkRecord` items).
        statistic: which summary of each measurement's runs is the latency:
            ``median`` (default), ``p10``, ``min`` or ``mean``. On a shared
            machine ``p10`` is the most repeatable: others' work only ever adds
            time, and a kernel of 10 us is hit by it in proportion far more than
            a model of 10 ms.

    Returns:
        ``(items, latencies_ms)``: items are :class:`KernelRecord` (one kernel
        measured alone) and :class:`NetworkRecord` (a whole calibration
        network); latencies are the chosen statistic of each measurement. When a configuration was
        measured several times the latest measurement wins.

    Raises:
        PredictorError: nothing was measured on ``device``.
    """
    from hwnas.errors import PredictorError

    latest = _measured(store, device, networks, statistic)
    if not latest:
        raise PredictorError(
            f"the database has no kernel measurements on '{device}'; collect them with "
            f"`hwnas sample-kernels --device {device} --db FILE`"
        )
    items = [v[0] for v in latest.values()]
    y = np.asarray([v[2] for v in latest.values()], dtype=np.float64)
    return items, y


def _thaw(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_thaw(v) for v in value)
    return value
