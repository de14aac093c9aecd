"""Latency-DARTS: differentiable search with a differentiable latency term.

Xu et al., "Latency-Aware Differentiable Neural Architecture Search" (2020)
add a latency term to DARTS' architecture loss:

    L(w, alpha) = CE(w, alpha) + lambda * LAT(alpha)

where ``LAT`` is a multi-layer regressor trained on measured, randomly
sampled architectures of the space, fed the architecture's encoding (the
concatenated one-hot of its choices). Because the regressor's input is a
one-hot layout, DARTS' relaxed weights ``softmax(alpha)`` (per edge,
concatenated in the same order) can be fed in its place, and the
predicted latency is differentiable in ``alpha``; ``lambda`` trades accuracy
for latency. Here ``LAT`` is the ``mlp`` predictor of
:mod:`hwnas.predictors` through its torch form
(:meth:`~hwnas.predictors.mlp.MLPPredictor.torch_module`), in milliseconds.

The search is first-order DARTS: each step takes one Adam step on ``alpha``
with the loss above on a validation batch, then one SGD step on the network
weights with the cross-entropy on a training batch (the two halves of the
training images, as DARTS splits CIFAR-10's training set). At the end the
discrete cell is the argmax of ``alpha`` on each edge, ignoring ``none`` as
DARTS does (``exclude_none``); the searcher then hands that cell to the
objective, which measures it on the device (e.g. ``cpu-ort`` via ONNX
export) and gives its accuracy (``table``: NAS-Bench-201's true CIFAR-10
accuracy; ``proxy``: a short training on the digits).

Where ``LAT`` comes from, in order:

1. ``predictor=FILE`` (a saved ``mlp`` predictor for this space);
2. the objective's latency source when it is a ``predictor:FILE``;
3. otherwise one is trained here, as the paper does, on
   ``predictor_samples`` architectures sampled with the seed, whose
   latency comes from the objective's source (a device: measured and cached
   in the store; a table column: read).

Sizes: the supernet uses ``channels`` and ``cells`` per stage (8 and 1 by
default, NAS-Bench-201 uses 16 and 5) on 32x32 digits, so a default search
runs in a minute or two on one CPU thread. DARTS' own ``arch_lr`` (3e-4)
assumes ~20k steps; the default here is 10x larger for the few hundred
steps of a small run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.arch import Arch
from hwnas.errors import ConfigError, PredictorError
from hwnas.report.progress import step
from hwnas.searchers._data import accuracy, batches, load_split, n_batches, torch_threads
from hwnas.searchers.base import Candidate, History, Record, Searcher
from hwnas.searchers.registry import SEARCHERS
from hwnas.searchers.supernet import DartsSupernet

if TYPE_CHECKING:
    from hwnas.objectives import LatencySource, Objective
    from hwnas.predictors.mlp import LatencyModule, MLPPredictor
    from hwnas.spaces.base import SearchSpace

LATENCY_TERMS = ("ms", "log")

# What the plan lines say before a step starts. Estimates, not measured here: the
# issue's run measured 100 cells and trained 10 epochs in 6.6 min on this 2-core machine
# (about 3.5 s per cell); the supernet epoch range is a guess from that run, not profiled.
_CELL_NOTE = "about 2-5 s per cell on a 2-core CPU"
_EPOCH_NOTE = "roughly 10-20 s per epoch at the default size on a quiet 2-core CPU (an estimate)"


@dataclass(frozen=True)
class LatencyDartsSettings:
    """Settings of a Latency-DARTS search.

    Attributes:
        lam: lambda, the weight of the latency term (0 = plain DARTS).
        epochs: passes over the weight-training half of the data.
        channels: supernet stem width (stages: 1x, 2x, 4x).
        cells: search cells per stage.
        batch_size: images per step (for both the weight and the alpha step).
        w_lr / w_lr_min: SGD learning rate of the weights, cosine-annealed to ``w_lr_min``.
        w_momentum / w_weight_decay: SGD's.
        arch_lr / arch_weight_decay: Adam on alpha (betas 0.5, 0.999 as in DARTS).
        grad_clip: clip the weights' gradient norm (DARTS: 5).
        latency_term: ``ms`` (the paper's LAT in milliseconds) or ``log``
            (log-milliseconds: the same gradient direction, scale-free across devices).
        exclude_none: ignore ``none`` when deriving the cell (DARTS' rule).
        data: ``digits`` or a folder of class-named subfolders of images.
        input_size: image side the supernet trains on.
        max_samples: use a seeded subset of the images.
        predictor: a saved ``mlp`` predictor file for this space (LAT).
        predictor_samples: architectures measured to train LAT when no predictor is given.
        snapshots: how many derived cells to hand to the objective, evenly
            spaced over the epochs (the last epoch's always included).
        threads: torch threads during the search.
    """

    lam: float = 0.1
    epochs: int = 10
    channels: int = 8
    cells: int = 1
    batch_size: int = 64
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3
    grad_clip: float = 5.0
    latency_term: str = "ms"
    exclude_none: bool = True
    data: str = "digits"
    input_size: int = 32
    max_samples: int | None = None
    predictor: str | None = None
    predictor_samples: int = 100
    snapshots: int = 1
    threads: int = 1

    def __post_init__(self) -> None:
        if self.lam < 0 or not math.isfinite(self.lam):
            raise ConfigError(f"lam (lambda) must be a finite number >= 0, got {self.lam}")
        for name in (
            "epochs",
            "channels",
            "cells",
            "batch_size",
            "snapshots",
            "threads",
            "input_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"latency-darts {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError("latency-darts batch_size must be >= 2 (batch norm needs two images)")
        if self.latency_term not in LATENCY_TERMS:
            raise ConfigError(
                f"latency_term must be one of {', '.join(LATENCY_TERMS)}, got {self.latency_term!r}"
            )
        if self.predictor_samples < 10:
            raise ConfigError(
                f"predictor_samples must be >= 10 to train a latency predictor, got {self.predictor_samples}"
            )
        if self.w_lr <= 0 or self.arch_lr <= 0:
            raise ConfigError("w_lr and arch_lr must be > 0")


@dataclass
class EpochLog:
    """What one epoch of the bilevel search did."""

    epoch: int
    train_ce: float
    val_ce: float
    latency_relaxed_ms: float | None
    latency_derived_ms: float | None
    supernet_val_acc: float
    arch: Arch
    edge_weights: list[list[float]] = field(default_factory=list)

    def to_dict(self, space: SearchSpace | None = None) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "train_ce": self.train_ce,
            "val_ce": self.val_ce,
            "latency_relaxed_ms": self.latency_relaxed_ms,
            "latency_derived_ms": self.latency_derived_ms,
            "supernet_val_acc": self.supernet_val_acc,
            "arch": space.format(self.arch) if space is not None else list(self.arch.choices),
            "edge_weights": self.edge_weights,
        }


def _rounded(w: torch.Tensor) -> list[list[float]]:
    return np.round(w.detach().double().numpy(), 4).tolist()


def _check_space(space: SearchSpace) -> None:
    from hwnas.spaces.nb201 import EDGES, OPS

    if list(space.decisions()) != [len(OPS)] * len(EDGES) or not hasattr(space, "ops"):
        raise ConfigError(
            f"latency-darts searches the NAS-Bench-201 cell; space '{space.name}' is not that cell "
            "space; use --space nb201"
        )


class DartsSearch:
    """The first-order bilevel loop of Latency-DARTS, one epoch at a time.

    Library code, usable without the searcher interface::

        lat = load_predictor("nb201_cpu-ort.npz").torch_module()
        s = DartsSearch(get_space("nb201"), lat, LatencyDartsSettings(lam=1.0), seed=0)
        for _ in range(s.settings.epochs):
            log = s.run_epoch()
        arch = s.derive()

    Args:
        space: the ``nb201`` space (derived cells are its architectures).
        latency: relaxed weights -> latency (ms); ``None`` only when ``lam == 0``.
        settings: sizes, learning rates, lambda.
        seed: data split, initial weights and alpha, batch order.

    Raises:
        ConfigError: another space, or ``lam > 0`` without a latency module.
    """

    def __init__(
        self,
        space: SearchSpace,
        latency: LatencyModule | None,
        settings: LatencyDartsSettings | None = None,
        seed: int = 0,
    ):
        _check_space(space)
        self.space = space
        self.settings = s = settings or LatencyDartsSettings()
        if latency is None and s.lam > 0:
            raise ConfigError(
                "Latency-DARTS with lam > 0 needs a differentiable latency predictor; give "
                "predictor=FILE (an mlp predictor for nb201) or a latency source"
            )
        self.latency = latency
        if latency is not None and latency.input_dim != space.encoding_length:
            raise PredictorError(
                f"the latency predictor takes {latency.input_dim} features but {space.name} encodes "
                f"architectures in {space.encoding_length}; train an mlp predictor on {space.name}'s "
                "one-hot encoding"
            )
        self.seed = int(seed)
        # Halves of the training images for w and alpha (DARTS' split of the
        # training set) and a held-out part for the supernet's accuracy.
        self.train, self.val, self.test = load_split(
            s.data, s.input_size, (0.4, 0.4, 0.2), seed=self.seed, max_samples=s.max_samples
        )
        self.gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        self.net = DartsSupernet(
            s.channels, s.cells, num_classes=len(self.train.classes), generator=self.gen
        )
        self.w_opt = torch.optim.SGD(
            self.net.weight_parameters(),
            lr=s.w_lr,
            momentum=s.w_momentum,
            weight_decay=s.w_weight_decay,
        )
        self.steps_per_epoch = max(1, math.ceil(len(self.train) / s.batch_size))
        self.total_steps = self.steps_per_epoch * s.epochs
        self.w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.w_opt, T_max=self.total_steps, eta_min=s.w_lr_min
        )
        self.a_opt = torch.optim.Adam(
            self.net.arch_parameters(),
            lr=s.arch_lr,
            betas=(0.5, 0.999),
            weight_decay=s.arch_weight_decay,
        )
        self.epoch = 0
        self.logs: list[EpochLog] = []

    # ---- the loss terms --------------------------------------------------------------

    def latency_term(self, w: torch.Tensor) -> torch.Tensor:
        """``LAT(w)`` in the configured unit (ms or log-ms)."""
        assert self.latency is not None
        if self.settings.latency_term == "log":
            return self.latency.log_ms(w)
        return self.latency(w)

    def predicted_latency_ms(self, arch: Arch | None = None) -> float | None:
        """LAT of the relaxed weights (``arch=None``) or of a discrete cell's one-hot."""
        if self.latency is None:
            return None
        with torch.no_grad():
            if arch is None:
                w = self.net.relaxed_encoding()
            else:
                w = torch.from_numpy(self.space.encode(arch))
            return float(self.latency(w))

    # ---- the loop ----------------------------------------------------------------------

    def run_epoch(self, on_batch: Callable[[], None] | None = None) -> EpochLog:
        """One pass over the weight half, alternating an alpha step and a weight step.

        ``on_batch`` is called after each step (a progress bar's tick).
        """
        s = self.settings
        if self.epoch >= s.epochs:
            raise ConfigError(f"the search already ran its {s.epochs} epochs")
        with torch_threads(s.threads):
            self.net.train()
            val_iter = iter(())
            ce_w, ce_a, n = 0.0, 0.0, 0
            for idx in batches(len(self.train), s.batch_size, self.gen):
                vidx = next(val_iter, None)
                if vidx is None:
                    val_iter = batches(len(self.val), s.batch_size, self.gen)
                    vidx = next(val_iter)
                # alpha step (first order: the current w, no unrolled step)
                self.a_opt.zero_grad(set_to_none=True)
                loss_a = F.cross_entropy(self.net(self.val.images[vidx]), self.val.labels[vidx])
                ce_a += float(loss_a.detach())
                if s.lam > 0:
                    loss_a = loss_a + s.lam * self.latency_term(self.net.relaxed_encoding())
                loss_a.backward()
                self.a_opt.step()
                # weight step
                self.w_opt.zero_grad(set_to_none=True)
                loss_w = F.cross_entropy(self.net(self.train.images[idx]), self.train.labels[idx])
                loss_w.backward()
                torch.nn.utils.clip_grad_norm_(self.net.weight_parameters(), s.grad_clip)
                self.w_opt.step()
                self.w_sched.step()
                ce_w += float(loss_w.detach())
                n += 1
                if on_batch is not None:
                    on_batch()
            self.epoch += 1
            arch = self.derive()
            log = EpochLog(
                epoch=self.epoch,
                train_ce=ce_w / max(1, n),
                val_ce=ce_a / max(1, n),
                latency_relaxed_ms=self.predicted_latency_ms(),
                latency_derived_ms=self.predicted_latency_ms(arch),
                supernet_val_acc=accuracy(self.net, self.test),
                arch=arch,
                edge_weights=_rounded(self.net.edge_weights()),
            )
        self.logs.append(log)
        return log

    def run(self) -> Arch:
        """All remaining epochs; the derived cell."""
        while self.epoch < self.settings.epochs:
            self.run_epoch()
        return self.derive()

    def derive(self) -> Arch:
        """The discrete cell (argmax of alpha per edge; ``none`` skipped unless configured)."""
        return self.space.arch(self.net.derive(self.space.name, self.settings.exclude_none).choices)


# ---- where LAT comes from ---------------------------------------------------------------


def fit_latency_predictor(
    space: SearchSpace,
    source: LatencySource,
    samples: int,
    seed: int = 0,
    hidden: tuple[int, ...] = (128, 128),
) -> MLPPredictor:
    """Latency-DARTS' predictor: measure ``samples`` random architectures, fit an ``mlp``.

    Degenerate cells (output cut off from the input) and failed measurements
    are left out: their near-zero or infinite latencies say nothing about
    the ops' cost.

    Raises:
        PredictorError: fewer than 10 usable measurements.
    """
    from hwnas.predictors import create_predictor
    from hwnas.predictors.data import Dataset, fit_predictor

    rng = np.random.default_rng(seed)
    archs: list[Arch] = []
    seen: set[str] = set()
    degenerate = getattr(space, "is_degenerate", None)
    tries = 0
    while len(archs) < samples and tries < samples * 50:
        tries += 1
        a = space.sample(rng)
        if a.id in seen or (degenerate is not None and degenerate(a)):
            continue
        seen.add(a.id)
        archs.append(a)
    values: list[float] = []
    expensive = getattr(source, "cost", "cheap") == "expensive"
    where = source.config().get("device") or source.config().get("column") or "the source"
    with step(
        len(archs) if expensive else 0,
        "latency module: measuring cells",
        plan=(
            f"latency-darts: measuring {len(archs)} random {space.name} cells on {where} to "
            f"train its latency module (export + adaptive timing: {_CELL_NOTE}; cached in "
            "--db, so a re-run skips them; predictor=FILE skips this step)"
        ),
        unit="cells",
    ) as bar:
        # a device one cell at a time (the same measurements, with a bar); a cheap source
        # (a table, a predictor) in one batch
        for chunk in [[a] for a in archs] if expensive else [archs]:
            values += [float(v) for v, _ in source.latency_ms(space, chunk)]
            bar.advance(len(chunk))
    ms = np.array(values, dtype=np.float64)
    ok = np.isfinite(ms) & (ms > 0)
    if ok.sum() < 10:
        raise PredictorError(
            f"only {int(ok.sum())} of {len(archs)} sampled architectures have a usable latency; "
            "check the latency source, or give a trained predictor with predictor=FILE"
        )
    ds = Dataset(
        space=space.name,
        device=str(source.config().get("device") or source.config().get("column") or "latency"),
        archs=[a for a, k in zip(archs, ok, strict=True) if k],
        y_ms=ms[ok],
        flops=np.full(int(ok.sum()), np.nan),
        source=f"latency-darts sample of {len(archs)} (seed {seed})",
    )
    pred = create_predictor("mlp", hidden=hidden, epochs=400, patience=40, seed=seed)
    return fit_predictor(pred, ds, space, "onehot")


def resolve_latency_module(
    space: SearchSpace,
    objective: Objective | None,
    settings: LatencyDartsSettings,
    seed: int = 0,
) -> tuple[LatencyModule | None, dict[str, Any]]:
    """The differentiable LAT and where it came from (see the module docstring).

    Raises:
        ConfigError: no predictor and no latency source to train one from, or a
            predictor file that is not an ``mlp`` predictor.
    """
    from hwnas.objectives import PredictorLatency
    from hwnas.predictors import load_predictor

    path = settings.predictor
    if path is None and objective is not None and isinstance(objective.latency, PredictorLatency):
        path = str(objective.latency.path)
    if path is not None:
        pred = load_predictor(path, space=space.name)
        if not hasattr(pred, "torch_module"):
            raise ConfigError(
                f"{path} holds a '{pred.name}' predictor, which has no differentiable form; "
                "Latency-DARTS needs an 'mlp' predictor (hwnas train-predictor --predictor mlp)"
            )
        return pred.torch_module(), {"kind": "file", "path": str(path), "meta": pred.meta}
    if settings.lam == 0:
        return None, {"kind": "none"}
    if objective is None or objective.latency is None:
        raise ConfigError(
            "Latency-DARTS needs latency: give --latency device:NAME (a predictor is trained on "
            "measured samples), --latency predictor:FILE, or --set predictor=FILE"
        )
    pred = fit_latency_predictor(space, objective.latency, settings.predictor_samples, seed)
    return pred.torch_module(), {
        "kind": "trained",
        "samples": int(pred.meta.get("train_size", 0)),
        "source": objective.latency.config(),
    }


# ---- the searcher ------------------------------------------------------------------------


@SEARCHERS.register("latency-darts")
class LatencyDarts(Searcher):
    """Latency-DARTS: DARTS on the NAS-Bench-201 cell with a differentiable latency-predictor loss.

    Each proposal is the cell derived after a block of epochs (``snapshots``
    of them, the last after the final epoch); the objective measures and
    scores it. ``History.final`` holds the last derived cell, the softmax of
    alpha per edge, the predicted latencies and the per-epoch log.
    """

    name = "latency-darts"
    Settings = LatencyDartsSettings

    def reset(self, space: SearchSpace, seed: int, budget: int, objective: Objective) -> None:
        _check_space(space)
        self.space = space
        lat, self.lat_info = resolve_latency_module(space, objective, self.settings, seed)
        self.search = DartsSearch(space, lat, self.settings, seed)
        n = min(self.settings.snapshots, budget, self.settings.epochs)
        e = self.settings.epochs
        # evenly spaced, the last at the final epoch
        self.snap_epochs = sorted({int(round(e * (k + 1) / n)) for k in range(n)})
        self.n_snapshots = len(self.snap_epochs)

    def done(self) -> bool:
        return not self.snap_epochs

    def expected_evaluations(self) -> int:
        """The derived cells it hands to the objective (``snapshots``, capped by the budget)."""
        return self.n_snapshots

    def propose(self, n: int) -> list[Candidate]:
        if not self.snap_epochs:
            return []
        target = self.snap_epochs.pop(0)
        log = None
        s = self.search
        with step(
            (target - s.epoch) * n_batches(len(s.train), self.settings.batch_size),
            f"latency-darts supernet (lambda {self.settings.lam:g})",
            plan=(
                f"latency-darts: training the supernet for epochs {s.epoch + 1}-{target} of "
                f"{self.settings.epochs} ({n_batches(len(s.train), self.settings.batch_size)} alpha + weight steps each, "
                f"{self.settings.channels} channels, {self.settings.cells} cell(s) per stage; "
                f"{_EPOCH_NOTE})"
            ),
            unit="steps",
        ) as bar:
            while s.epoch < target:
                epoch = s.epoch + 1
                log = s.run_epoch(lambda e=epoch: bar.advance(status=f"epoch {e}/{target}"))
        assert log is not None or self.search.logs
        log = log or self.search.logs[-1]
        info = {
            "epoch": log.epoch,
            "lambda": self.settings.lam,
            "predicted_latency_ms": log.latency_derived_ms,
            "supernet_val_acc": log.supernet_val_acc,
        }
        return [Candidate(log.arch, "darts", info)]

    def update(self, records: list[Record]) -> None:
        """DARTS learns from gradients, not from the evaluated candidates."""

    def finalize(self, history: History, space: SearchSpace, objective: Objective) -> dict | None:
        s = self.search
        arch = s.derive()
        return {
            "arch": space.format(arch),
            "lambda": self.settings.lam,
            "edge_weights": _rounded(s.net.edge_weights()),
            "predicted_latency_ms": s.predicted_latency_ms(arch),
            "predicted_latency_relaxed_ms": s.predicted_latency_ms(),
            "latency_predictor": self.lat_info,
            "epochs": [
                {k: v for k, v in log.to_dict(space).items() if k != "edge_weights"}
                for log in s.logs
            ],
        }
