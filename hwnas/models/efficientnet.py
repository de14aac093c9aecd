"""EfficientNet-B0 (Tan & Le, 2019): MnasNet's search result with SiLU and SE everywhere.

Its blocks are the zoo's :class:`~hwnas.models.blocks.InvertedResidual` with
SiLU activations and SE gates sized from the block input (a quarter of it),
exactly as torchvision's ``efficientnet_b0``; stochastic depth is a training
device and is left out (it does not change the inference graph).
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.models._registry import register_model
from hwnas.models.blocks import ClassifierHead, ConvBNAct, InvertedResidual, init_weights

# (expand ratio, kernel, first stride, out channels, repeats): Table 1 of the paper.
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1),
)  # fmt: skip


class EfficientNet(nn.Module):
    """Stem, MBConv stages with SE (ratio 0.25 of the block input) and SiLU, 1x1 head, classifier."""

    def __init__(
        self,
        stages: tuple[tuple[int, int, int, int, int], ...] = B0_STAGES,
        head: int = 1280,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.stem = ConvBNAct(3, 32, 3, 2, act=nn.SiLU)
        c = 32
        blocks: list[nn.Module] = []
        for e, k, s, out, n in stages:
            for i in range(n):
                blocks.append(
                    InvertedResidual(
                        c,
                        out,
                        s if i == 0 else 1,
                        expand_ratio=e,
                        kernel_size=k,
                        se_ratio=0.25,
                        act=nn.SiLU,
                        se_act=nn.SiLU,
                    )
                )
                c = out
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = ConvBNAct(c, head, 1, act=nn.SiLU)
        self.head = ClassifierHead(head, num_classes, dropout)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_conv(self.blocks(self.stem(x))))


@register_model(224, help="EfficientNet-B0, 224x224, 5.29M params", family="EfficientNet")
def efficientnet_b0(num_classes: int = 1000, dropout: float = 0.2) -> EfficientNet:
    """EfficientNet-B0 (torchvision's 5,288,548 params at 1000 classes)."""
    return EfficientNet(B0_STAGES, 1280, num_classes, dropout)
