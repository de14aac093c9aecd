"""The searcher contract, over every registered searcher (as tests/test_spaces.py does for spaces).

A searcher is three steps driven by :meth:`Searcher.run` (and by the Ray
path): ``reset`` for a space, seed and budget; ``propose`` candidates of that
space; ``update`` with their records. Whatever the algorithm, a registered
searcher must

* list its settings (a frozen dataclass whose every field has a default and is
  named in its docstring, as ``hwnas search ALGO --show-settings`` prints them)
  and refuse an unknown one with a ConfigError naming the valid ones;
* after ``reset``, propose valid architectures of the space, never the same one
  twice in one batch, accept their records in ``update``, and go on (or say
  ``done()``) without error;
* through ``run``, stay within the budget of distinct evaluations.

The objective here is synthetic and free (accuracy and memory computed from
the architecture's id), so the contract costs what the searcher itself costs;
searchers that train inside ``reset`` (latency-darts, autoslim) get tiny
settings, and their full runs are marked slow. A new searcher is tested the
day it is registered: it runs on ``nb201`` with its default settings unless
listed in :data:`SPACE_OF` / :data:`TINY`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import pytest
from search_helpers import OutOfOrder

from hwnas.arch import Arch
from hwnas.errors import ConfigError
from hwnas.evaluators.base import AccuracyEvaluator, settings_fields
from hwnas.objectives import MemoryEstimator, Objective
from hwnas.searchers import SEARCHERS, create_searcher, list_searchers, searcher_class
from hwnas.searchers.base import Candidate, Record
from hwnas.spaces import get_space
from hwnas.spaces.base import SearchSpace
from hwnas.threads import torch_threads

#: The space a searcher works on, when it is not the generic nb201.
SPACE_OF = {"memnas": "memnas-cells", "autoslim": "mobilenetv2-channels"}
#: Settings that keep a searcher's own training tiny.
TINY: dict[str, list[str]] = {
    "latency-darts": [
        "lam=0",
        "epochs=1",
        "channels=4",
        "cells=1",
        "max_samples=60",
        "batch_size=16",
    ],
    "autoslim": [
        "max_step=1",
        "epochs=1",
        "max_samples=120",
        "calib_batch_size=32",
        "flops_targets=95%",
    ],
    "memnas": ["rounds=1", "top_k=2", "explore=1", "controller_steps=5"],
    "naswot": ["batch_size=8"],
}
#: Searchers whose reset trains a network: their full runs are slow.
EXPENSIVE = {"latency-darts", "autoslim"}

SEARCHERS_UNDER_TEST = [
    n for n in list_searchers() if searcher_class(n).__module__.startswith("hwnas.")
]


def _param(name: str, slow: bool = False) -> Any:
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


# ---- a free objective ---------------------------------------------------------------------


def _unit(arch: Arch, salt: str) -> float:
    """A deterministic number in [0, 1) from the architecture's id."""
    return int(hashlib.sha256(f"{salt}{arch.id}".encode()).hexdigest()[:8], 16) / 2**32


class HashAccuracy(AccuracyEvaluator):
    """Accuracy 50..100 %, a pure function of the architecture: costs nothing."""

    name = "hash"

    def evaluate(self, space: SearchSpace, archs: Sequence[Arch]) -> list[float]:
        return [50.0 + 50.0 * _unit(a, "acc") for a in archs]

    def config(self) -> dict:
        return {"evaluator": self.name}


class HashMemory(MemoryEstimator):
    """Positive peak-activation and parameter bytes from the id (no export)."""

    def estimate(self, space: SearchSpace, arch: Arch) -> tuple[int, int, str]:
        return 1000 + int(9000 * _unit(arch, "act")), 500 + int(4500 * _unit(arch, "par")), "hash"

    def config(self) -> dict:
        return {"memory": "hash"}


def _objective() -> Objective:
    return Objective(HashAccuracy(), memory=HashMemory(), reward="accuracy")


def _space(name: str) -> SearchSpace:
    return get_space(SPACE_OF.get(name, "nb201"))


def _searcher(name: str):
    return create_searcher(name, TINY.get(name, []))


def _reset(searcher, space: SearchSpace, seed: int, budget: int, objective: Objective) -> Objective:
    """Reset the way :meth:`Searcher.run` does (its public ``prepare``); returns the
    objective records are scored with (the searcher may evaluate with its own)."""
    return searcher.prepare(space, objective, budget, seed)


def _records(space: SearchSpace, obj: Objective, cands: list[Candidate], step: int) -> list[Record]:
    out = []
    for i, c in enumerate(cands):
        terms = obj.evaluate(space, [c.arch])[0]
        out.append(Record(step + i, c.arch, space.format(c.arch), terms, c.origin, dict(c.info)))
    return out


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small networks on a shared CPU: one torch thread, as the searchers use."""
    with torch_threads(1):
        yield


# ---- settings -----------------------------------------------------------------------------


def test_every_shipped_searcher_is_under_test():
    assert {
        "random",
        "evolution",
        "mnasnet-rl",
        "naswot",
        "latency-darts",
        "memnas",
        "autoslim",
    } <= set(SEARCHERS_UNDER_TEST)


@pytest.mark.parametrize("name", SEARCHERS_UNDER_TEST)
def test_settings_are_listable_and_documented(name):
    cls = searcher_class(name)
    assert cls.name == name and SEARCHERS.help(name)
    assert dataclasses.is_dataclass(cls.Settings)
    assert cls.Settings.__dataclass_params__.frozen, (
        "settings must be frozen (hashable, no mutation)"
    )
    defaults = cls.Settings()  # every field has a default
    fields = settings_fields(cls.Settings)
    doc = cls.Settings.__doc__ or ""
    undocumented = [f for f, _, _ in fields if f not in doc]
    assert not undocumented, f"{name}: settings not named in the docstring: {undocumented}"
    for field, default, _ in fields:
        assert getattr(defaults, field) == default
    with pytest.raises(ConfigError, match="bogus.*Valid keys"):
        create_searcher(name, ["bogus=1"])


# ---- the three steps ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [_param(n, slow=n == "autoslim") for n in SEARCHERS_UNDER_TEST])
def test_reset_propose_update(name):
    space = _space(name)
    searcher = _searcher(name)
    obj = _reset(searcher, space, seed=0, budget=4, objective=_objective())
    step = 0
    for _ in range(3):
        if searcher.done():
            break
        n = searcher.batch_size()
        assert isinstance(n, int) and n >= 1
        cands = searcher.propose(min(n, 4))
        assert isinstance(cands, list)
        if not cands:
            break
        ids = [c.arch.id for c in cands]
        assert len(ids) == len(set(ids)), (
            f"{name} proposed the same architecture twice in one batch"
        )
        for c in cands:
            assert isinstance(c, Candidate) and c.arch.space == space.name
            space.validate(c.arch)
            assert isinstance(c.origin, str) and isinstance(c.info, dict)
        searcher.update(_records(space, obj, cands, step))
        step += len(cands)
    assert step >= 1, f"{name} proposed nothing after reset"
    assert isinstance(searcher.done(), bool)


@pytest.mark.parametrize("name", [_param(n, slow=n in EXPENSIVE) for n in SEARCHERS_UNDER_TEST])
def test_run_stays_within_the_budget(name):
    space = _space(name)
    hist = _searcher(name).run(space, _objective(), budget=4, seed=0)
    assert 1 <= hist.meta["evaluated"] <= 4
    assert len({r.arch.id for r in hist.records}) == hist.meta["evaluated"]
    for r in hist.records:
        space.validate(r.arch)
        assert r.arch_str == space.format(r.arch)


@pytest.mark.parametrize(
    "name",
    [
        _param(n, slow=n in EXPENSIVE and searcher_class(n).asynchronous)
        for n in SEARCHERS_UNDER_TEST
    ],
)
def test_the_asynchronous_mode_is_for_searchers_that_say_so(name):
    """A searcher with ``asynchronous = True`` takes its records one at a time, in whatever
    order evaluations finish, and stays within the budget; any other refuses the mode."""
    space = _space(name)
    searcher = _searcher(name)
    if not searcher.asynchronous:
        with pytest.raises(ConfigError, match="whole batches"):
            searcher.run(space, _objective(), budget=4, asynchronous=True)
        return
    ex = OutOfOrder(capacity=3, seed=1)
    hist = searcher.run(space, _objective(), budget=6, seed=0, executor=ex, asynchronous=True)
    assert hist.meta["variant"] == "async" and hist.meta["evaluated"] == 6
    assert len({r.arch.id for r in hist.records}) == 6 and set(ex.submitted) == {
        r.arch.id for r in hist.records
    }
    assert ex.most > 1  # more than one evaluation ran at once
