"""Neural-predictor-guided evolution (NPENAS; Wei, Niu, Tang & Liang, 2020, "NPENAS: Neural
Predictor Guided Evolution for Neural Architecture Search", Algorithm 1).

Evolution wastes most of its budget on children no better than their parents.
NPENAS keeps evolution's variation (mutating the best architectures found) but
lets a predictor, fitted on every (architecture, accuracy) pair evaluated so far,
choose which children are worth an evaluation:

1. evaluate ``init`` random architectures;
2. each round, mutate the ``parents`` best evaluated architectures into a pool of
   ``pool_size`` new candidates (each one or two decisions changed; never an
   architecture already told);
3. rank the pool by the predictor's reward and evaluate the ``top_k`` best;
   refit the predictor; repeat until the budget is spent.

Two adaptations to this project's objectives, both inside the algorithm's own
step 3. The pool is first passed through the objective's *cheap* terms (latency
from a table or a predictor, the memory estimate): with a hard target
(``--reward hard|constraint``) a candidate they already reject is dropped
before ranking, so it costs neither an evaluation nor a slot of ``top_k``; and
the rank is by the reward the objective would give with the predicted accuracy
in place of the real one, so a soft MnasNet-style reward still trades accuracy
for latency. The paper's predictor is a graph network (NPENAS-NP) or one with
an uncertainty used by Thompson sampling (NPENAS-BO); here it is a Gaussian
process on the space's one-hot encoding, kernel ``exp(-changed decisions /
lengthscale)`` (any space, no training loop, exact in milliseconds for a few
hundred evaluations, and it gives the uncertainty NPENAS-BO samples from):
``acquisition=mean`` ranks by its mean (NP),
``thompson`` by one draw from N(mean, spread) per candidate (BO).

All randomness (samples, mutations, Thompson draws)
comes from the seed, and the predictor is refitted only from the records the
searcher is told, so a replayed run proposes what the original proposed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hwnas.arch import Arch
from hwnas.errors import ConfigError
from hwnas.objectives import Objective, Terms
from hwnas.searchers.base import Candidate, Record, Searcher
from hwnas.searchers.registry import SEARCHERS
from hwnas.spaces.base import SearchSpace


@dataclass(frozen=True)
class NPENASSettings:
    """Settings of predictor-guided evolution.

    Attributes:
        init: random architectures evaluated before the predictor guides (at least 2).
        parents: best evaluated architectures mutated each round.
        pool_size: candidates the parents are mutated into per round.
        top_k: candidates evaluated per round (the predictor's best of the pool).
        double_mutation: share of children with a second decision changed
            (farther from the parent, so the pool is not only the parents' neighbours).
        acquisition: ``mean`` (rank by the predictor's posterior mean, NPENAS-NP) or
            ``thompson`` (one draw from its posterior per candidate, NPENAS-BO).
        lengthscale: of the predictor's kernel, in changed decisions (smaller: a
            cell's accuracy says less about its neighbours').
        noise: the predictor's noise variance, relative to the accuracies' variance.
        screen_tries: draws per pool slot while children fail the cheap hard
            constraint or are already known.

    The defaults were tried on all seven devices of the shared NB201 table
    (T = each device's 25th latency percentile, hard reward, table latency, 300
    accuracy evaluations, tuning seeds 100-102, not those reported): median
    regret 0.00-0.07 points on six devices and 0.83 on raspi4 (its second-best
    feasible cell), below random search's (seeds 100-104) on all seven; ``thompson`` did as well
    (benchmarks/RESULTS.md, "Closed loop"). Only two settings were compared.
    """

    init: int = 20
    parents: int = 10
    pool_size: int = 200
    top_k: int = 10
    double_mutation: float = 0.5
    acquisition: str = "mean"
    lengthscale: float = 2.0
    noise: float = 0.05
    screen_tries: int = 5

    def __post_init__(self) -> None:
        if self.init < 2:
            raise ConfigError(f"init must be >= 2 (the predictor needs data), got {self.init}")
        if self.parents < 1 or self.pool_size < 1 or self.top_k < 1:
            raise ConfigError("parents, pool_size and top_k must be >= 1")
        if self.top_k > self.pool_size:
            raise ConfigError(f"top_k ({self.top_k}) must be <= pool_size ({self.pool_size})")
        if not 0.0 <= self.double_mutation <= 1.0:
            raise ConfigError(f"double_mutation must be in [0, 1], got {self.double_mutation}")
        if self.acquisition not in ("mean", "thompson"):
            raise ConfigError(f"acquisition must be 'mean' or 'thompson', got {self.acquisition!r}")
        if self.lengthscale <= 0 or self.noise <= 0 or self.screen_tries < 1:
            raise ConfigError("lengthscale and noise must be > 0, screen_tries >= 1")


def gp_predict(
    X: np.ndarray, y: np.ndarray, Xp: np.ndarray, lengthscale: float, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation of a GP at ``Xp``, fitted on ``(X, y)``.

    ``X`` rows are one-hot encodings, so half the squared distance between two
    rows is the number of decisions in which they differ. The targets are
    standardised; ``noise`` is relative to their variance.
    """
    mu, sd = float(y.mean()), float(y.std()) or 1.0
    z = (y - mu) / sd

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = 0.5 * ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T)
        return np.exp(-np.maximum(d, 0.0) / lengthscale)

    L = np.linalg.cholesky(k(X, X) + noise * np.eye(len(X)))
    alpha = np.linalg.solve(L.T, np.linalg.solve(L, z))
    Ks = k(Xp, X)
    v = np.linalg.solve(L, Ks.T)
    var = np.maximum(1.0 - (v * v).sum(0), 1e-12)
    return mu + sd * (Ks @ alpha), sd * np.sqrt(var)


def _fitness(r: Record) -> float:
    v = r.reward
    return float(v) if isinstance(v, float | int) and not math.isnan(v) else -math.inf


@SEARCHERS.register("npenas")
class NPENAS(Searcher):
    """Evolution whose children are chosen by an accuracy predictor fitted on the evaluations."""

    name = "npenas"
    Settings = NPENASSettings

    def reset(self, space: SearchSpace, seed: int, budget: int, objective: Objective) -> None:
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.seed = int(seed)
        self.known: set[str] = set()  # told (evaluated or rejected) or proposed
        self.evaluated: list[Record] = []  # with an accuracy: the predictor's data
        self.rounds = 0

    def batch_size(self) -> int:
        missing = self.settings.init - len(self.evaluated)
        return missing if missing > 0 else self.settings.top_k

    # ---- cheap terms ------------------------------------------------------------------

    def _passes(self, archs: list[Arch]) -> tuple[list[Arch], list]:
        """The archs the objective's cheap terms do not reject, with those terms."""
        obj = self.objective
        if obj is None or not archs:
            return archs, [None] * len(archs)
        if not (obj.latency_is_cheap or obj.memory is not None):
            return archs, [None] * len(archs)
        terms = obj.cheap_terms(self.space, archs)
        keep = [(a, t) for a, t in zip(archs, terms, strict=True) if not obj.screen(t)]
        return [a for a, _ in keep], [t for _, t in keep]

    def _new(self, make: Callable[[int], list[Arch]], n: int) -> tuple[list[Arch], list]:
        """Up to ``n`` distinct unknown archs from ``make(m)`` that pass the cheap screen."""
        out: list[Arch] = []
        terms: list = []
        ids: set[str] = set()
        for _ in range(self.settings.screen_tries):
            want = n - len(out)
            if want <= 0:
                break
            draw = []
            for a in make(want * 2):
                if a.id not in self.known and a.id not in ids:
                    ids.add(a.id)
                    draw.append(a)
            ok, t = self._passes(draw)
            out += ok[:want]
            terms += t[:want]
        return out, terms

    # ---- ask / tell --------------------------------------------------------------------

    def propose(self, n: int) -> list[Candidate]:
        assert self.space is not None
        space, rng = self.space, self.rng
        if len(self.evaluated) < self.settings.init:
            archs, _ = self._new(lambda m: [space.sample(rng) for _ in range(m)], n)
            self.known.update(a.id for a in archs)
            return [Candidate(a, "sample") for a in archs]
        s = self.settings
        ranked = sorted(self.evaluated, key=_fitness, reverse=True)
        parents = np.array([r.arch.choices for r in ranked[: s.parents]], dtype=np.int64)

        pool, terms = self._new(lambda m: self._children(parents, m), s.pool_size)
        if not pool:  # the parents' neighbourhood is exhausted: explore
            pool, terms = self._new(lambda m: [space.sample(rng) for _ in range(m)], s.pool_size)
        if not pool:
            return []
        score = self._acquire(pool, terms)
        order = np.argsort(-score, kind="stable")[: min(n, s.top_k)]
        self.rounds += 1
        picked = [pool[int(i)] for i in order]
        self.known.update(a.id for a in picked)
        return [
            Candidate(a, "predicted", {"predicted_reward": float(score[int(i)])})
            for a, i in zip(picked, order, strict=True)
        ]

    def _children(self, parents: np.ndarray, m: int) -> list[Arch]:
        """``m`` mutants of random parents: one decision changed to another option (as
        :meth:`SearchSpace.mutate`), a second one with probability ``double_mutation``."""
        assert self.space is not None
        rng = self.rng
        dec = np.array(self.space.decisions(), dtype=np.int64)
        mutable = np.flatnonzero(dec > 1)
        kids = parents[rng.integers(len(parents), size=m)].copy()
        rows = np.arange(m)
        for k in range(2):
            col = mutable[rng.integers(len(mutable), size=m)]
            shift = 1 + (rng.random(m) * (dec[col] - 1)).astype(np.int64)
            new = (kids[rows, col] + shift) % dec[col]
            if k == 1:
                new = np.where(rng.random(m) < self.settings.double_mutation, new, kids[rows, col])
            kids[rows, col] = new
        return [self.space.arch([int(v) for v in row]) for row in kids]

    def update(self, records: list[Record]) -> None:
        for r in records:
            self.known.add(r.arch.id)
            acc = r.terms.accuracy
            if r.terms.screened or r.repeat or acc is None or not math.isfinite(float(acc)):
                continue
            self.evaluated.append(r)

    # ---- the predictor ------------------------------------------------------------------

    def _acquire(self, pool: list[Arch], terms: list) -> np.ndarray:
        """Predicted reward of each pool member (mean or a Thompson draw)."""
        s = self.settings
        space = self.space
        assert space is not None
        X = space.encode_many([r.arch for r in self.evaluated]).astype(np.float64)
        y = np.array([float(r.terms.accuracy) for r in self.evaluated])
        Xp = space.encode_many(pool).astype(np.float64)
        mean, std = gp_predict(X, y, Xp, s.lengthscale, s.noise)
        if s.acquisition == "thompson":
            acc = mean + std * self.rng.standard_normal(len(pool))
        else:
            acc = mean
        obj = self.objective
        if obj is None:
            return acc
        out = np.empty(len(pool))
        for i, (a, t) in enumerate(zip(acc, terms, strict=True)):
            base = Terms() if t is None else dataclasses.replace(t, violations={})
            base.accuracy = float(a)
            r = obj.score(base).reward
            out[i] = r if r is not None and math.isfinite(r) else -math.inf
        return out
