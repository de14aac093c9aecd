"""NASWOT: the training-free score of Mellor et al. (ICML 2021).

"Neural Architecture Search without Training" scores an untrained network by
how differently it treats the images of one minibatch. Each ReLU splits its
input space into linear regions; the pattern of which units are active
(input > 0) is a binary code of the region an image falls in. For a
minibatch of N images with codes c_i over all N_A ReLU units of the network,

    K_H[i, j] = N_A - d_H(c_i, c_j)        (d_H: Hamming distance)

counts the units on which two images agree, and the score is ``log |K_H|``.
A network that maps the images into well separated regions has a K_H close
to diagonal-dominant, hence a large determinant; such networks train to
higher accuracy. ``N_A - d_H = c_i.c_j + (1-c_i).(1-c_j)``, so K_H is summed
layer by layer from two matrix products, and the log-determinant comes from
``slogdet`` because the determinant itself overflows float64.

As in the authors' released code: every module whose class name contains
``ReLU`` is hooked (ReLU, ReLU6, LeakyReLU), the network is freshly
initialised (seeded, so the score is reproducible) and run once in training
mode, so batch norm normalises with the minibatch's own statistics.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hwnas.errors import ConfigError
from hwnas.evaluators.base import AccuracyEvaluator, settings_to_dict
from hwnas.evaluators.data import ImageSet, load_images

if TYPE_CHECKING:
    from hwnas.arch import Arch
    from hwnas.spaces.base import SearchSpace


@dataclass(frozen=True)
class NaswotSettings:
    """Settings of the NASWOT score.

    Attributes:
        data: ``digits`` (bundled with scikit-learn) or a folder of images.
        batch_size: images in the minibatch (the paper uses 128 on NAS-Bench-201).
        seed: picks the minibatch and initialises every network.
        input_size: image side; ``None`` = the space's input size.
        threads: torch intra-op threads while scoring (default 1: on a shared,
            busy machine two spinning threads can be tens of times slower than one).
    """

    data: str = "digits"
    batch_size: int = 128
    seed: int = 0
    input_size: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ConfigError(
                f"NASWOT batch_size must be >= 2 (it compares images pairwise), got {self.batch_size}"
            )
        if self.input_size is not None and self.input_size < 1:
            raise ConfigError(f"input_size must be >= 1, got {self.input_size}")
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")


def _is_relu(module: torch.nn.Module) -> bool:
    return "ReLU" in type(module).__name__


def naswot_score(model: torch.nn.Module, images: torch.Tensor) -> float:
    """``log |K_H|`` of ``model`` on ``images`` (N x C x H x W); -inf if K_H is singular.

    Raises:
        ConfigError: the model has no ReLU-like module to read codes from.
    """
    n = images.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)
    hooks = []

    def hook(_module: torch.nn.Module, inputs: tuple, _output: Any) -> None:
        # For an in-place ReLU the input was overwritten by the output, but
        # relu(x) > 0 exactly where x > 0, so the code is the same.
        codes = (inputs[0].detach().reshape(n, -1) > 0).to(torch.float32)
        # c.c' + (1-c).(1-c)' = 2 c.c' - |c| - |c'| + N_A: one product instead of two.
        # Counts are integers below 2**24, exact in float32; the sum over layers is float64.
        both = (codes @ codes.T).to(torch.float64)
        ones = codes.sum(1, dtype=torch.float64)
        kernel.add_(2.0 * both - ones[:, None] - ones[None, :] + codes.shape[1])

    for m in model.modules():
        if _is_relu(m):
            hooks.append(m.register_forward_hook(hook))
    if not hooks:
        raise ConfigError(
            f"{type(model).__name__} has no ReLU module, so NASWOT has no activation codes to "
            "compare; the score needs ReLU-family activations"
        )
    try:
        model.train()
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
    sign, logdet = np.linalg.slogdet(kernel.numpy())
    return float(logdet) if sign > 0 else float("-inf")


class NaswotEvaluator(AccuracyEvaluator):
    """NASWOT score of each architecture at initialisation (higher is better).

    Args:
        settings: see :class:`NaswotSettings`; keyword overrides are applied on top.
    """

    name = "naswot"
    # Expensive: it builds each network and runs a minibatch through it, tenths of a
    # second to seconds per architecture, orders of magnitude above a predictor's query.
    cost = "expensive"
    unit = "score"
    Settings = NaswotSettings

    def __init__(self, settings: NaswotSettings | None = None, **overrides: Any):
        from dataclasses import replace

        self.settings = replace(settings or NaswotSettings(), **overrides)
        self._batch: dict[int, ImageSet] = {}
        self.last_seconds: list[float] = []

    def minibatch(self, size: int) -> ImageSet:
        """The seeded minibatch at side ``size`` (loaded once)."""
        if size not in self._batch:
            s = self.settings
            imgs = load_images(s.data, size, max_samples=s.batch_size, seed=s.seed)
            if len(imgs) < 2:
                raise ConfigError(f"NASWOT needs at least 2 images; {s.data} gave {len(imgs)}")
            self._batch[size] = imgs
        return self._batch[size]

    def score(self, space: SearchSpace, arch: Arch) -> float:
        s = self.settings
        size = s.input_size or space.input_size
        images = self.minibatch(size).images
        torch.manual_seed(s.seed)
        model = space.build(arch)
        return naswot_score(model, images)

    def evaluate(self, space: SearchSpace, archs: Sequence[Arch]) -> list[float]:
        old_threads = torch.get_num_threads()
        torch.set_num_threads(self.settings.threads)
        out = []
        self.last_seconds = []
        try:
            for a in archs:
                t0 = time.perf_counter()
                out.append(self.score(space, a))
                self.last_seconds.append(time.perf_counter() - t0)
        finally:
            torch.set_num_threads(old_threads)
        return out

    def config(self) -> dict[str, Any]:
        return {"evaluator": "naswot", **settings_to_dict(self.settings)}
