"""NASWOT search (Mellor et al., ICML 2021, Algorithm 1): score N random networks, keep the best.

No network is trained during the search. ``N`` architectures are sampled,
each is scored at initialisation with the NASWOT score
(:mod:`hwnas.evaluators.naswot`), and the best-scoring one that meets the
hard constraints (latency, memory targets) is the result. Only that pick is
then evaluated with the objective's own accuracy term (a benchmark table, a
proxy training): that is the accuracy NASWOT "reaches".

The score is the objective's accuracy term when that already is ``naswot``;
otherwise the searcher scores with its own settings (``batch_size``,
``data``, ``input_size``) and the objective's accuracy is used for the pick only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hwnas.errors import ConfigError
from hwnas.evaluators.naswot import NaswotEvaluator, NaswotSettings
from hwnas.objectives import Objective
from hwnas.report.progress import announce
from hwnas.searchers.base import Candidate, History, Record, Searcher
from hwnas.searchers.registry import SEARCHERS
from hwnas.spaces.base import SearchSpace


@dataclass(frozen=True)
class NaswotSearchSettings:
    """Settings of the NASWOT search.

    Attributes:
        n: architectures to score (``None`` = the budget).
        batch_size: images in the scoring minibatch (128 in the paper).
        data: ``digits`` or a folder of images for the minibatch.
        input_size: image side (``None`` = the space's input).
        score_seed: seed of the minibatch and of the networks' initialisation.
    """

    n: int | None = None
    batch_size: int = 128
    data: str = "digits"
    input_size: int | None = None
    score_seed: int = 0

    def __post_init__(self) -> None:
        if self.n is not None and self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}")


@SEARCHERS.register("naswot")
class NaswotSearch(Searcher):
    """Score N random architectures at initialisation; keep the best feasible one."""

    name = "naswot"
    Settings = NaswotSearchSettings

    def reset(self, space: SearchSpace, seed: int, budget: int, objective: Objective) -> None:
        self.space = space
        self.objective = self._scoring_objective(objective)
        self.n = min(self.settings.n or budget, budget)
        self.rng = np.random.default_rng(seed)
        self.ids: set[str] = set()
        self.scored = 0  # candidates scored (cheaply rejected ones are not)
        scorer = self.objective.accuracy
        batch = getattr(getattr(scorer, "settings", None), "batch_size", self.settings.batch_size)
        announce(
            f"naswot: scoring {self.n} random {space.name} networks at initialisation (each "
            f"built and run once on {batch} images: seconds, not a training), then evaluating "
            "the best feasible one with the objective's accuracy term"
        )

    def expected_evaluations(self) -> int:
        """The networks it scores (a progress bar's total)."""
        return self.n

    def batch_size(self) -> int:
        return max(1, self.n - self.scored)

    def done(self) -> bool:
        return self.scored >= self.n

    def propose(self, n: int) -> list[Candidate]:
        assert self.space is not None
        out = []
        for _ in range(n):
            # Distinct samples while the space allows it: scoring a network twice is waste.
            a = self.space.sample(self.rng)
            tries = 0
            while a.id in self.ids and len(self.ids) < self.space.size() and tries < 100:
                a = self.space.sample(self.rng)
                tries += 1
            self.ids.add(a.id)
            out.append(Candidate(a, "sample"))
        return out

    def update(self, records: list[Record]) -> None:
        """Nothing to learn (NASWOT ranks independent samples); count the scored ones."""
        self.scored += sum(not r.terms.screened for r in records)

    def _scoring_objective(self, objective: Objective) -> Objective:
        """The user's objective with NASWOT's score as its accuracy term."""
        if isinstance(objective.accuracy, NaswotEvaluator):
            return objective
        s = self.settings
        scorer = NaswotEvaluator(
            NaswotSettings(
                data=s.data, batch_size=s.batch_size, seed=s.score_seed, input_size=s.input_size
            )
        )
        return objective.with_accuracy(scorer)

    def finalize(self, history: History, space: SearchSpace, objective: Objective) -> dict | None:
        best = history.best(feasible_only=True, key="accuracy")
        if best is None:
            return {"arch": None, "reason": "no scored architecture met the constraints"}
        terms = objective.evaluate(space, [best.arch])[0]
        out: dict[str, Any] = {
            "arch": best.arch_str,
            "arch_id": best.arch.id,
            "step": best.step,
            "naswot_score": best.terms.accuracy,
            "terms": terms.to_dict(),
        }
        scored = [r.terms.eval_s for r in history.records if not r.repeat and r.terms.eval_s > 0]
        if scored:
            out["seconds_per_arch"] = float(np.mean(scored))
        return out
