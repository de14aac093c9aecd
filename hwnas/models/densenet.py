"""DenseNet-121 (Huang et al., 2017): every layer reads the concatenation of all earlier ones.

Pre-activation layers (BN -> ReLU -> conv), so batch norm is *not* folded into
a convolution: stand-alone BN kernels and a growing concat per layer, a graph
unlike any other zoo model. Layout follows torchvision's ``densenet121``
(growth 32, blocks 6/12/24/16, bottleneck 4x).
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.models._registry import register_model
from hwnas.models.blocks import init_weights


def _bn_relu_conv(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    )


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 (to ``bn_size * growth``) -> BN-ReLU-3x3 (to ``growth``), appended to the input."""

    def __init__(self, cin: int, growth: int, bn_size: int):
        super().__init__()
        self.conv1 = _bn_relu_conv(cin, bn_size * growth, 1)
        self.conv2 = _bn_relu_conv(bn_size * growth, growth, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv2(self.conv1(x))), dim=1)


class DenseNet(nn.Module):
    """Stem, dense blocks joined by transitions (BN-ReLU-1x1 halving channels, 2x2 avg-pool)."""

    def __init__(
        self,
        blocks: tuple[int, ...] = (6, 12, 24, 16),
        growth: int = 32,
        init_features: int = 64,
        bn_size: int = 4,
        num_classes: int = 1000,
    ):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, init_features, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(init_features),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, padding=1),
        ]
        c = init_features
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(c, growth, bn_size))
                c += growth
            if i < len(blocks) - 1:
                layers += [_bn_relu_conv(c, c // 2, 1), nn.AvgPool2d(2, 2)]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


@register_model(224, help="DenseNet-121, 224x224, 7.98M params", family="DenseNet")
def densenet121(num_classes: int = 1000) -> DenseNet:
    """DenseNet-121 (torchvision's 7,978,856 params at 1000 classes)."""
    return DenseNet((6, 12, 24, 16), 32, 64, 4, num_classes)
