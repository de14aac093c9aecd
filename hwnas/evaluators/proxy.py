"""Proxy accuracy: a few epochs of training on a small dataset, then held-out accuracy.

MnasNet trained each sampled model for 5 epochs on a subset of ImageNet and
used that accuracy as the reward's ACC term. This is the same idea at desktop
scale: the bundled digits (or a user's folder of class-named subfolders),
resized to the space's input, a fixed seeded train/validation split, SGD with
momentum and a cosine schedule. The number is a *ranking* signal between
architectures of one space, not a figure to quote as the network's accuracy.

Determinism: the split, the initial weights and the batch order all come from
the seed, and training runs under ``torch.use_deterministic_algorithms`` (with
``warn_only`` for the rare op that has no deterministic kernel) at a fixed
thread count, so the same seed gives the same accuracy on the same machine.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hwnas.errors import ConfigError
from hwnas.evaluators.base import AccuracyEvaluator, settings_to_dict
from hwnas.evaluators.data import ImageSet, load_images
from hwnas.report.progress import announce, step

if TYPE_CHECKING:
    from hwnas.arch import Arch
    from hwnas.spaces.base import SearchSpace


@dataclass(frozen=True)
class ProxySettings:
    """Settings of the short training.

    Attributes:
        data: ``digits`` or a folder of class-named subfolders of images.
        epochs: passes over the training split.
        batch_size: images per SGD step.
        lr: peak learning rate (cosine-decayed to 0).
        momentum / weight_decay: SGD's.
        val_fraction: share of the images held out for the accuracy.
        seed: split, initial weights and batch order.
        input_size: image side; ``None`` = the space's input size (smaller trains faster).
        max_samples: use a seeded subset of the data (``None`` = all).
        threads: torch threads while training (fixed for reproducibility).
    """

    data: str = "digits"
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    val_fraction: float = 0.25
    seed: int = 0
    input_size: int | None = None
    max_samples: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"proxy epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"proxy batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")


def _deterministic():
    """Context manager: deterministic torch algorithms, restoring the caller's setting after."""
    import contextlib

    @contextlib.contextmanager
    def cm():
        was = torch.are_deterministic_algorithms_enabled()
        was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was, warn_only=was_warn)

    return cm()


def train_and_evaluate(
    model: torch.nn.Module, train: ImageSet, val: ImageSet, settings: ProxySettings
) -> float:
    """Train ``model`` on ``train`` and return top-1 accuracy (%) on ``val``."""
    s = settings
    g = torch.Generator().manual_seed(s.seed)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=s.lr,
        momentum=s.momentum,
        weight_decay=s.weight_decay,
        nesterov=s.momentum > 0,
    )
    n = len(train)
    steps_per_epoch = max(1, math.ceil(n / s.batch_size))
    total = steps_per_epoch * s.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, total) / total))
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    # one bar per candidate, under the search's own (no record line: the search counts them)
    with step(total, "proxy training", unit="batches", keep=False) as bar:
        for epoch in range(s.epochs):
            order = torch.randperm(n, generator=g)
            for k in range(steps_per_epoch):
                idx = order[k * s.batch_size : (k + 1) * s.batch_size]
                if idx.numel() >= 2:  # batch norm cannot normalise a single image
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(train.images[idx]), train.labels[idx])
                    loss.backward()
                    opt.step()
                    sched.step()
                bar.advance(status=f"epoch {epoch + 1}/{s.epochs}")
    model.eval()
    correct = 0
    with torch.no_grad():
        for k in range(0, len(val), 256):
            logits = model(val.images[k : k + 256])
            correct += int((logits.argmax(1) == val.labels[k : k + 256]).sum())
    return 100.0 * correct / max(1, len(val))


# From CPU profiles (process time, one thread) of one epoch on the digits at 32x32, not
# wall-clock timing: what a plan line can say before the first candidate has trained.
_PER_BATCH_NOTE = (
    "roughly 0.1-1.2 s per batch on one thread depending on the network (the bar shows the "
    "real rate)"
)


class ProxyEvaluator(AccuracyEvaluator):
    """Validation accuracy (%) after a short, seeded training run.

    The space's classifier is rebuilt for the dataset's number of classes and
    the network for the chosen input size (a copy of the space is used, the
    caller's is never modified).
    """

    name = "proxy"
    cost = "expensive"  # a short training
    unit = "%"
    Settings = ProxySettings

    def __init__(self, settings: ProxySettings | None = None, **overrides: Any):
        from dataclasses import replace

        self.settings = replace(settings or ProxySettings(), **overrides)
        self._data: dict[int, tuple[ImageSet, ImageSet]] = {}

    def split(self, size: int) -> tuple[ImageSet, ImageSet]:
        """(train, validation) at image side ``size``: seeded and stratified by class."""
        if size not in self._data:
            s = self.settings
            data = load_images(s.data, size, max_samples=s.max_samples, seed=s.seed)
            if len(data.classes) < 2:
                raise ConfigError(
                    f"proxy training needs at least 2 classes; {s.data} has {len(data.classes)} "
                    "(put images in class-named subfolders)"
                )
            rng = np.random.default_rng(s.seed)
            labels = data.labels.numpy()
            val_idx: list[int] = []
            for c in np.unique(labels):
                members = rng.permutation(np.flatnonzero(labels == c))
                k = max(1, int(round(len(members) * s.val_fraction))) if len(members) > 1 else 0
                val_idx.extend(members[:k].tolist())
            is_val = np.zeros(len(labels), dtype=bool)
            is_val[val_idx] = True
            self._data[size] = (
                data.subset(np.flatnonzero(~is_val)),
                data.subset(np.flatnonzero(is_val)),
            )
        return self._data[size]

    def accuracy(self, space: SearchSpace, arch: Arch) -> float:
        s = self.settings
        size = s.input_size or space.input_size
        train, val = self.split(size)
        variant = copy.copy(space)
        variant.input_size = size
        variant.num_classes = len(train.classes)
        if not getattr(self, "_announced", False):
            self._announced = True
            batches = max(1, math.ceil(len(train) / s.batch_size))
            announce(
                f"proxy accuracy: each candidate trains {s.epochs} epochs x {batches} batches of "
                f"{s.batch_size} '{s.data}' images at {size}x{size} on {s.threads} thread(s), "
                f"then is scored on {len(val)} held-out images; {_PER_BATCH_NOTE}"
            )
        torch.manual_seed(s.seed)
        model = variant.build(arch)
        return train_and_evaluate(model, train, val, s)

    def evaluate(self, space: SearchSpace, archs: Sequence[Arch]) -> list[float]:
        old_threads = torch.get_num_threads()
        torch.set_num_threads(self.settings.threads)
        try:
            with _deterministic():
                return [self.accuracy(space, a) for a in archs]
        finally:
            torch.set_num_threads(old_threads)

    def config(self) -> dict[str, Any]:
        return {"evaluator": "proxy", **settings_to_dict(self.settings)}
