"""GoogLeNet / Inception v1 (Szegedy et al., 2015), without the auxiliary heads.

Four parallel branches (1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max-pool -> 1x1)
concatenated: wide, shallow blocks with many small convolutions and a concat
per block. The layout is torchvision's ``googlenet`` (with BN, and its 3x3 in
the "5x5" branch) with ``aux_logits=False``.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.models._registry import register_model
from hwnas.models.blocks import ClassifierHead, ConvBNAct, init_weights


class Inception(nn.Module):
    """The four-branch Inception block."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int):
        super().__init__()
        self.branch1 = ConvBNAct(cin, c1, 1)
        self.branch2 = nn.Sequential(ConvBNAct(cin, c3r, 1), ConvBNAct(c3r, c3, 3))
        self.branch3 = nn.Sequential(ConvBNAct(cin, c5r, 1), ConvBNAct(c5r, c5, 3))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, 1, padding=1, ceil_mode=True), ConvBNAct(cin, pool_proj, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([b(x) for b in branches], dim=1)


class GoogLeNet(nn.Module):
    """Stem (7x7/2, pool, 1x1, 3x3, pool), nine Inception blocks with three pools, classifier."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()

        def pool(k: int = 3) -> nn.Module:
            return nn.MaxPool2d(k, 2, ceil_mode=True)

        self.features = nn.Sequential(
            ConvBNAct(3, 64, 7, 2),
            pool(),
            ConvBNAct(64, 64, 1),
            ConvBNAct(64, 192, 3),
            pool(),
            Inception(192, 64, 96, 128, 16, 32, 32),
            Inception(256, 128, 128, 192, 32, 96, 64),
            pool(),
            Inception(480, 192, 96, 208, 16, 48, 64),
            Inception(512, 160, 112, 224, 24, 64, 64),
            Inception(512, 128, 128, 256, 24, 64, 64),
            Inception(512, 112, 144, 288, 32, 64, 64),
            Inception(528, 256, 160, 320, 32, 128, 128),
            pool(2),
            Inception(832, 256, 160, 320, 32, 128, 128),
            Inception(832, 384, 192, 384, 48, 128, 128),
        )
        self.head = ClassifierHead(1024, num_classes, dropout)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(224, help="GoogLeNet (Inception v1, no aux heads), 224x224, 6.62M params",
                family="Inception")  # fmt: skip
def googlenet(num_classes: int = 1000, dropout: float = 0.2) -> GoogLeNet:
    """GoogLeNet without auxiliary heads (torchvision's 6,624,904 params at 1000 classes)."""
    return GoogLeNet(num_classes, dropout)
