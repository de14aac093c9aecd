"""MobileNetV1 (Howard et al., 2017) and MobileNetV3 (Howard et al., 2019).

MobileNetV1 is the plain depthwise-separable stack every later mobile network
refines; MobileNetV3 adds squeeze-and-excite with hard-sigmoid gates and the
hard-swish activation, two kernels the other zoo models lack. Layer tables
follow torchvision's ``mobilenet_v3_large/small`` and the V1 paper's Table 1,
so the parameter counts match the published ones exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.models._registry import register_model
from hwnas.models.blocks import ConvBNAct, InvertedResidual, init_weights, make_divisible

# (stride, out channels) of each depthwise-separable layer: Table 1 of the V1 paper.
MBV1_LAYERS: tuple[tuple[int, int], ...] = (
    (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
    (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024),
)  # fmt: skip


class MobileNetV1(nn.Module):
    """3x3 stem, then depthwise 3x3 + pointwise 1x1 pairs (each conv -> BN -> ReLU)."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        c = make_divisible(32 * width)
        layers: list[nn.Module] = [ConvBNAct(3, c, 3, 2, act=nn.ReLU)]
        for stride, out in MBV1_LAYERS:
            out = make_divisible(out * width)
            layers += [
                ConvBNAct(c, c, 3, stride, groups=c, act=nn.ReLU),
                ConvBNAct(c, out, 1, act=nn.ReLU),
            ]
            c = out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(c, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x).mean((2, 3))))


# (kernel, expanded, out, SE, activation "RE"/"HS", stride) per block: torchvision's tables.
MBV3_LARGE: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1),
)  # fmt: skip
MBV3_SMALL: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1),
)  # fmt: skip


class MobileNetV3(nn.Module):
    """Hard-swish stem, inverted residuals with optional SE, a 1x1 head conv and a 2-layer classifier.

    Args:
        blocks: one ``(kernel, expanded, out, se, act, stride)`` per block.
        last_channels: width of the classifier's hidden layer (1280 large, 1024 small).
    """

    def __init__(
        self,
        blocks: tuple[tuple[int, int, int, bool, str, int], ...],
        last_channels: int,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, 2, act=nn.Hardswish)
        layers: list[nn.Module] = []
        c = 16
        for k, exp, out, se, act, stride in blocks:
            layers.append(
                InvertedResidual(
                    c,
                    out,
                    stride,
                    expand_ratio=exp / c,
                    kernel_size=k,
                    act=nn.Hardswish if act == "HS" else nn.ReLU,
                    exp_channels=exp,
                    se_gate=nn.Hardsigmoid,
                    se_channels=make_divisible(exp // 4, 8) if se else None,
                )
            )
            c = out
        self.blocks = nn.Sequential(*layers)
        self.head_conv = ConvBNAct(c, 6 * c, 1, act=nn.Hardswish)
        self.classifier = nn.Sequential(
            nn.Linear(6 * c, last_channels),
            nn.Hardswish(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(last_channels, num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_conv(self.blocks(self.stem(x)))
        return self.classifier(x.mean((2, 3)))


@register_model(224, help="MobileNetV1 1.0x, 224x224, 4.23M params", family="MobileNet")
def mobilenetv1(num_classes: int = 1000) -> MobileNetV1:
    """MobileNetV1 1.0x (4,231,976 params at 1000 classes)."""
    return MobileNetV1(num_classes)


@register_model(224, help="MobileNetV3-Large 1.0x, 224x224, 5.48M params", family="MobileNet")
def mobilenetv3_large(num_classes: int = 1000, dropout: float = 0.2) -> MobileNetV3:
    """MobileNetV3-Large 1.0x (torchvision's 5,483,032 params at 1000 classes)."""
    return MobileNetV3(MBV3_LARGE, 1280, num_classes, dropout)


@register_model(224, help="MobileNetV3-Small 1.0x, 224x224, 2.54M params", family="MobileNet")
def mobilenetv3_small(num_classes: int = 1000, dropout: float = 0.2) -> MobileNetV3:
    """MobileNetV3-Small 1.0x (torchvision's 2,542,856 params at 1000 classes)."""
    return MobileNetV3(MBV3_SMALL, 1024, num_classes, dropout)
