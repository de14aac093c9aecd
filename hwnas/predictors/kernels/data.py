"""Training data for the ``kernel`` predictor, read back from the measurement store.

Kept apart from :mod:`.campaign` (which measures) and :mod:`hwnas.predictors.kernel`
(which fits) so that neither imports the other: the predictor re-exports
:func:`kernel_training_data` and the campaign's adaptive rounds use the predictor.

Each stored measurement of a sampled kernel (space ``kernel:<type>``) or a
calibration network (space ``kernel-net``) keeps two descriptions in its
``extra``: the kernels the hand-written rules found in its ONNX graph
(``kernel`` / ``kernels``) and, when the campaign could read them, the kernels
the runtime executes (``runtime_kernels``, with ``kernel_reader``). ``source``
chooses which of the two a predictor is trained on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwnas.errors import ConfigError, PredictorError
from hwnas.predictors.kernels.detect import KernelRecord, NetworkRecord

KERNEL_SPACE_PREFIX = "kernel:"
NETWORK_SPACE = "kernel-net"
STATISTICS = ("median", "p10", "min", "mean")
DATA_SOURCES = ("auto", "runtime", "rules")
# Layout changes at a one-kernel model's boundary: part of what measuring the
# kernel alone costs, not a kernel of their own.
BOUNDARY_TYPES = frozenset({"reorder"})


def _thaw(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_thaw(v) for v in value)
    return value


def _runtime_item(extra: dict, label: str) -> KernelRecord | NetworkRecord | None:
    """A sample as the runtime ran it: one kernel (plus boundary reorders), or a small network."""
    dicts = extra.get("runtime_kernels")
    if not dicts:
        return None
    kernels = tuple(KernelRecord.from_dict(d) for d in dicts)
    core = [k for k in kernels if k.type not in BOUNDARY_TYPES]
    if len(core) == 1:
        return core[0]
    return NetworkRecord(kernels, label)


def measured_items(
    store, device: str, networks: bool, statistic: str = "median", source: str = "rules"
) -> dict[str, tuple[Any, tuple, float]]:
    """arch id -> (record, configuration, latency ms); the latest measurement wins.

    With ``source="runtime"`` a one-kernel sample that the runtime split into
    several kernels (an SE block: pooling, two convs, a multiply) becomes a
    small :class:`NetworkRecord` (when ``networks``), and samples stored
    without runtime kernels are left out.
    """
    if statistic not in STATISTICS:
        raise ConfigError(f"unknown statistic '{statistic}'; use one of {', '.join(STATISTICS)}")
    if source not in ("runtime", "rules"):
        raise ConfigError(f"unknown kernel source '{source}'; use 'runtime' or 'rules'")
    col = f"{statistic}_ms"
    latest: dict[str, tuple[Any, tuple, float]] = {}
    for row in store.measurements(device=device, status="ok"):
        space = row["space"]
        extra = row.get("extra") or {}
        cfg = tuple(_thaw(row["choices"]))
        label = row.get("label") or ""
        item: Any = None
        if source == "runtime" and space.startswith((KERNEL_SPACE_PREFIX, NETWORK_SPACE)):
            item = _runtime_item(extra, label)
            if isinstance(item, NetworkRecord) and space == NETWORK_SPACE:
                item = NetworkRecord(item.kernels, label)
            if isinstance(item, NetworkRecord) and not networks:
                item = None
        elif space.startswith(KERNEL_SPACE_PREFIX) and "kernel" in extra:
            item = KernelRecord.from_dict(extra["kernel"])
        elif networks and space == NETWORK_SPACE and "kernels" in extra:
            kernels = tuple(KernelRecord.from_dict(d) for d in extra["kernels"])
            item = NetworkRecord(kernels, label)
        if item is not None:
            latest[row["arch_id"]] = (item, cfg, float(row[col]))
    return latest


def has_runtime_kernels(store, device: str) -> bool:
    """Whether any kernel measurement on ``device`` carries the runtime's own kernels."""
    return any(
        (row.get("extra") or {}).get("runtime_kernels")
        for row in store.measurements(device=device, status="ok")
    )


def kernel_training_data(
    store,
    device: str,
    networks: bool = True,
    statistic: str = "median",
    source: str = "auto",
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
        source: ``runtime`` (the kernels the runtime executes, read by the
            campaign), ``rules`` (the hand-written fusion rules) or ``auto``
            (runtime when the store has them, else rules).

    Returns:
        ``(items, latencies_ms)``: :class:`KernelRecord` items (one kernel
        measured alone) and :class:`NetworkRecord` items (a whole network).

    Raises:
        PredictorError: nothing was measured on ``device`` (for that source).
        ConfigError: unknown statistic or source.
    """
    if source not in DATA_SOURCES:
        raise ConfigError(f"unknown kernel source '{source}'; use one of {', '.join(DATA_SOURCES)}")
    if source == "auto":
        source = "runtime" if has_runtime_kernels(store, device) else "rules"
    latest = measured_items(store, device, networks, statistic, source)
    if not any(isinstance(v[0], KernelRecord) for v in latest.values()):
        what = "runtime-read kernel" if source == "runtime" else "kernel"
        raise PredictorError(
            f"the database has no {what} measurements on '{device}'; collect them with "
            f"`hwnas sample-kernels --device {device} --db FILE`"
        )
    items = [v[0] for v in latest.values()]
    y = np.asarray([v[2] for v in latest.values()], dtype=np.float64)
    return items, y
