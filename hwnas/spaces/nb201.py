"""NAS-Bench-201 (Dong & Yang, ICLR 2020): the 15,625-cell topology space.

A cell is a 4-node DAG; each of its 6 edges ``j -> i`` (j < i) carries one of
five ops. The network is the benchmark's fixed macro skeleton: a 3x3 stem,
three stages of five identical cells (16, 32, 64 channels) joined by ResNet
basic reduction blocks, then BN-ReLU, global pooling and a linear classifier.
Modules mirror the benchmark's ``TinyNetwork``/``InferCell`` layer for layer,
so parameter counts equal the API's ``get_cost_info`` figures exactly.

Benchmark index order: the benchmark enumerated every cell in lexicographic
edge order (edge ``1<-0`` most significant, ops in :data:`OPS` order) and then
shuffled the list once with Python's ``random.seed(88); random.shuffle``. We
rebuild that permutation (a few ms, cached), so ``from_index(i)`` is the
architecture of row ``i`` of any NAS-Bench-201-derived table, with no data
file needed. Known anchors are checked on first use, so a change in Python's
shuffle would fail loudly instead of silently mislabelling every row.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable

import torch
from torch import nn

from hwnas.arch import Arch
from hwnas.errors import SpaceError
from hwnas.spaces.base import SearchSpace
from hwnas.spaces.registry import SPACES

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to_node, from_node) of each edge, in the order of the standard string.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_ARCHS = len(OPS) ** len(EDGES)  # 15,625
_SHUFFLE_SEED = 88  # the benchmark's own seed (its generate_meta_info)
# Rows of the published benchmark, checked the first time the order is built.
_ANCHORS = {
    0: "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    9: "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
    123: "|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|",
}
_NODE_RE = re.compile(r"^([A-Za-z0-9_]+)~(\d+)$")


# ---- benchmark index order ---------------------------------------------------------


def _lex_index(choices: tuple[int, ...]) -> int:
    idx = 0
    for c in choices:
        idx = idx * len(OPS) + c
    return idx


def _lex_choices(idx: int) -> tuple[int, ...]:
    out = []
    for _ in EDGES:
        idx, c = divmod(idx, len(OPS))
        out.append(c)
    return tuple(reversed(out))


@functools.cache
def _benchmark_order() -> tuple[tuple[int, ...], dict[int, int]]:
    """(benchmark index -> lexicographic index, and its inverse)."""
    order = list(range(NUM_ARCHS))
    random.Random(_SHUFFLE_SEED).shuffle(order)
    for i, text in _ANCHORS.items():
        if _to_string(_lex_choices(order[i])) != text:  # pragma: no cover - Python change
            raise SpaceError(
                "this Python's random.shuffle no longer reproduces NAS-Bench-201's index order "
                f"(row {i} should be {text}); pin the order from the benchmark CSV instead"
            )
    return tuple(order), {lex: i for i, lex in enumerate(order)}


# ---- strings -----------------------------------------------------------------------


def _to_string(choices: tuple[int, ...]) -> str:
    parts, k = [], 0
    for node in (1, 2, 3):
        parts.append("|" + "|".join(f"{OPS[choices[k + j]]}~{j}" for j in range(node)) + "|")
        k += node
    return "+".join(parts)


def _parse_string(text: str) -> tuple[int, ...]:
    form = "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'"
    s = text.strip()
    nodes = s.split("+")
    if len(nodes) != 3:
        raise SpaceError(
            f"NAS-Bench-201 string {text!r} has {len(nodes)} node groups, expected 3 separated by '+' "
            f"in the form {form}"
        )
    choices: list[int] = []
    for node, group in enumerate(nodes, start=1):
        if not (group.startswith("|") and group.endswith("|")) or len(group) < 2:
            raise SpaceError(
                f"node group {node} of {text!r} must be wrapped in '|': got {group!r}; form {form}"
            )
        edges = group[1:-1].split("|")
        if len(edges) != node:
            raise SpaceError(
                f"node {node} of {text!r} must have {node} incoming edge(s), got {len(edges)}; form {form}"
            )
        for j, edge in enumerate(edges):
            m = _NODE_RE.match(edge)
            if not m:
                raise SpaceError(f"edge {edge!r} of {text!r} is not 'op~input'; form {form}")
            op, src = m.group(1), int(m.group(2))
            if op not in OPS:
                raise SpaceError(
                    f"unknown NAS-Bench-201 op {op!r} in {text!r}; valid ops: {', '.join(OPS)}"
                )
            if src != j:
                raise SpaceError(
                    f"edge {edge!r} into node {node} of {text!r} must come from node {j} "
                    f"(edges are listed in input order 0..{node - 1})"
                )
            choices.append(OPS.index(op))
    return tuple(choices)


# ---- modules (mirroring the benchmark's TinyNetwork / InferCell) -------------------


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv (no bias) -> BN: the benchmark's ``nor_conv`` op and reduction convs.

    ``affine=False`` is the DARTS search variant (see :mod:`hwnas.searchers.supernet`).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, affine: bool = True):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class Zero(nn.Module):
    """The ``none`` op. Kept as a multiply by 0, as in the benchmark, so the graph
    (and thus measured latency) matches the benchmark's networks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int, affine: bool = True) -> nn.Module:
    """One of :data:`OPS` as a module; the one definition the space and the supernet share.

    Args:
        affine: whether the convolutions' batch norms learn a scale and shift
            (the benchmark's networks do; DARTS' search cells do not).
    """
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, affine)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise SpaceError(f"unknown NAS-Bench-201 op {name!r}; valid ops: {', '.join(OPS)}")


def cell_forward(
    x: torch.Tensor, edge: Callable[[int, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Run the 4-node cell DAG: node ``i`` is the sum over its :data:`EDGES` ``j -> i``
    of ``edge(k, node_j)``, ``k`` the edge's position; the output is node 3.

    Edges are summed in :data:`EDGES` order, so the sum is the same float for float
    wherever the cell is evaluated (discrete cell or DARTS mixture).
    """
    nodes = [x]
    for k, (to, src) in enumerate(EDGES):
        y = edge(k, nodes[src])
        if to == len(nodes):
            nodes.append(y)
        else:
            nodes[to] = nodes[to] + y
    return nodes[-1]


class NB201Cell(nn.Module):
    """A 4-node cell: node i is the sum of op(node j) over its incoming edges."""

    def __init__(self, ops: tuple[str, ...], channels: int):
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, channels) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cell_forward(x, lambda k, t: self.edges[k](t))


class ResNetBasicBlock(nn.Module):
    """The benchmark's stride-2 reduction block between stages."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


def skeleton(
    channels: int, cells: int, make_cell: Callable[[int], nn.Module]
) -> tuple[nn.Module, list[nn.Module], int]:
    """The benchmark's macro skeleton up to the head: (stem, layers, final channels).

    ``layers`` is three stages of ``cells`` cells made by ``make_cell(channels)``,
    joined by :class:`ResNetBasicBlock` reductions that double the width. The
    space's network and the DARTS supernet both take their body from here.
    """
    stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
    layers: list[nn.Module] = []
    c = channels
    for stage in range(3):
        if stage > 0:
            layers.append(ResNetBasicBlock(c, c * 2, 2))
            c *= 2
        layers.extend(make_cell(c) for _ in range(cells))
    return stem, layers, c


class NB201Network(nn.Module):
    """The NAS-Bench-201 macro skeleton around one cell (N=5 cells per stage, C=16)."""

    def __init__(
        self, ops: tuple[str, ...], num_classes: int = 10, channels: int = 16, cells: int = 5
    ):
        super().__init__()
        self.stem, layers, c = skeleton(channels, cells, lambda ch: NB201Cell(ops, ch))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lastact(self.cells(self.stem(x)))
        return self.classifier(y.mean((2, 3)))


# ---- the space ---------------------------------------------------------------------


@SPACES.register("nb201")
class NB201Space(SearchSpace):
    """NAS-Bench-201: 6 edges x 5 ops = 15,625 cells, CIFAR skeleton (32x32, 10 classes).

    Choices are one op index per edge, edges in string order
    (``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2``), ops in :data:`OPS` order.
    """

    name = "nb201"
    input_size = 32
    num_classes = 10
    ops = OPS

    def decisions(self) -> list[int]:
        return [len(OPS)] * len(EDGES)

    def decision_names(self) -> list[str]:
        return [f"{to}<-{src}" for to, src in EDGES]

    def op_names(self, arch: Arch) -> tuple[str, ...]:
        self.validate(arch)
        return tuple(OPS[c] for c in arch.choices)

    def build(self, arch: Arch) -> NB201Network:
        return NB201Network(self.op_names(arch), num_classes=self.num_classes)

    def format(self, arch: Arch) -> str:
        self.validate(arch)
        return _to_string(arch.choices)

    def parse(self, text: str) -> Arch:
        if not isinstance(text, str):
            raise SpaceError(f"expected a NAS-Bench-201 string, got {type(text).__name__}")
        return self.arch(_parse_string(text))

    # ---- benchmark index ---------------------------------------------------------

    def index_of(self, arch: Arch | str) -> int:
        """Row of ``arch`` in NAS-Bench-201 (and NATS-Bench topology) tables."""
        if isinstance(arch, str):
            arch = self.parse(arch)
        self.validate(arch)
        return _benchmark_order()[1][_lex_index(arch.choices)]

    def from_index(self, index: int) -> Arch:
        """The architecture of benchmark row ``index`` (0..15624)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < NUM_ARCHS:
            raise SpaceError(
                f"NAS-Bench-201 index must be an int in 0..{NUM_ARCHS - 1}, got {index!r}"
            )
        return self.arch(_lex_choices(_benchmark_order()[0][index]))

    def all_archs(self) -> list[Arch]:
        """Every cell, in benchmark index order."""
        return [self.from_index(i) for i in range(NUM_ARCHS)]

    def is_degenerate(self, arch: Arch | str) -> bool:
        """True when every input->output path crosses a ``none`` edge.

        Such a network's output does not depend on its input (only the
        classifier bias survives), so its accuracy is chance level and its
        latency on some devices is near zero: searchers and predictors should
        treat it apart, not as a normal point.
        """
        if isinstance(arch, str):
            arch = self.parse(arch)
        ops = self.op_names(arch)
        reach = [True, False, False, False]
        for (to, src), op in zip(EDGES, ops, strict=True):
            if op != "none" and reach[src]:
                reach[to] = True
        return not reach[3]
