"""MemNAS' structure-correlation controller: rank all candidates of a round together.

MemNAS (Liu et al., CVPR 2020, section 3.2) does not score candidates one by
one: an *embedding* layer turns each cell of a candidate (its five binary
vectors: two inputs, two layer types, output flag) into a vector, an
*encoder RNN* runs over the cells and its last state is the candidate's
feature, and a *ranking RNN* followed by a linear layer runs over the
features of *all* candidates of the round at once, so that each score sees
the structures it competes with (the "structure correlation"). The top-k
candidates by score are then trained, and their realised memory-efficiency
rewards train the controller.

Here the per-cell tokens are the one-hot slots of :class:`MemNASSpace`'s
encoding plus the block's one-hot; the encoder is a one-layer LSTM; the
ranking RNN is a bidirectional LSTM (a candidate's score depends on the
candidates before *and* after it in the round). Training loss:

``mse``
    squared error between predicted and realised rewards of the evaluated
    candidates, which is how we read the paper's controller loss; the
    realised rewards are standardised within each round, because only
    their order inside a round is used and the scale moves as the base does;
``hinge``
    a pairwise margin ranking loss on the same pairs, offered because only
    the order matters.

The predicted scores of a round's whole candidate list come from one
forward pass; the loss uses the positions that were evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hwnas.errors import ConfigError
from hwnas.searchers._data import torch_threads

LOSSES = ("mse", "hinge")


@dataclass
class RoundData:
    """One round's candidates (as token tensors) and the realised rewards of those evaluated."""

    tokens: torch.Tensor  # (N, T, D)
    evaluated: list[int]
    rewards: list[float]


class StructureCorrelationController(nn.Module):
    """Embedding + encoder LSTM per candidate, bidirectional ranking LSTM + linear over the round.

    Args:
        token_dim: features per cell token.
        embed: embedding width.
        hidden: encoder LSTM width (the candidate feature).
        rank_hidden: ranking LSTM width (per direction).
    """

    def __init__(self, token_dim: int, embed: int = 32, hidden: int = 48, rank_hidden: int = 32):
        super().__init__()
        self.embed = nn.Linear(token_dim, embed)
        self.encoder = nn.LSTM(embed, hidden, batch_first=True)
        self.ranker = nn.LSTM(hidden, rank_hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * rank_hidden, 1)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Candidate features: the encoder's last hidden state, (N, hidden)."""
        _, (h, _) = self.encoder(torch.tanh(self.embed(tokens)))
        return h[-1]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Scores of the N candidates of one round, ``tokens`` shaped (N, T, D) -> (N,)."""
        feats = self.features(tokens).unsqueeze(0)  # the round as one sequence
        out, _ = self.ranker(feats)
        return self.head(out[0]).squeeze(-1)


def _standardise(r: np.ndarray) -> np.ndarray:
    sd = float(r.std())
    return (r - r.mean()) / sd if sd > 1e-12 else r - r.mean()


def controller_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: str = "mse", margin: float = 0.1
) -> torch.Tensor:
    """Loss between predicted scores and (standardised) realised rewards of one round."""
    if kind == "mse":
        return torch.mean((pred - target) ** 2)
    if kind == "hinge":
        diff_t = target.unsqueeze(0) - target.unsqueeze(1)  # [i, j] = t_j - t_i
        diff_p = pred.unsqueeze(0) - pred.unsqueeze(1)
        better = diff_t > 0
        if not bool(better.any()):
            return pred.sum() * 0.0
        return torch.relu(margin - diff_p[better]).mean()
    raise ConfigError(f"unknown controller loss {kind!r}; choose one of {', '.join(LOSSES)}")


class RankingTrainer:
    """Holds the controller, its optimiser and every round seen so far.

    Args:
        token_dim: features per cell token.
        loss: ``mse`` or ``hinge`` (see the module docstring).
        lr: Adam learning rate.
        steps: optimiser passes over all rounds after each new round.
        seed: initial weights.
    """

    def __init__(
        self, token_dim: int, loss: str = "mse", lr: float = 1e-2, steps: int = 60, seed: int = 0
    ):
        if loss not in LOSSES:
            raise ConfigError(
                f"unknown controller loss {loss!r}; choose one of {', '.join(LOSSES)}"
            )
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.model = StructureCorrelationController(token_dim)
        torch.random.set_rng_state(gen_state)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.loss = loss
        self.steps = int(steps)
        self.rounds: list[RoundData] = []
        self.trained = False

    @torch.no_grad()
    def score(self, tokens: torch.Tensor) -> np.ndarray:
        """Predicted rewards of a round's candidates (arbitrary before any training)."""
        self.model.eval()
        with torch_threads(1):
            return self.model(tokens).numpy().astype(np.float64)

    def add_round(
        self, tokens: torch.Tensor, evaluated: Sequence[int], rewards: Sequence[float]
    ) -> None:
        self.rounds.append(RoundData(tokens, list(evaluated), [float(r) for r in rewards]))

    def fit(self) -> float:
        """Train on every round so far; the mean loss of the last pass."""
        usable = [r for r in self.rounds if len(r.evaluated) >= 2]
        if not usable:
            return float("nan")
        self.model.train()
        last = float("nan")
        with torch_threads(1):  # tiny LSTMs: extra threads only contend
            last = self._fit(usable)
        self.trained = True
        return last

    def _fit(self, usable: list[RoundData]) -> float:
        last = float("nan")
        for _ in range(self.steps):
            total = 0.0
            self.opt.zero_grad(set_to_none=True)
            for r in usable:
                pred = self.model(r.tokens)[torch.as_tensor(r.evaluated)]
                target = torch.as_tensor(_standardise(np.asarray(r.rewards)), dtype=pred.dtype)
                loss = controller_loss(pred, target, self.loss) / len(usable)
                loss.backward()
                total += float(loss.detach())
            self.opt.step()
            last = total
        return last


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two score lists (``nan`` with fewer than 2 points or no spread)."""
    if len(a) < 2:
        return float("nan")
    import warnings

    from scipy.stats import kendalltau

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")  # a constant list: tau is undefined, nan says so
        tau = kendalltau(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)).statistic
    return float(tau) if tau is not None else float("nan")
