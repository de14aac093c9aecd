"""``mlp``: the latency prediction module of Latency-DARTS, and its differentiable form.

Latency-DARTS (Xu et al., "Latency-Aware Differentiable Neural Architecture
Search", 2020) encodes an architecture as the concatenated one-hot of its
choices and feeds it to a multi-layer regressor trained on randomly sampled,
measured architectures. Because the input is a one-hot layout, the same
network accepts DARTS' *relaxed* architecture weights (a softmax over the
candidate ops of each decision, concatenated in the same order) and gives a
latency whose gradient with respect to those weights steers the search:
:meth:`MLPPredictor.torch_module`.

Choices made here and why:

* The target is ``log(latency)``, standardised. Latencies of one space span
  an order of magnitude; in log space a squared error is a relative error,
  which is what the +-10 % accuracy and a latency constraint care about.
  ``loss="relative"`` trains on the mean relative error itself instead, as
  Latency-DARTS does.
* Early stopping on a held-out share of the training set (``val_fraction``)
  keeps the weights of the best validation epoch, so ``epochs`` is a ceiling,
  not a setting to tune.
* ``ensemble=K`` trains K networks on K different train/validation splits and
  averages them in log space (a geometric mean): cheaper than tuning and it
  lowers variance on small training sets.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.errors import PredictorError
from hwnas.predictors.base import Predictor
from hwnas.predictors.registry import PREDICTORS
from hwnas.threads import torch_threads

_LOSSES = ("log-mse", "relative")


def _check_xy(X: Any, y_ms: Any, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Features as a 2-D ``dtype`` matrix and latencies as float64, or a PredictorError."""
    X = np.asarray(X, dtype=dtype)
    y = np.asarray(y_ms, dtype=np.float64).ravel()
    if X.ndim != 2:
        raise PredictorError(
            f"features must be a 2-D matrix (archs x features), got shape {X.shape}"
        )
    if X.shape[0] != y.size:
        raise PredictorError(f"{X.shape[0]} feature rows but {y.size} latencies; give one per row")
    if y.size < 2:
        raise PredictorError(f"cannot train on {y.size} architecture(s); give at least 2")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise PredictorError(
            "latencies must be finite and > 0 ms; drop failed or degenerate measurements first"
        )
    return X, y


def _make_net(sizes: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _linears(net: nn.Sequential) -> list[nn.Linear]:
    return [m for m in net if isinstance(m, nn.Linear)]


class LatencyModule(nn.Module):
    """Differentiable latency of (relaxed) architecture encodings, in milliseconds.

    ``forward(w)`` takes ``w`` shaped ``(L,)`` or ``(B, L)``, laid out like
    ``space.encode`` (a one-hot, or a softmax over each decision's options)
    and returns latency in ms, shaped ``()`` or ``(B,)``, differentiable in ``w``.
    The regressor's own weights are frozen unless ``trainable=True``.
    """

    def __init__(
        self, nets: Sequence[nn.Sequential], mu: float, sd: float, trainable: bool = False
    ):
        super().__init__()
        self.nets = nn.ModuleList(copy.deepcopy(n) for n in nets)
        self.register_buffer("mu", torch.tensor(float(mu)))
        self.register_buffer("sd", torch.tensor(float(sd)))
        self.input_dim = _linears(self.nets[0])[0].in_features
        self.eval()
        for p in self.parameters():
            p.requires_grad_(trainable)

    def log_ms(self, w: torch.Tensor) -> torch.Tensor:
        """Natural log of the latency in ms (a better-scaled loss term)."""
        single = w.dim() == 1
        x = w.unsqueeze(0) if single else w
        if x.shape[-1] != self.input_dim:
            raise PredictorError(
                f"relaxed weights have {x.shape[-1]} entries, the predictor takes {self.input_dim} "
                "(one per option of every decision, in space.encode order)"
            )
        x = x.to(self.mu.dtype)
        z = torch.stack([net(x).squeeze(-1) for net in self.nets]).mean(0)
        t = z * self.sd + self.mu
        return t[0] if single else t

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_ms(w))


def relaxed_weights(
    logits: Sequence[torch.Tensor] | torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Softmax of each decision's logits, concatenated in ``space.encode`` order.

    Args:
        logits: one tensor per decision (its options' logits), or a list of them
            with a leading batch dimension each.
        temperature: softmax temperature (Gumbel/annealed DARTS variants lower it).
    """
    parts = [torch.softmax(t / temperature, dim=-1) for t in logits]
    return torch.cat(parts, dim=-1)


@PREDICTORS.register("mlp")
class MLPPredictor(Predictor):
    """Latency-DARTS' multi-layer regressor on the architecture encoding (torch).

    Args:
        hidden: widths of the hidden layers.
        epochs: ceiling on training epochs (early stopping usually ends sooner).
        lr, weight_decay: AdamW settings.
        batch_size: minibatch size.
        loss: ``"log-mse"`` (squared error of standardised log latency) or
            ``"relative"`` (mean |pred - y| / y, as in Latency-DARTS).
        val_fraction: share of the training set held out for early stopping
            (none when fewer than 10 samples).
        patience: epochs without validation improvement before stopping.
        ensemble: number of networks averaged (log space).
        dropout: dropout after each hidden layer.
        seed: seeds splits, initialisation and batching.
    """

    name = "mlp"

    def __init__(
        self,
        hidden: Sequence[int] = (128, 128),
        epochs: int = 1000,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        loss: str = "relative",
        val_fraction: float = 0.1,
        patience: int = 100,
        ensemble: int = 1,
        dropout: float = 0.0,
        seed: int = 0,
    ):
        if loss not in _LOSSES:
            raise PredictorError(f"unknown mlp loss '{loss}'; valid: {', '.join(_LOSSES)}")
        if int(ensemble) < 1:
            raise PredictorError(f"ensemble must be >= 1, got {ensemble}")
        if not 0 <= float(val_fraction) < 1:
            raise PredictorError(f"val_fraction must be in [0, 1), got {val_fraction}")
        super().__init__(
            hidden=[int(h) for h in hidden],
            epochs=int(epochs),
            lr=float(lr),
            weight_decay=float(weight_decay),
            batch_size=int(batch_size),
            loss=loss,
            val_fraction=float(val_fraction),
            patience=int(patience),
            ensemble=int(ensemble),
            dropout=float(dropout),
            seed=int(seed),
        )
        self.nets: list[nn.Sequential] = []
        self.mu = 0.0
        self.sd = 1.0

    # ---- training ------------------------------------------------------------------

    @property
    def input_dim(self) -> int:
        if not self.nets:
            raise PredictorError("this mlp predictor is not trained; call fit() or load a file")
        return _linears(self.nets[0])[0].in_features

    def fit(
        self,
        X: Any,
        y_ms: np.ndarray,
        init: MLPPredictor | None = None,
        anchor: float = 0.0,
        **kwargs: Any,
    ) -> MLPPredictor:
        """Train on encodings ``X`` and latencies ``y_ms``.

        Args:
            init: start from this trained predictor's weights (and target scaling)
                instead of a random initialisation: fine-tuning for a new device.
            anchor: strength of an L2 pull towards ``init``'s weights (L2-SP),
                which keeps a fine-tuned network close to its source when the
                target samples are few.
        """
        X, y = _check_xy(X, y_ms)
        hp = self.hparams
        t = np.log(y)
        if init is not None:
            if init.input_dim != X.shape[1]:
                raise PredictorError(
                    f"cannot fine-tune: the source predictor takes {init.input_dim} features, "
                    f"the data has {X.shape[1]}"
                )
            self.mu, self.sd = init.mu, init.sd
        else:
            self.mu = float(t.mean())
            self.sd = float(t.std()) or 1.0
        z = ((t - self.mu) / self.sd).astype(np.float32)
        self.nets = []
        self.history: list[dict[str, float]] = []
        for k in range(hp["ensemble"]):
            rng = np.random.default_rng(hp["seed"] * 1009 + k)
            n = len(z)
            n_val = int(round(hp["val_fraction"] * n)) if n >= 10 else 0
            perm = rng.permutation(n)
            val_idx, tr_idx = perm[:n_val], perm[n_val:]
            # A private torch RNG stream: seeding must not disturb the caller's
            # (a search that trains a predictor mid-run stays reproducible).
            with torch.random.fork_rng(devices=[]), torch_threads(1):
                torch.manual_seed(hp["seed"] * 1009 + k)
                if init is not None:
                    src = init.nets[k % len(init.nets)]
                    net = copy.deepcopy(src)
                    ref = [p.detach().clone() for p in src.parameters()]
                else:
                    net = _make_net([X.shape[1], *hp["hidden"], 1], hp["dropout"])
                    ref = None
                self.nets.append(self._train_one(net, X, z, tr_idx, val_idx, rng, ref, anchor))
        return self

    def _loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.hparams["loss"] == "relative":
            return torch.mean(torch.abs(torch.expm1((out - target) * self.sd)))
        return torch.mean((out - target) ** 2)

    def _train_one(
        self,
        net: nn.Sequential,
        X: np.ndarray,
        z: np.ndarray,
        tr_idx: np.ndarray,
        val_idx: np.ndarray,
        rng: np.random.Generator,
        ref: list[torch.Tensor] | None,
        anchor: float,
    ) -> nn.Sequential:
        hp = self.hparams
        Xt = torch.from_numpy(X)
        zt = torch.from_numpy(z)
        opt = torch.optim.AdamW(net.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        # Without a validation split there is nothing to stop on; the last epoch is kept.
        best = float("inf")
        best_state = copy.deepcopy(net.state_dict())
        since = 0
        bs = max(1, min(hp["batch_size"], len(tr_idx)))
        epochs_run = 0
        for _ in range(hp["epochs"]):
            epochs_run += 1
            net.train()
            order = tr_idx[rng.permutation(len(tr_idx))]
            for s in range(0, len(order), bs):
                b = torch.from_numpy(order[s : s + bs])
                loss = self._loss(net(Xt[b]).squeeze(-1), zt[b])
                if ref is not None and anchor > 0:
                    pull = sum(
                        torch.sum((p - r) ** 2) for p, r in zip(net.parameters(), ref, strict=True)
                    )
                    loss = loss + anchor * pull
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if len(val_idx) == 0:
                continue
            net.eval()
            with torch.no_grad():
                vi = torch.from_numpy(val_idx)
                v = float(torch.mean((net(Xt[vi]).squeeze(-1) - zt[vi]) ** 2))
            if v < best - 1e-7:
                best, since = v, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                since += 1
                if since >= hp["patience"]:
                    break
        if len(val_idx):
            net.load_state_dict(best_state)
        self.history.append({"epochs": float(epochs_run), "best_val_mse": best})
        net.eval()
        return net

    # ---- prediction ------------------------------------------------------------------

    def predict_log(self, X: Any, batch: int = 2048, threads: int | None = 1) -> np.ndarray:
        """Natural log of predicted latency (ms); the ensemble mean lives in this space.

        Why chunks of 2048: the hidden activations of a chunk then stay in the
        CPU cache; one 65,536-row matrix was 3x slower here (measured). Why one
        thread by default: on a busy 2-core machine two torch threads scored
        7x fewer architectures per second than one (benchmarks/predictor_speed.py);
        ``threads=None`` keeps torch's own setting.
        """
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.input_dim:
            raise PredictorError(
                f"this predictor takes {self.input_dim} features per architecture, got shape "
                f"{X.shape}; encode with the space and encoding it was trained on "
                f"({self.meta.get('space', '?')}, {self.meta.get('encoding', '?')})"
            )
        out = np.empty(X.shape[0], dtype=np.float64)
        with torch_threads(threads), torch.inference_mode():
            xt = torch.from_numpy(X)
            for s in range(0, X.shape[0], batch):
                xb = xt[s : s + batch]
                acc = self.nets[0](xb)
                for net in self.nets[1:]:
                    acc = acc + net(xb)
                out[s : s + batch] = (acc.squeeze(-1) / len(self.nets)).numpy()
        return out * self.sd + self.mu

    def predict(self, X: Any) -> np.ndarray:
        return np.exp(self.predict_log(X))

    @property
    def has_spread(self) -> bool:
        return len(self.nets) > 1

    def log_spread(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (ddof=1) of the members' log-latency (ms).

        The mean is what :meth:`predict_log` returns, so the ensemble interval
        is centred on the point prediction. Why log space: the members are
        averaged there (a geometric mean), and a log-normal spread gives
        intervals that scale with latency and never go below 0 ms. The spread
        is the members' disagreement only (different splits and initial
        weights), not the device's noise; uncalibrated it is usually too narrow.
        """
        if len(self.nets) < 2:
            raise PredictorError(
                "this mlp has one network, so no ensemble spread; train it with "
                "--set ensemble=5 or calibrate it with --calibrate 0.2"
            )
        members = np.stack([self._member_log(X, k) for k in range(len(self.nets))])
        # The centre is predict_log itself (float32 sums), so lo <= point <= hi exactly.
        return self.predict_log(X), members.std(axis=0, ddof=1)

    def _member_log(self, X: Any, k: int) -> np.ndarray:
        """Log-latency (ms) predicted by ensemble member ``k`` alone."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        self.predict_log(X[:0])  # the shape check, with its message
        with torch_threads(1), torch.inference_mode():
            out = self.nets[k](torch.from_numpy(X)).squeeze(-1).double().numpy()
        return out * self.sd + self.mu

    def torch_module(self, trainable: bool = False) -> LatencyModule:
        """The differentiable form for Latency-DARTS: relaxed weights -> latency (ms).

        Example::

            lat = predictor.torch_module()
            w = relaxed_weights(alphas)     # softmax per decision, space.encode order
            loss = ce + lam * lat(w)        # gradients reach alphas
        """
        if not self.nets:
            raise PredictorError("this mlp predictor is not trained; call fit() or load a file")
        return LatencyModule(self.nets, self.mu, self.sd, trainable=trainable)

    # ---- state -------------------------------------------------------------------------

    def get_state(self) -> dict[str, np.ndarray]:
        if not self.nets:
            raise PredictorError("cannot save an untrained mlp predictor; call fit() first")
        state: dict[str, np.ndarray] = {
            "target_mu": np.array(self.mu, dtype=np.float64),
            "target_sd": np.array(self.sd, dtype=np.float64),
        }
        for k, net in enumerate(self.nets):
            for j, lin in enumerate(_linears(net)):
                state[f"m{k}.l{j}.weight"] = lin.weight.detach().numpy().copy()
                state[f"m{k}.l{j}.bias"] = lin.bias.detach().numpy().copy()
        return state

    def set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.mu = float(arrays["target_mu"])
        self.sd = float(arrays["target_sd"])
        nets = []
        k = 0
        while f"m{k}.l0.weight" in arrays:
            ws = []
            j = 0
            while f"m{k}.l{j}.weight" in arrays:
                ws.append((arrays[f"m{k}.l{j}.weight"], arrays[f"m{k}.l{j}.bias"]))
                j += 1
            sizes = [ws[0][0].shape[1], *[w.shape[0] for w, _ in ws]]
            for (w, b), (i, o) in zip(ws, zip(sizes[:-1], sizes[1:], strict=True), strict=True):
                if w.shape != (o, i) or b.shape != (o,):
                    raise PredictorError(
                        f"layer shapes of member {k} do not chain ({w.shape} after {i} features); "
                        "the file is damaged"
                    )
            net = _make_net(sizes, self.hparams.get("dropout", 0.0))
            for lin, (w, b) in zip(_linears(net), ws, strict=True):
                lin.weight.data = torch.from_numpy(np.asarray(w, dtype=np.float32).copy())
                lin.bias.data = torch.from_numpy(np.asarray(b, dtype=np.float32).copy())
            net.eval()
            nets.append(net)
            k += 1
        if not nets:
            raise KeyError("m0.l0.weight")
        self.nets = nets


__all__ = ["LatencyModule", "MLPPredictor", "relaxed_weights"]
