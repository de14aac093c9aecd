"""MnasNet's factorized hierarchical search space (Tan et al., CVPR 2019, Sec. 4.1).

The network keeps MobileNetV2's skeleton — a 3x3 stride-2 stem of 32
channels, seven blocks with MobileNetV2's strides, a 1x1 head of 1280 — and
each block chooses, independently of the others, six things:

=========  ============================================  ===================
decision   options                                        string token
=========  ============================================  ===================
op         conv, dwconv (depthwise separable), mbconv      ``conv``, ``dwconv``,
           with expansion 3, mbconv with expansion 6       ``mbconv3``, ``mbconv6``
kernel     3, 5                                            ``k3``, ``k5``
SE ratio   0, 0.25 (of the block's input width)            ``se0``, ``se0.25``
skip       none, identity residual, pooling               ``noskip``, ``id``,
                                                           ``pool``
filters    0.75, 1.0, 1.25 x MobileNetV2's width           ``f0.75`` ...
layers     -1, 0, +1 x MobileNetV2's count (at least 1)    ``l-1``, ``l+0``, ``l+1``
=========  ============================================  ===================

All layers of a block are the same; only the first one strides. The identity
residual is added only where the input and output shapes agree (never on a
strided or width-changing first layer). The paper's SkipOp is {pooling,
identity residual, no skip}, 4 x 2 x 2 x 3 x 3 x 3 = 432 choices per block.
It does not define the pooling skip further, and the released MnasNet code has
none; here it is a parameter-free shortcut on *every* layer of the block,
``F(x) + AvgPool3x3(x)`` with the layer's stride (so it also bridges the
strided first layer, where the identity cannot), zero-padded to a wider
output or cut to a narrower one (:class:`PoolSkip`). Widths are rounded to the nearest
multiple of 8 — without the usual "never shrink by more than 10 %" bump,
which would make 0.75x equal to 1.0x for the 24-channel block. Because of the
clamp to one layer and that rounding, a few distinct choice vectors build the
same network (block 0 has one layer at ``l-1`` and ``l+0``, and 16 channels
at ``f0.75`` and ``f1.0``).

MobileNetV2 itself is in the space (``dwconv_k3_se0_noskip_f1.0_l+0`` then
``mbconv6_k3_se0_id_f1.0_l+0`` six times) up to its ReLU6 activations; the
space uses ReLU, as MnasNet does. MnasNet-A1 is not exactly in it (its
112-channel block is 96 x 1.17).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.arch import Arch
from hwnas.errors import SpaceError
from hwnas.models.mnasnet import MnasNet, StageCfg
from hwnas.models.mobilenetv2 import MBV2_HEAD, MBV2_SETTINGS, MBV2_STEM
from hwnas.spaces.base import SearchSpace
from hwnas.spaces.registry import SPACES

# (name in strings, op kind for the builder, expansion)
OPS: tuple[tuple[str, str, int], ...] = (
    ("conv", "conv", 1),
    ("dwconv", "dwconv", 1),
    ("mbconv3", "mbconv", 3),
    ("mbconv6", "mbconv", 6),
)
KERNELS: tuple[int, ...] = (3, 5)
SE_RATIOS: tuple[float, ...] = (0.0, 0.25)
# "pool" is appended, not put first as in the paper's list, so that architectures
# stored before it existed keep their meaning (choice 0 = noskip, 1 = id).
SKIPS: tuple[str, ...] = ("noskip", "id", "pool")
FILTER_RATIOS: tuple[float, ...] = (0.75, 1.0, 1.25)
LAYER_DELTAS: tuple[int, ...] = (-1, 0, 1)
FIELDS: tuple[str, ...] = ("op", "kernel", "se", "skip", "filters", "layers")
NUM_BLOCKS = len(MBV2_SETTINGS)

_BLOCK_RE = re.compile(
    r"^(?P<op>[a-z0-9]+)_k(?P<k>\d+)_se(?P<se>[0-9.]+)_(?P<skip>[a-z]+)"
    r"_f(?P<f>[0-9.]+)_l(?P<l>[+-]\d+)$"
)
_BLOCK_FORM = "OP_kK_seR_SKIP_fF_lD, e.g. mbconv6_k5_se0.25_id_f1.0_l+0"


def round_channels(channels: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(channels / divisor + 0.5) * divisor)


def _fmt_ratio(r: float) -> str:
    return "0" if r == 0 else f"{r:g}" if r != 1 else "1.0"


def _block_token(choices: tuple[int, ...]) -> str:
    op, k, se, skip, f, layers = choices
    return (
        f"{OPS[op][0]}_k{KERNELS[k]}_se{_fmt_ratio(SE_RATIOS[se])}_{SKIPS[skip]}"
        f"_f{_fmt_ratio(FILTER_RATIOS[f])}_l{LAYER_DELTAS[layers]:+d}"
    )


def _index(options: tuple, value, what: str, token: str, shown: list[str]) -> int:
    for i, o in enumerate(options):
        if o == value:
            return i
    raise SpaceError(f"{what} {value!r} in block {token!r} is not allowed; choose one of {shown}")


def _parse_block(token: str, b: int) -> list[int]:
    m = _BLOCK_RE.match(token.strip())
    if not m:
        raise SpaceError(f"block {b} {token!r} is malformed; expected {_BLOCK_FORM}")
    op_names = [o[0] for o in OPS]
    if m["op"] not in op_names:
        raise SpaceError(f"op {m['op']!r} in block {b} {token!r} unknown; choose one of {op_names}")
    skip = "noskip" if m["skip"] == "none" else m["skip"]
    try:
        se, f, delta = float(m["se"]), float(m["f"]), int(m["l"])
    except ValueError as exc:
        raise SpaceError(
            f"block {b} {token!r} has a bad number ({exc}); expected {_BLOCK_FORM}"
        ) from exc
    return [
        op_names.index(m["op"]),
        _index(KERNELS, int(m["k"]), "kernel", token, [f"k{k}" for k in KERNELS]),
        _index(SE_RATIOS, se, "SE ratio", token, [f"se{_fmt_ratio(r)}" for r in SE_RATIOS]),
        _index(SKIPS, skip, "skip", token, list(SKIPS)),
        _index(
            FILTER_RATIOS, f, "filter ratio", token, [f"f{_fmt_ratio(r)}" for r in FILTER_RATIOS]
        ),
        _index(LAYER_DELTAS, delta, "layer delta", token, [f"l{d:+d}" for d in LAYER_DELTAS]),
    ]


class PoolSkip(nn.Module):
    """A layer with MnasNet's pooling skip: ``layer(x) + AvgPool3x3(x)``.

    The pool strides like the layer, so the two paths have the same size; the
    shortcut's channels are zero-padded to a wider output (as ResNet's
    parameter-free shortcut does) or cut to a narrower one, so the skip adds
    no parameters, as a pooling op should not.
    """

    def __init__(self, layer: nn.Module, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.layer = layer
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pool(x)
        if self.out_channels > self.in_channels:
            s = F.pad(s, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))
        elif self.out_channels < self.in_channels:
            s = s[:, : self.out_channels]
        return self.layer(x) + s


@SPACES.register("mnasnet")
class MnasNetSpace(SearchSpace):
    """MnasNet's factorized hierarchical space: 7 blocks x 6 decisions (432 per block) on MobileNetV2's skeleton."""

    name = "mnasnet"
    input_size = 224
    num_classes = 1000

    def __init__(
        self,
        input_size: int | None = None,
        num_classes: int | None = None,
        dropout: float = 0.2,
    ):
        super().__init__(input_size=input_size, num_classes=num_classes)
        self._require_input_size(32)
        self.dropout = float(dropout)

    def decisions(self) -> list[int]:
        per_block = [
            len(OPS),
            len(KERNELS),
            len(SE_RATIOS),
            len(SKIPS),
            len(FILTER_RATIOS),
            len(LAYER_DELTAS),
        ]
        return per_block * NUM_BLOCKS

    def decision_names(self) -> list[str]:
        return [f"b{b}.{f}" for b in range(NUM_BLOCKS) for f in FIELDS]

    def stages(self, arch: Arch) -> tuple[StageCfg, ...]:
        """The per-block configuration ``arch`` stands for (widths and depths resolved)."""
        self.validate(arch)
        out = []
        for b, (_, c, n, s) in enumerate(MBV2_SETTINGS):
            op, k, se, skip, f, layers = arch.choices[6 * b : 6 * b + 6]
            _, kind, expand = OPS[op]
            out.append(
                StageCfg(
                    op=kind,
                    kernel=KERNELS[k],
                    expand=expand,
                    se_ratio=SE_RATIOS[se],
                    out=round_channels(c * FILTER_RATIOS[f]),
                    layers=max(1, n + LAYER_DELTAS[layers]),
                    stride=s,
                    skip=SKIPS[skip] == "id",
                )
            )
        return tuple(out)

    def skips(self, arch: Arch) -> tuple[str, ...]:
        """The skip option of each block (``noskip``, ``id`` or ``pool``)."""
        self.validate(arch)
        return tuple(SKIPS[arch.choices[6 * b + 3]] for b in range(NUM_BLOCKS))

    def build(self, arch: Arch) -> MnasNet:
        stages = self.stages(arch)
        net = MnasNet(
            stages,
            num_classes=self.num_classes,
            stem=MBV2_STEM,
            head=MBV2_HEAD,
            dropout=self.dropout,
        )
        # pooling skips wrap the built layers (they hold no weights, so the
        # weights drawn for a seed do not depend on them)
        i, in_ch = 0, MBV2_STEM
        for st, skip in zip(stages, self.skips(arch), strict=True):
            for j in range(st.layers):
                if skip == "pool":
                    stride = st.stride if j == 0 else 1
                    net.blocks[i] = PoolSkip(net.blocks[i], in_ch, st.out, stride)
                i, in_ch = i + 1, st.out
        return net

    def format(self, arch: Arch) -> str:
        self.validate(arch)
        return "|".join(_block_token(arch.choices[6 * b : 6 * b + 6]) for b in range(NUM_BLOCKS))

    def parse(self, text: str) -> Arch:
        if not isinstance(text, str):
            raise SpaceError(f"expected a mnasnet architecture string, got {type(text).__name__}")
        tokens = text.strip().split("|")
        if len(tokens) != NUM_BLOCKS:
            raise SpaceError(
                f"a mnasnet architecture has {NUM_BLOCKS} blocks separated by '|', got {len(tokens)} "
                f"in {text!r}; each block is {_BLOCK_FORM}"
            )
        choices: list[int] = []
        for b, token in enumerate(tokens):
            choices.extend(_parse_block(token, b))
        return self.arch(choices)

    def mobilenetv2_arch(self) -> Arch:
        """The architecture with MobileNetV2's ops, widths and depths (ReLU instead of ReLU6)."""
        first = "dwconv_k3_se0_noskip_f1.0_l+0"
        rest = "mbconv6_k3_se0_id_f1.0_l+0"
        return self.parse("|".join([first] + [rest] * (NUM_BLOCKS - 1)))
