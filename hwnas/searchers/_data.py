"""Data and torch housekeeping shared by the searchers that train inside the search.

Latency-DARTS, MemNAS' controller-free parts and AutoSlim all train networks
on the small image sets of :mod:`hwnas.evaluators.data` (the bundled digits,
or a folder of class-named subfolders): nothing is downloaded. The splits
here are seeded and stratified by class, so every class is seen by every
split even on a few hundred images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from hwnas.errors import ConfigError
from hwnas.evaluators.data import ImageSet, load_images
from hwnas.threads import torch_threads

__all__ = ["accuracy", "batches", "load_split", "stratified_split", "torch_threads"]


def stratified_split(data: ImageSet, fractions: Sequence[float], seed: int) -> list[ImageSet]:
    """Split ``data`` into parts of the given fractions (summing to 1), class by class.

    Each class is shuffled with ``seed`` and cut at the same proportions, so
    small datasets keep their class balance in every part.

    Raises:
        ConfigError: fractions that are not positive or do not sum to 1, or a
            part that would be empty.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if np.any(fr <= 0) or abs(fr.sum() - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must be positive and sum to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    labels = data.labels.numpy()
    parts: list[list[int]] = [[] for _ in fr]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum(fr)[:-1] * len(members)).astype(int)
        for k, chunk in enumerate(np.split(members, cuts)):
            parts[k].extend(chunk.tolist())
    for k, idx in enumerate(parts):
        if not idx:
            raise ConfigError(
                f"split part {k} of {len(data)} images is empty; use more images (max_samples) "
                "or larger fractions"
            )
    return [data.subset(np.sort(np.asarray(idx))) for idx in parts]


def load_split(
    source: str, size: int, fractions: Sequence[float], seed: int, max_samples: int | None = None
) -> list[ImageSet]:
    """Load ``digits`` or an image folder at ``size`` and split it (see :func:`stratified_split`).

    Raises:
        ConfigError: fewer than two classes (nothing to classify).
    """
    data = load_images(source, size, max_samples=max_samples, seed=seed)
    if len(data.classes) < 2:
        raise ConfigError(
            f"training inside the search needs at least 2 classes; {source} has "
            f"{len(data.classes)} (put images in class-named subfolders)"
        )
    return stratified_split(data, fractions, seed)


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches over ``n`` items; batches of one are skipped (BatchNorm needs two)."""
    order = torch.randperm(n, generator=generator)
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size]
        if idx.numel() >= 2:
            yield idx


def n_batches(n: int, batch_size: int) -> int:
    """How many batches :func:`batches` yields (a progress bar's total)."""
    return n // batch_size + (1 if n % batch_size >= 2 else 0)


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: ImageSet, batch_size: int = 256) -> float:
    """Top-1 accuracy (%) of ``model`` (in eval mode) on ``data``."""
    was = model.training
    model.eval()
    correct = 0
    for s in range(0, len(data), batch_size):
        logits = model(data.images[s : s + batch_size])
        correct += int((logits.argmax(1) == data.labels[s : s + batch_size]).sum())
    model.train(was)
    return 100.0 * correct / max(1, len(data))
