"""Helpers shared by the search-loop tests (tests/test_search_loop.py, tests/test_ray.py)."""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Sequence
from itertools import count
from pathlib import Path
from typing import Any

from hwnas.evaluators.base import AccuracyEvaluator
from hwnas.objectives import Objective, Terms
from hwnas.searchers.loop import Executor


def write_synthetic_nb201(path: Path) -> Path:
    """Every NB201 cell with a made-up accuracy and latency (deterministic, no shared data).

    Columns ``arch``, ``acc`` (70-95) and ``lat`` (4-24 ms), from a hash of each
    architecture's id.
    """
    from hwnas.spaces import get_space

    space = get_space("nb201")
    lines = ["arch,acc,lat"]
    for a in space.all_archs():
        h = hashlib.sha256(a.id.encode()).digest()
        acc = 70 + int.from_bytes(h[:4]) % 2500 / 100
        lat = 4 + int.from_bytes(h[4:8]) % 2000 / 100
        lines.append(f"{space.format(a)},{acc:.2f},{lat:.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_cli_bench(path: Path) -> Path:
    """Every NB201 cell with a made-up ``cifar10_acc`` (70-90, seeded) and ``lat_ms``
    (1 + the sum of the cell's op indices): the table the CLI tests search over."""
    import csv

    import numpy as np

    from hwnas.spaces import get_space

    space = get_space("nb201")
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "cifar10_acc", "lat_ms"])
        for i in range(space.size()):
            a = space.from_index(i)
            w.writerow(
                [space.format(a), f"{70 + 20 * rng.random():.3f}", f"{1 + sum(a.choices):.3f}"]
            )
    return path


class CountingAccuracy(AccuracyEvaluator):
    """A table's ``cifar10_acc``, remembering every architecture it was asked about
    (tests check that screened candidates cost no accuracy evaluation)."""

    name = "counting"

    def __init__(self, path: Path) -> None:
        from hwnas.evaluators.table import TableEvaluator

        self.inner = TableEvaluator(path, "cifar10_acc")
        self.asked: list[str] = []

    def evaluate(self, space: Any, archs: Sequence[Any]) -> Any:
        self.asked += [a.id for a in archs]
        return self.inner.evaluate(space, archs)

    def config(self) -> dict:
        return {"evaluator": "counting"}


class OutOfOrder(Executor):
    """An in-process executor that behaves like a pool of ``capacity`` remote workers.

    Evaluates on its own copy of the objective (as a remote worker does) and
    finishes a random subset of the running tasks at each wait, so the loop is
    tested against any completion order without a cluster.
    """

    def __init__(self, capacity: int = 3, seed: int = 0):
        self.capacity = capacity
        self.rng = random.Random(seed)
        self.queued: dict[int, tuple[Any, Any, Any]] = {}
        self.ids = count()
        self.submitted: list[str] = []
        self.hits = 0
        self.cancelled = 0
        self.most = 0
        self._copies: dict[int, Objective] = {}

    def submit(self, objective, space, arch):
        if id(objective) not in self._copies:
            self._copies[id(objective)] = copy.deepcopy(objective)
        worker = self._copies[id(objective)]
        ticket = next(self.ids)
        self.queued[ticket] = (worker, space, arch)
        self.submitted.append(arch.id)
        self.most = max(self.most, len(self.queued))
        return ticket

    def wait(self, tickets: Sequence[Any]) -> list[tuple[Any, Terms]]:
        assert tickets and set(tickets) <= set(self.queued)
        chosen = self.rng.sample(list(tickets), self.rng.randint(1, len(tickets)))
        out = []
        for t in chosen:
            worker, space, arch = self.queued.pop(t)
            out.append((t, worker.evaluate(space, [arch])[0]))
        return out

    def cached(self) -> None:
        self.hits += 1

    def cancel(self) -> None:
        self.cancelled += 1
        self.queued.clear()
