"""The ``kernel`` predictor: nn-Meter's idea, a model's latency as the sum of its kernels'.

How it predicts a model (any ONNX file, not only ours):

1. :func:`~hwnas.predictors.kernels.detect.detect_kernels` splits the graph
   into the fused kernels a runtime executes (conv+bn+act, dwconv+bn+act, fc,
   SE, pooling, add, concat...).
2. Each kernel type has its own regressor on the kernel's configuration
   (input size, channels, kernel, stride, MACs, bytes moved...). As in
   nn-Meter it is a random forest (or gradient boosting), but it predicts the
   *log ratio* of the latency to a non-negative linear roofline fit
   (``a + b*MACs + c*bytes_in + d*bytes_out + e*weight_bytes``). The linear
   part extrapolates sensibly past the sampled configurations, where a forest
   alone would predict a constant; the forest corrects what the roofline
   misses (cache cliffs, vector-width effects of the channel count).
3. The kernel predictions are summed, then *calibrated*: a kernel measured
   alone is not the same kernel inside a model. Alone, every run pays the
   runtime's call overhead and layout conversions at the model's boundary
   (ONNX Runtime reorders NCHW to its blocked NCHWc layout and back), and its
   weights and activations stay hot in cache between runs; inside a model the
   overhead is paid once and the previous kernel has evicted the cache. When
   the training data holds whole calibration networks (random networks of the
   same blocks, never the models being predicted; see
   :mod:`hwnas.predictors.kernels.sampling`), we fit
   ``model = b + sum_k (s_type(k) * kernel_k + c)`` (a scale per kernel type,
   a per-kernel overhead ``c`` and a per-model constant ``b``) on them by
   relative least squares, with a ridge pull towards the uncalibrated sum
   (``s = 1``, ``c = b = 0``) so that a type the calibration networks barely
   contain keeps its measured scale.

Training data: :func:`kernel_training_data` reads what ``hwnas sample-kernels``
stored. ``fit(X, y)`` takes a list whose items are :class:`KernelRecord` (a
kernel measured alone, ``y`` its latency) or :class:`NetworkRecord` (a
calibration network, ``y`` the network's latency). ``predict(X)`` takes the
same kinds of items, plus ONNX paths, ModelProtos and loaded graphs: a kernel
gets its stand-alone latency, a model or network its calibrated total.

Saved as one ``.npz`` (no pickle): per kernel type its roofline coefficients
and its trees as flat arrays (:class:`~hwnas.predictors.kernels.forest.TreeEnsemble`),
plus the calibration vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from hwnas.errors import PredictorError
from hwnas.predictors.base import Predictor
from hwnas.predictors.kernels.data import kernel_training_data
from hwnas.predictors.kernels.detect import (
    FEATURE_NAMES,
    KERNEL_TYPES,
    KernelRecord,
    NetworkRecord,
    detect_kernels,
)
from hwnas.predictors.kernels.forest import TreeEnsemble
from hwnas.profilers.graph import Graph

__all__ = [
    "KernelPrediction",
    "KernelPredictor",
    "KernelRecord",
    "NetworkRecord",
    "detect_kernels",
    "kernel_training_data",
]

ROOFLINE_TERMS = ("1", "macs", "in_bytes", "out_bytes", "param_bytes", "elem_flops")

# A kernel type with no regressor is predicted by the first trained type of its
# chain (the reason is reported with the prediction, never hidden). Memory-bound
# kernels fall back to memory-bound regressors, compute-bound ones to convs.
FALLBACKS: dict[str, tuple[str, ...]] = {
    "reorder": ("elementwise", "add", "bn", "concat"),
    "se": ("elementwise", "gap", "add"),
    "dwconv": ("conv",),
    "conv": ("dwconv", "fc"),
    "fc": ("conv",),
    "maxpool": ("avgpool", "elementwise"),
    "avgpool": ("maxpool", "elementwise"),
    "gap": ("avgpool", "maxpool", "elementwise"),
    "add": ("elementwise", "bn", "concat"),
    "bn": ("elementwise", "add"),
    "concat": ("elementwise", "add"),
    "elementwise": ("add", "bn", "concat"),
}
LAST_RESORT = ("elementwise", "add", "bn", "concat", "conv")


@dataclass(frozen=True)
class KernelPrediction:
    """One kernel of a model with its prediction and how it was made.

    Attributes:
        kernel: the kernel.
        alone_ms: predicted latency measured alone.
        in_model_ms: its calibrated share of the model's latency.
        regressor: the kernel type whose regressor predicted it.
        note: empty when the kernel's own type (and op) was sampled; otherwise
            what was never sampled and which fallback predicted it.
    """

    kernel: KernelRecord
    alone_ms: float
    in_model_ms: float
    regressor: str
    note: str = ""

    @property
    def sampled(self) -> bool:
        return not self.note


def _roofline_design(records: Sequence[KernelRecord]) -> np.ndarray:
    """Rows ``[1, MACs, bytes in, bytes out, weight bytes, element-wise FLOPs]`` (scaled)."""
    rows = [
        (
            1.0,
            r.macs / 1e6,
            r.in_bytes / 1e6,
            r.out_bytes / 1e6,
            r.params * r.itemsize / 1e6,
            (r.flops - 2 * r.macs) / 1e6,
        )
        for r in records
    ]
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(ROOFLINE_TERMS))


def _mbytes(r: KernelRecord) -> float:
    """Activation megabytes a kernel reads and writes."""
    return (r.in_bytes + r.out_bytes) / 1e6


def _as_record(item: Any) -> KernelRecord:
    if isinstance(item, KernelRecord):
        return item
    if isinstance(item, dict):
        return KernelRecord.from_dict(item)
    raise PredictorError(
        f"expected a KernelRecord (or its dict), got {type(item).__name__}; "
        "build records with hwnas.predictors.kernels.detect_kernels or kernel_training_data"
    )


class KernelPredictor(Predictor):
    """Per-kernel-type regressors whose predictions are summed over a model's kernels.

    Args:
        n_estimators: trees per kernel type.
        forest: ``rf`` (random forest, nn-Meter's choice) or ``gbdt`` (gradient boosting).
        min_samples_leaf: smallest leaf; larger values smooth over measurement noise.
        max_features: share of features tried at each split (random forest).
        calibrate: fit the in-model calibration when calibration networks are given.
        calibration: ``scale`` (a scale per kernel type, a per-kernel and a
            per-model constant) or ``scale+bytes`` (plus, per type, a cost per
            megabyte of activations: layout conversions and cache misses a
            kernel alone does not pay, or pays more, than inside a model).
        ridge: strength of the calibration's pull towards the plain sum.
        seed: random state of the forests.
    """

    name = "kernel"

    def __init__(
        self,
        n_estimators: int = 100,
        forest: str = "rf",
        min_samples_leaf: int = 1,
        max_features: float = 0.6,
        calibrate: bool = True,
        calibration: str = "scale",
        ridge: float = 0.05,
        seed: int = 0,
    ):
        if forest not in ("rf", "gbdt"):
            raise PredictorError(f"forest must be 'rf' or 'gbdt', got '{forest}'")
        if calibration not in ("scale", "scale+bytes"):
            raise PredictorError(
                f"calibration must be 'scale' or 'scale+bytes', got '{calibration}'"
            )
        if int(n_estimators) < 1:
            raise PredictorError(f"n_estimators must be >= 1, got {n_estimators}")
        super().__init__(
            n_estimators=int(n_estimators),
            forest=forest,
            min_samples_leaf=int(min_samples_leaf),
            max_features=float(max_features),
            calibrate=bool(calibrate),
            calibration=calibration,
            ridge=float(ridge),
            seed=int(seed),
        )
        self.roofline: dict[str, np.ndarray] = {}
        self.trees: dict[str, TreeEnsemble] = {}
        self.calibration: dict[str, float] = {}  # type -> scale
        self.bytes_ms_per_mb: dict[str, float] = {}  # type -> ms per MB of activations
        self.kernel_overhead_ms = 0.0
        self.model_overhead_ms = 0.0
        self.network_log_residuals = np.zeros(0)  # sorted, cross-fitted (see fit)

    # ---- training ------------------------------------------------------------------------

    @property
    def types(self) -> list[str]:
        """Kernel types this predictor can predict."""
        return sorted(self.roofline)

    def fit(self, X: Sequence[Any], y_ms: np.ndarray, **kwargs: Any) -> KernelPredictor:
        """Train on kernels measured alone and, optionally, calibration networks.

        Args:
            X: items that are :class:`KernelRecord` (or their dicts) or :class:`NetworkRecord`.
            y_ms: the measured latency of each item, in milliseconds.

        Raises:
            PredictorError: lengths differ, a latency is not positive, or there are no kernels.
        """
        y = np.asarray(y_ms, dtype=np.float64).ravel()
        if len(X) != len(y):
            raise PredictorError(
                f"{len(X)} items but {len(y)} latencies; give one latency per item"
            )
        if len(y) and (not np.isfinite(y).all() or (y <= 0).any()):
            raise PredictorError("latencies must be positive, finite milliseconds")
        singles: list[KernelRecord] = []
        ys: list[float] = []
        nets: list[NetworkRecord] = []
        yn: list[float] = []
        for item, t in zip(X, y, strict=True):
            if isinstance(item, NetworkRecord):
                nets.append(item)
                yn.append(float(t))
            else:
                singles.append(_as_record(item))
                ys.append(float(t))
        if not singles:
            raise PredictorError(
                "no single-kernel measurements to train on; collect them with `hwnas sample-kernels`"
            )
        readers = {r.reader for r in singles} | {k.reader for n in nets for k in n.kernels}
        if len(readers) > 1:
            raise PredictorError(
                f"the training data mixes kernels read by {sorted(r or 'rules' for r in readers)}; "
                "train on one source (kernel_training_data(..., source='runtime' or 'rules'))"
            )
        reader = readers.pop()
        self.roofline, self.trees = {}, {}
        by_type: dict[str, list[int]] = {}
        for i, r in enumerate(singles):
            by_type.setdefault(r.type, []).append(i)
        ys_arr = np.asarray(ys)
        for kind, idx in sorted(by_type.items()):
            recs = [singles[i] for i in idx]
            self._fit_type(kind, recs, ys_arr[idx])
        self.meta["sampled_ops"] = {
            t: sorted({singles[i].op for i in idx}) for t, idx in sorted(by_type.items())
        }
        self.calibration = {t: 1.0 for t in self.types}
        self.bytes_ms_per_mb = {}
        self.kernel_overhead_ms = 0.0
        self.model_overhead_ms = 0.0
        self.network_log_residuals = np.zeros(0)
        if nets and self.hparams["calibrate"]:
            self._fit_calibration(nets, np.asarray(yn))
            self.network_log_residuals = self._cross_fitted_residuals(nets, np.asarray(yn))
        self.meta.update(
            {
                "encoding": "kernels",
                "kernel_source": "runtime" if reader else "rules",
                "kernel_reader": reader or "hand-written rules",
                "runtime": "litert" if reader.startswith("litert") else "ort",
                "optimization": reader.rsplit(" ", 1)[-1] if reader.startswith("onnx") else "all",
                "kernel_types": self.types,
                "train_size": len(singles),
                "train_counts": {k: len(v) for k, v in sorted(by_type.items())},
                "calibration_networks": len(nets) if self.hparams["calibrate"] else 0,
                "feature_names": list(FEATURE_NAMES) + ["log_roofline"],
                "roofline_terms": list(ROOFLINE_TERMS),
            }
        )
        return self

    def _fit_type(self, kind: str, recs: list[KernelRecord], y: np.ndarray) -> None:
        from scipy.optimize import nnls

        A = _roofline_design(recs)
        # Relative least squares (rows divided by y): a 10 us kernel matters as
        # much as a 10 ms one, since nn-Meter's metric is the relative error.
        coef, _ = nnls(A / y[:, None], np.ones(len(y)))
        if not np.any(coef > 0):  # pragma: no cover - nnls always fits the intercept here
            coef[0] = float(np.median(y))
        self.roofline[kind] = coef
        if len(recs) < 4:
            return  # too few for a forest: the roofline alone
        base = np.maximum(A @ coef, 1e-6)
        F = self._features(recs, base)
        target = np.log(y) - np.log(base)
        self.trees[kind] = TreeEnsemble.from_sklearn(self._make_forest(len(recs)).fit(F, target))

    def _make_forest(self, n: int):
        hp = self.hparams
        if hp["forest"] == "gbdt":
            from sklearn.ensemble import GradientBoostingRegressor

            return GradientBoostingRegressor(
                n_estimators=hp["n_estimators"],
                max_depth=3,
                learning_rate=0.1,
                subsample=0.8,
                min_samples_leaf=hp["min_samples_leaf"],
                random_state=hp["seed"],
            )
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(
            n_estimators=hp["n_estimators"],
            min_samples_leaf=hp["min_samples_leaf"],
            max_features=hp["max_features"],
            random_state=hp["seed"],
            n_jobs=1,
        )

    @staticmethod
    def _features(recs: Sequence[KernelRecord], base: np.ndarray) -> np.ndarray:
        F = np.asarray([r.features() for r in recs], dtype=np.float64).reshape(len(recs), -1)
        return np.hstack([F, np.log(base)[:, None]])

    def _fit_calibration(self, nets: list[NetworkRecord], y: np.ndarray) -> None:
        from scipy.optimize import lsq_linear

        # Every network is used: a kernel type nobody measured alone (an ORT
        # reorder) is predicted by its fallback and gets a scale of its own here.
        types = sorted(set(self.types) | {k.type for n in nets for k in n.kernels})
        if len(nets) < 3:
            return
        with_bytes = self.hparams["calibration"] == "scale+bytes"
        rows = []
        for net in nets:
            pred = self.predict_kernels(list(net.kernels))
            row = [
                sum(p for p, k in zip(pred, net.kernels, strict=True) if k.type == t) for t in types
            ]
            if with_bytes:
                row += [sum(_mbytes(k) for k in net.kernels if k.type == t) for t in types]
            rows.append([*row, len(net.kernels), 1.0])
        A = np.asarray(rows, dtype=np.float64)
        n_t = len(types)
        prior = np.zeros(A.shape[1])
        prior[:n_t] = 1.0
        lo = np.full(A.shape[1], -np.inf)
        hi = np.full(A.shape[1], np.inf)
        lo[:n_t], hi[:n_t] = 0.05, 20.0
        lo[-1] = 0.0  # a model never costs less than its kernels (see _calibrated)
        # Relative residuals (rows divided by y). The ridge pulls every
        # parameter to the plain sum (scales 1, the rest 0) with a strength
        # measured in each column's own units (its RMS), so it means the same
        # on a phone and on a server, and a column that is all zeros (a type
        # absent from every network) is simply left at its prior.
        Aw = A / y[:, None]
        norm = np.sqrt((Aw**2).mean(axis=0))
        norm[norm == 0] = 1.0
        lam = np.sqrt(self.hparams["ridge"])
        Z = Aw / norm
        target = np.concatenate([np.ones(len(y)), lam * prior * norm])
        sol = lsq_linear(
            np.vstack([Z, lam * np.eye(A.shape[1])]), target, bounds=(lo * norm, hi * norm)
        )
        x = sol.x / norm
        self.calibration = {t: float(v) for t, v in zip(types, x[:n_t], strict=True)}
        self.bytes_ms_per_mb = (
            {t: float(v) for t, v in zip(types, x[n_t : 2 * n_t], strict=True)}
            if with_bytes
            else {}
        )
        self.kernel_overhead_ms = float(x[-2])
        self.model_overhead_ms = float(x[-1])

    def _cross_fitted_residuals(self, nets: list[NetworkRecord], y: np.ndarray) -> np.ndarray:
        """log(measured / predicted) of each calibration network, its calibration fitted without it.

        5-fold over the networks, refitting only the calibration (the kernel
        regressors never saw these networks). These residuals give the
        prediction interval of a new model; in-sample residuals would be too
        narrow.
        """
        full = (
            dict(self.calibration),
            dict(self.bytes_ms_per_mb),
            self.kernel_overhead_ms,
            self.model_overhead_ms,
        )
        if len(nets) < 8:
            return np.zeros(0)
        fold = np.random.default_rng([self.hparams["seed"], 99]).permutation(len(nets)) % 5
        out = np.zeros(len(nets))
        try:
            for f in range(5):
                tr = np.nonzero(fold != f)[0]
                te = np.nonzero(fold == f)[0]
                self._fit_calibration([nets[i] for i in tr], y[tr])
                pred = np.asarray([self.predict_network(nets[i].kernels) for i in te])
                out[te] = np.log(y[te] / np.maximum(pred, 1e-9))
        finally:
            (
                self.calibration,
                self.bytes_ms_per_mb,
                self.kernel_overhead_ms,
                self.model_overhead_ms,
            ) = full
        return np.sort(out)

    # ---- prediction ------------------------------------------------------------------------

    def _regressor_for(self, rec: KernelRecord) -> tuple[str, str]:
        """The trained type that predicts ``rec`` and, if it is not ``rec``'s own, why."""
        kind = rec.type
        if kind in self.roofline:
            ops = (self.meta.get("sampled_ops") or {}).get(kind)
            if kind == "elementwise" and rec.op and ops is not None and rec.op not in ops:
                return (
                    kind,
                    f"op {rec.op} never sampled; predicted as a memory-bound element-wise op",
                )
            return kind, ""
        for alt in FALLBACKS.get(kind, ()) + LAST_RESORT:
            if alt in self.roofline:
                return alt, f"type {kind} never sampled; predicted with the {alt} regressor"
        alt = self.types[0]
        return alt, f"type {kind} never sampled; predicted with the {alt} regressor (last resort)"

    def explain_kernels(self, records: Sequence[Any]) -> tuple[np.ndarray, list[str], list[str]]:
        """Stand-alone latency (ms) of each kernel, the regressor used and the fallback note.

        A kernel whose type (or element-wise op) was never sampled is predicted
        by a related regressor (:data:`FALLBACKS`) and its note says so; a
        convolution with a residual sum fused in (ONNX Runtime's NCHWc conv),
        unless such convolutions were sampled, is predicted as its conv plus an add.

        Raises:
            PredictorError: untrained predictor.
        """
        recs = [_as_record(r) for r in records]
        if not self.roofline:
            raise PredictorError("the kernel predictor is not trained; call fit() or load a file")
        parts: list[tuple[int, KernelRecord, str]] = []  # (kernel index, record, regressor)
        regs, notes = [], []
        sampled_ops = self.meta.get("sampled_ops") or {}
        for i, r in enumerate(recs):
            fused_sum_sampled = "conv+sum" in sampled_ops.get(r.type, ())
            if r.op == "conv+sum" and r.type in ("conv", "dwconv") and not fused_sum_sampled:
                conv = replace(r, op="", n_inputs=1)
                add = KernelRecord(
                    "add", h=r.out_h, w=r.out_w, cin=r.cout, cout=r.cout, out_h=r.out_h,
                    out_w=r.out_w, n_inputs=2, itemsize=r.itemsize, reader=r.reader,
                )  # fmt: skip
                kc, nc = self._regressor_for(conv)
                ka, na = self._regressor_for(add)
                parts += [(i, conv, kc), (i, add, ka)]
                regs.append(f"{kc}+{ka}")
                notes.append("; ".join(n for n in ("fused residual sum: conv + add", nc, na) if n))
            else:
                kind, note = self._regressor_for(r)
                parts.append((i, r, kind))
                regs.append(kind)
                notes.append(note)
        out = np.zeros(len(recs))
        by_type: dict[str, list[int]] = {}
        for j, (_, _, kind) in enumerate(parts):
            by_type.setdefault(kind, []).append(j)
        part_pred = np.zeros(len(parts))
        for kind, idx in by_type.items():
            sub = [
                parts[j][1] if parts[j][1].type == kind else replace(parts[j][1], type=kind)
                for j in idx
            ]
            base = np.maximum(_roofline_design(sub) @ self.roofline[kind], 1e-6)
            if kind in self.trees:
                base = base * np.exp(self.trees[kind].predict(self._features(sub, base)))
            part_pred[idx] = base
        for j, (i, _, _) in enumerate(parts):
            out[i] += part_pred[j]
        return out, regs, notes

    def predict_kernels(self, records: Sequence[Any]) -> np.ndarray:
        """Latency (ms) of each kernel as if measured alone (see :meth:`explain_kernels`)."""
        return self.explain_kernels(records)[0]

    def _calibrated(self, recs: Sequence[KernelRecord], pred: np.ndarray) -> np.ndarray:
        """Per-kernel contributions to a model's latency (they sum to the model prediction
        minus the per-model constant).

        The per-kernel overhead may be negative (a kernel alone pays a call
        overhead it does not pay inside a model), but a kernel never takes time
        away from a model: a contribution is at least 0, so a model of many tiny
        kernels is never predicted at a negative latency.
        """
        scale = np.asarray([self.calibration.get(r.type, 1.0) for r in recs])
        per_mb = np.asarray([self.bytes_ms_per_mb.get(r.type, 0.0) for r in recs])
        mb = np.asarray([_mbytes(r) for r in recs])
        return np.maximum(scale * pred + per_mb * mb + self.kernel_overhead_ms, 0.0)

    def predict_network(self, kernels: Sequence[KernelRecord]) -> float:
        """Calibrated latency (ms) of a model given as its kernels."""
        recs = [_as_record(k) for k in kernels]
        if not recs:
            return 0.0
        pred = self.predict_kernels(recs)
        return float(self._calibrated(recs, pred).sum() + self.model_overhead_ms)

    def read_kernels(
        self,
        model: str | Path,
        input_shape: Sequence[int] | None = None,
        tflite: str | Path | None = None,
    ):
        """The kernels of ``model`` as this predictor's training data saw them.

        A predictor trained on runtime-read kernels reads the model with the
        same runtime (ONNX Runtime's optimised graph of the *installed* version,
        or the ``.tflite`` operators); when that is impossible (no .tflite of
        an ONNX file for LiteRT) it falls back to the hand-written rules and
        the returned :class:`~hwnas.predictors.kernels.runtime.KernelSet` says why.
        """
        from hwnas.predictors.kernels.runtime import read_kernels

        shapes = {"": tuple(int(d) for d in input_shape)} if input_shape else None
        return read_kernels(
            model,
            source=self.meta.get("kernel_source", "rules"),
            runtime=self.meta.get("runtime", "ort"),
            input_shapes=shapes,
            optimization=self.meta.get("optimization", "all"),
            tflite=tflite,
        )

    def _kernels_of(self, model: Any, input_shape: Sequence[int] | None) -> list[KernelRecord]:
        if isinstance(model, str | Path) and self.meta.get("kernel_source") == "runtime":
            return self.read_kernels(model, input_shape).kernels
        shapes = {"": tuple(int(d) for d in input_shape)} if input_shape else None
        return detect_kernels(model, shapes)

    def predict_model(
        self,
        model: str | Path | onnx.ModelProto | Graph,
        input_shape: Sequence[int] | None = None,
    ) -> float:
        """Predicted latency (ms) of a model on the device the predictor was trained for.

        Args:
            model: a path (read as the training data was: by the runtime or the
                rules), a ModelProto or a loaded :class:`Graph` (always the rules).
            input_shape: static shape of the single input when it is dynamic.
        """
        return self.predict_network(self._kernels_of(model, input_shape))

    def explain(self, kernels: Sequence[KernelRecord]) -> list[KernelPrediction]:
        """Each kernel with its stand-alone and in-model latency, regressor and fallback note."""
        recs = [_as_record(k) for k in kernels]
        pred, regs, notes = self.explain_kernels(recs)
        inside = self._calibrated(recs, pred)
        return [
            KernelPrediction(r, float(p), float(q), g, n)
            for r, p, q, g, n in zip(recs, pred, inside, regs, notes, strict=True)
        ]

    def breakdown(
        self,
        model: str | Path | onnx.ModelProto | Graph,
        input_shape: Sequence[int] | None = None,
    ) -> list[KernelPrediction]:
        """Each kernel of ``model`` with its predictions (see :meth:`explain`)."""
        return self.explain(self._kernels_of(model, input_shape))

    def interval(
        self, total_ms: float, fallback_ms: float = 0.0, coverage: float = 0.9
    ) -> tuple[float, float, str]:
        """A ``coverage`` interval around a model's predicted total, and what it rests on.

        Split-conformal on the log-ratio of the calibration networks' measured
        to predicted latency: networks held out of training when the predictor
        was calibrated (``Predictor.calibrate``), else each network predicted by
        a calibration fitted without it (cross-fitted). The ``(1 - c)/2`` and ``(1 + c)/2`` order statistics,
        ``inf``/0 when there are too few networks for ``coverage``. It covers
        models like the calibration networks; the share of the total predicted
        by fallbacks (never-sampled kernels) is widened to half / double on
        top, since no measurement backs it.

        Returns:
            ``(low_ms, high_ms, basis)``; ``(nan, nan, why)`` without calibration networks.
        """
        r = self.network_log_residuals
        what = "cross-fitted on"
        held = getattr(self, "_conformal", None)  # Predictor.calibrate on held-out networks
        if held is not None and (self.meta.get("calibration") or {}).get("score", "log") == "log":
            r, what = np.asarray(held, dtype=np.float64), "split-conformal on"
        n = int(r.size)
        if n == 0:
            return (
                math.nan,
                math.nan,
                "no interval: the predictor was trained on fewer than 8 calibration networks "
                "(measure more with `hwnas sample-kernels --networks 40` and retrain)",
            )
        lo_q, hi_q = (1 - coverage) / 2, (1 + coverage) / 2
        k_hi = math.ceil((n + 1) * hi_q)
        k_lo = math.floor((n + 1) * lo_q)
        hi = total_ms * math.exp(r[k_hi - 1]) if k_hi <= n else math.inf
        lo = total_ms * math.exp(r[k_lo - 1]) if k_lo >= 1 else 0.0
        lo = max(0.0, lo - 0.5 * fallback_ms)
        hi = hi + fallback_ms
        basis = f"{coverage:.0%}, {what} {n} calibration networks"
        if fallback_ms > 0:
            basis += f", widened for {fallback_ms:.3f} ms predicted by fallbacks"
        return lo, hi, basis

    def predict(self, X: Sequence[Any]) -> np.ndarray:
        """One latency (ms) per item: a kernel's stand-alone latency for a
        :class:`KernelRecord`, a model's calibrated total for a
        :class:`NetworkRecord`, ONNX path, ModelProto or :class:`Graph`."""
        out = np.zeros(len(X))
        kernel_idx = []
        for i, item in enumerate(X):
            if isinstance(item, NetworkRecord):
                out[i] = self.predict_network(item.kernels)
            elif isinstance(item, str | Path | onnx.ModelProto | Graph):
                out[i] = self.predict_model(item)
            else:
                kernel_idx.append(i)
        if kernel_idx:
            out[kernel_idx] = self.predict_kernels([X[i] for i in kernel_idx])
        return out

    # ---- state -------------------------------------------------------------------------------

    def get_state(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {}
        for kind in sorted(set(self.types) | set(self.calibration)):
            state[f"{kind}.calibration"] = np.asarray(
                [self.calibration.get(kind, 1.0), self.bytes_ms_per_mb.get(kind, 0.0)]
            )
        for kind in self.types:
            state[f"{kind}.roofline"] = np.asarray(self.roofline[kind], dtype=np.float64)
            if kind in self.trees:
                state.update(self.trees[kind].to_arrays(f"{kind}.tree."))
        state["overheads_ms"] = np.asarray([self.kernel_overhead_ms, self.model_overhead_ms])
        state["network_log_residuals"] = np.asarray(self.network_log_residuals, dtype=np.float64)
        return state

    def set_state(self, arrays: dict[str, np.ndarray]) -> None:
        kinds = sorted({k.split(".", 1)[0] for k in arrays if k.endswith(".roofline")})
        calibrated = sorted({k.split(".", 1)[0] for k in arrays if k.endswith(".calibration")})
        unknown = [k for k in set(kinds) | set(calibrated) if k not in KERNEL_TYPES]
        if unknown:
            raise PredictorError(
                f"the file holds regressors for unknown kernel types {unknown}; "
                "it was written by another hwnas version, retrain it"
            )
        self.roofline, self.trees, self.calibration = {}, {}, {}
        self.bytes_ms_per_mb = {}
        for kind in kinds:
            coef = np.asarray(arrays[f"{kind}.roofline"], dtype=np.float64)
            if coef.shape != (len(ROOFLINE_TERMS),):
                raise PredictorError(
                    f"roofline of '{kind}' has shape {coef.shape}, expected ({len(ROOFLINE_TERMS)},); "
                    "the file is damaged or from another hwnas version"
                )
            self.roofline[kind] = coef
            if f"{kind}.tree.left" in arrays:
                self.trees[kind] = TreeEnsemble.from_arrays(arrays, f"{kind}.tree.")
        for kind in calibrated:
            cal = np.asarray(arrays[f"{kind}.calibration"], dtype=np.float64).ravel()
            self.calibration[kind] = float(cal[0])
            if len(cal) > 1 and cal[1] != 0.0:
                self.bytes_ms_per_mb[kind] = float(cal[1])
        over = np.asarray(arrays["overheads_ms"], dtype=np.float64).ravel()
        self.kernel_overhead_ms, self.model_overhead_ms = float(over[0]), float(over[1])
        res = arrays.get("network_log_residuals")
        self.network_log_residuals = (
            np.sort(np.asarray(res, dtype=np.float64).ravel()) if res is not None else np.zeros(0)
        )


def _register() -> None:
    from hwnas.predictors import PREDICTORS

    if "kernel" not in PREDICTORS:
        PREDICTORS.register("kernel")(KernelPredictor)


_register()
