"""How good a latency predictor is: error, accuracy within a band, and rank agreement.

Why several numbers: a search needs predictors that *rank* architectures
right (Spearman rho, Kendall tau), a latency constraint needs predictions
that are *close* (RMSE, MAPE), and nn-Meter's headline figure, the share of
predictions within +-10 % of the measurement, says how often a constraint
check on the prediction gives the same answer as a measurement would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hwnas.errors import PredictorError

#: The metric fields in table order; drives the CLI table and JSON output alike.
FIELDS: tuple[str, ...] = ("n", "rmse_ms", "mape", "acc5", "acc10", "spearman", "kendall")

#: Human column headers of :data:`FIELDS`.
HEADERS: dict[str, str] = {
    "n": "n",
    "rmse_ms": "RMSE (ms)",
    "mape": "MAPE (%)",
    "acc5": "+-5% (%)",
    "acc10": "+-10% (%)",
    "spearman": "Spearman",
    "kendall": "Kendall",
}


@dataclass(frozen=True)
class Metrics:
    """Agreement of predicted with measured latency over ``n`` architectures.

    Attributes:
        rmse_ms: root mean squared error in milliseconds.
        mape: mean absolute percentage error, in percent.
        acc5, acc10: percentage of predictions within +-5 % / +-10 % of the measurement.
        spearman: Spearman rank correlation.
        kendall: Kendall tau-b rank correlation.
    """

    n: int
    rmse_ms: float
    mape: float
    acc5: float
    acc10: float
    spearman: float
    kendall: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def row(self) -> list[float | int]:
        return [getattr(self, f) for f in FIELDS]


def _check(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise PredictorError(
            f"{t.size} measured but {p.size} predicted latencies; give one prediction per measurement"
        )
    if t.size < 2:
        raise PredictorError(
            f"metrics need at least 2 architectures, got {t.size}; evaluate on more data"
        )
    if np.any(t <= 0) or not np.all(np.isfinite(t)):
        raise PredictorError(
            "measured latencies must be finite and > 0 for relative metrics; "
            "drop failed or degenerate measurements first"
        )
    return t, p


def within(y_true: np.ndarray, y_pred: np.ndarray, tolerance: float) -> float:
    """Percentage of predictions whose relative error is at most ``tolerance`` (0.1 = 10 %)."""
    t, p = _check(y_true, y_pred)
    return float(np.mean(np.abs(p - t) / t <= tolerance) * 100.0)


def evaluate(y_true: np.ndarray, y_pred: np.ndarray) -> Metrics:
    """Every metric of :class:`Metrics` at once.

    Raises:
        PredictorError: sizes differ, fewer than 2 points, or a measurement <= 0.
    """
    from scipy import stats

    t, p = _check(y_true, y_pred)
    rel = np.abs(p - t) / t
    if np.ptp(p) == 0 or np.ptp(t) == 0:
        # A constant prediction has no ranking; scipy would warn and return nan.
        rho = tau = float("nan")
    else:
        rho = float(stats.spearmanr(t, p).statistic)
        tau = float(stats.kendalltau(t, p).statistic)
    return Metrics(
        n=int(t.size),
        rmse_ms=float(np.sqrt(np.mean((p - t) ** 2))),
        mape=float(np.mean(rel) * 100.0),
        acc5=float(np.mean(rel <= 0.05) * 100.0),
        acc10=float(np.mean(rel <= 0.10) * 100.0),
        spearman=rho,
        kendall=tau,
    )


#: Interval metric fields in table order (CLI table and JSON alike).
INTERVAL_FIELDS: tuple[str, ...] = ("coverage", "below", "above", "width")

#: Human column headers of :data:`INTERVAL_FIELDS`.
INTERVAL_HEADERS: dict[str, str] = {
    "coverage": "covered (%)",
    "below": "below (%)",
    "above": "above (%)",
    "width": "rel. width (%)",
}


@dataclass(frozen=True)
class IntervalMetrics:
    """How well prediction intervals hold the measurements.

    Attributes:
        nominal: the interval's nominal coverage (0.9 for a 90 % interval).
        coverage: percentage of measurements inside ``[lo, hi]``; compare with ``nominal``.
        below, above: percentage under ``lo`` / over ``hi``. ``above`` is the one
            a latency constraint cares about: the device is slower than the
            interval said.
        width: mean of ``(hi - lo) / point``, in percent: how much an interval
            costs. A 90 % interval that always holds but spans +-50 % says little.
            Infinite when some interval is unbounded (too few calibration points).
    """

    nominal: float
    coverage: float
    below: float
    above: float
    width: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def row(self) -> list[float]:
        return [getattr(self, f) for f in INTERVAL_FIELDS]


def interval_metrics(
    y_true: np.ndarray, lo: np.ndarray, hi: np.ndarray, point: np.ndarray, nominal: float
) -> IntervalMetrics:
    """Empirical coverage and mean relative width of intervals ``[lo, hi]`` around ``point``.

    Raises:
        PredictorError: sizes differ, fewer than 2 points, or a measurement <= 0.
            A point prediction <= 0 has no relative width and is left out of ``width``.
    """
    t, p = _check(y_true, point)
    lo = np.asarray(lo, dtype=np.float64).ravel()
    hi = np.asarray(hi, dtype=np.float64).ravel()
    if lo.shape != t.shape or hi.shape != t.shape:
        raise PredictorError(f"{t.size} measurements but {lo.size}/{hi.size} interval bounds")
    below = t < lo
    above = t > hi
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (hi - lo) / np.where(p > 0, p, np.nan)
    return IntervalMetrics(
        nominal=float(nominal),
        coverage=float(np.mean(~below & ~above) * 100.0),
        below=float(np.mean(below) * 100.0),
        above=float(np.mean(above) * 100.0),
        width=float(np.nanmean(rel) * 100.0) if np.any(p > 0) else float("nan"),
    )


def summarize(runs: list[Metrics]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each field over repeated runs (seeds)."""
    out: dict[str, tuple[float, float]] = {}
    for f in FIELDS:
        v = np.array([getattr(m, f) for m in runs], dtype=float)
        out[f] = (float(np.mean(v)), float(np.std(v)))
    return out


def plot_predicted_vs_measured(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    path: str | Path,
    title: str = "predicted vs measured latency",
) -> Path:
    """Scatter of predicted against measured latency with the +-10 % band.

    Points inside the shaded band count towards the +-10 % accuracy; the
    metrics are written in the corner so the figure stands alone.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, p = _check(y_true, y_pred)
    m = evaluate(t, p)
    lo = float(min(t.min(), p.min()))
    hi = float(max(t.max(), p.max()))
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    xs = np.linspace(max(lo - pad, 0.0), hi + pad, 100)
    inside = np.abs(p - t) / t <= 0.10
    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=120)
    ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="tab:green", alpha=0.15, label="+-10 %")
    ax.plot(xs, xs, "-", color="gray", lw=1)
    ax.scatter(t[inside], p[inside], s=6, alpha=0.5, color="tab:blue", label="within +-10 %")
    ax.scatter(t[~inside], p[~inside], s=8, alpha=0.7, color="tab:red", label="outside")
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(xs[0], xs[-1])
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.text(
        0.03,
        0.97,
        f"n = {m.n}\n+-10 %: {m.acc10:.1f} %\n+-5 %: {m.acc5:.1f} %\n"
        f"MAPE: {m.mape:.2f} %\nSpearman: {m.spearman:.4f}\nKendall: {m.kendall:.4f}",
        transform=ax.transAxes,
        va="top",
        fontsize=8,
        family="monospace",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
