"""MnasNet-A1 (Tan et al., 2019): the architecture MnasNet's RL search found.

Described as seven stages of (op, kernel, expansion, SE ratio, width, repeats,
stride) — the same fields the ``mnasnet`` search space decides per block — so
the space builds its candidates with this same :class:`MnasNet` class. (A1
itself is not on the space's width grid: its 112-channel stage is 96 x 1.17.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hwnas.models._registry import register_model
from hwnas.models.blocks import (
    ClassifierHead,
    ConvBlock,
    ConvBNAct,
    DepthwiseSeparable,
    InvertedResidual,
    init_weights,
    make_divisible,
)


@dataclass(frozen=True)
class StageCfg:
    """One MnasNet stage: ``layers`` repeats of the same op; only the first strides.

    ``op`` is ``"conv"``, ``"dwconv"`` or ``"mbconv"`` (then ``expand`` is used);
    ``skip`` asks for identity residuals, applied where shapes allow.
    """

    op: str
    kernel: int
    expand: int
    se_ratio: float
    out: int
    layers: int
    stride: int
    skip: bool = True


MNASNET_A1_STAGES: tuple[StageCfg, ...] = (
    StageCfg("dwconv", 3, 1, 0.0, 16, 1, 1, skip=False),
    StageCfg("mbconv", 3, 6, 0.0, 24, 2, 2),
    StageCfg("mbconv", 5, 3, 0.25, 40, 3, 2),
    StageCfg("mbconv", 3, 6, 0.0, 80, 4, 2),
    StageCfg("mbconv", 3, 6, 0.25, 112, 2, 1),
    StageCfg("mbconv", 5, 6, 0.25, 160, 3, 2),
    StageCfg("mbconv", 3, 6, 0.0, 320, 1, 1),
)


def make_layer(
    op: str,
    in_ch: int,
    out_ch: int,
    stride: int,
    kernel: int,
    expand: int,
    se_ratio: float,
    skip: bool,
) -> nn.Module:
    """One layer of a MnasNet stage (ReLU activations, as in the paper)."""
    if op == "conv":
        return ConvBlock(in_ch, out_ch, stride, kernel, se_ratio, nn.ReLU, skip)
    if op == "dwconv":
        return DepthwiseSeparable(in_ch, out_ch, stride, kernel, se_ratio, nn.ReLU, skip)
    if op == "mbconv":
        return InvertedResidual(in_ch, out_ch, stride, expand, kernel, se_ratio, nn.ReLU, skip)
    raise ValueError(f"unknown MnasNet op {op!r}; expected conv, dwconv or mbconv")


class MnasNet(nn.Module):
    """Stem 3x3 conv (stride 2) -> stages -> 1x1 head conv -> pooled classifier."""

    def __init__(
        self,
        stages: tuple[StageCfg, ...] = MNASNET_A1_STAGES,
        num_classes: int = 1000,
        stem: int = 32,
        head: int = 1280,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.stages_cfg = tuple(stages)
        self.stem = ConvBNAct(3, stem, 3, stride=2, act=nn.ReLU)
        layers: list[nn.Module] = []
        in_ch = stem
        for st in stages:
            for i in range(st.layers):
                layers.append(
                    make_layer(
                        st.op,
                        in_ch,
                        st.out,
                        st.stride if i == 0 else 1,
                        st.kernel,
                        st.expand,
                        st.se_ratio,
                        st.skip,
                    )
                )
                in_ch = st.out
        self.blocks = nn.Sequential(*layers)
        self.conv_head = ConvBNAct(in_ch, head, 1, act=nn.ReLU)
        self.head = ClassifierHead(head, num_classes, dropout)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _create_mnasnet(stages: tuple[StageCfg, ...], width_mult: float = 1.0, **kwargs) -> MnasNet:
    if width_mult != 1.0:
        stages = tuple(
            StageCfg(
                s.op,
                s.kernel,
                s.expand,
                s.se_ratio,
                make_divisible(s.out * width_mult),
                s.layers,
                s.stride,
                s.skip,
            )
            for s in stages
        )
        kwargs.setdefault("stem", make_divisible(32 * width_mult))
    return MnasNet(stages, **kwargs)


@register_model(
    224, help="MnasNet-A1 (with SE), 224x224, 3.89M params", family="MnasNet", demo=True
)
def mnasnet_a1(num_classes: int = 1000, dropout: float = 0.2) -> MnasNet:
    """MnasNet-A1 1.0x with squeeze-and-excitation (3.89M params at 1000 classes)."""
    return _create_mnasnet(MNASNET_A1_STAGES, num_classes=num_classes, dropout=dropout)
