"""MobileNetV2 with a searched width per layer (AutoSlim's channel space).

AutoSlim (Yu & Huang, 2019) trains a slimmable MobileNetV2 1.5x and lets
every layer keep 10 %, 20 %, ..., 100 % of its 1.5x channels; relative to
MobileNetV2 1.0 that is 0.15x, 0.30x, ..., 1.50x in 0.15x steps. The searched
layers are those a channel count can be chosen for independently: the stem,
each block's expanded (depthwise) width, each stage's output width (shared by
the stage's blocks because of the residual additions) and the head conv —
25 decisions, laid out as :func:`hwnas.models.mobilenetv2.channel_names`.

Widths are rounded to the nearest multiple of ``divisor`` (8 by default, what
mobile kernels vectorise over), so small layers have fewer distinct widths
than options. MobileNetV2 1.0 itself sits between two grid points (choice 5
is 0.9x, choice 6 is 1.05x): :meth:`MobileNetV2ChannelSpace.channels` and
:func:`build_from_channels` take any width list, on the grid or not.
"""

from __future__ import annotations

from collections.abc import Sequence

from hwnas.arch import Arch
from hwnas.errors import SpaceError
from hwnas.models.mobilenetv2 import (
    MobileNetV2,
    base_channels,
    channel_names,
)
from hwnas.models.mobilenetv2 import build_from_channels as _build_from_channels
from hwnas.models.slimmable import SlimmableMobileNetV2
from hwnas.spaces.base import SearchSpace
from hwnas.spaces.registry import SPACES

NUM_STEPS = 10
STEP = 0.15  # of MobileNetV2 1.0's width: 10 % of the 1.5x slimmable network
WIDTH_RATIOS: tuple[float, ...] = tuple(round(STEP * (k + 1), 2) for k in range(NUM_STEPS))


def round_channels(channels: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(channels / divisor + 0.5) * divisor)


def _ratio_token(r: float) -> str:
    return f"{r:.2f}"


@SPACES.register("mobilenetv2-channels")
class MobileNetV2ChannelSpace(SearchSpace):
    """MobileNetV2 with one width ratio (0.15x..1.5x of 1.0x) per layer: AutoSlim's space.

    The string form lists one ratio per searched layer, '-'-separated, in the
    order of :func:`~hwnas.models.mobilenetv2.channel_names`, e.g.
    ``0.90-0.45-...-1.05`` (25 entries).
    """

    name = "mobilenetv2-channels"
    input_size = 224
    num_classes = 1000

    def __init__(
        self,
        input_size: int | None = None,
        num_classes: int | None = None,
        divisor: int = 8,
        dropout: float = 0.2,
    ):
        super().__init__(input_size=input_size, num_classes=num_classes)
        self._require_input_size(32)
        if divisor < 1:
            raise SpaceError(f"divisor must be a positive int, got {divisor}")
        self.divisor = int(divisor)
        self.dropout = float(dropout)
        self._base = base_channels()
        self._names = channel_names()

    def decisions(self) -> list[int]:
        return [NUM_STEPS] * len(self._base)

    def decision_names(self) -> list[str]:
        return list(self._names)

    # ---- channels --------------------------------------------------------------

    def channels(self, arch: Arch) -> list[int]:
        """Per-layer widths of ``arch`` (layout: ``decision_names()``)."""
        self.validate(arch)
        return [
            round_channels(base * WIDTH_RATIOS[c], self.divisor)
            for base, c in zip(self._base, arch.choices, strict=True)
        ]

    def max_channels(self) -> list[int]:
        """Widths of the largest architecture (1.5x): the slimmable network's size."""
        return [round_channels(b * WIDTH_RATIOS[-1], self.divisor) for b in self._base]

    def uniform(self, step: int) -> Arch:
        """Every layer at the same ratio ``WIDTH_RATIOS[step]`` (a plain width multiplier)."""
        if not 0 <= step < NUM_STEPS:
            raise SpaceError(f"step must be in 0..{NUM_STEPS - 1}, got {step}")
        return self.arch([step] * len(self._base))

    def build_from_channels(self, channels: Sequence[int]) -> MobileNetV2:
        """A MobileNetV2 with arbitrary per-layer widths (grid or not)."""
        return _build_from_channels(channels, self.num_classes, self.dropout)

    def build(self, arch: Arch) -> MobileNetV2:
        return self.build_from_channels(self.channels(arch))

    def build_slimmable(self) -> SlimmableMobileNetV2:
        """The weight-sharing network every architecture of this space is a slice of."""
        return SlimmableMobileNetV2(self.max_channels(), self.num_classes, self.dropout)

    # ---- strings ---------------------------------------------------------------

    def format(self, arch: Arch) -> str:
        self.validate(arch)
        return "-".join(_ratio_token(WIDTH_RATIOS[c]) for c in arch.choices)

    def parse(self, text: str) -> Arch:
        if not isinstance(text, str):
            raise SpaceError(f"expected a mobilenetv2-channels string, got {type(text).__name__}")
        parts = text.strip().split("-")
        if len(parts) != len(self._base):
            raise SpaceError(
                f"a mobilenetv2-channels architecture has {len(self._base)} '-'-separated width "
                f"ratios (one per layer: {', '.join(self._names)}), got {len(parts)} in {text!r}"
            )
        allowed = [_ratio_token(r) for r in WIDTH_RATIOS]
        choices = []
        for name, part in zip(self._names, parts, strict=True):
            try:
                value = float(part)
            except ValueError:
                raise SpaceError(
                    f"width ratio {part!r} of layer {name} is not a number; choose one of {allowed}"
                ) from None
            matches = [i for i, r in enumerate(WIDTH_RATIOS) if abs(r - value) < 1e-6]
            if not matches:
                raise SpaceError(
                    f"width ratio {part!r} of layer {name} is not on the grid; choose one of {allowed}"
                )
            choices.append(matches[0])
        return self.arch(choices)


def build_from_channels(channels: Sequence[int], num_classes: int = 1000) -> MobileNetV2:
    """Module-level alias of :meth:`MobileNetV2ChannelSpace.build_from_channels`."""
    return _build_from_channels(channels, num_classes)
