"""Regularised evolution (Real, Aggarwal, Huang & Le, AAAI 2019, Algorithm 1).

A population of ``P`` architectures starts from random samples. Each cycle
draws ``S`` members at random (with replacement, as in the paper), mutates the
best of them (a tournament) into a child, evaluates the child, adds it to the
population and removes the *oldest* member, not the worst. Ageing is the
"regularisation": an architecture survives only by having descendants that
keep winning, which favours architectures that are good under re-evaluation
and keeps the population moving. Mutation changes exactly one decision
(:meth:`SearchSpace.mutate`), the space-generic form of the paper's op and
hidden-state mutations.

Batched proposals run several tournaments on the same population, as the
paper's asynchronous workers did; ``batch_size=1`` (default) is the
sequential algorithm.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np

from hwnas.errors import ConfigError
from hwnas.objectives import Objective
from hwnas.searchers.base import Candidate, Record, Searcher
from hwnas.searchers.registry import SEARCHERS
from hwnas.spaces.base import SearchSpace


@dataclass(frozen=True)
class EvolutionSettings:
    """Settings of regularised evolution.

    Attributes:
        population_size: P, members kept alive (the first P evaluations are random).
        sample_size: S, members drawn per tournament (S = P is greedy, S = 1 is random walk).

    The defaults (P = 10, S = 3) were chosen on all seven devices of the shared
    NB201 table (T = each device's 25th latency percentile, hard reward, 300
    accuracy evaluations, seeds 100-104, not those reported): against random
    search they had the lower median regret on 6 of 7 devices, (20, 5) on 5,
    (50, 10) and (30, 15) on fewer (benchmarks/RESULTS.md, "Closed loop").
        batch_size: children proposed per round from the same population.
        keep_rejected: let candidates rejected on cheap terms (a predicted latency
            over a hard target) join the population; by default they do not, as an
            infeasible child is discarded and the next tournament proposes again.
        retries: times a mutation is redrawn while it yields an architecture already
            told (evaluated or rejected): on a deterministic objective a repeat teaches
            nothing and, told again, only ages the population (0: the paper's plain
            mutation).
    """

    population_size: int = 10
    sample_size: int = 3
    batch_size: int = 1
    keep_rejected: bool = False
    retries: int = 10

    def __post_init__(self) -> None:
        if self.population_size < 2:
            raise ConfigError(f"population_size must be >= 2, got {self.population_size}")
        if not 1 <= self.sample_size <= self.population_size:
            raise ConfigError(
                f"sample_size must be in 1..population_size ({self.population_size}), got {self.sample_size}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.retries < 0:
            raise ConfigError(f"retries must be >= 0, got {self.retries}")


def _fitness(r: Record) -> float:
    v = r.reward
    return v if isinstance(v, float | int) and not math.isnan(v) else -math.inf


@SEARCHERS.register("evolution")
class RegularizedEvolution(Searcher):
    """Regularised (ageing) evolution: tournament selection, mutate the winner, drop the oldest."""

    name = "evolution"
    asynchronous = True  # update takes one record at any time
    Settings = EvolutionSettings

    def reset(self, space: SearchSpace, seed: int, budget: int, objective: Objective) -> None:
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.population: collections.deque[Record] = collections.deque()
        self.known: set[str] = set()  # told already (evaluated or rejected): not proposed again

    def batch_size(self) -> int:
        missing = self.settings.population_size - len(self.population)
        return missing if missing > 0 else self.settings.batch_size

    def propose(self, n: int) -> list[Candidate]:
        assert self.space is not None
        missing = self.settings.population_size - len(self.population)
        if missing > 0:
            return [
                Candidate(self.space.sample(self.rng), "sample") for _ in range(min(n, missing))
            ]
        pop = list(self.population)
        out = []
        for _ in range(n):
            picks = self.rng.integers(len(pop), size=self.settings.sample_size)
            parent = max((pop[i] for i in picks), key=_fitness)
            child = self.space.mutate(parent.arch, self.rng)
            for _ in range(self.settings.retries):  # a known child: mutate the winner again
                if child.id not in self.known:
                    break
                child = self.space.mutate(parent.arch, self.rng)
            out.append(Candidate(child, "mutation", {"parent_step": parent.step}))
        return out

    def update(self, records: list[Record]) -> None:
        for r in records:
            self.known.add(r.arch.id)
            if r.terms.screened and not self.settings.keep_rejected:
                continue  # rejected on cheap terms: not a member; the next tournament proposes again
            self.population.append(r)
            if len(self.population) > self.settings.population_size:
                self.population.popleft()  # the oldest, whatever its fitness
