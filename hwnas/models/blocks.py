"""Building blocks shared by the model zoo and the search spaces.

The zoo's fixed networks and the spaces' sampled networks are made of the same
modules so that a space's architecture equal to a zoo model builds the *same*
graph (same params, same exported ONNX ops): latency measured on one is
comparable with the other. Every block is a plain ``nn.Module`` with no
data-dependent control flow, so it exports to ONNX with either exporter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ActFactory = Callable[[], nn.Module]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` (MobileNet convention).

    Mobile kernels vectorise over channels in groups of 4/8/16, so widths that
    are not multiples of 8 waste lanes; the 10 % guard keeps rounding from
    shrinking a layer by more than a tenth (as in the TF MobileNet code).
    """
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias: BN follows) -> BatchNorm2d -> optional activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: ActFactory | None = nn.ReLU,
    ):
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al.): channel gates from globally pooled features.

    The reduction is sized from the *block input* width (``rd_channels`` is
    passed by the caller), as MnasNet/EfficientNet do, not from the expanded
    width: this is what gives MnasNet-A1 its published 3.9M parameters.
    """

    def __init__(
        self,
        channels: int,
        rd_channels: int,
        act: ActFactory = nn.ReLU,
        gate: ActFactory = nn.Sigmoid,
    ):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act = act()
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act(self.conv_reduce(s)))
        return x * self.gate(s)


def _se(
    channels: int,
    in_channels: int,
    se_ratio: float,
    act: ActFactory,
    gate: ActFactory = nn.Sigmoid,
    rd_channels: int | None = None,
) -> nn.Module:
    if se_ratio <= 0 and rd_channels is None:
        return nn.Identity()
    rd = rd_channels if rd_channels is not None else max(1, int(in_channels * se_ratio))
    return SqueezeExcite(channels, rd, act=act, gate=gate)


class _Block(nn.Module):
    """What every searchable block records: its widths, its stride, and whether
    the identity residual fits (stride 1, same width, and the block asked for it).

    Spaces and the slimmable network read ``use_residual`` from outside, so it is
    decided once here rather than in each block.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, skip: bool):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.use_residual = skip and stride == 1 and in_channels == out_channels

    def _add_residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y if self.use_residual else y


class InvertedResidual(_Block):
    """MobileNetV2 / MnasNet MBConv: 1x1 expand -> kxk depthwise -> [SE] -> 1x1 linear project.

    ``exp_channels`` may be given explicitly (channel-search spaces choose the
    expanded width per block); otherwise it is ``in_channels * expand_ratio``.
    The expand conv is omitted when the expanded width equals the input width
    and ``expand_ratio`` is 1 (MobileNetV2's first block). The identity
    residual is added only where shapes allow it (stride 1, same width).
    ``se_act``/``se_gate``/``se_channels`` give the SE variants of
    EfficientNet (SiLU, sigmoid) and MobileNetV3 (ReLU, hard sigmoid, its
    squeeze width sized from the expanded width).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expand_ratio: float = 6,
        kernel_size: int = 3,
        se_ratio: float = 0.0,
        act: ActFactory = nn.ReLU6,
        skip: bool = True,
        exp_channels: int | None = None,
        se_act: ActFactory = nn.ReLU,
        se_gate: ActFactory = nn.Sigmoid,
        se_channels: int | None = None,
    ):
        super().__init__(in_channels, out_channels, stride, skip)
        if exp_channels is None:
            exp_channels = int(round(in_channels * expand_ratio))
        self.exp_channels = exp_channels
        has_expand = not (expand_ratio == 1 and exp_channels == in_channels)
        self.conv_pw = (
            ConvBNAct(in_channels, exp_channels, 1, act=act) if has_expand else nn.Identity()
        )
        self.conv_dw = ConvBNAct(
            exp_channels, exp_channels, kernel_size, stride, groups=exp_channels, act=act
        )
        self.se = _se(exp_channels, in_channels, se_ratio, se_act, se_gate, se_channels)
        self.conv_pwl = ConvBNAct(exp_channels, out_channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))))
        return self._add_residual(x, y)


class DepthwiseSeparable(_Block):
    """kxk depthwise -> [SE] -> 1x1 linear project (MnasNet's "SepConv" op)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        se_ratio: float = 0.0,
        act: ActFactory = nn.ReLU,
        skip: bool = True,
    ):
        super().__init__(in_channels, out_channels, stride, skip)
        self.conv_dw = ConvBNAct(
            in_channels, in_channels, kernel_size, stride, groups=in_channels, act=act
        )
        self.se = _se(in_channels, in_channels, se_ratio, nn.ReLU)
        self.conv_pw = ConvBNAct(in_channels, out_channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_pw(self.se(self.conv_dw(x)))
        return self._add_residual(x, y)


class ConvBlock(_Block):
    """A regular kxk conv -> BN -> act -> [SE] with an optional identity residual.

    MnasNet's space offers a plain convolution as one of its ops; wrapping it
    keeps the SE and skip decisions uniform across ops.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        se_ratio: float = 0.0,
        act: ActFactory = nn.ReLU,
        skip: bool = True,
    ):
        super().__init__(in_channels, out_channels, stride, skip)
        self.conv = ConvBNAct(in_channels, out_channels, kernel_size, stride, act=act)
        self.se = _se(out_channels, in_channels, se_ratio, nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.conv(x))
        return self._add_residual(x, y)


class ClassifierHead(nn.Module):
    """Global average pooling -> optional dropout -> linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mean over H, W rather than AdaptiveAvgPool2d + flatten: one ReduceMean
        # in ONNX and identical on every runtime.
        return self.fc(self.dropout(x.mean((2, 3))))


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters (BN affine included, running stats not)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def init_weights(module: nn.Module) -> None:
    """He init for convs, unit BN, small normal for linears (the torchvision recipe)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
