"""MobileNetV2 (Sandler et al., 2018), with per-layer widths.

The network is described by a :class:`MobileNetV2Config` (stem width, one
``(expanded, out, stride)`` triple per inverted-residual block, head width)
rather than by a single width multiplier, so that channel-search spaces
(AutoSlim) build their candidates with this same class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hwnas.errors import SpaceError
from hwnas.models._registry import register_model
from hwnas.models.blocks import (
    ClassifierHead,
    ConvBNAct,
    InvertedResidual,
    init_weights,
    make_divisible,
)

# (expansion t, output channels c, repeats n, first stride s): Table 2 of the paper.
MBV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
MBV2_STEM = 32
MBV2_HEAD = 1280


@dataclass(frozen=True)
class BlockCfg:
    """One inverted-residual block: expanded width, output width, stride, kernel, expand ratio.

    ``expand_ratio == 1`` marks MobileNetV2's first block, which has no 1x1
    expand conv (its depthwise conv runs on the stem output directly).
    ``skip`` allows the identity residual (still only where shapes agree); it
    is False on the first block of each stage so that a channel-searched
    network whose two stage widths happen to coincide does not gain a
    residual the full-width network lacks.
    """

    exp: int
    out: int
    stride: int
    kernel: int = 3
    expand_ratio: int = 6
    skip: bool = True


@dataclass(frozen=True)
class MobileNetV2Config:
    stem: int
    blocks: tuple[BlockCfg, ...]
    head: int

    @classmethod
    def from_width(cls, width_mult: float = 1.0, round_to: int = 8) -> MobileNetV2Config:
        """The paper's uniform width multiplier (the head keeps 1280 below 1.0x)."""
        stem = make_divisible(MBV2_STEM * width_mult, round_to)
        blocks: list[BlockCfg] = []
        in_ch = stem
        for t, c, n, s in MBV2_SETTINGS:
            out = make_divisible(c * width_mult, round_to)
            for i in range(n):
                blocks.append(BlockCfg(in_ch * t, out, s if i == 0 else 1, 3, t, skip=i > 0))
                in_ch = out
        head = make_divisible(MBV2_HEAD * max(1.0, width_mult), round_to)
        return cls(stem, tuple(blocks), head)

    @classmethod
    def from_channels(cls, channels: Sequence[int]) -> MobileNetV2Config:
        """Build from a per-layer width list laid out as :func:`channel_names` says.

        This is the representation channel-search methods (AutoSlim) work on:
        the stem, each stage's output width (shared by its blocks, because of
        the residual additions), each block's expanded width, and the head.
        """
        names = channel_names()
        if len(channels) != len(names):
            raise SpaceError(
                f"MobileNetV2 channel lists have {len(names)} entries ({', '.join(names)}), "
                f"got {len(channels)}"
            )
        for name, c in zip(names, channels, strict=True):
            if isinstance(c, bool) or not isinstance(c, int | np.integer) or c < 1:
                raise SpaceError(f"channel count {name} must be a positive int, got {c!r}")
        it = iter(int(c) for c in channels)
        stem = next(it)
        blocks: list[BlockCfg] = []
        for t, _, n, s in MBV2_SETTINGS:
            if t == 1:
                exps = [stem] * n  # the expand-free first block runs on the stem width
            else:
                exps = [next(it) for _ in range(n)]
            out = next(it)
            for i, e in enumerate(exps):
                blocks.append(BlockCfg(e, out, s if i == 0 else 1, 3, t, skip=i > 0))
        head = next(it)
        return cls(stem, tuple(blocks), head)

    def to_channels(self) -> list[int]:
        """Inverse of :meth:`from_channels`."""
        out = [self.stem]
        k = 0
        for t, _, n, _ in MBV2_SETTINGS:
            stage = self.blocks[k : k + n]
            if t != 1:
                out.extend(b.exp for b in stage)
            out.append(stage[-1].out)
            k += n
        out.append(self.head)
        return out


def channel_names() -> list[str]:
    """Names of the entries of a MobileNetV2 per-layer channel list, in network order.

    ``stem``, then per stage ``sS.bB.exp`` for each block's expanded width (not
    for stage 0, whose single block has no expand conv) and ``sS.out`` for the
    stage's output width, then ``head`` (the last 1x1 conv).
    """
    names = ["stem"]
    for s, (t, _, n, _) in enumerate(MBV2_SETTINGS):
        if t != 1:
            names.extend(f"s{s}.b{b}.exp" for b in range(n))
        names.append(f"s{s}.out")
    names.append("head")
    return names


def base_channels() -> list[int]:
    """MobileNetV2 1.0x as a per-layer channel list (the 100 % point of channel search)."""
    return MobileNetV2Config.from_width(1.0).to_channels()


class MobileNetV2(nn.Module):
    """MobileNetV2 built from a :class:`MobileNetV2Config` (ReLU6, linear bottlenecks)."""

    def __init__(
        self,
        config: MobileNetV2Config | None = None,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ):
        super().__init__()
        config = config or MobileNetV2Config.from_width(1.0)
        self.config = config
        self.stem = ConvBNAct(3, config.stem, 3, stride=2, act=nn.ReLU6)
        blocks: list[nn.Module] = []
        in_ch = config.stem
        for b in config.blocks:
            blocks.append(
                InvertedResidual(
                    in_ch,
                    b.out,
                    b.stride,
                    expand_ratio=b.expand_ratio,
                    kernel_size=b.kernel,
                    act=nn.ReLU6,
                    exp_channels=in_ch if b.expand_ratio == 1 else b.exp,
                    skip=b.skip,
                )
            )
            in_ch = b.out
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = ConvBNAct(in_ch, config.head, 1, act=nn.ReLU6)
        self.head = ClassifierHead(config.head, num_classes, dropout)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def build_from_channels(
    channels: Sequence[int], num_classes: int = 1000, dropout: float = 0.2
) -> MobileNetV2:
    """A MobileNetV2 with the given per-layer widths (layout: :func:`channel_names`)."""
    return MobileNetV2(MobileNetV2Config.from_channels(channels), num_classes, dropout)


def _create_mobilenetv2(width_mult: float = 1.0, **kwargs) -> MobileNetV2:
    return MobileNetV2(MobileNetV2Config.from_width(width_mult), **kwargs)


@register_model(224, help="MobileNetV2 1.0x, 224x224, 3.50M params", family="MobileNet", demo=True)
def mobilenetv2(num_classes: int = 1000, dropout: float = 0.2) -> MobileNetV2:
    """MobileNetV2 1.0x (3.50M params at 1000 classes)."""
    return _create_mobilenetv2(1.0, num_classes=num_classes, dropout=dropout)


@register_model(224, help="MobileNetV2 0.5x, 224x224", family="MobileNet", demo=True)
def mobilenetv2_050(num_classes: int = 1000, dropout: float = 0.2) -> MobileNetV2:
    """MobileNetV2 0.5x: a cheaper point on the same family's latency curve."""
    return _create_mobilenetv2(0.5, num_classes=num_classes, dropout=dropout)
