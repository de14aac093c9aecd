"""RegNetX (Radosavovic et al., 2020): stage widths and depths from a quantised linear rule.

Residual bottleneck blocks with *grouped* 3x3 convolutions (group width 16 at
400MF): a conv kernel with 1 < groups < channels, which neither the dense nor
the depthwise regressors cover. Widths are generated exactly as torchvision's
``BlockParams.from_init_params`` does, so ``regnetx_400mf`` has its published
parameter count.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hwnas.models._registry import register_model
from hwnas.models.blocks import ClassifierHead, ConvBNAct, init_weights, make_divisible


def regnet_stages(
    depth: int, w_0: int, w_a: float, w_m: float, group_width: int, quant: int = 8
) -> list[tuple[int, int, int]]:
    """``(width, depth, group width)`` per stage from RegNet's linear parametrisation.

    u_j = w_0 + w_a * j, quantised to w_0 * w_m^round(log(u_j / w_0) / log(w_m)),
    rounded to a multiple of ``quant``; consecutive equal widths form a stage.
    Widths are then made divisible by the group width (bottleneck ratio 1).
    """
    widths = []
    for j in range(depth):
        cap = round(math.log((w_0 + w_a * j) / w_0) / math.log(w_m))
        widths.append(int(round(w_0 * w_m**cap / quant) * quant))
    stages: list[list[int]] = []
    for w in widths:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    out = []
    for w, d in stages:
        g = min(group_width, w)
        # torchvision's _make_divisible (round half up, never shrink by over 10 %),
        # not Python's round-half-to-even: 392 with groups of 16 becomes 400
        out.append((make_divisible(w, g), d, g))
    return out


class ResBottleneck(nn.Module):
    """1x1 -> grouped 3x3 (stride) -> 1x1, with a projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int):
        super().__init__()
        self.a = ConvBNAct(cin, cout, 1, act=nn.ReLU)
        self.b = ConvBNAct(cout, cout, 3, stride, groups=cout // group_width, act=nn.ReLU)
        self.c = ConvBNAct(cout, cout, 1, act=None)
        if stride != 1 or cin != cout:
            self.proj: nn.Module = ConvBNAct(cin, cout, 1, stride, act=None)
        else:
            self.proj = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(x) + self.c(self.b(self.a(x))))


class RegNet(nn.Module):
    """A 32-wide 3x3/2 stem, one stride-2 stage per ``(width, depth, group width)``, classifier."""

    def __init__(self, stages: list[tuple[int, int, int]], num_classes: int = 1000):
        super().__init__()
        self.stem = ConvBNAct(3, 32, 3, 2, act=nn.ReLU)
        blocks: list[nn.Module] = []
        c = 32
        for w, d, g in stages:
            for i in range(d):
                blocks.append(ResBottleneck(c, w, 2 if i == 0 else 1, g))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.head = ClassifierHead(c, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@register_model(224, help="RegNetX-400MF, 224x224, 5.50M params", family="RegNet")
def regnetx_400mf(num_classes: int = 1000) -> RegNet:
    """RegNetX-400MF (torchvision's 5,495,976 params at 1000 classes)."""
    return RegNet(regnet_stages(22, 24, 24.48, 2.54, 16), num_classes)
