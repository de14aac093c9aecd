"""The DARTS supernet over the NAS-Bench-201 cell.

DARTS (Liu et al., ICLR 2019) relaxes the choice of one operation per edge
into a softmax-weighted sum of every candidate operation: edge ``j -> i``
computes ``sum_o softmax(alpha_ji)_o * o(x_j)``. The architecture weights
``alpha`` (one row of 5 logits per edge) are learned by gradient descent
alongside the network weights; the discrete cell is read off by an argmax.

The cell is NAS-Bench-201's (4 nodes, 6 edges, the 5 operations of
:data:`hwnas.spaces.nb201.OPS`), placed in the benchmark's macro skeleton
(stem, three stages of ``cells`` cells joined by ResNet reduction blocks,
global pooling, linear classifier), with a smaller channel count and depth
as settings so the supernet trains in minutes on a CPU. As in DARTS'
search, batch normalisation inside the mixed operations has no affine
parameters: a learned scale would let an operation's weight hide in its BN.
The ops, the cell's edge order and the skeleton are the space's own
(:func:`~hwnas.spaces.nb201.make_op`, :func:`~hwnas.spaces.nb201.cell_forward`,
:func:`~hwnas.spaces.nb201.skeleton`), so a derived cell is the network the
space builds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hwnas.arch import Arch
from hwnas.errors import ConfigError
from hwnas.spaces.nb201 import EDGES, OPS, cell_forward, make_op, skeleton


def _search_op(name: str, channels: int) -> nn.Module:
    """A candidate op of a mixed edge: the space's op with a non-affine BN."""
    if name not in OPS:
        raise ConfigError(f"unknown NAS-Bench-201 op {name!r}; valid ops: {', '.join(OPS)}")
    return make_op(name, channels, affine=False)


class MixedOp(nn.Module):
    """Every candidate operation of one edge, combined by the edge's softmax weights."""

    def __init__(self, channels: int, ops: Sequence[str] = OPS):
        super().__init__()
        self.ops = nn.ModuleList(_search_op(o, channels) for o in ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = weights[0] * self.ops[0](x)
        for w, op in zip(weights[1:], self.ops[1:], strict=True):
            out = out + w * op(x)
        return out


class SearchCell(nn.Module):
    """The 4-node NAS-Bench-201 cell with a mixed operation on each of its 6 edges."""

    def __init__(self, channels: int, ops: Sequence[str] = OPS):
        super().__init__()
        self.edges = nn.ModuleList(MixedOp(channels, ops) for _ in EDGES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return cell_forward(x, lambda k, t: self.edges[k](t, weights[k]))


class DartsSupernet(nn.Module):
    """The NAS-Bench-201 skeleton with search cells and one shared set of ``alpha``.

    Args:
        channels: stem width (NAS-Bench-201 uses 16); stages use 1x, 2x, 4x.
        cells: search cells per stage (NAS-Bench-201 uses 5).
        num_classes: classifier outputs.
        ops: candidate operations (NAS-Bench-201's five by default).
        alpha_init: scale of the random initial logits (DARTS: 1e-3), so the
            initial mixture is uniform but ties are broken.
        generator: seeds the initial logits.
    """

    def __init__(
        self,
        channels: int = 8,
        cells: int = 1,
        num_classes: int = 10,
        ops: Sequence[str] = OPS,
        alpha_init: float = 1e-3,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if channels < 1 or cells < 1:
            raise ConfigError(
                f"the supernet needs channels >= 1 and cells >= 1 per stage, got {channels}, {cells}"
            )
        self.op_names = tuple(ops)
        self.stem, layers, c = skeleton(channels, cells, lambda ch: SearchCell(ch, ops))
        self.layers = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())
        self.classifier = nn.Linear(c, num_classes)
        init = torch.randn(len(EDGES), len(ops), generator=generator) * alpha_init
        self.alpha = nn.Parameter(init)

    def weight_parameters(self) -> list[nn.Parameter]:
        """The network weights ``w`` (everything but ``alpha``)."""
        return [p for n, p in self.named_parameters() if n != "alpha"]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def edge_weights(self) -> torch.Tensor:
        """Softmax of ``alpha`` over each edge's operations (6 x 5)."""
        return torch.softmax(self.alpha, dim=-1)

    def relaxed_encoding(self) -> torch.Tensor:
        """The edge weights flattened in ``space.encode`` order (edge-major), 30 values."""
        return self.edge_weights().reshape(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.edge_weights()
        y = self.stem(x)
        for layer in self.layers:
            y = layer(y, w) if isinstance(layer, SearchCell) else layer(y)
        y = self.lastact(y)
        return self.classifier(y.mean((2, 3)))

    def derive(self, space_name: str = "nb201", exclude_none: bool = True) -> Arch:
        """The discrete cell: on each edge, the operation of largest ``alpha``.

        Args:
            exclude_none: skip ``none`` in the argmax, as DARTS does (its weight
                measures how much an edge matters, not which operation is best).
        """
        logits = self.alpha.detach().clone()
        if exclude_none and "none" in self.op_names:
            logits[:, self.op_names.index("none")] = -torch.inf
        return Arch(space_name, tuple(int(i) for i in logits.argmax(dim=-1)))
