"""SqueezeNet 1.1 (Iandola et al., 2016): Fire modules (1x1 squeeze, 1x1 + 3x3 expand, concat).

No batch norm, biased convolutions, ceil-mode max-pools and a convolutional
classifier: a graph unlike the BN-folded mobile networks. Layout follows
torchvision's ``squeezenet1_1``.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.models._registry import register_model


class Fire(nn.Module):
    """1x1 squeeze -> ReLU, then 1x1 and 3x3 expands (each -> ReLU) concatenated."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.act(self.squeeze(x))
        return torch.cat((self.act(self.expand1x1(s)), self.act(self.expand3x3(s))), dim=1)


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1: a 3x3/2 stem, eight Fire modules, a 1x1 conv classifier, global pooling."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()

        def pool() -> nn.Module:
            return nn.MaxPool2d(3, 2, ceil_mode=True)

        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=2),
            nn.ReLU(),
            pool(),
            Fire(64, 16, 64, 64),
            Fire(128, 16, 64, 64),
            pool(),
            Fire(128, 32, 128, 128),
            Fire(256, 32, 128, 128),
            pool(),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256),
            Fire(512, 64, 256, 256),
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(512, num_classes, 1)
        self.act = nn.ReLU()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # torchvision's init: uniform Kaiming, a small normal for the classifier
                if m is self.classifier:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.classifier(self.dropout(self.features(x))))
        return x.mean((2, 3))


@register_model(224, help="SqueezeNet 1.1, 224x224, 1.24M params", family="SqueezeNet")
def squeezenet1_1(num_classes: int = 1000, dropout: float = 0.5) -> SqueezeNet:
    """SqueezeNet 1.1 (torchvision's 1,235,496 params at 1000 classes)."""
    return SqueezeNet(num_classes, dropout)
