"""The per-architecture step of a campaign, as plain functions on plain values.

A campaign is a loop over one unit of work: build an architecture, export it,
count its FLOPs/MACs/params and memory, measure it, store the result. That
unit is split in two so that each half can run where it belongs:

* :func:`prepare_arch` (build, export, count) needs torch and CPU time but no
  quiet machine, so it may run ahead in a pool of export workers;
* :func:`measure_prepared` needs the device alone, one measurement at a time.

:func:`measure_arch` chains them; it is the function a distributed runner
(Ray) calls per architecture. Neither half raises for a failure of the
architecture itself: a build error, an export error, a crashed or hung runtime
comes back as a result with ``status="failed"`` and the reason, so that the
caller stores it and goes on. Only a bug or a Ctrl-C propagates.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.export.artifact import Artifact
from hwnas.profilers.latency import Measurement, MeasurementFailure, MeasureSettings
from hwnas.source import ModelSource
from hwnas.spaces.base import SearchSpace

#: The metrics columns a campaign fills in the store, in reporting order.
METRIC_FIELDS = ("flops", "macs", "params", "param_bytes", "peak_activation_bytes")


class MeasuringDevice(Protocol):
    """What a campaign needs of a device: a :class:`~hwnas.devices.base.Device`
    or an :class:`~hwnas.devices.isolated.IsolatedDevice` both qualify."""

    name: str

    def measure(
        self, artifact: Artifact, settings: MeasureSettings | None = None
    ) -> Measurement: ...


@dataclass
class Prepared:
    """An architecture built, exported and counted (or the reason it could not be).

    Attributes:
        arch: the architecture.
        label: the space's human-readable string of it (stored with the arch).
        input_shape: the static input shape it was exported for.
        artifact: the exported file; ``None`` when building or exporting failed.
        metrics: FLOPs, MACs, params, param bytes, peak activation bytes (the
            ones that could be computed) and ``extra`` notes.
        failure: why there is no artifact (kind ``build`` or ``export``).
        timings: seconds spent in ``build``, ``export`` and ``count``.
    """

    arch: Arch
    label: str
    input_shape: tuple[int, ...]
    artifact: Artifact | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    failure: MeasurementFailure | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ArchResult:
    """What one architecture produced: a measurement or a failure, with its metrics."""

    arch: Arch
    label: str
    input_shape: tuple[int, ...]
    artifact: Artifact | None
    metrics: dict[str, Any]
    measurement: Measurement | None = None
    failure: MeasurementFailure | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.measurement is not None

    @property
    def median_ms(self) -> float | None:
        return self.measurement.median if self.measurement is not None else None

    def row(self) -> dict[str, Any]:
        """A flat summary (no raw samples) for tables and JSON output."""
        d: dict[str, Any] = {
            "arch_id": self.arch.id,
            "label": self.label,
            "status": "ok" if self.ok else "failed",
            "median_ms": self.median_ms,
            **{k: self.metrics.get(k) for k in METRIC_FIELDS},
        }
        if self.measurement is not None:
            st = self.measurement.stats
            d.update(iqr_ms=st.iqr, cv=st.cv, n=st.n)
        if self.failure is not None:
            d.update(failure_kind=self.failure.kind, reason=self.failure.reason)
        return d


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:limit] if text else ''}"


def _with_root_cause(exc: BaseException) -> str:
    """The error's first line, and the first line of the innermost error that caused it.

    Exporter errors wrap the real reason (the op that could not be translated)
    several levels down; the stored reason must name it.
    """
    text = _first_line(exc, 600)
    root = exc
    seen = {id(root)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    return text if root is exc else f"{text} [root cause: {_first_line(root)}]"


def export_module(
    source: ModelSource,
    module: Any,
    *,
    input_shape: tuple[int, ...] | None = None,
    label: str = "",
    cache_dir: str | Path | None = None,
    check: bool = True,
) -> Artifact:
    """Export ``module`` (built from ``source``) to ONNX, recording ``source`` with it.

    The one place an exported artifact gets its rebuild recipe: campaigns,
    device-latency objectives and the predictors' encoders all come through
    here (or :func:`export_source`), so ``cpu-torch`` always rebuilds the
    network that was exported, with its classes and input size.
    """
    from hwnas.export import to_onnx

    return to_onnx(
        module,
        input_shape if input_shape is not None else source.input_shape(),
        label=label or source.name,
        cache_dir=cache_dir,
        check=check,
        source=source.to_dict(),
        exporter=source.exporter,
    )


def export_source(
    source: ModelSource,
    *,
    space: SearchSpace | None = None,
    label: str = "",
    cache_dir: str | Path | None = None,
    check: bool = True,
) -> Artifact:
    """Build ``source`` (seeded weights, caller's RNG untouched) and export it (cached).

    Args:
        space: the space instance to build with (see :meth:`ModelSource.build`).
    """
    return export_module(
        source,
        source.build(space),
        input_shape=tuple(space.input_shape) if space is not None else None,
        label=label,
        cache_dir=cache_dir,
        check=check,
    )


def static_metrics(path: str | Path) -> dict[str, Any]:
    """FLOPs, MACs, params and memory figures of an ONNX file.

    Each profiler is guarded on its own: a campaign must not stop because a
    counter meets an op it does not know, nor because the memory profiler is
    missing from this installation. What failed is noted under ``extra``.
    """
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {"flops_method": "onnx"}
    try:
        from hwnas.profilers.graph import load_graph

        graph: Any = load_graph(path)
    except Exception as exc:  # an unreadable graph: both profilers would fail the same way
        extra["profile_error"] = _first_line(exc)
        out["extra"] = extra
        return out
    try:
        from hwnas.profilers.flops import count

        rep = count(graph)
        out.update(flops=int(rep.flops), macs=int(rep.macs), params=int(rep.params))
        if rep.uncounted:
            extra["uncounted_ops"] = list(rep.uncounted)
    except Exception as exc:  # any counter failure is recorded, not fatal
        extra["flops_error"] = _first_line(exc)
    try:
        from hwnas.profilers.memory import estimate

        mem = estimate(graph)
        out.update(
            param_bytes=int(mem.param_bytes), peak_activation_bytes=int(mem.peak_activation_bytes)
        )
    except Exception as exc:  # the memory profiler is optional for a campaign
        extra["memory_error"] = _first_line(exc)
    out["extra"] = extra
    return out


def prepare_arch(
    space: SearchSpace,
    arch: Arch,
    *,
    cache_dir: str | Path | None = None,
    check: bool = True,
    seed: int = 0,
    device_name: str = "",
    with_metrics: bool = True,
    exporter: str = "dynamo",
) -> Prepared:
    """Build, export and count one architecture.

    The module is built with weights drawn from ``seed`` (under a forked RNG,
    so the caller's torch RNG is untouched): the same architecture then
    exports to the same file, and a re-run campaign finds it in the export
    cache instead of exporting it again.

    Args:
        space: the search space ``arch`` belongs to.
        arch: the architecture.
        cache_dir: export cache (default :func:`hwnas.export.default_cache_dir`).
        check: compare ONNX Runtime with torch after export.
        seed: weight seed.
        device_name: recorded in a failure.
        with_metrics: count FLOPs/MACs/params and memory.
        exporter: ``dynamo`` or ``torchscript`` (see :func:`hwnas.export.to_onnx`).

    Returns:
        a :class:`Prepared`; on a build or export error, ``artifact`` is ``None``
        and ``failure`` holds the reason.
    """
    shape = tuple(int(s) for s in space.input_shape)
    source = ModelSource.of_space(space, arch, seed=seed, exporter=exporter)
    try:
        label = space.format(arch)
    except HwnasError:
        label = arch.id
    prep = Prepared(arch=arch, label=label, input_shape=shape)
    t0 = time.perf_counter()
    try:
        module = source.build(space)
    except Exception as exc:  # a space that cannot build one of its archs: record it
        prep.timings["build"] = time.perf_counter() - t0
        prep.failure = MeasurementFailure(device_name, arch.id, "build", _first_line(exc))
        return prep
    t1 = time.perf_counter()
    prep.timings["build"] = t1 - t0
    try:
        prep.artifact = export_module(
            source, module, input_shape=shape, label=arch.id, cache_dir=cache_dir, check=check
        )
    except Exception as exc:  # ExportError, or anything the exporter let through
        prep.failure = MeasurementFailure(device_name, arch.id, "export", _with_root_cause(exc))
    t2 = time.perf_counter()
    prep.timings["export"] = t2 - t1
    if prep.artifact is not None and with_metrics:
        prep.metrics = static_metrics(prep.artifact.path)
        prep.timings["count"] = time.perf_counter() - t2
    return prep


def measure_prepared(
    prepared: Prepared,
    device: MeasuringDevice,
    settings: MeasureSettings | None = None,
    device_name: str | None = None,
) -> ArchResult:
    """Measure a prepared architecture; a failed preparation passes straight through.

    Any error of the measurement (a crash or timeout reported by an isolated
    device, a runtime error of an in-process one) becomes a failure with its
    reason; :class:`KeyboardInterrupt` is not caught.
    """
    name = device_name or getattr(device, "name", "")
    res = ArchResult(
        arch=prepared.arch,
        label=prepared.label,
        input_shape=prepared.input_shape,
        artifact=prepared.artifact,
        metrics=prepared.metrics,
        failure=prepared.failure,
        timings=dict(prepared.timings),
    )
    if prepared.artifact is None:
        if res.failure is None:  # pragma: no cover - prepare_arch always sets one
            res.failure = MeasurementFailure(name, prepared.arch.id, "export", "no artifact")
        return res
    from hwnas.devices.isolated import MeasurementFailed

    art = prepared.artifact
    t0 = time.perf_counter()
    try:
        m = device.measure(art, settings)
    except MeasurementFailed as exc:
        res.failure = exc.failure
    except HwnasError as exc:
        res.failure = MeasurementFailure(name, art.label, "runtime", str(exc), art.sha256)
    except Exception as exc:  # an in-process runtime may raise anything: record and go on
        reason = f"{_first_line(exc)}\n{traceback.format_exc(limit=3)}"
        res.failure = MeasurementFailure(name, art.label, "runtime", reason, art.sha256)
    else:
        res.measurement = m
        res.timings["timed_runs"] = sum(m.samples_ms) / 1e3
        res.timings["warmup"] = sum(m.warmup_ms) / 1e3
        res.timings["session_init"] = float(m.extra.get("init_ms", 0.0)) / 1e3
    res.timings["measure"] = time.perf_counter() - t0
    return res


def measure_arch(
    space: SearchSpace,
    arch: Arch,
    device: MeasuringDevice,
    settings: MeasureSettings | None = None,
    **prepare_kwargs: Any,
) -> ArchResult:
    """Build, export, count and measure one architecture: the unit of a campaign.

    Pure apart from the export cache and the device: no store, no global
    state, so a distributed runner can call it per architecture and record the
    returned :class:`ArchResult` with :func:`record_result` wherever the store is.
    """
    name = getattr(device, "name", "")
    prepared = prepare_arch(space, arch, device_name=name, **prepare_kwargs)
    return measure_prepared(prepared, device, settings, device_name=name)


def record_result(
    store: Any,
    result: ArchResult,
    *,
    device_name: str,
    campaign: str | None = None,
    num_classes: int | None = None,
    exporter: str | None = None,
) -> int | None:
    """Write one result to the store: arch, artifact, metrics, then the measurement.

    Returns the measurement row's id (what a canary's flags refer to), when the
    store gives one.

    ``num_classes`` and ``exporter`` complete the measurement's key (they change
    the network that was timed; see :class:`hwnas.store.sqlite.MeasurementKey`).

    The measurement row goes last: it is what :meth:`Store.has_measurement`
    looks for, so a process killed half-way through this function leaves the
    architecture to be measured again by the next run, never half-recorded.
    """
    arch = result.arch
    store.add_arch(arch, label=result.label)
    if result.artifact is not None:
        store.add_artifact(result.artifact, arch.id)
    if result.metrics:
        store.set_metrics(
            arch.id,
            result.input_shape,
            **{k: result.metrics.get(k) for k in METRIC_FIELDS},
            extra=result.metrics.get("extra"),
        )
    outcome = result.measurement if result.measurement is not None else result.failure
    assert outcome is not None, "an ArchResult holds a measurement or a failure"
    return store.add_measurement(
        arch.id,
        outcome,
        result.input_shape,
        device=device_name,
        campaign=campaign,
        num_classes=num_classes,
        exporter=exporter,
    )
