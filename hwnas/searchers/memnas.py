"""MemNAS: grow-and-trim search for memory-efficient networks (Liu et al., CVPR 2020, arXiv 1907.09569).

Each round starts from a *base* network and

1. generates candidates by growing it (the same new cell added to every
   block, every input position x layer type x connection method; ``grow=last``
   for the earlier, smaller set) and by trimming it (one layer replaced by the identity, or one
   edge removed, inside one block; orphaned cells dropped), see
   :mod:`hwnas.spaces.memnas_cells`;
2. ranks *all* candidates together with the structure-correlation
   controller (:mod:`hwnas.searchers.memnas_controller`) and keeps the
   top-k, plus ``explore`` random others so the controller also learns
   from candidates it ranked low;
3. evaluates those: accuracy from the objective's evaluator (``proxy``
   training on the digits by default, or any evaluator), parameter and
   peak-activation memory from the lifetime estimator
   (:func:`hwnas.profilers.memory.estimate` on the exported ONNX graph),
   and the memory-efficiency reward against the base
   (:func:`hwnas.profilers.memory.memory_efficiency`)::

       R = lambda * a / a_b - (1 - lambda) * (w_e * e / e_b + w_p * p / p_b)

   with the paper's ``w_e = w_p = 1`` (``memory_weights=paper``, the
   default) or the released code's ``w_e = 0.7, w_p = 0.3``
   (``memory_weights=code``);

4. trains the controller on the realised rewards (ranking quality is
   reported first, as Kendall's tau between its predictions and the
   realised rewards of the round), and makes the candidate with the best
   reward (the best feasible one when the objective has a memory or latency
   target) the next base.

The network family is :class:`~hwnas.spaces.memnas_cells.MemNASSpace`
(``--space memnas-cells``): MemNAS' blocks-of-cells CIFAR network at
desktop size. The search's reward is always MemNAS' ``R`` (the objective's
other terms and constraints are kept and recorded); ``lam`` sets lambda.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hwnas.arch import Arch
from hwnas.errors import ConfigError
from hwnas.objectives import MemoryEstimator, Terms
from hwnas.profilers.memory import MEMNAS_WEIGHTS
from hwnas.report.progress import announce
from hwnas.searchers.base import Candidate, History, Record, Searcher
from hwnas.searchers.memnas_controller import LOSSES, RankingTrainer, kendall_tau
from hwnas.searchers.registry import SEARCHERS
from hwnas.spaces.memnas_cells import GROW_MODES, MemNASSpace, grow_trim_candidates

if TYPE_CHECKING:
    from hwnas.objectives import Objective
    from hwnas.spaces.base import SearchSpace


@dataclass(frozen=True)
class MemNASSettings:
    """Settings of a MemNAS search.

    Attributes:
        lam: lambda of the reward, in [0, 1] (1 = accuracy only); ``None`` =
            the objective's ``memnas_lambda`` (0.5 unless set).
        rounds: grow/trim rounds.
        top_k: candidates the controller picks for evaluation each round.
        explore: extra random candidates evaluated each round (0 = only top-k), drawn
            from the move kinds in turn (grow, layer to identity, edge removed).
        base: the starting network in the space's string form
            (default: one single-conv cell per block).
        controller_loss: ``mse`` or ``hinge`` (see the controller module).
        controller_steps: Adam passes over the collected rounds after each round.
        controller_lr: its learning rate.
        keep_base: keep the base for the next round when no evaluated candidate
            beats its own reward (a hill-climbing variant); MemNAS moves to the
            best candidate every round (the default).
        grow: ``full`` (MemNAS' grow step: every input position x layer type x
            connection method) or ``last`` (the new cell reads the last output
            cell only: the smaller set of earlier versions).
        memory_weights: ``paper`` (activation and parameter ratios weighted
            1 and 1, arXiv 1907.09569) or ``code`` (0.7 and 0.3, as in the
            authors' released code).
    """

    lam: float | None = None
    rounds: int = 3
    top_k: int = 3
    explore: int = 1
    base: str | None = None
    controller_loss: str = "mse"
    controller_steps: int = 60
    controller_lr: float = 1e-2
    keep_base: bool = False
    grow: str = "full"
    memory_weights: str = "paper"

    def __post_init__(self) -> None:
        if self.grow not in GROW_MODES:
            raise ConfigError(
                f"memnas grow must be one of {', '.join(GROW_MODES)}, got {self.grow!r}"
            )
        if self.memory_weights not in MEMNAS_WEIGHTS:
            raise ConfigError(
                f"memnas memory_weights must be one of {', '.join(MEMNAS_WEIGHTS)}, "
                f"got {self.memory_weights!r}"
            )
        if self.lam is not None and not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"memnas lam (lambda) must be in [0, 1], got {self.lam}")
        if self.rounds < 1 or self.top_k < 1 or self.explore < 0:
            raise ConfigError("memnas needs rounds >= 1, top_k >= 1 and explore >= 0")
        if self.controller_loss not in LOSSES:
            raise ConfigError(
                f"controller_loss must be one of {', '.join(LOSSES)}, got {self.controller_loss!r}"
            )
        if self.controller_steps < 1 or self.controller_lr <= 0:
            raise ConfigError("controller_steps must be >= 1 and controller_lr > 0")


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if _finite(v) else str(v)


@SEARCHERS.register("memnas")
class MemNAS(Searcher):
    """MemNAS: grow-and-trim rounds ranked by a structure-correlation controller, memory-efficiency reward."""

    name = "memnas"
    Settings = MemNASSettings

    # ---- the objective: MemNAS' reward, memory always estimated ------------------------

    def _memnas_objective(self, objective: Objective) -> Objective:
        """A copy of ``objective`` whose reward is MemNAS' R (the caller's is left untouched)."""
        obj = objective.with_accuracy(objective.accuracy)
        if obj.memory is None:
            obj.memory = MemoryEstimator()
        obj.reward_kind = "memnas"
        obj.memnas_lambda = (
            float(self.settings.lam)
            if self.settings.lam is not None
            else float(objective.memnas_lambda)
        )
        obj.memnas_weights = MEMNAS_WEIGHTS[self.settings.memory_weights]
        obj.memnas_base = None  # set from the evaluated base network in reset()
        return obj

    def _base_terms(self, space: SearchSpace, arch: Arch) -> Terms:
        """Evaluate the starting network directly: its terms define the first round's ratios."""
        obj = self.objective
        assert obj.memory is not None
        t = Terms()
        if obj.latency is not None:
            ms, src = obj.latency.latency_ms(space, [arch])[0]
            t.latency_ms, t.sources["latency"] = float(ms), src
        peak, params, src = obj.memory.estimate(space, arch)
        t.peak_activation_bytes, t.param_bytes, t.sources["memory"] = peak, params, src
        t.accuracy = float(obj.accuracy.evaluate(space, [arch])[0])
        t.sources["accuracy"] = obj.accuracy.name
        if not (_finite(t.accuracy) and t.accuracy > 0):
            raise ConfigError(
                f"the base network {space.format(arch)} has accuracy {t.accuracy}; MemNAS' ratios "
                "need a positive base accuracy: train longer (proxy epochs) or start from another base"
            )
        return t

    def _set_base(self, arch: Arch, terms: Terms) -> None:
        self.base, self.base_terms = arch, terms
        self.objective.set_memnas_base(
            float(terms.accuracy or 0.0),
            float(terms.peak_activation_bytes or 0),
            float(terms.param_bytes or 0),
        )

    # ---- the three steps ---------------------------------------------------------------

    def reset(self, space: SearchSpace, seed: int, budget: int, objective: Objective) -> None:
        if not isinstance(space, MemNASSpace):
            raise ConfigError(
                f"memnas grows and trims networks of blocks of cells; space '{space.name}' is not "
                "such a family; use --space memnas-cells"
            )
        self.space = space
        self.objective = self._memnas_objective(objective)
        base = space.parse(self.settings.base) if self.settings.base else space.default_base()
        terms = self._base_terms(space, base)
        self._set_base(base, terms)
        self.objective.remember(space, base, self.objective.score(terms))
        self.initial = (space.format(base), terms)
        self.rng = np.random.default_rng(seed)
        token_dim = space.cell_tokens(base).shape[1]
        self.trainer = RankingTrainer(
            token_dim,
            loss=self.settings.controller_loss,
            lr=self.settings.controller_lr,
            steps=self.settings.controller_steps,
            seed=seed,
        )
        self.round = 0
        self.pending: dict[str, Any] | None = None
        self.base_proposed = False
        self.evaluated: set[str] = set()
        self.rounds_log: list[dict[str, Any]] = []

    def done(self) -> bool:
        return self.base_proposed and self.round >= self.settings.rounds

    def expected_evaluations(self) -> int:
        """At most: the base, then ``top_k + explore`` per round (a progress bar's total)."""
        return 1 + self.settings.rounds * (self.settings.top_k + self.settings.explore)

    def batch_size(self) -> int:
        return 1 if not self.base_proposed else self.settings.top_k + self.settings.explore

    def propose(self, n: int) -> list[Candidate]:
        assert isinstance(self.space, MemNASSpace)
        if not self.base_proposed:
            self.base_proposed = True
            return [Candidate(self.base, "base", {"round": 0})]
        space = self.space
        cands = grow_trim_candidates(
            space.network(self.base), space.max_cells, space.ops, self.settings.grow
        )
        if not cands:
            self.round = self.settings.rounds  # nothing left to grow or trim
            return []
        archs = [space.arch_of(net) for net, _ in cands]
        grown = sum(m.kind == "grow" for _, m in cands)
        announce(
            f"memnas round {self.round + 1}/{self.settings.rounds}: {len(cands)} candidates "
            f"({grown} grown, {len(cands) - grown} trimmed) from {space.format(self.base)}; "
            f"evaluating the controller's top {self.settings.top_k} + {self.settings.explore} "
            f"explored ({self.objective.accuracy.name} accuracy each)"
        )
        tokens = torch.from_numpy(np.stack([space.cell_tokens(a) for a in archs]))
        scores = self.trainer.score(tokens)
        ranked = [int(i) for i in np.argsort(-scores, kind="stable")]
        # candidates evaluated in an earlier round are known: pick new ones while there are
        fresh = [i for i in ranked if archs[i].id not in self.evaluated] or ranked
        k = min(self.settings.top_k, len(fresh))
        picked = fresh[:k]
        rest = fresh[k:]
        picked += self._explore(rest, [m.kind for _, m in cands])
        picked = picked[: max(1, n)]
        rank = {i: r for r, i in enumerate(ranked)}
        self.pending = {
            "archs": archs,
            "moves": [m for _, m in cands],
            "tokens": tokens,
            "scores": scores,
            "picked": picked,
        }
        out = []
        for j, i in enumerate(picked):
            move = cands[i][1]
            out.append(
                Candidate(
                    archs[i],
                    "grow" if move.kind == "grow" else "trim",
                    {
                        "round": self.round + 1,
                        "move": f"{move.kind}: {move.detail}",
                        "predicted": float(scores[i]),
                        "rank": rank[i],
                        "pick": "top-k" if j < k else "explore",
                    },
                )
            )
        return out

    def _explore(self, rest: list[int], kinds: list[str]) -> list[int]:
        """``explore`` random candidates outside the top-k, drawn by move kind in turn
        (grow, trim layer, remove edge), so the controller also sees the kinds it ranks low
        even where one kind outnumbers the others."""
        pools: dict[str, list[int]] = {}
        for i in rest:
            pools.setdefault(kinds[i], []).append(i)
        out: list[int] = []
        order = [k for k in ("grow", "identity", "remove-edge") if k in pools]
        start = int(self.rng.integers(len(order))) if order else 0
        j = 0
        while len(out) < self.settings.explore and any(pools.values()):
            kind = order[(start + j) % len(order)]
            j += 1
            if pools[kind]:
                out.append(pools[kind].pop(int(self.rng.integers(len(pools[kind])))))
        return out

    def update(self, records: list[Record]) -> None:
        self.evaluated.update(r.arch.id for r in records)
        if self.pending is None:  # the base network's record
            return
        p, self.pending = self.pending, None
        rewards = [float(r.terms.memnas) if _finite(r.terms.memnas) else -math.inf for r in records]
        picked = p["picked"][: len(records)]
        predicted = [float(p["scores"][i]) for i in picked]
        finite = [i for i, r in enumerate(rewards) if math.isfinite(r)]
        tau = kendall_tau([predicted[i] for i in finite], [rewards[i] for i in finite])
        self.trainer.add_round(
            p["tokens"], [picked[i] for i in finite], [rewards[i] for i in finite]
        )
        loss = self.trainer.fit()
        pool = [i for i in finite if records[i].feasible] or finite
        before = self.space.format(self.base) if self.space is not None else ""
        lam = self.objective.memnas_lambda
        base_reward = lam * 1.0 - (1.0 - lam) * sum(self.objective.memnas_weights)
        self.round += 1
        entry: dict[str, Any] = {
            "round": self.round,
            "base": before,
            "base_reward": base_reward,
            "candidates": len(p["archs"]),
            "grow": sum(m.kind == "grow" for m in p["moves"]),
            "trim": sum(m.kind != "grow" for m in p["moves"]),
            "evaluated": len(records),
            "kendall_tau": tau,
            "controller_loss": loss,
        }
        if (
            pool
            and self.settings.keep_base
            and rewards[max(pool, key=lambda i: rewards[i])] <= base_reward
        ):
            entry.update(
                chosen=before, move="kept the base (no candidate beat it)", reward=base_reward
            )
            entry.update(
                accuracy=self.base_terms.accuracy,
                param_bytes=self.base_terms.param_bytes,
                peak_activation_bytes=self.base_terms.peak_activation_bytes,
                latency_ms=self.base_terms.latency_ms,
                feasible=self.base_terms.feasible,
            )
            pool = []
            self._set_base(self.base, self.base_terms)  # re-anchor the ratios explicitly
        if pool:
            best = max(pool, key=lambda i: rewards[i])
            rec = records[best]
            entry.update(
                chosen=rec.arch_str,
                move=rec.info.get("move"),
                reward=rewards[best],
                accuracy=rec.terms.accuracy,
                param_bytes=rec.terms.param_bytes,
                peak_activation_bytes=rec.terms.peak_activation_bytes,
                latency_ms=rec.terms.latency_ms,
                feasible=rec.feasible,
            )
            self._set_base(rec.arch, rec.terms)
        self.rounds_log.append(entry)
        announce(
            f"memnas round {self.round}/{self.settings.rounds} done: reward "
            f"{_fmt(entry.get('reward'))}, accuracy {_fmt(entry.get('accuracy'))}, controller "
            f"Kendall tau {_fmt(tau)}; next base {entry.get('chosen')}"
        )

    def finalize(self, history: History, space: SearchSpace, objective: Objective) -> dict | None:
        text, t = self.initial
        return {
            "lambda": self.objective.memnas_lambda,
            "memory_weights": list(self.objective.memnas_weights),
            "grow": self.settings.grow,
            "initial": {
                "arch": text,
                "accuracy": t.accuracy,
                "param_bytes": t.param_bytes,
                "peak_activation_bytes": t.peak_activation_bytes,
            },
            "rounds": self.rounds_log,
            "final": {
                "arch": space.format(self.base),
                "accuracy": self.base_terms.accuracy,
                "param_bytes": self.base_terms.param_bytes,
                "peak_activation_bytes": self.base_terms.peak_activation_bytes,
            },
        }
