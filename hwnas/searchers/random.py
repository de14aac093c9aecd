"""Random search: uniform samples from the space, the baseline every searcher must beat."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwnas.errors import ConfigError
from hwnas.objectives import Objective
from hwnas.searchers.base import Candidate, Record, Searcher
from hwnas.searchers.registry import SEARCHERS
from hwnas.spaces.base import SearchSpace


@dataclass(frozen=True)
class RandomSettings:
    """Settings of random search.

    Attributes:
        batch_size: candidates proposed at once (all independent; for parallel evaluation).
        unique: avoid proposing an architecture twice (re-draws up to 100 times,
            so it still ends in a space smaller than the budget).
    """

    batch_size: int = 16
    unique: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@SEARCHERS.register("random")
class RandomSearch(Searcher):
    """Uniform random sampling of the space's decisions."""

    name = "random"
    asynchronous = True  # update takes one record at any time
    Settings = RandomSettings

    def reset(self, space: SearchSpace, seed: int, budget: int, objective: Objective) -> None:
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.proposed: set[str] = set()

    def batch_size(self) -> int:
        return self.settings.batch_size

    def propose(self, n: int) -> list[Candidate]:
        assert self.space is not None
        out = []
        for _ in range(n):
            arch = self.space.sample(self.rng)
            tries = 0
            while self.settings.unique and arch.id in self.proposed and tries < 100:
                arch = self.space.sample(self.rng)
                tries += 1
            self.proposed.add(arch.id)
            out.append(Candidate(arch, "sample"))
        return out

    def update(self, records: list[Record]) -> None:
        # Replayed records may differ from the proposals; never propose those again either.
        self.proposed.update(r.arch.id for r in records)
