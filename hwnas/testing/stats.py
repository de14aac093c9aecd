"""Did it get slower? Pure statistics on raw latency samples, no I/O.

A regression verdict compares two *sessions* of raw samples (baseline and new),
not two summary numbers: a summary hides how noisy each session was, and a
fixed threshold on a summary (pytest-benchmark's ``--benchmark-compare-fail``)
fails at random on a noisy machine. Here:

* The statistic is the ratio of medians, new / baseline (the median because
  latency is skewed to the right; see :mod:`hwnas.profilers.latency`).
* The machine's own drift between the sessions (another load, a different
  frequency, a warmer room) is measured by a *reference* model timed in both
  sessions, interleaved with the model under test; the model's ratio is divided
  by the reference's ratio.
* A percentile bootstrap over the raw samples (each of the two or four sample
  sets resampled independently) gives the confidence interval of that
  drift-corrected ratio.
* Better still, when the baseline's own model file was kept, it is timed again
  beside the new model in the new session, and the verdict is on that
  in-session ratio (:func:`ratio_to_baseline_model`): a reference model of
  another size drifts differently from the model under test, the baseline's
  model cannot.

Verdict with threshold ``t`` (a fraction, 0.05 for 5%), from the CI [lo, hi]:

* ``slower``: lo > 1 (a slowdown is certain) and hi > 1 + t (a slowdown of
  ``t`` or more cannot be ruled out). A regression test fails on it.
* ``faster``: the mirror image (hi < 1 and lo < 1 / (1 + t)).
* ``same``: otherwise: no change could be shown, or the change is shown to lie
  within the threshold.

False alarms on an unchanged model are thus bounded by the CI's one-sided
error rate ((1 - confidence) / 2), whatever the threshold, while a real
slowdown of about the threshold is still flagged (its CI reaches past 1 + t).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hwnas.errors import ConfigError

VERDICTS = ("faster", "same", "slower")
_PCT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


def parse_threshold(text: str, option: str = "--hwnas-fail-regression") -> float:
    """``"5%"`` -> 0.05.

    Raises:
        ConfigError: not a percentage (a bare ``0.05`` is refused: it is
            ambiguous between 5% and 0.05%), or not below 1000%.
    """
    m = _PCT.match(str(text))
    if not m:
        raise ConfigError(
            f"{option} '{text}' is not a percentage; give the tolerated slowdown as a percentage, e.g. 5%"
        )
    value = float(m.group(1)) / 100.0
    if value >= 10.0:
        raise ConfigError(f"{option} '{text}' is too large; give a percentage below 1000%, e.g. 5%")
    return value


def _clean(name: str, samples: Sequence[Any], minimum: int = 3) -> list:
    """Samples as a list of rounds (1-d arrays): a flat sequence is one round; a sequence of
    sequences is one per round (each a separate session of the runtime, measured in turn)."""
    import numpy as np

    items = list(samples)
    nested = bool(items) and isinstance(items[0], list | tuple | np.ndarray)
    try:
        rounds = [np.asarray(r, dtype=np.float64).ravel() for r in (items if nested else [items])]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} holds samples that are not numbers; check the file") from None
    rounds = [r for r in rounds if r.size]
    total = sum(r.size for r in rounds)
    if total < minimum:
        raise ConfigError(
            f"{name} has {total} samples; at least {minimum} raw samples are needed to compare (raise the runs)"
        )
    pooled = np.concatenate(rounds)
    if not np.all(np.isfinite(pooled)) or np.any(pooled <= 0):
        raise ConfigError(f"{name} holds non-positive or non-finite latencies; check the file")
    return rounds


def _boot_medians(rounds: list, n_boot: int, rng, chunk: int = 128):
    """``n_boot`` bootstrap medians of the pooled samples.

    One round: resample the samples. Several: resample the rounds, then the samples
    within each chosen round (a two-level bootstrap), so that what differs from one
    runtime session to the next (memory layout, a neighbour's burst of work) widens
    the interval instead of hiding in hundreds of correlated samples.
    """
    import numpy as np

    out = np.empty(n_boot)
    if len(rounds) == 1:
        a = rounds[0]
        for start in range(0, n_boot, chunk):
            k = min(chunk, n_boot - start)
            out[start : start + k] = np.median(a[rng.integers(0, len(a), (k, len(a)))], axis=1)
        return out
    sizes = {len(r) for r in rounds}
    R = len(rounds)
    if len(sizes) == 1:
        A, n = np.stack(rounds), sizes.pop()
        for start in range(0, n_boot, chunk):
            k = min(chunk, n_boot - start)
            pick = rng.integers(0, R, (k, R, 1))
            vals = A[pick, rng.integers(0, n, (k, R, n))]
            out[start : start + k] = np.median(vals.reshape(k, R * n), axis=1)
        return out
    for b in range(n_boot):  # rounds of unequal sizes (a device that returns what it got)
        chosen = [rounds[i] for i in rng.integers(0, R, R)]
        out[b] = np.median(np.concatenate([r[rng.integers(0, len(r), len(r))] for r in chosen]))
    return out


def _boot_paired_ratio(base: list, new: list, n_boot: int, rng) -> Any:
    """Bootstrap ratios median(new) / median(base) of rounds measured in pairs: the same
    round indices are drawn for both, then the samples within each drawn round."""
    import numpy as np

    R = len(base)
    out = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, R, R)
        nb = np.concatenate([base[i][rng.integers(0, len(base[i]), len(base[i]))] for i in pick])
        nn = np.concatenate([new[i][rng.integers(0, len(new[i]), len(new[i]))] for i in pick])
        out[b] = np.median(nn) / np.median(nb)
    return out


@dataclass(frozen=True)
class RatioEstimate:
    """The drift-corrected median ratio new / baseline and its confidence interval.

    Attributes:
        ratio: (median new / median base) / drift; > 1 means slower.
        lo / hi: the percentile-bootstrap CI of ``ratio`` at ``confidence``.
        model_ratio: median new / median base, not corrected.
        drift: the reference's median ratio new / base (``None``: no reference).
        base_median / new_median: medians of the model, in the samples' unit.
        against: what took the drift out: ``"reference"`` (a reference model timed
            in both sessions) or ``"baseline model"`` (the baseline's own model timed
            again beside the new one, :func:`ratio_to_baseline_model`).
    """

    ratio: float
    lo: float
    hi: float
    model_ratio: float
    drift: float | None
    confidence: float
    base_median: float
    new_median: float
    n_base: int
    n_new: int
    against: str = "reference"

    def verdict(self, threshold: float = 0.0) -> str:
        return verdict(self.lo, self.hi, threshold)


def median_ratio_ci(
    base: Sequence[Any],
    new: Sequence[Any],
    base_ref: Sequence[Any] | None = None,
    new_ref: Sequence[Any] | None = None,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> RatioEstimate:
    """Bootstrap CI of the median ratio new / base, divided by the reference's ratio.

    Args:
        base / new: raw samples of the model in the two sessions (any one unit): flat,
            or one list per round (then the bootstrap resamples rounds, then samples).
        base_ref / new_ref: raw samples of the reference model measured beside it
            in the same two sessions; both or neither.
        confidence: two-sided level of the interval.
        n_boot: bootstrap resamples.
        seed: of the resampling, so a verdict is reproducible from the files.

    Raises:
        ConfigError: fewer than 3 samples, non-positive samples, a lone
            reference, or a confidence outside (0, 1).
    """
    import numpy as np

    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence {confidence} must lie between 0 and 1, e.g. 0.95")
    if (base_ref is None) != (new_ref is None):
        raise ConfigError("reference samples are needed for both sessions or for neither")
    b, n = _clean("the baseline", base), _clean("the new run", new)
    rng = np.random.default_rng(seed)
    boot = _boot_medians(n, n_boot, rng) / _boot_medians(b, n_boot, rng)
    med_b, med_n = float(np.median(np.concatenate(b))), float(np.median(np.concatenate(n)))
    model_ratio = med_n / med_b
    ratio, drift = model_ratio, None
    if base_ref is not None and new_ref is not None:
        rb, rn = _clean("the baseline's reference", base_ref), _clean("the reference", new_ref)
        drift = float(np.median(np.concatenate(rn)) / np.median(np.concatenate(rb)))
        boot = boot / (_boot_medians(rn, n_boot, rng) / _boot_medians(rb, n_boot, rng))
        ratio = model_ratio / drift
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (float(v) for v in np.quantile(boot, [alpha, 1.0 - alpha]))
    return RatioEstimate(
        ratio=ratio,
        lo=min(lo, ratio),
        hi=max(hi, ratio),
        model_ratio=model_ratio,
        drift=drift,
        confidence=confidence,
        base_median=med_b,
        new_median=med_n,
        n_base=sum(len(r) for r in b),
        n_new=sum(len(r) for r in n),
    )


def ratio_to_baseline_model(
    base: Sequence[Any],
    base_now: Sequence[Any],
    new: Sequence[Any],
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> RatioEstimate:
    """The new model against the baseline's own model timed again in the same session.

    When the baseline's model file is at hand, it is the best reference there is:
    it *is* the baseline, so timing it interleaved with the new model leaves
    nothing of the machine's drift between the sessions in the ratio. The ratio
    and its CI are those of median new / median ``base_now``, both from this
    session; ``base`` (the baseline session's samples of that same model) only
    gives the drift reported beside it (``base_now`` / ``base``) and the raw
    ``model_ratio`` (new / ``base``).

    Args:
        base: the baseline session's samples of the model (flat or per round).
        base_now / new: this session's samples of the baseline's model and of the
            new one, measured interleaved (flat or per round).
    """
    import numpy as np

    then = float(np.median(np.concatenate(_clean("the baseline", base))))
    b, n = _clean("the baseline model", base_now), _clean("the new run", new)
    if len(b) == len(n) > 1:
        # Interleaved rounds are pairs: round i of both ran back to back and shares the
        # machine's state, so the rounds are resampled together (a paired bootstrap).
        med_b, med_n = float(np.median(np.concatenate(b))), float(np.median(np.concatenate(n)))
        ratio = med_n / med_b
        boot = _boot_paired_ratio(b, n, n_boot, np.random.default_rng(seed))
        alpha = (1.0 - confidence) / 2.0
        lo, hi = (float(v) for v in np.quantile(boot, [alpha, 1.0 - alpha]))
        lo, hi = min(lo, ratio), max(hi, ratio)
        n_base, n_new = sum(len(r) for r in b), sum(len(r) for r in n)
    else:  # unpaired samples: each side resampled on its own
        est = median_ratio_ci(base_now, new, confidence=confidence, n_boot=n_boot, seed=seed)
        ratio, lo, hi = est.ratio, est.lo, est.hi
        med_b, med_n, n_base, n_new = est.base_median, est.new_median, est.n_base, est.n_new
    return RatioEstimate(
        ratio=ratio,
        lo=lo,
        hi=hi,
        model_ratio=med_n / then,
        drift=med_b / then,
        confidence=confidence,
        base_median=then,
        new_median=med_n,
        n_base=n_base,
        n_new=n_new,
        against="baseline model",
    )


def verdict(lo: float, hi: float, threshold: float = 0.0) -> str:
    """``slower`` / ``faster`` / ``same`` from a ratio's CI (see the module docstring)."""
    if threshold < 0 or math.isnan(lo) or math.isnan(hi):
        raise ConfigError(f"bad verdict input: CI [{lo}, {hi}], threshold {threshold}")
    if lo > 1.0 and hi > 1.0 + threshold:
        return "slower"
    if hi < 1.0 and lo < 1.0 / (1.0 + threshold):
        return "faster"
    return "same"


def verdict_line(
    name: str, est: RatioEstimate, threshold: float, note: str = "", fail_word: str = "REGRESSION"
) -> str:
    """One line: ratio, CI, reference drift, verdict (what a failing test prints)."""
    v = est.verdict(threshold)
    word = fail_word if v == "slower" else v
    drift = (
        f"{est.against} drift {est.drift:.3f}x" if est.drift is not None else "no reference drift"
    )
    text = (
        f"{name}: {est.ratio:.3f}x the baseline [{est.confidence:.0%} CI {est.lo:.3f}-{est.hi:.3f}] "
        f"(model {est.model_ratio:.3f}x, {drift}), threshold {threshold:.1%}: {word}"
    )
    return f"{text}; {note}" if note else text
