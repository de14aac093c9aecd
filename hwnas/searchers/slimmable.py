"""AutoSlim's two phases: slimmable training, then greedy slimming.

AutoSlim (Yu & Huang, 2019) trains one *slimmable* MobileNetV2 whose every
layer can run on a prefix of its channels, then walks down from the widest
network one channel group at a time:

training (universally slimmable networks' recipe)
    *sandwich rule*: each step trains the largest width, the smallest and
    ``num_random`` random ones (per-layer random widths here, since the
    greedy phase visits non-uniform configurations); *in-place
    distillation*: the largest learns from the labels, every other width
    from the largest's (detached) predictions; gradients of all widths are
    summed into one update of the shared weights.
batch-norm recalibration
    the shared BN statistics fit no width in particular, so before a width
    is judged its statistics are recomputed on training images (a
    cumulative average over ``calib_batches`` batches in train mode).
greedy slimming
    from the widest configuration, try removing one channel group (one
    10 % step of the 1.5x width grid of ``mobilenetv2-channels``) from each
    layer in turn, keep the removal that loses the least validation
    accuracy (ties: the lower validation cross-entropy), and repeat; the
    configuration reached when each resource target is first met is the
    answer for that target.

FLOPs along the path are counted analytically from the channel list
(:func:`mobilenetv2_macs`, checked against the ONNX counter in the tests),
so the greedy phase never exports a model just to know its cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.arch import Arch
from hwnas.errors import ConfigError
from hwnas.evaluators.data import ImageSet
from hwnas.models.mobilenetv2 import MobileNetV2Config
from hwnas.models.slimmable import SlimmableMobileNetV2
from hwnas.searchers._data import batches, torch_threads

# ---- analytic cost ---------------------------------------------------------------------


def _out(size: int, stride: int) -> int:
    return (size + stride - 1) // stride  # 3x3 (pad 1) and 1x1 convs


def mobilenetv2_macs(channels: Sequence[int], input_size: int, num_classes: int) -> int:
    """Multiply-accumulates of a MobileNetV2 with per-layer ``channels`` (convs and the classifier).

    Only convolutions and the final linear layer are counted (BN folds into
    the convs at inference; activations and additions are negligible), which
    is what an ONNX counter reports as MACs for this network.
    """
    cfg = MobileNetV2Config.from_channels(list(channels))
    h = _out(input_size, 2)
    macs = 3 * 9 * cfg.stem * h * h
    cin = cfg.stem
    for b in cfg.blocks:
        exp = cin if b.expand_ratio == 1 else b.exp
        if not (b.expand_ratio == 1 and exp == cin):
            macs += cin * exp * h * h
        h = _out(h, b.stride)
        macs += b.kernel * b.kernel * exp * h * h
        macs += exp * b.out * h * h
        cin = b.out
    macs += cin * cfg.head * h * h
    macs += cfg.head * num_classes
    return int(macs)


# ---- training ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlimTrainSettings:
    """Slimmable training (see the module docstring)."""

    epochs: int = 4
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    num_random: int = 2
    threads: int = 1
    warmup_epochs: float = 1.0
    grad_clip: float = 5.0


class ChannelGrid:
    """The per-layer width grid: layer ``l`` at step ``k`` has ``widths[l][k]`` channels.

    Args:
        space: a ``mobilenetv2-channels`` space (its 10 % grid of the 1.5x widths).
        max_step: the widest step used (0-based; 9 = the full 1.5x network).
    """

    def __init__(self, space, max_step: int):
        n = len(space.decisions())
        steps = space.decisions()[0]
        if not 0 <= max_step < steps:
            raise ConfigError(f"max_step must be in 0..{steps - 1}, got {max_step}")
        self.space = space
        self.max_step = int(max_step)
        self.n_layers = n
        self.widths = [
            [space.channels(space.arch([k] * n))[layer] for k in range(max_step + 1)]
            for layer in range(n)
        ]

    def channels(self, steps: Sequence[int]) -> list[int]:
        return [self.widths[layer][k] for layer, k in enumerate(steps)]

    def arch(self, steps: Sequence[int]) -> Arch:
        return self.space.arch(list(steps))

    def widest(self) -> list[int]:
        return [self.max_step] * self.n_layers

    def narrowest(self) -> list[int]:
        return [0] * self.n_layers

    def random(self, rng: np.random.Generator) -> list[int]:
        return [int(v) for v in rng.integers(0, self.max_step + 1, size=self.n_layers)]

    def slim(self, steps: Sequence[int], layer: int) -> list[int] | None:
        """``steps`` with one group fewer in ``layer``: down to the next step that changes
        the width (rounding to multiples of 8 merges some steps); ``None`` when none does."""
        k = steps[layer]
        w = self.widths[layer][k]
        while k > 0:
            k -= 1
            if self.widths[layer][k] != w:
                out = list(steps)
                out[layer] = k
                return out
        return None


def _soft_ce(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    return torch.mean(torch.sum(-soft * F.log_softmax(logits, dim=1), dim=1))


def train_slimmable(
    net: SlimmableMobileNetV2,
    grid: ChannelGrid,
    train: ImageSet,
    settings: SlimTrainSettings,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[float]:
    """Sandwich-rule training with in-place distillation; the mean loss of each epoch.

    ``on_batch(epoch)`` is called after each step (a progress bar's tick).
    """
    s = settings
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.SGD(
        net.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, nesterov=True
    )
    per_epoch = max(1, math.ceil(len(train) / s.batch_size))
    steps = per_epoch * s.epochs
    warm = max(1, int(round(s.warmup_epochs * per_epoch)))

    def schedule(k: int) -> float:
        # linear warm-up, then cosine to 0: a deep MobileNetV2 on a few images
        # diverges in its first steps at full learning rate
        if k < warm:
            return (k + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (k - warm) / max(1, steps - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    losses = []
    with torch_threads(s.threads):
        net.train()
        for epoch in range(s.epochs):
            total, n = 0.0, 0
            for idx in batches(len(train), s.batch_size, gen):
                x, y = train.images[idx], train.labels[idx]
                opt.zero_grad(set_to_none=True)
                net.set_channels(grid.channels(grid.widest()))
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                loss.backward()
                soft = torch.softmax(logits.detach(), dim=1)
                total += float(loss.detach())
                widths = [grid.narrowest()] + [grid.random(rng) for _ in range(s.num_random)]
                for w in widths:
                    net.set_channels(grid.channels(w))
                    _soft_ce(net(x), soft).backward()
                if s.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), s.grad_clip)
                opt.step()
                sched.step()
                n += 1
                if on_batch is not None:
                    on_batch(epoch + 1)
            losses.append(total / max(1, n))
            if on_epoch is not None:
                on_epoch(epoch + 1, losses[-1])
    net.set_channels(grid.channels(grid.widest()))
    return losses


@torch.no_grad()
def recalibrate_bn(net: SlimmableMobileNetV2, calib: Sequence[torch.Tensor]) -> None:
    """Recompute the active width's BN statistics as the average over ``calib`` batches.

    Batch ``k`` is folded in with momentum ``1 / (k + 1)``: a cumulative mean,
    independent of what the shared buffers held before.
    """
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    was = net.training
    net.train()
    try:
        for k, x in enumerate(calib):
            for m in bns:
                m.momentum = 1.0 / (k + 1)
            net(x)
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
        net.train(was)


@torch.no_grad()
def evaluate_width(
    net: SlimmableMobileNetV2,
    channels: Sequence[int],
    calib: Sequence[torch.Tensor],
    val: ImageSet,
    batch_size: int = 256,
) -> tuple[float, float]:
    """(accuracy %, mean cross-entropy) of the slimmable net at ``channels`` after BN recalibration."""
    net.set_channels(list(channels))
    recalibrate_bn(net, calib)
    net.eval()
    correct, ce = 0, 0.0
    for s in range(0, len(val), batch_size):
        logits = net(val.images[s : s + batch_size])
        y = val.labels[s : s + batch_size]
        correct += int((logits.argmax(1) == y).sum())
        ce += float(F.cross_entropy(logits, y, reduction="sum"))
    return 100.0 * correct / max(1, len(val)), ce / max(1, len(val))


# ---- greedy slimming -------------------------------------------------------------------------


@dataclass
class SlimStep:
    """One configuration on the greedy path."""

    step: int
    steps: list[int]
    channels: list[int]
    val_acc: float
    val_ce: float
    macs: int
    slimmed: str = ""  # the layer that lost a group to get here
    evaluated: int = 0  # candidate removals tried at this step


@dataclass
class GreedySlimmer:
    """Greedy slimming from the widest configuration of ``grid``.

    Args:
        net: the trained slimmable network.
        grid: the width grid.
        calib: BN recalibration batches (training images).
        val: held-out images the removals are judged on.
        macs_of: channels -> MACs at the deployment input size.
        layer_names: for the path's log.
    """

    net: SlimmableMobileNetV2
    grid: ChannelGrid
    calib: list[torch.Tensor]
    val: ImageSet
    macs_of: Callable[[Sequence[int]], int]
    layer_names: list[str]
    threads: int = 1
    path: list[SlimStep] = field(default_factory=list)
    on_eval: Callable[[], None] | None = None  # after each width judged (a progress tick)

    def start(self) -> SlimStep:
        steps = self.grid.widest()
        ch = self.grid.channels(steps)
        with torch_threads(self.threads):
            acc, ce = evaluate_width(self.net, ch, self.calib, self.val)
        st = SlimStep(0, steps, ch, acc, ce, self.macs_of(ch))
        self.path = [st]
        return st

    @property
    def current(self) -> SlimStep:
        if not self.path:
            return self.start()
        return self.path[-1]

    def step(self) -> SlimStep | None:
        """Slim the layer whose one-group removal loses the least accuracy; ``None`` at the bottom."""
        cur = self.current
        best: tuple[float, float, int, list[int]] | None = None
        tried = 0
        with torch_threads(self.threads):
            for layer in range(self.grid.n_layers):
                cand = self.grid.slim(cur.steps, layer)
                if cand is None:
                    continue
                tried += 1
                acc, ce = evaluate_width(self.net, self.grid.channels(cand), self.calib, self.val)
                if self.on_eval is not None:
                    self.on_eval()
                key = (acc, -ce)
                if best is None or key > (best[0], -best[1]):
                    best = (acc, ce, layer, cand)
        if best is None:
            return None
        acc, ce, layer, cand = best
        ch = self.grid.channels(cand)
        st = SlimStep(
            len(self.path), cand, ch, acc, ce, self.macs_of(ch), self.layer_names[layer], tried
        )
        self.path.append(st)
        return st
