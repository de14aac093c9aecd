"""The Objective: accuracy, latency and memory terms, hard constraints, one reward.

An :class:`Objective` evaluates architectures into :class:`Terms`. Every term is
kept, so a history can be re-scored, plotted or turned into a Pareto front.

Cheap terms first: :meth:`Objective.cheap_terms` asks only the cheap sources
(a predictor with its interval, a table, the lifetime memory estimate), and
:meth:`Objective.screen` says whether those alone already break a hard
constraint: with ``reward`` ``hard`` or ``constraint``, a latency whose upper
bound at ``latency_quantile`` exceeds T, or a memory estimate above M. Such a
candidate needs no accuracy evaluation (:meth:`Objective.screened`); the
searcher is still told, with a reward below every evaluated one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hwnas.errors import ConfigError
from hwnas.objectives.latency import LatencySource, latency_interval
from hwnas.objectives.memory import MemoryEstimator
from hwnas.objectives.terms import (
    MEMORY_METRICS,
    REWARD_PRESETS,
    REWARDS,
    Terms,
    apply_factor,
    mnasnet_factor,
)

if TYPE_CHECKING:
    from hwnas.arch import Arch
    from hwnas.evaluators.base import AccuracyEvaluator
    from hwnas.spaces.base import SearchSpace
    from hwnas.store import Store

#: Rewards under which a broken target makes a candidate worthless (screened before accuracy).
HARD_REWARDS = ("hard", "constraint")


class Objective:
    """Accuracy, latency and memory terms, hard constraints, and one reward.

    Args:
        accuracy: an accuracy evaluator (``hwnas.evaluators``).
        latency: where latency comes from; ``None`` when no latency term is wanted.
        memory: a memory estimator; made automatically when a memory target or
            the ``memnas`` reward needs one.
        latency_target_ms: T of the MnasNet reward and the latency constraint.
        memory_target_bytes: M of the memory factor and constraint.
        reward: ``soft``, ``hard``, ``constraint``, ``memnas`` or ``accuracy``.
        alpha, beta: override the preset exponents of ``soft``/``hard``.
        memory_metric: what is compared with M: ``total`` (parameters + peak
            activations, MemNAS' count), ``activations`` or ``params``.
        memnas_lambda: MemNAS' accuracy/memory weight.
        memnas_base: (accuracy, peak activation bytes, parameter bytes) of the
            base network for the MemNAS term; set later with :meth:`set_memnas_base`.
        latency_quantile: the quantile of the latency interval that must meet T
            before accuracy is paid for (``hard``/``constraint`` rewards only).

    Raises:
        ConfigError: a reward that needs a target or a term that is missing.
    """

    def __init__(
        self,
        accuracy: AccuracyEvaluator,
        latency: LatencySource | None = None,
        memory: MemoryEstimator | None = None,
        *,
        latency_target_ms: float | None = None,
        memory_target_bytes: int | None = None,
        reward: str = "soft",
        alpha: float | None = None,
        beta: float | None = None,
        memory_metric: str = "total",
        memnas_lambda: float = 0.5,
        memnas_base: tuple[float, float, float] | None = None,
        store: Store | None = None,
        latency_quantile: float = 0.9,
    ):
        if not 0.0 < float(latency_quantile) < 1.0:
            raise ConfigError(
                f"--latency-quantile must be in (0, 1), got {latency_quantile}; e.g. 0.9"
            )
        if reward not in REWARDS:
            raise ConfigError(f"unknown reward {reward!r}; choose one of: {', '.join(REWARDS)}")
        if memory_metric not in MEMORY_METRICS:
            raise ConfigError(
                f"unknown memory metric {memory_metric!r}; choose one of: {', '.join(MEMORY_METRICS)}"
            )
        if latency_target_ms is not None and latency is None:
            raise ConfigError(
                "a latency target needs a latency source: --latency device:NAME, predictor:FILE "
                "or table:COLUMN"
            )
        if reward in REWARD_PRESETS and latency_target_ms is None and memory_target_bytes is None:
            raise ConfigError(
                f"the MnasNet '{reward}' reward needs a target: give --latency-target (e.g. 20ms) "
                "and/or --memory-target (e.g. 2MB)"
            )
        if reward == "constraint" and latency_target_ms is None and memory_target_bytes is None:
            raise ConfigError(
                "the 'constraint' reward needs --latency-target and/or --memory-target"
            )
        if not 0.0 <= memnas_lambda <= 1.0:
            raise ConfigError(f"memnas_lambda must be in [0, 1], got {memnas_lambda}")
        self.accuracy = accuracy
        self.latency = latency
        needs_memory = memory_target_bytes is not None or reward == "memnas"
        self.memory = (
            memory if memory is not None else (MemoryEstimator(store) if needs_memory else None)
        )
        self.latency_target_ms = latency_target_ms
        self.memory_target_bytes = memory_target_bytes
        self.reward_kind = reward
        a0, b0 = REWARD_PRESETS.get(reward, (0.0, -1.0))
        self.alpha = a0 if alpha is None else float(alpha)
        self.beta = b0 if beta is None else float(beta)
        self.memory_metric = memory_metric
        self.memnas_lambda = memnas_lambda
        self.memnas_base = memnas_base
        # (activation, parameter) weights of the MemNAS term: the paper's 1/1 unless
        # the memnas searcher's memory_weights=code asks for the released code's 0.7/0.3
        self.memnas_weights: tuple[float, float] = (1.0, 1.0)
        self.latency_quantile = float(latency_quantile)
        #: set by ``--verify``: measures the candidates that decide the answer (objectives.verify)
        self.verifier: Any = None
        self._cache: dict[tuple[str, str], Terms] = {}

    # ---- configuration ------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Everything that determines the terms and the reward (JSON-able)."""
        return {
            "accuracy": self.accuracy.config(),
            "latency": self.latency.config() if self.latency else None,
            "memory": self.memory.config() if self.memory else None,
            "latency_target_ms": self.latency_target_ms,
            "memory_target_bytes": self.memory_target_bytes,
            "memory_metric": self.memory_metric,
            "reward": self.reward_kind,
            "alpha": self.alpha,
            "beta": self.beta,
            "memnas_lambda": self.memnas_lambda if self.reward_kind == "memnas" else None,
            "memnas_base": list(self.memnas_base) if self.memnas_base else None,
            **({"verify": self.verifier.config()} if self.verifier is not None else {}),
            **(
                {"latency_quantile": self.latency_quantile}
                if self.screens and self.latency is not None
                else {}
            ),
        }

    def with_accuracy(self, accuracy: AccuracyEvaluator) -> Objective:
        """The same objective with another accuracy term (shares latency and memory caches)."""
        other = object.__new__(Objective)
        other.__dict__.update(self.__dict__)
        other.accuracy = accuracy
        other._cache = {}
        return other

    def set_memnas_base(self, accuracy: float, activation_bytes: float, param_bytes: float) -> None:
        """Set the MemNAS base network (MemNAS moves it every grow/trim round)."""
        self.memnas_base = (float(accuracy), float(activation_bytes), float(param_bytes))

    def close(self) -> None:
        if self.latency is not None:
            self.latency.close()
        if self.verifier is not None:
            self.verifier.source.close()

    # ---- scoring ------------------------------------------------------------------

    def score(self, terms: Terms) -> Terms:
        """Fill ``memory_bytes``, ``feasible``, ``violations``, ``memnas`` and ``reward`` from the raw terms."""
        if terms.peak_activation_bytes is not None and terms.param_bytes is not None:
            terms.memory_bytes = {
                "total": terms.peak_activation_bytes + terms.param_bytes,
                "activations": terms.peak_activation_bytes,
                "params": terms.param_bytes,
            }[self.memory_metric]
        viol: dict[str, float] = {}
        if self.latency_target_ms is not None and terms.latency_ms is not None:
            viol["latency"] = max(0.0, terms.latency_ms / self.latency_target_ms - 1.0)
        if self.memory_target_bytes is not None and terms.memory_bytes is not None:
            viol["memory"] = max(0.0, terms.memory_bytes / self.memory_target_bytes - 1.0)
        terms.violations = viol
        terms.feasible = all(v == 0.0 for v in viol.values())
        if self.memnas_base is not None and terms.memory_bytes is not None:
            from hwnas.profilers.memory import MemoryTerms, memory_efficiency

            terms.memnas = memory_efficiency(
                MemoryTerms(
                    float(terms.accuracy or 0.0),
                    float(terms.peak_activation_bytes or 0),
                    float(terms.param_bytes or 0),
                ),
                MemoryTerms(*self.memnas_base),
                self.memnas_lambda,
                self.memnas_weights,
            )
        terms.reward = self._reward(terms)
        return terms

    def _reward(self, t: Terms) -> float:
        acc = float(t.accuracy) if t.accuracy is not None else math.nan
        if self.reward_kind in REWARD_PRESETS:
            factor = 1.0
            if self.latency_target_ms is not None and t.latency_ms is not None:
                factor *= mnasnet_factor(
                    t.latency_ms, self.latency_target_ms, self.alpha, self.beta
                )
            if self.memory_target_bytes is not None and t.memory_bytes is not None:
                factor *= mnasnet_factor(
                    float(t.memory_bytes), float(self.memory_target_bytes), self.alpha, self.beta
                )
            return apply_factor(acc, factor)
        if self.reward_kind == "constraint":
            if t.feasible:
                return acc
            return -sum(min(v, 1e6) for v in t.violations.values())
        if self.reward_kind == "accuracy":
            return acc
        # memnas
        if t.memnas is None:
            raise ConfigError(
                "the memnas reward needs a base network: call set_memnas_base(...) or give "
                "--memnas-base ARCH"
            )
        return t.memnas

    def knows(self, space: SearchSpace, arch: Arch) -> bool:
        """Whether the terms of ``arch`` are already known (no evaluation needed)."""
        return (space.name, arch.id) in self._cache

    def remember(self, space: SearchSpace, arch: Arch, terms: Terms) -> None:
        """Seed the cache with terms recorded earlier (a resumed search's replay)."""
        self._cache[(space.name, arch.id)] = terms

    # ---- cheap terms first -----------------------------------------------------------

    @property
    def screens(self) -> bool:
        """Whether a broken hard target on cheap terms skips the accuracy evaluation."""
        return self.reward_kind in HARD_REWARDS and (
            self.latency_target_ms is not None or self.memory_target_bytes is not None
        )

    @property
    def latency_is_cheap(self) -> bool:
        return self.latency is not None and getattr(self.latency, "cost", "cheap") == "cheap"

    def cheap_terms(self, space: SearchSpace, archs: Sequence[Arch]) -> list[Terms]:
        """The terms the cheap sources give (latency with its interval, memory), no accuracy."""
        terms = [Terms() for _ in archs]
        if self.latency_is_cheap and archs:
            assert self.latency is not None
            q = self.latency_quantile
            for t, (p, lo, hi, src) in zip(
                terms, latency_interval(self.latency, space, archs, q), strict=True
            ):
                t.latency_ms = t.latency_predicted_ms = float(p)
                t.latency_lower_ms, t.latency_upper_ms = float(lo), float(hi)
                t.sources["latency"] = src
        if self.memory is not None:
            for t, a in zip(terms, archs, strict=True):
                peak, params, src = self.memory.estimate(space, a)
                t.peak_activation_bytes, t.param_bytes = peak, params
                t.sources["memory"] = src
        return terms

    def screen(self, terms: Terms) -> bool:
        """True when cheap terms alone break a hard target (no accuracy needed to reject)."""
        if not self.screens:
            return False
        scored = self.score(dataclasses.replace(terms, violations={}))
        upper = terms.latency_upper_ms if terms.latency_upper_ms is not None else terms.latency_ms
        if (
            self.latency_target_ms is not None
            and upper is not None
            and upper > self.latency_target_ms
        ):
            return True
        return self.memory_target_bytes is not None and scored.violations.get("memory", 0.0) > 0

    def screened(self, terms: Terms) -> Terms:
        """Mark ``terms`` rejected on cheap terms: infeasible, reward ``-(relative excess)``.

        The excess is measured at the upper bound, the figure that decided. The
        reward is below any evaluated candidate's while accuracies are
        non-negative, and still points the searcher towards the targets.
        """
        t = self.score(terms)
        excess = dict(t.violations)
        upper = t.latency_upper_ms
        if self.latency_target_ms is not None and upper is not None:
            excess["latency"] = max(0.0, upper / self.latency_target_ms - 1.0)
        t.violations = excess
        t.feasible = False
        t.screened = True
        t.reward = -sum(min(v, 1e6) for v in excess.values())
        return t

    # ---- evaluation ------------------------------------------------------------------

    def evaluate(
        self, space: SearchSpace, archs: Sequence[Arch], known: Sequence[Terms] | None = None
    ) -> list[Terms]:
        """Terms of each architecture; repeats and earlier ones come from the cache.

        Args:
            known: terms already produced for each architecture (the cheap ones
                of :meth:`cheap_terms`); they are kept, only the missing terms are
                produced.
        """
        out: list[Terms | None] = [None] * len(archs)
        todo: dict[str, list[int]] = {}
        for i, a in enumerate(archs):
            hit = self._cache.get((space.name, a.id))
            if hit is not None:
                t = dataclasses.replace(hit, eval_s=0.0, sources=dict(hit.sources))
                out[i] = self.score(t)
            else:
                todo.setdefault(a.id, []).append(i)
        if todo:
            first = [archs[idx[0]] for idx in todo.values()]
            given = [known[idx[0]] for idx in todo.values()] if known is not None else None
            for a, t in zip(first, self._evaluate_new(space, first, given), strict=True):
                self._cache[(space.name, a.id)] = t
                for i in todo[a.id]:
                    out[i] = t
        return [t for t in out if t is not None]

    def _evaluate_new(
        self, space: SearchSpace, archs: list[Arch], given: list[Terms] | None = None
    ) -> list[Terms]:
        terms = (
            [dataclasses.replace(g, sources=dict(g.sources)) for g in given]
            if given is not None
            else [Terms() for _ in archs]
        )
        t0 = time.perf_counter()
        # Latency and memory first: a search that is bounded by them should not
        # pay for (proxy-trained) accuracy before knowing them, and they are
        # what a device or store caches.
        todo = [i for i, t in enumerate(terms) if t.latency_ms is None]
        if self.latency is not None and todo:
            sub = [archs[i] for i in todo]
            for i, (p, lo, hi, src) in zip(
                todo, latency_interval(self.latency, space, sub, self.latency_quantile), strict=True
            ):
                t = terms[i]
                t.latency_ms = float(p)
                t.latency_lower_ms, t.latency_upper_ms = float(lo), float(hi)
                if self.latency_is_cheap:
                    t.latency_predicted_ms = float(p)
                else:  # a device: what was measured is what decides
                    t.latency_measured_ms = float(p)
                t.sources["latency"] = src
        if self.memory is not None:
            for t, a in zip(terms, archs, strict=True):
                if t.peak_activation_bytes is None:
                    peak, params, src = self.memory.estimate(space, a)
                    t.peak_activation_bytes, t.param_bytes = peak, params
                    t.sources["memory"] = src
        accs = self.accuracy.evaluate(space, archs)
        for t, v in zip(terms, accs, strict=True):
            t.accuracy = float(v)
            t.sources["accuracy"] = self.accuracy.name
        per = (time.perf_counter() - t0) / max(1, len(archs))
        for t in terms:
            t.eval_s = per
            self.score(t)
        return terms
