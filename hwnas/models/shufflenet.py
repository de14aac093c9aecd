"""ShuffleNetV2 (Ma et al., 2018): channel split, two branches, concat, channel shuffle.

Its latency is dominated by memory movement (split, concat, shuffle =
reshape-transpose-reshape) rather than MACs, which is exactly where a
FLOPs-based or conv-only kernel predictor goes wrong. Layout follows
torchvision's ``shufflenet_v2_x1_0``.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.models._registry import register_model
from hwnas.models.blocks import ClassifierHead, ConvBNAct, init_weights


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (reshape, transpose, reshape)."""
    b, c, h, w = x.shape
    x = x.reshape(b, groups, c // groups, h, w).transpose(1, 2)
    return x.reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit; stride 2 processes the whole input in both branches."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        bf = out_channels // 2
        if stride > 1:
            self.branch1: nn.Module = nn.Sequential(
                ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels, act=None),
                ConvBNAct(in_channels, bf, 1, act=nn.ReLU),
            )
        else:
            self.branch1 = nn.Identity()
        b2_in = in_channels if stride > 1 else bf
        self.branch2 = nn.Sequential(
            ConvBNAct(b2_in, bf, 1, act=nn.ReLU),
            ConvBNAct(bf, bf, 3, stride, groups=bf, act=None),
            ConvBNAct(bf, bf, 1, act=nn.ReLU),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """Stem conv + max-pool, three stages of :class:`ShuffleUnit`, a 1x1 conv, classifier."""

    def __init__(
        self,
        repeats: tuple[int, ...] = (4, 8, 4),
        widths: tuple[int, ...] = (24, 116, 232, 464, 1024),
        num_classes: int = 1000,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            ConvBNAct(3, widths[0], 3, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, padding=1)
        )
        units: list[nn.Module] = []
        c = widths[0]
        for n, w in zip(repeats, widths[1:-1], strict=True):
            for i in range(n):
                units.append(ShuffleUnit(c, w, 2 if i == 0 else 1))
                c = w
        self.stages = nn.Sequential(*units)
        self.conv5 = ConvBNAct(c, widths[-1], 1, act=nn.ReLU)
        self.head = ClassifierHead(widths[-1], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv5(self.stages(self.stem(x))))


@register_model(224, help="ShuffleNetV2 1.0x, 224x224, 2.28M params", family="ShuffleNet")
def shufflenetv2(num_classes: int = 1000) -> ShuffleNetV2:
    """ShuffleNetV2 1.0x (torchvision's 2,278,604 params at 1000 classes)."""
    return ShuffleNetV2((4, 8, 4), (24, 116, 232, 464, 1024), num_classes)
