"""Paired ratios: shuffled round orders and bootstrap intervals on given samples."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.errors import ConfigError
from hwnas.profilers.paired import bootstrap_ratio, ratios_to_first, round_orders


def test_round_orders_are_permutations_and_reproducible():
    orders = round_orders(3, 20, seed=1)
    assert len(orders) == 20 and all(sorted(o) == [0, 1, 2] for o in orders)
    assert orders == round_orders(3, 20, seed=1)
    assert len({tuple(o) for o in orders}) > 1  # actually shuffled
    with pytest.raises(ConfigError, match="--interleave"):
        round_orders(3, 0)


def test_bootstrap_ratio_on_given_samples_divides_out_shared_slowdowns():
    # a machine slowing down 3x in rounds 3-5 slows both models alike: the pair keeps 1.5
    ref = [10.0, 10.0, 30.0, 30.0, 30.0, 10.0]
    model = [15.0, 15.0, 45.0, 45.0, 45.0, 15.0]
    rc = bootstrap_ratio(model, ref)
    assert (
        rc.ratio == pytest.approx(1.5)
        and rc.low == pytest.approx(1.5)
        and rc.high == pytest.approx(1.5)
    )
    assert rc.rounds == 6 and rc.confidence == 0.95


def test_bootstrap_interval_covers_and_narrows_with_rounds():
    rng = np.random.default_rng(0)
    few = 1.2 * np.exp(rng.normal(0, 0.05, 6))
    many = 1.2 * np.exp(rng.normal(0, 0.05, 200))
    ones6, ones200 = np.ones(6), np.ones(200)
    a, b = bootstrap_ratio(few, ones6), bootstrap_ratio(many, ones200)
    assert a.low <= a.ratio <= a.high and b.low <= b.ratio <= b.high
    assert b.low < 1.2 < b.high
    assert (b.high - b.low) < (a.high - a.low)
    # the exact median of the per-round ratios
    assert a.ratio == pytest.approx(float(np.median(few)))


def test_ratios_to_first_and_bad_input():
    out = ratios_to_first({"a": [2.0, 4.0], "b": [1.0, 2.0], "c": [6.0, 12.0]})
    assert out["a"].ratio == 1.0 and out["b"].ratio == 0.5 and out["c"].ratio == 3.0
    with pytest.raises(ConfigError, match="at least 2 rounds"):
        bootstrap_ratio([1.0], [1.0])
    with pytest.raises(ConfigError, match="one median per round"):
        bootstrap_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ConfigError, match="positive"):
        bootstrap_ratio([1.0, 0.0], [1.0, 1.0])
