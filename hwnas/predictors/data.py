"""Training data for predictors: measured architectures from a store or a CSV table.

A :class:`Dataset` is what every predictor command works on: architectures
of one space, their measured latency on one device, and their FLOPs when
known. Two sources:

* an hwnas store (``Store(path).measurements(device=, space=)``), where
  repeated measurements of one architecture are merged by their median;
* a CSV table with an architecture column in the space's string form (e.g.
  the NAS-Bench-201 table with its three devices' latency columns).

Degenerate architectures (``space.is_degenerate(arch)``, e.g. NAS-Bench-201
cells whose output is cut off from the input) are dropped by default: some
runtimes fold such a network to a constant and time it at ~0 ms, a point
that says nothing about the cost of the ops and would dominate relative
errors. Pass ``include_degenerate=True`` to keep them.

Rows of a store that the interference guard or the reference canary flagged
and that were not re-measured since are left out too (``include_flagged=True``
keeps them): a median taken while the machine was busy can be 2-5x too slow,
and a predictor trained on it learns the interference, not the network.
:func:`dropped_note` says what was left out, for printing beside the figures.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.arch import Arch
from hwnas.errors import ConfigError, PredictorError, SpaceError
from hwnas.predictors.base import Predictor
from hwnas.predictors.encoders import Encoding, get_encoding

if TYPE_CHECKING:
    from hwnas.spaces.base import SearchSpace


@dataclass
class Dataset:
    """Measured latencies of architectures of one space on one device.

    Attributes:
        flops: FLOPs per architecture, ``nan`` where not recorded.
        dropped: how many rows were left out and why (``{"degenerate": 341}``).
    """

    space: str
    device: str
    archs: list[Arch]
    y_ms: np.ndarray
    flops: np.ndarray
    source: str = ""
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.archs)

    def subset(self, idx: Sequence[int] | np.ndarray) -> Dataset:
        idx = np.asarray(idx, dtype=np.int64)
        return replace(
            self,
            archs=[self.archs[i] for i in idx],
            y_ms=self.y_ms[idx],
            flops=self.flops[idx],
            dropped=dict(self.dropped),
        )

    def features(self, encoding: str | Encoding, space: SearchSpace) -> np.ndarray:
        """Feature matrix of every architecture under ``encoding``."""
        enc = get_encoding(encoding) if isinstance(encoding, str) else encoding
        return enc.encode_archs(space, self.archs, flops=self.flops)


def _space(space: str | SearchSpace) -> SearchSpace:
    from hwnas.spaces import get_space

    return get_space(space) if isinstance(space, str) else space


def _drop_degenerate(
    space: SearchSpace, archs: list[Arch], include: bool
) -> tuple[np.ndarray, int]:
    """Mask of rows to keep, and how many degenerate rows were dropped."""
    keep = np.ones(len(archs), dtype=bool)
    check = getattr(space, "is_degenerate", None)
    if include or check is None:
        return keep, 0
    for i, a in enumerate(archs):
        if check(a):
            keep[i] = False
    return keep, int((~keep).sum())


def load_table(
    path: str | Path,
    space: str | SearchSpace,
    latency_column: str,
    arch_column: str = "arch",
    device: str | None = None,
    include_degenerate: bool = False,
) -> Dataset:
    """Read a CSV table: one architecture string (the space's own form) and latency (ms) per row.

    Args:
        device: a name for the device (default: the column name without a
            ``latency_ms_`` prefix).

    Raises:
        ConfigError: missing file or column; SpaceError: an unparsable architecture.
    """
    sp = _space(space)
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"no such table: {p}; give the path of a CSV file")
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        for want, opt in ((arch_column, "--arch-column"), (latency_column, "--latency-column")):
            if want not in cols:
                raise ConfigError(
                    f"{p} has no column '{want}' (give it with {opt}); its columns: {', '.join(cols)}"
                )
        archs: list[Arch] = []
        ys: list[float] = []
        missing = 0
        for lineno, row in enumerate(reader, start=2):
            text = (row.get(latency_column) or "").strip()
            try:
                y = float(text)
            except ValueError:
                y = math.nan
            if not math.isfinite(y) or y <= 0:
                missing += 1
                continue
            try:
                archs.append(sp.parse(row[arch_column]))
            except SpaceError as exc:
                raise SpaceError(f"{p}, line {lineno}: {exc}") from exc
            ys.append(y)
    keep, n_deg = _drop_degenerate(sp, archs, include_degenerate)
    dropped = {k: v for k, v in (("degenerate", n_deg), ("no latency", missing)) if v}
    dev = device or latency_column.removeprefix("latency_ms_")
    ds = Dataset(
        space=sp.name,
        device=dev,
        archs=[a for a, k in zip(archs, keep, strict=True) if k],
        y_ms=np.asarray(ys, dtype=np.float64)[keep],
        flops=np.full(int(keep.sum()), np.nan),
        source=f"{p}:{latency_column}",
        dropped=dropped,
    )
    if len(ds) == 0:
        raise PredictorError(f"{p} has no usable rows in column '{latency_column}'")
    return ds


def load_store(
    path: str | Path,
    space: str | SearchSpace,
    device: str | None = None,
    input_shape: str | None = None,
    include_degenerate: bool = False,
    include_flagged: bool = False,
) -> Dataset:
    """Measurements of ``space`` on ``device`` from an hwnas store.

    Repeated measurements of one architecture are merged by their median.
    Rows still flagged by the interference guard or the canary (see
    :mod:`hwnas.store.quality`) are left out unless ``include_flagged``;
    ``Dataset.dropped`` counts them per reason (rows, not architectures: an
    architecture measured twice keeps its clean row).

    Raises:
        ConfigError: no such file, no measurements, or several devices / input
            shapes without saying which one.
    """
    from hwnas.store import Store

    sp = _space(space)
    if not Path(path).exists():
        raise ConfigError(f"no such database: {path}; give the --db file a campaign wrote")
    # repeats of one experiment (dup_of) are merged into its median below
    store = Store(path, readonly=True)
    rows = store.measurements(device=device, space=sp.name, include_duplicates=True)
    if input_shape is not None:
        rows = [r for r in rows if r["input_shape"] == input_shape]
    n_flagged: dict[str, int] = {}
    if not include_flagged:
        from hwnas.store.quality import pending_kinds

        flags = pending_kinds(store.conn)
        for r in rows:
            kind = flags.get(int(r["id"]))
            if kind is not None:
                key = FLAG_REASONS.get(kind, f"rows flagged ({kind})")
                n_flagged[key] = n_flagged.get(key, 0) + 1
        if n_flagged:
            rows = [r for r in rows if int(r["id"]) not in flags]
    if not rows:
        raise ConfigError(
            f"{path} has no successful measurements of space '{sp.name}'"
            + (f" on device '{device}'" if device else "")
            + (f" at input shape {input_shape}" if input_shape else "")
            + (
                f" that are not flagged ({sum(n_flagged.values())} flagged rows left out; "
                "keep them with --include-flagged)"
                if n_flagged
                else ""
            )
            + "; run `hwnas sample` first or check --device/--space"
        )
    devices = sorted({r["device"] for r in rows})
    if len(devices) > 1:
        raise ConfigError(
            f"{path} holds '{sp.name}' measurements from several devices ({', '.join(devices)}); "
            "choose one with --device"
        )
    shapes = sorted({r["input_shape"] for r in rows})
    if len(shapes) > 1:
        raise ConfigError(
            f"{path} holds '{sp.name}' measurements at several input shapes ({', '.join(shapes)}); "
            "choose one with --input-shape"
        )
    by_arch: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("median_ms") is not None and r["median_ms"] > 0:
            by_arch.setdefault(r["arch_id"], []).append(r)
    archs: list[Arch] = []
    ys: list[float] = []
    fl: list[float] = []
    for group in by_arch.values():
        a = Arch(sp.name, tuple(group[0]["choices"]))
        sp.validate(a)
        archs.append(a)
        ys.append(float(np.median([g["median_ms"] for g in group])))
        f = group[0].get("flops")
        fl.append(float(f) if f is not None else math.nan)
    keep, n_deg = _drop_degenerate(sp, archs, include_degenerate)
    return Dataset(
        space=sp.name,
        device=devices[0],
        archs=[a for a, k in zip(archs, keep, strict=True) if k],
        y_ms=np.asarray(ys, dtype=np.float64)[keep],
        flops=np.asarray(fl, dtype=np.float64)[keep],
        source=str(path),
        dropped={**n_flagged, **({"degenerate": n_deg} if n_deg else {})},
    )


#: ``Dataset.dropped`` keys of flagged rows, by flag kind (see :mod:`hwnas.store.quality`).
FLAG_REASONS = {
    "canary": "rows flagged by the canary",
    "interference": "rows flagged by the interference guard",
}


def dropped_note(ds: Dataset) -> str:
    """One line saying what :func:`load_store` / :func:`load_table` left out and how to keep it.

    E.g. ``left out 12 rows flagged by the canary; --include-flagged to keep them``.
    """
    parts, hints = [], []
    for k, v in ds.dropped.items():
        parts.append(f"{v} {k}")
        if k == "degenerate":
            hints.append("--include-degenerate")
        elif k.startswith("rows flagged") and "--include-flagged" not in hints:
            hints.append("--include-flagged")
    if not parts:
        return ""
    hint = f"; {' / '.join(hints)} to keep them" if hints else ""
    return f"left out {', '.join(parts)}{hint}"


def split(ds: Dataset, train_size: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Random ``train_size`` architectures for training, all the others for testing."""
    if train_size < 2:
        raise ConfigError(f"--train-size must be at least 2, got {train_size}")
    if train_size > len(ds):
        raise ConfigError(
            f"--train-size {train_size} is more than the {len(ds)} usable architectures "
            f"of {ds.source}; give at most {len(ds)}"
        )
    perm = np.random.default_rng(seed).permutation(len(ds))
    return ds.subset(np.sort(perm[:train_size])), ds.subset(np.sort(perm[train_size:]))


# ---- training and prediction on datasets ------------------------------------------


def default_encoding(predictor: str) -> str:
    """The encoding a predictor is trained on unless told otherwise."""
    from hwnas.predictors.registry import PREDICTORS

    return getattr(PREDICTORS.factory(predictor), "default_encoding", "onehot")


def fit_predictor(
    predictor: Predictor,
    train: Dataset,
    space: SearchSpace,
    encoding: str,
    fit_kwargs: dict[str, Any] | None = None,
) -> Predictor:
    """Encode ``train``, fit ``predictor`` and record what it was trained for in ``meta``.

    Args:
        fit_kwargs: extra arguments of the predictor's ``fit`` (``sources=`` and
            ``space=`` for ``transfer``, ``init=``/``anchor=`` for ``mlp``).
    """
    enc = get_encoding(encoding)
    X = train.features(enc, space)
    predictor.fit(X, train.y_ms, **(fit_kwargs or {}))
    record_meta(predictor, train, space, enc.name)
    return predictor


#: Training-set architecture ids are kept in the file (so ``eval-predictor``
#: can leave them out) up to this many; beyond it the JSON would get large.
MAX_RECORDED_IDS = 100_000


def record_meta(predictor: Predictor, train: Dataset, space: SearchSpace, encoding: str) -> None:
    """Write into ``predictor.meta`` the space, encoding, device and training set it was fitted on."""
    enc = get_encoding(encoding)
    predictor.meta.update(
        space=space.name,
        encoding=enc.name,
        encoding_length=int(enc.length(space)),
        device=train.device,
        train_size=len(train),
        source=train.source,
        dropped=train.dropped,
        space_settings={"input_size": space.input_size, "num_classes": space.num_classes},
    )
    if len(train) <= MAX_RECORDED_IDS:
        predictor.meta["train_arch_ids"] = sorted({a.id for a in train.archs})


def _encoded(predictor: Predictor, ds: Dataset, space: SearchSpace) -> np.ndarray:
    """``ds`` encoded as ``predictor`` was trained, after checking space and encoding."""
    enc_name = predictor.meta.get("encoding")
    if not enc_name:
        raise PredictorError(
            "this predictor records no encoding; it was not trained with hwnas.predictors.data"
        )
    enc = get_encoding(enc_name)
    length = int(enc.length(space))
    predictor.check_compatible(space=space.name, encoding=enc.name, encoding_length=length or None)
    return ds.features(enc, space)


def predict_dataset(predictor: Predictor, ds: Dataset, space: SearchSpace) -> np.ndarray:
    """Predicted latency (ms) of every architecture of ``ds``.

    Raises:
        PredictorError: the predictor was trained for another space or encoding.
    """
    return np.asarray(predictor.predict(_encoded(predictor, ds, space)), dtype=np.float64)


def predict_dataset_interval(
    predictor: Predictor, ds: Dataset, space: SearchSpace, coverage: float = 0.9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point prediction and central ``coverage`` interval (ms) of every architecture of ``ds``.

    Returns:
        ``(point, lo, hi)``.

    Raises:
        PredictorError: wrong space or encoding, or no uncertainty source.
        ConfigError: ``coverage`` not strictly between 0 and 1.
    """
    X = _encoded(predictor, ds, space)
    lo, hi = predictor.predict_interval(X, coverage)
    return np.asarray(predictor.predict(X), dtype=np.float64), lo, hi


def calibrate_dataset(
    predictor: Predictor, cal: Dataset, space: SearchSpace, score: str = "log"
) -> Predictor:
    """Split-conformal calibration of ``predictor`` on the held-out measured ``cal`` set.

    See :meth:`Predictor.calibrate` for what the interval then promises. The
    calibration architectures join ``meta["train_arch_ids"]``: they were used
    to build the file, so ``eval-predictor`` leaves them out too (coverage
    measured on them would be biased).
    """
    predictor.calibrate(_encoded(predictor, cal, space), cal.y_ms, score=score)
    ids = predictor.meta.get("train_arch_ids")
    if isinstance(ids, list) and len(ids) + len(cal) <= MAX_RECORDED_IDS:
        predictor.meta["train_arch_ids"] = sorted(set(ids) | {a.id for a in cal.archs})
    predictor.meta["calibration"]["source"] = cal.source
    return predictor


def split_calibration(train: Dataset, share: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Keep ``share`` of ``train`` aside for calibration: (fit part, calibration part).

    Why a random split: split-conformal's guarantee needs the calibration
    architectures to be exchangeable with the ones predicted later, i.e.
    drawn the same way as the training set, and never seen by ``fit``.

    Raises:
        ConfigError: ``share`` not in (0, 1), or either part under 2 architectures.
    """
    from hwnas.predictors.base import check_level

    share = check_level(share, "--calibrate (the share of the training set kept for calibration)")
    n_cal = int(round(share * len(train)))
    if n_cal < 2 or len(train) - n_cal < 2:
        raise ConfigError(
            f"--calibrate {share} of {len(train)} training architectures leaves {n_cal} for "
            f"calibration and {len(train) - n_cal} for fitting; each needs at least 2 "
            "(give a larger --train-size or another share)"
        )
    # Its own random stream ([seed, 1]): the calibration split must not repeat the train/test one.
    perm = np.random.default_rng([seed, 1]).permutation(len(train))
    return train.subset(np.sort(perm[n_cal:])), train.subset(np.sort(perm[:n_cal]))


__all__ = [
    "Dataset",
    "calibrate_dataset",
    "default_encoding",
    "dropped_note",
    "fit_predictor",
    "load_store",
    "load_table",
    "predict_dataset",
    "predict_dataset_interval",
    "record_meta",
    "split",
    "split_calibration",
]
