"""Latency statistics and the adaptive timing loop.

Why the median: latency distributions on a real machine are skewed to the
right (an interrupt, a page fault, the other core's work only ever *add*
time), so the mean is pulled by a few slow runs while the median stays with
the typical run. We report the median first, the IQR as the spread, and keep
every raw sample so any other statistic can be computed later.

Why adaptive: a fixed number of runs is too many for a slow model and too few
for a fast one. ``torch.utils.benchmark``'s ``adaptive_autorange`` stops once
IQR/median is under 10% (a stability check, not a precision target) and
pytest-benchmark runs for a fixed time (1 s, at least 5 rounds); neither says
how well the median is known. :func:`adaptive_loop` stops as soon as it is:

* **warm-up by detection**: runs until one is no longer >10% faster than every
  run before it (a cold cache or lazy initialisation only ever makes runs
  slower), then, among the timed runs, a start-up transient that is still
  there (a frequency ramp, a level shift in the first runs) is found by
  MSER-5 (White 1997: the truncation point that minimises the standard error
  of the remaining batch means) and moved to the warm-up samples;
* **precision**: the distribution-free 95% CI of the median of the runs kept
  is within ``rel_ci`` of it, over at least ``min_runs`` runs;
* **stationarity**: the medians of the first and second half of those runs
  agree within ``2 * rel_ci``. Stored campaign streams showed why: a fifth of
  them change level by 10-40% part-way (something else on the machine), and
  a CI computed as if the runs were independent stops inside the first level;
* or the budget (``budget_s`` of summed run time) or ``max_runs`` is spent.

The rule is a pure function of the run times (:func:`stop_point`), so it is
tested with scripted times, and ``hwnas/devices/runner.py`` (the copy that
runs on an ssh board without hwnas) is checked against it run for run.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np

NOISY_CV = 0.10
#: adaptive warm-up: a run more than this much faster than all before it means still warming
WARMUP_TOL = 0.10
#: adaptive warm-up: at most this many runs
MAX_WARMUP = 50


@dataclass(frozen=True)
class MeasureSettings:
    """How to time a model.

    Attributes:
        warmup: number of warm-up runs; ``None`` = adaptive (by detection, see
            the module docstring).
        runs: exact number of timed runs; ``None`` = adaptive (see module docstring).
        min_runs / max_runs: bounds of the adaptive loop.
        budget_s: time budget of the timed runs, summed (adaptive loop only).
        rel_ci: stop once the 95% CI half-width of the median is below this fraction
            (and the runs are stationary at that precision: see the module docstring).
        threads: intra-op threads of the runtime.
        timeout_s: a measurement in a child process is killed after this long.
    """

    warmup: int | None = None
    runs: int | None = None
    min_runs: int = 10
    max_runs: int = 2000
    budget_s: float = 10.0
    rel_ci: float = 0.01
    threads: int = 1
    timeout_s: float = 300.0

    def to_dict(self) -> dict:
        return asdict(self)


def median_ci_halfwidth(sorted_samples: np.ndarray, z: float = 1.96) -> float:
    """Half-width of the distribution-free CI of the median (order statistics).

    For n samples the ranks ``n/2 -+ z*sqrt(n)/2`` bound the median with the
    chosen confidence, whatever the distribution (binomial argument).
    """
    n = len(sorted_samples)
    if n < 3:
        return math.inf
    lo = max(0, int(math.floor(n / 2 - z * math.sqrt(n) / 2)))
    hi = min(n - 1, int(math.ceil(n / 2 + z * math.sqrt(n) / 2)))
    return float(sorted_samples[hi] - sorted_samples[lo]) / 2


def warmup_settled(warm: Sequence[float], tol: float = WARMUP_TOL) -> bool:
    """Whether adaptive warm-up may end: two runs at least, and the last one no longer
    more than ``tol`` faster than every run before it (still getting faster = still warming)."""
    return len(warm) >= 2 and warm[-1] >= (1.0 - tol) * min(warm[:-1])


def mser_truncation(x: Sequence[float], batch: int = 5, keep: int = 0) -> int:
    """MSER-5: how many leading samples are a start-up transient (a multiple of ``batch``).

    The samples are averaged in batches of ``batch``; the truncation point ``d``
    (in batches, at most half of them) minimises ``var(tail) / len(tail)`` of the
    batch means left, i.e. the squared standard error of their mean. A stream
    without a transient gives 0. At least ``keep`` samples are always left.
    Linear time (suffix sums), so it can run at every check of the timing loop.
    """
    m = len(x) // batch
    if m < 4:
        return 0
    means = [sum(x[i * batch : (i + 1) * batch]) / batch for i in range(m)]
    s1 = s2 = 0.0
    suffix: list[tuple[float, float]] = [(0.0, 0.0)] * (m + 1)
    for i in range(m - 1, -1, -1):
        s1 += means[i]
        s2 += means[i] * means[i]
        suffix[i] = (s1, s2)
    best, best_d = math.inf, 0
    for d in range(0, m // 2 + 1):
        k = m - d
        if k * batch < keep or k < 2:
            break
        t1, t2 = suffix[d]
        stat = max(0.0, t2 - t1 * t1 / k) / (k * k)
        if stat < best:
            best, best_d = stat, d
    return best_d * batch


def stop_point(samples: Sequence[float], settings: MeasureSettings) -> tuple[bool, int]:
    """(stop now, leading samples to move to the warm-up) for the adaptive loop.

    See the module docstring: a transient found by MSER-5 is dropped (only when
    the warm-up is adaptive), then the rest must hold ``min_runs`` runs, have a
    median whose 95% CI half-width is within ``rel_ci`` of it, and agree with
    itself across its two halves within ``2 * rel_ci``.
    """
    drop = 0
    if settings.warmup is None:
        drop = mser_truncation(samples, keep=settings.min_runs)
    kept = list(samples[drop:])
    if len(kept) < settings.min_runs:
        return False, drop
    arr = sorted(kept)
    med = arr[len(arr) // 2]
    if med <= 0 or median_ci_halfwidth(np.asarray(arr)) / med > settings.rel_ci:
        return False, drop
    h = len(kept) // 2
    first, second = sorted(kept[:h]), sorted(kept[h:])
    if abs(first[len(first) // 2] - second[len(second) // 2]) > 2 * settings.rel_ci * med:
        return False, drop
    return True, drop


def adaptive_loop(
    run_once: Callable[[], float], settings: MeasureSettings
) -> tuple[list[float], list[float]]:
    """Run ``run_once`` (returns its own duration in ms) as ``settings`` say.

    The one timing rule of every device that times on this side (CPU, CUDA
    events, LiteRT): a fixed warm-up and run count when given, otherwise the
    adaptive rule of the module docstring. The budget counts the timed runs'
    own durations, so the rule depends on nothing but the times it is given.

    Returns:
        (timed samples in ms, warm-up samples in ms); samples a detected start-up
        transient moved out of the timed runs are appended to the warm-up.
    """
    warm: list[float] = []
    if settings.warmup is not None:
        warm = [run_once() for _ in range(settings.warmup)]
    else:
        while len(warm) < MAX_WARMUP:
            warm.append(run_once())
            if warmup_settled(warm):
                break
    if settings.runs is not None:
        return [run_once() for _ in range(settings.runs)], warm

    samples: list[float] = []
    spent = 0.0
    drop = 0
    next_check = settings.min_runs
    while len(samples) < settings.max_runs:
        samples.append(run_once())
        spent += samples[-1]
        if len(samples) >= next_check:
            # Checking costs a sort; check on a geometric schedule so the
            # overhead stays negligible next to the runs themselves.
            next_check = max(next_check + 1, int(len(samples) * 1.1))
            stop, drop = stop_point(samples, settings)
            if stop or spent / 1e3 >= settings.budget_s:
                break
    else:
        _, drop = stop_point(samples, settings)
    return samples[drop:], warm + samples[:drop]


def time_callable(
    fn: Callable[[], object],
    settings: MeasureSettings,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> tuple[list[float], list[float]]:
    """Time ``fn`` with the host clock under :func:`adaptive_loop`'s rule.

    Args:
        clock: nanoseconds (injectable for tests).

    Returns:
        (timed samples in ms, warm-up samples in ms).
    """

    def run_once() -> float:
        t0 = clock()
        fn()
        return (clock() - t0) / 1e6

    return adaptive_loop(run_once, settings)


STAT_FIELDS = ("median", "iqr", "p10", "p90", "mean", "std", "cv", "min", "max", "n")


@dataclass(frozen=True)
class Stats:
    """Summary of raw samples, one property per statistic.

    :data:`STAT_FIELDS` lists them in reporting order and drives the JSON/CSV
    output and the store's columns alike.
    """

    samples: tuple[float, ...]

    @property
    def _a(self) -> np.ndarray:
        return np.asarray(self.samples, dtype=np.float64)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return float(np.median(self._a))

    @property
    def p10(self) -> float:
        return float(np.percentile(self._a, 10))

    @property
    def p90(self) -> float:
        return float(np.percentile(self._a, 90))

    @property
    def iqr(self) -> float:
        q1, q3 = np.percentile(self._a, [25, 75])
        return float(q3 - q1)

    @property
    def mean(self) -> float:
        return float(self._a.mean())

    @property
    def std(self) -> float:
        return float(self._a.std(ddof=1)) if self.n > 1 else 0.0

    @property
    def cv(self) -> float:
        """Coefficient of variation, std / mean."""
        m = self.mean
        return self.std / m if m > 0 else 0.0

    @property
    def min(self) -> float:
        return float(self._a.min())

    @property
    def max(self) -> float:
        return float(self._a.max())

    def to_dict(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in STAT_FIELDS}


@dataclass
class Measurement:
    """Raw per-run latencies of one model on one device, and what they ran on.

    Attributes:
        samples_ms: every timed run, in order.
        device: registry name of the device.
        label: what was measured (zoo name, arch id, file name).
        artifact_sha256: the exact file that ran.
        settings: the :class:`MeasureSettings` used, as a dict.
        environment: the device's :meth:`info` (CPU model, cores, governor, versions...).
        warmup_ms: the warm-up runs (kept: a slow first run is information too).
        extra: runtime-specific figures (init time, memory footprint, per-op profile).
    """

    samples_ms: tuple[float, ...]
    device: str
    label: str = ""
    artifact_sha256: str = ""
    settings: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    warmup_ms: tuple[float, ...] = ()
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.samples_ms:
            raise ValueError("a Measurement needs at least one sample")
        self.samples_ms = tuple(float(s) for s in self.samples_ms)
        self.warmup_ms = tuple(float(s) for s in self.warmup_ms)

    @property
    def stats(self) -> Stats:
        return Stats(self.samples_ms)

    @property
    def median(self) -> float:
        return self.stats.median

    @property
    def noisy(self) -> bool:
        return self.stats.cv > NOISY_CV

    def warn_if_noisy(self) -> None:
        s = self.stats
        if s.cv > NOISY_CV:
            warnings.warn(
                f"{self.label or 'measurement'} on {self.device}: coefficient of variation "
                f"{s.cv:.1%} > {NOISY_CV:.0%} (IQR/median {s.iqr / s.median:.1%}); the machine "
                "was noisy: close other programs, pin threads, or raise --runs",
                RuntimeWarning,
                stacklevel=2,
            )

    def to_dict(self) -> dict:
        d = {
            "label": self.label,
            "device": self.device,
            "artifact_sha256": self.artifact_sha256,
            **{
                f"{k}_ms" if k not in ("cv", "n") else k: v for k, v in self.stats.to_dict().items()
            },
            "settings": self.settings,
            "environment": self.environment,
            "samples_ms": list(self.samples_ms),
            "warmup_ms": list(self.warmup_ms),
            "extra": self.extra,
        }
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Measurement:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class MeasurementFailure:
    """A measurement that did not produce samples, and why (kept in the store)."""

    device: str
    label: str
    kind: str  # "export", "crash", "timeout", "runtime", "device"
    reason: str
    artifact_sha256: str = ""
