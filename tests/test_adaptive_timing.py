"""The adaptive timing rule, on scripted run times (a fake clock: nothing here is timed)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hwnas.devices import runner
from hwnas.profilers.latency import (
    MeasureSettings,
    adaptive_loop,
    median_ci_halfwidth,
    mser_truncation,
    stop_point,
    time_callable,
    warmup_settled,
)


class FakeClock:
    """Nanoseconds that advance only when ``run`` is called, by the next scripted duration."""

    def __init__(self, durations_ms):
        self.t = 0
        self.it = iter(durations_ms)
        self.calls = 0

    def __call__(self) -> int:
        return self.t

    def run(self) -> None:
        self.calls += 1
        self.t += round(next(self.it) * 1e6)


def noisy(level: float, n: int, cv: float = 0.01, seed: int = 0) -> list[float]:
    """``n`` run times around ``level`` (deterministic, right-skewed like real latencies)."""
    rng = np.random.default_rng(seed)
    return list(level * (1 + cv * rng.standard_gamma(2.0, n) / 2))


def script(*parts) -> FakeClock:
    return FakeClock(itertools.chain(*parts, itertools.repeat(10.0)))


def test_warmup_ends_when_runs_stop_getting_faster():
    assert not warmup_settled([30.0])  # the first run is always warm-up
    assert not warmup_settled([30.0, 12.0])  # 60% faster: still warming
    assert not warmup_settled([30.0, 12.0, 10.0])  # 17% faster than anything before
    assert warmup_settled([30.0, 12.0, 10.0, 10.1])
    clock = script([30.0, 12.0, 10.0, 10.1], noisy(10.0, 500))
    samples, warm = time_callable(clock.run, MeasureSettings(), clock=clock)
    assert warm[:4] == pytest.approx([30.0, 12.0, 10.0, 10.1])
    assert clock.calls == len(warm) + len(samples)


def test_a_stable_stream_stops_as_soon_as_the_median_is_known():
    times = noisy(10.0, 2000, cv=0.02)
    st = MeasureSettings(rel_ci=0.01)
    samples, warm = adaptive_loop(iter(times).__next__, st)
    arr = np.sort(samples)
    med = float(arr[len(arr) // 2])
    assert 10 <= len(samples) < 200
    assert median_ci_halfwidth(arr) / med <= 0.01
    assert samples == list(times[len(warm) : len(warm) + len(samples)])  # nothing dropped
    # it stopped at the first check that passed (checks on a geometric schedule)
    checks, n = [], st.min_runs
    while n < len(samples):
        checks.append(n)
        n = max(n + 1, int(n * 1.1))
    assert n == len(samples)
    timed = times[len(warm) :]
    assert not any(stop_point(timed[:k], st)[0] for k in checks)


def test_a_start_up_transient_is_moved_to_the_warm_up():
    # a frequency ramp: 15 runs from 30% slow down to 3% slow, each under 10% faster
    # than the one before, so the warm-up detection ends after two of them
    ramp = list(np.linspace(13.0, 10.3, 15))
    times = ramp + noisy(10.0, 2000)
    samples, warm = adaptive_loop(iter(times).__next__, MeasureSettings(rel_ci=0.01))
    assert warm[:2] == ramp[:2] and len(warm) >= 10  # most of the ramp moved to the warm-up
    assert max(samples) < 11.0
    assert np.median(samples) == pytest.approx(np.median(noisy(10.0, 2000)), rel=0.01)
    # with a fixed warm-up the user's choice stands: nothing is moved
    fixed, warm2 = adaptive_loop(
        iter(times).__next__, MeasureSettings(warmup=0, rel_ci=0.01, max_runs=300)
    )
    assert warm2 == [] and fixed[:15] == ramp


def test_mser_finds_the_transient_and_leaves_a_clean_stream_alone():
    assert mser_truncation([13.0] * 20 + [10.0] * 60) == 20
    assert mser_truncation(noisy(10.0, 80)) <= 10
    assert mser_truncation([10.0] * 12) == 0  # too short to judge
    assert mser_truncation([13.0] * 40 + [10.0] * 20, keep=30) <= 30  # keeps min_runs


def test_a_recent_level_shift_blocks_the_stop_that_the_ci_alone_would_allow():
    st = MeasureSettings(warmup=0, rel_ci=0.02)
    shifted = [10.0] * 30 + [10.6] * 10
    arr = np.sort(shifted)
    assert median_ci_halfwidth(arr) == 0.0  # the CI of the median sees nothing ...
    assert stop_point(shifted, st) == (False, 0)  # ... the two halves do
    assert stop_point([10.0] * 40, st) == (True, 0)
    assert stop_point([10.0] * 9, st) == (False, 0)  # fewer than min_runs


def test_the_budget_bounds_a_stream_that_never_settles():
    rng = np.random.default_rng(1)
    times = list(10.0 * rng.uniform(0.5, 1.5, 10_000))
    samples, _ = adaptive_loop(
        iter(times).__next__,
        MeasureSettings(warmup=0, rel_ci=1e-6, budget_s=0.5, max_runs=10_000),
    )
    # the budget counts summed run time: it stops at the first check past 500 ms
    assert sum(samples) >= 500.0 and len(samples) < 60
    capped, _ = adaptive_loop(iter(times).__next__, MeasureSettings(rel_ci=0.0, max_runs=37))
    assert len(capped) <= 37


def test_fixed_runs_and_warmup_are_exact():
    clock = script(noisy(10.0, 100))
    samples, warm = time_callable(clock.run, MeasureSettings(warmup=2, runs=7), clock=clock)
    assert (len(samples), len(warm), clock.calls) == (7, 2, 9)


STREAMS = {
    "stable": noisy(10.0, 3000, cv=0.02),
    "transient": [30.0, 14.0] + [13.0] * 15 + noisy(10.0, 3000, seed=2),
    "shift": noisy(10.0, 60, seed=3) + noisy(12.0, 3000, seed=4),
    "wide": list(10.0 * np.random.default_rng(5).uniform(0.7, 1.6, 3000)),
}


@pytest.mark.parametrize("stream", sorted(STREAMS))
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"rel_ci": 0.02},
        {"rel_ci": 0.005, "budget_s": 2.0, "max_runs": 500},
        {"warmup": 3, "rel_ci": 0.02},
        {"warmup": 1, "runs": 20},
    ],
)
def test_the_ssh_runner_times_run_for_run_as_hwnas(stream, kw):
    """``runner.py`` runs on a board without hwnas: its copy of the rule must agree exactly."""
    times = STREAMS[stream]
    c1, c2 = script(times), script(times)
    mine = runner.time_fn(c1.run, clock=c1, **kw)
    theirs = time_callable(c2.run, MeasureSettings(**kw), clock=c2)
    assert mine == theirs and c1.calls == c2.calls


def test_sample_rel_ci_is_checked_and_reaches_the_settings(monkeypatch, tmp_path, capsys):
    from hwnas.cli import main
    from hwnas.commands import campaign as cmd

    for bad in ("0", "1.5", "x"):
        assert (
            main(["sample", "nb201", "-n", "2", "--rel-ci", bad, "--db", str(tmp_path / "x.db")])
            == 2
        )
        assert "--rel-ci" in capsys.readouterr().err
    seen = {}

    def fake_ray(args, space, settings, _print):  # the --ray branch gets the same settings
        seen["settings"] = settings
        return 0

    monkeypatch.setattr("hwnas.commands._ray.sample_on_ray", fake_ray)
    assert main(["sample", "nb201", "-n", "2", "--ray", "--db", str(tmp_path / "y.db")]) == 0
    assert seen["settings"].rel_ci == cmd.CAMPAIGN_REL_CI == 0.02
    assert (
        main(
            [
                "sample",
                "nb201",
                "-n",
                "2",
                "--ray",
                "--rel-ci",
                "0.005",
                "--db",
                str(tmp_path / "y.db"),
            ]
        )
        == 0
    )
    assert seen["settings"].rel_ci == 0.005
