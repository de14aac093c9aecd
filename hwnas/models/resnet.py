"""ResNets (He et al., 2016): ResNet-18 and -50 for ImageNet, ResNet-20 for CIFAR.

ResNet-18 is the usual "big, regular, conv-heavy" reference next to the mobile
networks, ResNet-50 its bottleneck (1x1-3x3-1x1, 4x expansion) form; ResNet-20
is a 32x32 network small enough to export and time in a test (0.27M params).
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.models._registry import register_model
from hwnas.models.blocks import ClassifierHead, ConvBNAct, init_weights


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity or 1x1-projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, out_channels, 3, stride, act=nn.ReLU)
        self.conv2 = ConvBNAct(out_channels, out_channels, 3, 1, act=None)
        if stride != 1 or in_channels != out_channels:
            # option B of the paper: a strided 1x1 projection, exportable everywhere
            self.shortcut: nn.Module = ConvBNAct(in_channels, out_channels, 1, stride, act=None)
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride, torchvision's "v1.5") -> 1x1 expand to 4x, projection shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = ConvBNAct(in_channels, planes, 1, act=nn.ReLU)
        self.conv2 = ConvBNAct(planes, planes, 3, stride, act=nn.ReLU)
        self.conv3 = ConvBNAct(planes, out, 1, act=None)
        if stride != 1 or in_channels != out:
            self.shortcut: nn.Module = ConvBNAct(in_channels, out, 1, stride, act=None)
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet of :class:`BasicBlock` (or :class:`Bottleneck`) stages.

    Args:
        layers: blocks per stage.
        widths: channels per stage (bottleneck: the inner width, the output is 4x);
            each stage after the first halves H, W.
        num_classes: classifier outputs.
        imagenet_stem: 7x7/2 conv + 3x3/2 max-pool (ImageNet) instead of one 3x3 conv (CIFAR).
    """

    def __init__(
        self,
        layers: tuple[int, ...],
        widths: tuple[int, ...],
        num_classes: int = 1000,
        imagenet_stem: bool = True,
        bottleneck: bool = False,
    ):
        super().__init__()
        if imagenet_stem:
            self.stem: nn.Module = nn.Sequential(
                ConvBNAct(3, widths[0], 7, stride=2, act=nn.ReLU),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = ConvBNAct(3, widths[0], 3, stride=1, act=nn.ReLU)
        blocks: list[nn.Module] = []
        in_ch = widths[0]
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                if bottleneck:
                    blocks.append(Bottleneck(in_ch, w, stride))
                    in_ch = w * Bottleneck.expansion
                else:
                    blocks.append(BasicBlock(in_ch, w, stride))
                    in_ch = w
        self.blocks = nn.Sequential(*blocks)
        self.head = ClassifierHead(in_ch, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@register_model(224, help="ResNet-18, 224x224, 11.69M params", family="ResNet", demo=True)
def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18 (11.69M params at 1000 classes)."""
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, imagenet_stem=True)


@register_model(224, help="ResNet-50, 224x224, 25.56M params", family="ResNet")
def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 (torchvision's 25,557,032 params at 1000 classes)."""
    return ResNet((3, 4, 6, 3), (64, 128, 256, 512), num_classes, bottleneck=True)


@register_model(32, help="ResNet-20 for CIFAR, 32x32, 0.27M params", family="ResNet", demo=True)
def cifar_resnet20(num_classes: int = 10) -> ResNet:
    """ResNet-20 for 32x32 inputs (3 stages x 3 blocks, 16/32/64 channels)."""
    return ResNet((3, 3, 3), (16, 32, 64), num_classes, imagenet_stem=False)
