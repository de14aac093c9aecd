"""Paired comparisons: models measured in shuffled rounds, ratios with bootstrap intervals.

Measuring model A for a minute and then model B for a minute compares A under
one state of the machine with B under another; a background job starting in
between moves the ratio by more than the difference being measured.
Interleaving (every round measures every model once, in a new random order)
makes each round a pair: the machine's slow stretches fall on all models of a
round alike, and the per-round ratio ``model / first model`` divides them out.

The ratio reported is the median of the per-round ratios; its confidence
interval is a percentile bootstrap over *rounds* (resampling whole rounds
keeps the pairing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hwnas.errors import ConfigError


def round_orders(n_models: int, rounds: int, seed: int = 0) -> list[list[int]]:
    """``rounds`` random permutations of ``range(n_models)`` (reproducible with ``seed``)."""
    if rounds < 1:
        raise ConfigError(f"--interleave must be >= 1 rounds, got {rounds}")
    rng = np.random.default_rng(seed)
    return [[int(i) for i in rng.permutation(n_models)] for _ in range(rounds)]


@dataclass(frozen=True)
class RatioCI:
    """Median per-round ratio to the reference, with its bootstrap interval."""

    ratio: float
    low: float
    high: float
    rounds: int
    confidence: float


def bootstrap_ratio(
    model: Sequence[float],
    reference: Sequence[float],
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RatioCI:
    """Ratio of paired per-round medians ``model[i] / reference[i]``, CI over rounds.

    Args:
        model / reference: the same rounds' medians (ms) of the two models.
        n_boot: bootstrap resamples.
        confidence: two-sided coverage of the interval.
        seed: bootstrap RNG seed.

    Raises:
        ConfigError: unpaired lengths, fewer than 2 rounds, non-positive times.
    """
    a = np.asarray(model, dtype=float)
    b = np.asarray(reference, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError("paired ratios need one median per round for both models")
    if len(a) < 2:
        raise ConfigError(
            "a bootstrap interval needs at least 2 rounds; give --interleave 2 or more"
        )
    if np.any(b <= 0) or np.any(a <= 0):
        raise ConfigError("latencies must be positive to form ratios")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    r = a / b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(r), size=(n_boot, len(r)))
    boots = np.median(r[idx], axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return RatioCI(float(np.median(r)), float(lo), float(hi), len(r), confidence)


def ratios_to_first(
    medians: dict[str, Sequence[float]], *, n_boot: int = 2000, seed: int = 0
) -> dict[str, RatioCI]:
    """Every model's :func:`bootstrap_ratio` against the first model of ``medians``."""
    names = list(medians)
    if not names:
        raise ConfigError("no models to compare")
    ref = medians[names[0]]
    return {n: bootstrap_ratio(medians[n], ref, n_boot=n_boot, seed=seed) for n in names}
