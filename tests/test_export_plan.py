"""Where exports run (never beside a timed run on a shared core) and which are verified."""

from __future__ import annotations

import pytest

from hwnas.arch import Arch
from hwnas.campaigns import pool
from hwnas.campaigns.pool import phase_batches, plan_export, verify_this


@pytest.mark.parametrize(
    "cores, threads, workers, todo, expected",
    [
        (2, 1, None, 300, ("phase", 2)),  # 2 cores: export a batch on both, then time it
        (2, 1, 0, 300, ("inline", 0)),  # --export-workers 0: in this process
        (2, 1, None, 3, ("inline", 0)),  # too few archs to pay for a pool
        (8, 1, None, 300, ("pinned", 7)),  # spare cores: export beside the timing
        (8, 4, None, 300, ("pinned", 4)),
        (4, 3, None, 300, ("phase", 4)),  # one spare core shares caches: phases
    ],
)
def test_plan_export_by_cores(monkeypatch, cores, threads, workers, todo, expected):
    monkeypatch.setattr(pool, "usable_cores", lambda: list(range(cores)))
    mode, n, why = plan_export("auto", workers, threads, todo)
    assert (mode, n) == expected and f"{cores} cores" in why


def test_plan_export_explicit_modes(monkeypatch):
    monkeypatch.setattr(pool, "usable_cores", lambda: [0, 1])
    assert plan_export("phase", None, 1, 5)[:2] == ("phase", 2)
    assert plan_export("pinned", None, 1, 5)[:2] == ("pinned", 1)
    mode, _, why = plan_export("pinned", None, 2, 5)  # no spare core at all
    assert mode == "phase" and "no spare core" in why
    assert plan_export("inline", 3, 1, 5)[:2] == ("inline", 0)


def test_verify_export_sample_is_stable_and_about_one_in_ten():
    archs = [Arch("s", (i, j)) for i in range(40) for j in range(25)]
    picked = [verify_this(a, "sample", i) for i, a in enumerate(archs)]
    assert picked[0]  # the first arch of a run is always checked
    assert 0.05 < sum(picked) / len(picked) < 0.15
    # a resumed run (other index) checks the same archs, apart from its first
    assert [verify_this(a, "sample", i + 1) for i, a in enumerate(archs)][1:] == picked[1:]
    assert all(verify_this(a, "all", 5) for a in archs[:10])
    assert not any(verify_this(a, "none", 0) for a in archs[:10])


def test_phase_batches():
    items = [Arch("s", (i,)) for i in range(7)]
    assert [len(b) for b in phase_batches(items, 3)] == [3, 3, 1]
    assert sum(phase_batches(items, 3), []) == items
