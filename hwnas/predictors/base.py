"""The latency-predictor interface, its uncertainty (intervals) and its file format.

A predictor maps *features* to latency in milliseconds. Architecture-level
predictors (``mlp``, ``flops-linear``, ``gbdt``) take a matrix of encoded
architectures (``space.encode``) or of graph-level features; the ``kernel``
predictor takes ONNX graphs and sums per-kernel predictions.

Intervals, not only points. A search that checks a latency constraint on a
point prediction finds exactly the architectures the predictor underestimates
(issue 14), so every predictor can also give a quantile of the latency
(:meth:`Predictor.predict_quantile`) and a central interval
(:meth:`Predictor.predict_interval`). Two sources of uncertainty:

* ``conformal``: split-conformal calibration (:meth:`Predictor.calibrate`) on
  measured architectures the predictor was *not* trained on. It works for any
  predictor (it only needs :meth:`Predictor.predict`), and it is the one with a
  guarantee (see :meth:`Predictor.calibrate`).
* ``ensemble``: the spread of an ensemble's members (``mlp`` with
  ``ensemble=K``), read as a log-normal. No guarantee: members trained on the
  same data agree more than the device varies, so these intervals tend to be
  too narrow. When a predictor has both, conformal wins.

File format (why not pickle: a pickle breaks on the next library release and
runs code when loaded): one ``.npz`` file written with ``allow_pickle=False``
holding every weight array plus one entry ``__config__``, a UTF-8 JSON
document (predictor name, format version, space, encoding name and length,
device, training metadata, hyper-parameters). A calibrated predictor also holds
``__conformal__`` (its sorted calibration scores) and ``meta.calibration``
(size and score kind). :func:`read_predictor_file` reads it with
``allow_pickle=False`` and checks it before anything is built: numeric, finite
arrays and a JSON object for the config.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from hwnas.errors import ConfigError, PredictorError

FORMAT_VERSION = 1

#: Where the calibration scores live in a predictor file.
CONFORMAL_KEY = "__conformal__"

#: Calibration scores: ``log`` = log(y / yhat) (intervals scale with the
#: prediction), ``linear`` = y - yhat in ms (the same width everywhere).
SCORES: tuple[str, ...] = ("log", "linear")

#: Predictions at or below this are clipped before a log score: ``flops-linear``
#: and ``transfer`` can predict <= 0 ms for tiny networks. Any fixed function of
#: (prediction, measurement) is a valid conformal score, so clipping keeps the
#: guarantee; such a point only widens the upper tail.
_LOG_FLOOR_MS = 1e-6

_FIX = "recalibrate with `hwnas train-predictor ... --calibrate 0.1` or train an ensemble (--set ensemble=5)"


def check_level(value: Any, what: str = "quantile") -> float:
    """``value`` as a float strictly between 0 and 1, else a one-line :class:`ConfigError`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not (0.0 < v < 1.0):
        raise ConfigError(
            f"{what} must be a number strictly between 0 and 1 (e.g. 0.9), got {value!r}"
        )
    return v


def conformal_quantile(scores: np.ndarray, q: float) -> float:
    """The split-conformal bound of level ``q`` from sorted calibration ``scores``.

    Upper levels (``q >= 0.5``) take the ``ceil((n+1) q)``-th smallest score,
    so that a new exchangeable score falls at or below it with probability at
    least ``q``; ``+inf`` when that rank exceeds ``n`` (too few calibration
    points for that level). Lower levels take the ``floor((n+1) q)``-th, so a
    new score falls at or above it with probability at least ``1 - q``;
    ``-inf`` when that rank is 0. A central interval built from the two
    therefore covers with probability at least its nominal coverage.
    """
    n = scores.size
    # The tolerance keeps (n+1)q = 9.000000000000002 from rounding up a whole rank.
    if q >= 0.5:
        k = math.ceil((n + 1) * q - 1e-9)
        return float(scores[k - 1]) if k <= n else math.inf
    k = math.floor((n + 1) * q + 1e-9)
    return float(scores[k - 1]) if k >= 1 else -math.inf


class Predictor(ABC):
    """Base class of latency predictors.

    Attributes:
        name: registry name.
        meta: what the predictor was trained for: ``space``, ``encoding``
            (name), ``encoding_length``, ``device``, ``train_size``... Checked
            on load and before predicting, so a predictor is never applied to
            the wrong space or encoding silently. ``meta["calibration"]``
            describes the conformal calibration when there is one.
    """

    name: str = ""
    # Sorted calibration scores, or None: class-level defaults so that a
    # subclass that forgets super().__init__ still works uncalibrated.
    _conformal: np.ndarray | None = None

    def __init__(self, **hparams: Any):
        self.hparams = hparams
        self.meta: dict[str, Any] = {}
        self._conformal = None

    @abstractmethod
    def fit(self, X: Any, y_ms: np.ndarray, **kwargs: Any) -> Predictor:
        """Train on features ``X`` and measured latencies ``y_ms`` (milliseconds).

        A refit keeps an existing calibration (its scores describe the model
        before the refit); call :meth:`calibrate` again on fresh held-out data,
        or :meth:`clear_calibration`.
        """

    @abstractmethod
    def predict(self, X: Any) -> np.ndarray:
        """Predicted latency in milliseconds, one per row/graph of ``X``."""

    @abstractmethod
    def get_state(self) -> dict[str, np.ndarray]:
        """Every learned array, by name (saved in the .npz)."""

    @abstractmethod
    def set_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`get_state` output (after ``__init__(**hparams)``)."""

    # ---- uncertainty ------------------------------------------------------------------

    @property
    def has_spread(self) -> bool:
        """True when the predictor itself carries a spread (an ensemble of > 1 member)."""
        return False

    def log_spread(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of log-latency (ms) over ensemble members.

        Subclasses with :attr:`has_spread` override it; the mean must be the log
        of what :meth:`predict` returns.
        """
        raise PredictorError(f"the '{self.name}' predictor has no ensemble spread; {_FIX}")

    @property
    def uncertainty(self) -> str:
        """Where intervals come from: ``"conformal"``, ``"ensemble"`` or ``"none"``."""
        if self._conformal is not None:
            return "conformal"
        if self.has_spread:
            return "ensemble"
        return "none"

    @property
    def calibration_size(self) -> int:
        """How many held-out architectures the conformal calibration used (0 if none)."""
        return 0 if self._conformal is None else int(self._conformal.size)

    def calibrate(self, X_cal: Any, y_cal_ms: Any, score: str = "log") -> Predictor:
        """Split-conformal calibration on measured architectures held out from training.

        Keeps the sorted scores ``r = log(y / yhat)`` (``score="log"``, the
        default: the interval's width scales with the latency, as the error of
        a latency predictor does) or ``r = y - yhat`` (``score="linear"``, ms).
        A quantile ``q`` of a new architecture is then ``yhat * exp(r_(k))``
        with ``k = ceil((n+1) q)`` (:func:`conformal_quantile`).

        What it promises: if the calibration architectures and the new one are
        exchangeable (drawn alike, e.g. random samples of the space, measured
        the same way), the interval of coverage ``c`` holds the measured
        latency with probability at least ``c`` -- *marginally*, on average
        over such architectures, whatever the predictor, with no model
        assumption. What it does not promise: coverage for one given
        architecture, on another device or input shape, or on the
        architectures a searcher *selects*. A search picks the candidates the
        predictor underestimates, which are not exchangeable with random ones;
        that is why searches verify their answer on the device
        (``hwnas search --verify``).

        Args:
            X_cal: features of the held-out architectures (what :meth:`predict` takes).
            y_cal_ms: their measured latency in ms (finite, > 0).
            score: ``"log"`` or ``"linear"`` (see above).

        Returns:
            ``self``, calibrated (replacing an earlier calibration).

        Raises:
            ConfigError: unknown score; PredictorError: bad or mismatched data.
        """
        if score not in SCORES:
            raise ConfigError(f"unknown calibration score '{score}'; valid: {', '.join(SCORES)}")
        y = np.asarray(y_cal_ms, dtype=np.float64).ravel()
        if y.size < 1:
            raise PredictorError(
                "calibration needs at least one held-out architecture; give --calibrate a larger share"
            )
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise PredictorError(
                "calibration latencies must be finite and > 0 ms; drop failed measurements first"
            )
        yhat = np.asarray(self.predict(X_cal), dtype=np.float64).ravel()
        if yhat.shape != y.shape:
            raise PredictorError(
                f"{yhat.size} predictions for {y.size} calibration latencies; give one per architecture"
            )
        if not np.all(np.isfinite(yhat)):
            raise PredictorError(
                "the predictor gives non-finite latencies on the calibration set; retrain it"
            )
        r = np.log(y / np.maximum(yhat, _LOG_FLOOR_MS)) if score == "log" else y - yhat
        self._conformal = np.sort(r)
        self.meta["calibration"] = {"method": "split-conformal", "score": score, "n": int(y.size)}
        return self

    def clear_calibration(self) -> None:
        """Forget the conformal calibration (e.g. after a refit on other data)."""
        self._conformal = None
        self.meta.pop("calibration", None)

    def predict_quantile(self, X: Any, q: float) -> np.ndarray:
        """The ``q``-quantile of the latency (ms) given the prediction, one per row of ``X``.

        Conformal (when calibrated): for ``q >= 0.5`` the measured latency is
        at most this with probability >= ``q``; for ``q < 0.5`` at least this
        with probability >= ``1 - q`` (see :meth:`calibrate` for what the
        probability is over). ``inf`` (or 0) when the calibration set is too
        small for ``q``: ``n`` points bound levels up to ``n / (n + 1)``.
        Ensemble: the log-normal quantile of the members' spread.

        Raises:
            ConfigError: ``q`` not strictly between 0 and 1.
            PredictorError: no uncertainty source (neither calibrated nor an ensemble).
        """
        return self.predict_quantiles(X, [q])[0]

    def predict_interval(self, X: Any, coverage: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Central interval ``(lo, hi)`` in ms holding the latency with probability ``coverage``.

        ``lo`` and ``hi`` are the ``(1 - c)/2`` and ``(1 + c)/2`` quantiles of
        :meth:`predict_quantile`; each tail misses at most ``(1 - c)/2``.
        """
        c = check_level(coverage, "coverage")
        lo, hi = self.predict_quantiles(X, [(1.0 - c) / 2.0, (1.0 + c) / 2.0])
        return lo, hi

    def predict_quantiles(self, X: Any, qs: list[float]) -> list[np.ndarray]:
        """Several quantiles at once (one :meth:`predict` call); see :meth:`predict_quantile`."""
        levels = [check_level(q) for q in qs]
        kind = self.uncertainty
        if kind == "none":
            raise PredictorError(
                f"this '{self.name}' predictor gives no interval (it is neither calibrated nor an "
                f"ensemble); {_FIX}"
            )
        if kind == "conformal":
            scores = self._conformal
            assert scores is not None
            score = (self.meta.get("calibration") or {}).get("score", "log")
            yhat = np.asarray(self.predict(X), dtype=np.float64).ravel()
            out = []
            for q in levels:
                r = conformal_quantile(scores, q)
                if score == "log":
                    out.append(np.maximum(yhat, _LOG_FLOOR_MS) * math.exp(r))
                else:
                    out.append(np.maximum(yhat + r, 0.0))
            return out
        mu, sd = self.log_spread(X)
        nd = NormalDist()
        return [np.exp(mu + nd.inv_cdf(q) * sd) for q in levels]

    # ---- files ------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {
            "predictor": self.name,
            "format_version": FORMAT_VERSION,
            "hparams": self.hparams,
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        """Write the predictor as one .npz (weights + JSON config); no pickle."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.asarray(v) for k, v in self.get_state().items()}
        if any(a.dtype == object for a in arrays.values()):
            raise PredictorError(
                "predictor state holds Python objects; only numeric arrays can be saved"
            )
        if self._conformal is not None:
            arrays[CONFORMAL_KEY] = np.asarray(self._conformal, dtype=np.float64)
        cfg = json.dumps(self.config(), sort_keys=True, default=str).encode()
        arrays["__config__"] = np.frombuffer(cfg, dtype=np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        return path

    def set_calibration(self, scores: np.ndarray, info: dict[str, Any], source: str = "") -> None:
        """Restore a calibration read from a file, checking it (used by ``load_predictor``)."""
        where = f"{source}: " if source else ""
        s = np.asarray(scores)
        if s.ndim != 1 or s.size < 1 or s.dtype.kind != "f":
            raise PredictorError(f"{where}its calibration scores are not a 1-D float array; {_FIX}")
        if not isinstance(info, dict) or info.get("score", "log") not in SCORES:
            raise PredictorError(f"{where}its meta.calibration is missing or unknown; {_FIX}")
        if np.any(np.diff(s) < 0):
            raise PredictorError(f"{where}its calibration scores are not sorted; {_FIX}")
        self._conformal = s.astype(np.float64)
        self.meta["calibration"] = dict(info, n=int(s.size))

    def check_compatible(
        self,
        space: str | None = None,
        encoding: str | None = None,
        encoding_length: int | None = None,
    ) -> None:
        """Raise :class:`PredictorError` if this predictor was trained for something else."""
        for key, want in (
            ("space", space),
            ("encoding", encoding),
            ("encoding_length", encoding_length),
        ):
            have = self.meta.get(key)
            if want is not None and have is not None and have != want:
                raise PredictorError(
                    f"this predictor was trained for {key} '{have}', not '{want}'; "
                    f"train one for '{want}' with `hwnas train-predictor`"
                )


def read_predictor_file(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read config and arrays of a predictor file without running any code.

    Refuses (one-line :class:`PredictorError` naming the file): a file that is
    not an .npz, a config that is not a JSON object, an array that is not a
    plain number array (object, string, complex dtypes), and weights holding
    NaN or infinity (a diverged training run; it would predict NaN everywhere).
    """
    p = Path(path)
    retrain = "retrain it with `hwnas train-predictor`"
    if not p.exists():
        raise PredictorError(f"no such predictor file: {p}; train one with `hwnas train-predictor`")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PredictorError(
            f"{p} is not an hwnas predictor file ({first}); it must be the .npz written by "
            "Predictor.save"
        ) from exc
    if "__config__" not in arrays:
        raise PredictorError(f"{p} has no __config__ entry; it was not written by hwnas")
    raw = arrays.pop("__config__")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise PredictorError(f"{p}: its __config__ entry is not UTF-8 bytes; {retrain}")
    try:
        cfg = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PredictorError(f"{p}: its __config__ entry is not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise PredictorError(
            f"{p}: its __config__ is a JSON {type(cfg).__name__}, not an object; {retrain}"
        )
    version = cfg.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise PredictorError(f"{p}: its format_version {version!r} is not an integer; {retrain}")
    if version > FORMAT_VERSION:
        raise PredictorError(f"{p} was written by a newer hwnas (format {version}); upgrade hwnas")
    for key in ("hparams", "meta"):
        if cfg.get(key) is not None and not isinstance(cfg[key], dict):
            raise PredictorError(f"{p}: its {key} entry is not a JSON object; {retrain}")
    for k, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise PredictorError(
                f"{p}: array '{k}' holds {a.dtype} values, not numbers; the file is damaged, {retrain}"
            )
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise PredictorError(
                f"{p}: array '{k}' holds NaN or infinite values (a diverged training run?); {retrain}"
            )
    return cfg, arrays
