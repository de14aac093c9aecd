"""MnasNet's reinforcement-learning search (Tan et al., CVPR 2019, section 3.2).

An LSTM controller writes an architecture as a sequence of tokens, one per
decision of the space (:meth:`SearchSpace.decisions`), each token sampled
from a softmax over that decision's options and fed back as the next step's
input. The controller's parameters ``theta`` are trained to maximise the
expected reward ``J = E_{P(a_1:T; theta)}[R(m)]`` with Proximal Policy
Optimisation, as in the paper: a batch of architectures is sampled, each is
evaluated (the reward is the objective's, e.g. MnasNet's
``ACC * (LAT/T)^w``), and a few epochs of the clipped surrogate

    L = -E[ min(rho * A, clip(rho, 1 - eps, 1 + eps) * A) ],
    rho = P(a; theta) / P(a; theta_old)

are taken with Adam, where the advantage ``A = R - b`` uses an exponential
moving-average baseline ``b`` of past rewards (scaled by the batch's RMS so
the step size does not depend on the reward's units), and a small entropy
bonus keeps the policy from collapsing before it has seen enough.

Because the controller only needs the list of decision sizes, it works on
every registered space. Sampling and initialisation are seeded through a
private torch generator, and the update is recomputed from the (arch,
reward) pairs it is told about, so replaying a logged run re-trains the
controller exactly as the original run did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hwnas.errors import ConfigError
from hwnas.objectives import Objective
from hwnas.searchers.base import Candidate, Record, Searcher
from hwnas.searchers.registry import SEARCHERS
from hwnas.spaces.base import SearchSpace
from hwnas.threads import torch_threads


@dataclass(frozen=True)
class MnasRLSettings:
    """Settings of the RL controller and its PPO training.

    Attributes:
        batch_size: architectures sampled per PPO update.
        hidden: LSTM hidden units.
        lr: Adam learning rate.
        ppo_epochs: optimisation passes over each batch.
        clip: PPO's epsilon.
        baseline_decay: of the moving-average reward baseline.
        entropy: weight of the entropy bonus (against advantages of unit RMS).

    The defaults were chosen on NAS-Bench-201 with a 300-query budget (seeds
    100-115, not those of the reported benchmark): small budgets need a
    fast-moving baseline and a strong entropy bonus, else the controller
    collapses onto the first good cell it sees.
        temperature: softmax temperature while sampling and training.
        grad_clip: max gradient norm.
        scale: advantages are divided by the RMS of ``R - b``: over the current
            batch (``batch``) or a moving average of it (``running``, default:
            near convergence, when rewards barely differ, steps shrink instead
            of amplifying noise into a collapsed policy).
        threads: torch threads for the controller (fixed: reproducible updates).
    """

    batch_size: int = 20
    hidden: int = 64
    lr: float = 0.01
    ppo_epochs: int = 8
    clip: float = 0.2
    baseline_decay: float = 0.5
    entropy: float = 0.05
    temperature: float = 1.0
    grad_clip: float = 5.0
    scale: str = "running"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.hidden < 1:
            raise ConfigError(f"hidden must be >= 1, got {self.hidden}")
        if self.lr <= 0 or self.ppo_epochs < 1:
            raise ConfigError("lr must be > 0 and ppo_epochs >= 1")
        if not 0.0 < self.clip < 1.0:
            raise ConfigError(f"clip must be in (0, 1), got {self.clip}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ConfigError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.scale not in ("batch", "running"):
            raise ConfigError(f"scale must be 'batch' or 'running', got {self.scale!r}")


class Controller(nn.Module):
    """LSTM policy emitting one categorical token per decision.

    Args:
        decisions: number of options of each decision.
        hidden: LSTM width.
    """

    def __init__(self, decisions: list[int], hidden: int = 64):
        super().__init__()
        self.decisions = list(decisions)
        self.hidden = hidden
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.cell = nn.LSTMCell(hidden, hidden)
        # One embedding and one head per decision: decisions differ in size and meaning.
        self.embed = nn.ModuleList(nn.Embedding(n, hidden) for n in self.decisions)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in self.decisions)
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    def _steps(
        self,
        batch: int,
        actions: torch.Tensor | None,
        generator: torch.Generator | None,
        temperature: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = torch.zeros(batch, self.hidden)
        c = torch.zeros(batch, self.hidden)
        x = self.start.expand(batch, -1)
        chosen, logps, ents = [], [], []
        for i, _n in enumerate(self.decisions):
            h, c = self.cell(x, (h, c))
            logits = self.heads[i](h) / temperature
            logp_all = torch.log_softmax(logits, dim=-1)
            if actions is None:
                a = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(1)
            else:
                a = actions[:, i]
            chosen.append(a)
            logps.append(logp_all.gather(1, a.unsqueeze(1)).squeeze(1))
            ents.append(-(logp_all.exp() * logp_all).sum(-1))
            x = self.embed[i](a)
        return torch.stack(chosen, 1), torch.stack(logps, 1).sum(1), torch.stack(ents, 1).sum(1)

    def sample(
        self, batch: int, generator: torch.Generator, temperature: float = 1.0
    ) -> torch.Tensor:
        """``batch`` x decisions tensor of sampled option indices."""
        with torch.no_grad():
            return self._steps(batch, None, generator, temperature)[0]

    def log_prob(
        self, actions: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log P(actions), entropy of each step's distribution, summed) per row."""
        _, logp, ent = self._steps(actions.shape[0], actions, None, temperature)
        return logp, ent


@SEARCHERS.register("mnasnet-rl")
class MnasNetRL(Searcher):
    """MnasNet's LSTM controller trained with PPO on the multi-objective reward."""

    name = "mnasnet-rl"
    Settings = MnasRLSettings

    def reset(self, space: SearchSpace, seed: int, budget: int, objective: Objective) -> None:
        s = self.settings
        self.space = space
        with torch.random.fork_rng(devices=[]):  # seed the controller without touching global RNG
            torch.manual_seed(seed)
            self.controller = Controller(space.decisions(), s.hidden)
        self.opt = torch.optim.Adam(self.controller.parameters(), lr=s.lr)
        self.gen = torch.Generator().manual_seed(int(seed) + 1)
        self.baseline: float | None = None
        self.adv_rms: float | None = None
        self.updates = 0
        self.log: list[dict] = []

    def batch_size(self) -> int:
        return self.settings.batch_size

    def propose(self, n: int) -> list[Candidate]:
        assert self.space is not None
        with torch_threads(self.settings.threads):
            acts = self.controller.sample(n, self.gen, self.settings.temperature)
        return [Candidate(self.space.arch(row.tolist()), "controller") for row in acts]

    def update(self, records: list[Record]) -> None:
        if not records:
            return
        s = self.settings
        r = np.array([float(x.reward) for x in records], dtype=np.float64)
        finite = np.isfinite(r)
        if not finite.any():
            return  # nothing to learn from: every candidate failed
        # A failed or degenerate candidate (-inf, nan) is as bad as the worst real one.
        r[~finite] = r[finite].min()
        if self.baseline is None:
            self.baseline = float(r.mean())
        adv = r - self.baseline
        self.baseline = s.baseline_decay * self.baseline + (1 - s.baseline_decay) * float(r.mean())
        rms = math.sqrt(float(np.mean(adv**2)))
        if s.scale == "running":
            self.adv_rms = (
                rms
                if self.adv_rms is None
                else (s.baseline_decay * self.adv_rms + (1 - s.baseline_decay) * rms)
            )
            scale = self.adv_rms
        else:
            scale = rms
        if scale < 1e-12:
            return
        adv_t = torch.as_tensor(adv / scale, dtype=torch.float32)
        actions = torch.tensor([list(x.arch.choices) for x in records], dtype=torch.long)
        with torch_threads(s.threads):
            with torch.no_grad():
                old_logp, _ = self.controller.log_prob(actions, s.temperature)
            for _ in range(s.ppo_epochs):
                logp, ent = self.controller.log_prob(actions, s.temperature)
                ratio = torch.exp(logp - old_logp)
                surrogate = torch.minimum(
                    ratio * adv_t, torch.clamp(ratio, 1 - s.clip, 1 + s.clip) * adv_t
                )
                loss = -surrogate.mean() - s.entropy * ent.mean()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.controller.parameters(), s.grad_clip)
                self.opt.step()
        self.updates += 1
        self.log.append(
            {
                "update": self.updates,
                "mean_reward": float(r.mean()),
                "baseline": self.baseline,
                "entropy": float(ent.mean().detach()),
            }
        )
