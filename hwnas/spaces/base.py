"""The search-space interface.

A space is a sequence of categorical *decisions*; an architecture's choices
are one index per decision. That single representation is what the generic
parts share: uniform sampling, one-hot encoding, single-decision mutation and
the step-by-step emission of MnasNet's RL controller all derive from
:meth:`SearchSpace.decisions`. Spaces override what is specific to them
(building the torch module, a human-readable string form, a richer encoding).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from hwnas.arch import Arch
from hwnas.errors import SpaceError


class SearchSpace(ABC):
    """Base class of every registered search space.

    Subclasses set :attr:`name`, implement :meth:`decisions`, :meth:`build`,
    :meth:`format` and :meth:`parse`, and may override the rest.
    """

    name: str = ""

    def __init__(self, input_size: int | None = None, num_classes: int | None = None):
        if input_size is not None:
            self.input_size = int(input_size)
        if num_classes is not None:
            self.num_classes = int(num_classes)

    input_size: int = 224
    num_classes: int = 1000

    def _require_input_size(self, downsampling: int = 32) -> None:
        """Refuse an input smaller than the network's total downsampling: the
        last stages would run on less than one pixel."""
        if self.input_size < downsampling:
            raise SpaceError(
                f"{self.name} input_size {self.input_size} is below {downsampling}: the network "
                f"downsamples {downsampling}x; use {downsampling} or more (224, 128 and 96 are usual)"
            )

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """NCHW input shape with batch 1."""
        return (1, 3, self.input_size, self.input_size)

    @abstractmethod
    def decisions(self) -> list[int]:
        """Number of options of each decision, in order."""

    def decision_names(self) -> list[str]:
        """A short label per decision (for tables and the RL controller)."""
        return [f"d{i}" for i in range(len(self.decisions()))]

    @abstractmethod
    def build(self, arch: Arch) -> torch.nn.Module:
        """The torch module of ``arch`` (eval mode is the caller's business)."""

    @abstractmethod
    def format(self, arch: Arch) -> str:
        """Human-readable string of ``arch``; :meth:`parse` inverts it."""

    @abstractmethod
    def parse(self, text: str) -> Arch:
        """Parse a human-readable string; raise :class:`SpaceError` naming what is wrong."""

    # ---- generic parts derived from decisions() --------------------------------

    def arch(self, choices: Sequence[int]) -> Arch:
        """Make and validate an :class:`Arch` of this space from decision indices."""
        a = Arch(self.name, tuple(int(c) for c in choices))
        self.validate(a)
        return a

    def validate(self, arch: Arch) -> None:
        dec = self.decisions()
        if arch.space != self.name:
            raise SpaceError(
                f"architecture belongs to space '{arch.space}', not '{self.name}'; "
                f"use the '{arch.space}' space"
            )
        if len(arch.choices) != len(dec):
            raise SpaceError(
                f"'{self.name}' architectures have {len(dec)} decisions, got {len(arch.choices)}"
            )
        for i, (c, n) in enumerate(zip(arch.choices, dec, strict=True)):
            if not isinstance(c, int) or not 0 <= c < n:
                raise SpaceError(
                    f"decision {i} ({self.decision_names()[i]}) of '{self.name}' takes 0..{n - 1}, got {c!r}"
                )

    def size(self) -> int:
        """Number of distinct architectures (product of decision cardinalities)."""
        return math.prod(self.decisions())

    def sample(self, rng: np.random.Generator) -> Arch:
        """Uniform sample over the decisions."""
        return self.arch([int(rng.integers(n)) for n in self.decisions()])

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change exactly one decision to a different value (as regularised evolution does)."""
        self.validate(arch)
        dec = self.decisions()
        mutable = [i for i, n in enumerate(dec) if n > 1]
        i = int(rng.choice(mutable))
        new = list(arch.choices)
        new[i] = int((new[i] + 1 + rng.integers(dec[i] - 1)) % dec[i])
        return self.arch(new)

    @property
    def encoding_length(self) -> int:
        return sum(self.decisions())

    def encode(self, arch: Arch) -> np.ndarray:
        """Fixed-length float32 vector: the concatenated one-hot of every decision."""
        self.validate(arch)
        out = np.zeros(self.encoding_length, dtype=np.float32)
        offset = 0
        for c, n in zip(arch.choices, self.decisions(), strict=True):
            out[offset + c] = 1.0
            offset += n
        return out

    def encode_many(self, archs: Sequence[Arch]) -> np.ndarray:
        return (
            np.stack([self.encode(a) for a in archs])
            if archs
            else np.zeros((0, self.encoding_length), dtype=np.float32)
        )

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, *self.input_shape[1:])
