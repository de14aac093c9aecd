"""The network family MemNAS grows and trims: a small CNN of blocks of cells.

MemNAS (Liu et al., CVPR 2020) searches a CIFAR-10 network of five blocks,
each a chain of cells; a cell reads one or two of the block's intermediate
representations ``r_0 .. r_i`` through one layer each and is described by
five binary vectors (two inputs, two layer types, an output flag). This is
that family at desktop size, registered as the space ``memnas-cells``:

* stem: 3x3 conv (``channels``), BN, ReLU;
* ``blocks`` blocks; every block after the first starts with a fixed
  stride-2 3x3 conv doubling the width (the searched cells keep the width);
* a block holds up to ``max_cells`` cells. Cell ``i`` computes
  ``r_{i+1} = L1(r_{I1}) + L2(r_{I2})`` with ``I1, I2`` in ``0..i`` (``r_0``
  is the block input), a layer being one of :data:`CELL_OPS`; either edge
  may be absent (a one-layer cell). The block output is the sum of the
  representations of the cells flagged as outputs (``r_0`` for an empty
  block);
* global average pooling and a linear classifier.

An architecture is a fixed-length list of integers: per block and cell
slot, ``(in1, op1, in2, op2, out)`` with ``in = 0`` for an absent edge and
``in = j + 1`` for ``r_j``. :meth:`MemNASSpace.arch` normalises every
architecture to a canonical form (cells without inputs or consumers dropped,
survivors packed to the front, the two edges of a cell in a fixed order),
so one network has one id, whatever list described it.

Grow and trim (MemNAS section 3.1, arXiv 1907.09569), on canonical networks:

* grow: add the *same* new cell to every block, enumerating, as MemNAS does,
  every input position x layer type x connection method: each of its one or
  two edges reads any representation ``r_0 .. r_n`` of the block (position
  ``j`` is clamped to the block's last representation in shorter blocks, so
  "the same cell" stays defined across blocks) through any layer of
  :data:`CELL_OPS`, and the new cell joins the block output either in place
  of the output cells it reads (``replace``: the block gets deeper) or beside
  the existing outputs (``add``: the block gets wider). ``grow="last"`` keeps
  the earlier, smaller set (the new cell reads the last output cell, the
  second edge the same representation or the block input, ``replace`` only);
* trim: within *one* block, replace one layer by the identity, or remove one
  edge; cells left without inputs, and cells whose outputs nobody reads any
  more, are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from hwnas.arch import Arch
from hwnas.errors import SpaceError
from hwnas.models.blocks import ConvBNAct
from hwnas.spaces.base import SearchSpace
from hwnas.spaces.registry import SPACES

CELL_OPS: tuple[str, ...] = ("conv3x3", "conv1x1", "sep3x3", "maxpool3x3", "identity")
FIELDS = 5  # in1, op1, in2, op2, out


@dataclass(frozen=True)
class Cell:
    """One cell: up to two (input representation, layer) edges and an output flag.

    ``in1``/``in2`` index the block's representations (0 = block input,
    ``j`` = output of cell ``j - 1``); ``None`` is an absent edge.
    """

    in1: int | None
    op1: str
    in2: int | None
    op2: str
    out: bool

    def edges(self) -> list[tuple[int, str]]:
        return [(i, o) for i, o in ((self.in1, self.op1), (self.in2, self.op2)) if i is not None]


Block = tuple[Cell, ...]
Network = tuple[Block, ...]


# ---- canonical form ------------------------------------------------------------------


def normalise_block(cells: Sequence[Cell]) -> Block:
    """Drop cells without inputs or consumers, pack the rest, order each cell's edges."""
    n = len(cells)
    alive = [True] + [False] * n  # representation r_j is computed
    edges: list[list[tuple[int, str]]] = []
    for i, c in enumerate(cells):
        e = [(src, op) for src, op in c.edges() if 0 <= src <= i and alive[src]]
        edges.append(e)
        alive[i + 1] = bool(e)
    used = [False] * n
    for i in range(n - 1, -1, -1):
        if not alive[i + 1]:
            continue
        consumed = any(
            used[k] and any(src == i + 1 for src, _ in edges[k]) for k in range(i + 1, n)
        )
        used[i] = cells[i].out or consumed
    keep = [i for i in range(n) if used[i]]
    remap = {0: 0, **{i + 1: k + 1 for k, i in enumerate(keep)}}
    out: list[Cell] = []
    for i in keep:
        e = sorted((remap[src], op) for src, op in edges[i])
        (i1, o1), rest = e[0], e[1:]
        i2, o2 = rest[0] if rest else (None, CELL_OPS[0])
        out.append(Cell(i1, o1, i2, o2, bool(cells[i].out)))
    return tuple(out)


def normalise(net: Sequence[Sequence[Cell]]) -> Network:
    return tuple(normalise_block(b) for b in net)


def _out_reps(block: Block) -> list[int]:
    return [i + 1 for i, c in enumerate(block) if c.out]


# ---- grow and trim ---------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """How a candidate was made from its base (kept in the search history)."""

    kind: str  # "grow" | "identity" | "remove-edge"
    detail: str


#: How a grown cell joins the block output (see the module docstring).
CONNECTIONS: tuple[str, ...] = ("replace", "add")
#: The grow enumerations: MemNAS' full one, and the earlier last-output-only one.
GROW_MODES: tuple[str, ...] = ("full", "last")


def grow_candidates(
    net: Network, max_cells: int, ops: Sequence[str] = CELL_OPS, mode: str = "full"
) -> list[tuple[Network, Move]]:
    """Every way of adding the same new cell to every block (none if a block is full).

    Args:
        mode: ``full`` (every input position x layer type x connection method,
            MemNAS' grow step) or ``last`` (the new cell reads the last output
            cell; the smaller set of earlier versions, kept to reproduce them).
    """
    if mode not in GROW_MODES:
        raise SpaceError(f"unknown grow mode {mode!r}; use one of {', '.join(GROW_MODES)}")
    if any(len(b) >= max_cells for b in net):
        return []
    if mode == "last":
        return _grow_last(net, ops)
    positions = range(max(len(b) for b in net) + 1)
    edges = [(p, op) for p in positions for op in ops]
    out: list[tuple[Network, Move]] = []
    seen: set[Network] = set()
    for a, (p1, op1) in enumerate(edges):
        for second in [None, *edges[a:]]:  # an unordered pair of edges, or one edge
            for conn in CONNECTIONS:
                blocks = []
                for b in net:
                    i1 = min(p1, len(b))
                    i2 = None if second is None else min(second[0], len(b))
                    reads = {i1} if i2 is None else {i1, i2}
                    cells = [
                        replace(c, out=False) if conn == "replace" and i + 1 in reads else c
                        for i, c in enumerate(b)
                    ]
                    op2 = ops[0] if second is None else second[1]
                    cells.append(Cell(i1, op1, i2, op2, True))
                    blocks.append(tuple(cells))
                cand = normalise(blocks)
                if cand not in seen:  # clamped positions and symmetric pairs coincide
                    seen.add(cand)
                    desc = f"{op1}@{p1}" + ("" if second is None else f"+{second[1]}@{second[0]}")
                    out.append((cand, Move("grow", f"{desc} {conn}")))
    return out


def _grow_last(net: Network, ops: Sequence[str]) -> list[tuple[Network, Move]]:
    """The earlier grow step: read the last output cell, ``replace`` only."""
    out: list[tuple[Network, Move]] = []
    seen: set[Network] = set()
    for second in ("same", "input", "none"):
        for op1 in ops:
            for op2 in ops if second != "none" else (ops[0],):
                blocks = []
                for b in net:
                    reps = _out_reps(b)
                    src = reps[-1] if reps else 0
                    in2 = {"same": src, "input": 0, "none": None}[second]
                    if second == "input" and src == 0:
                        in2 = 0  # an empty block: both edges read the input
                    cells = [replace(c, out=False) if i + 1 == src else c for i, c in enumerate(b)]
                    cells.append(Cell(src, op1, in2, op2, True))
                    blocks.append(tuple(cells))
                desc = f"{op1}@last" + (
                    "" if second == "none" else f"+{op2}@{second if second == 'input' else 'last'}"
                )
                cand = normalise(blocks)
                if cand not in seen:  # op pairs on one input are symmetric
                    seen.add(cand)
                    out.append((cand, Move("grow", desc)))
    return out


def trim_candidates(net: Network) -> list[tuple[Network, Move]]:
    """Every single-layer trim inside one block: a layer to identity, or one edge removed."""
    out: list[tuple[Network, Move]] = []
    for b, block in enumerate(net):
        for i, c in enumerate(block):
            for slot in (1, 2):
                src = c.in1 if slot == 1 else c.in2
                op = c.op1 if slot == 1 else c.op2
                if src is None:
                    continue
                if op != "identity":
                    new = replace(c, **{f"op{slot}": "identity"})
                    blocks = list(net)
                    blocks[b] = block[:i] + (new,) + block[i + 1 :]
                    out.append(
                        (normalise(blocks), Move("identity", f"block {b} cell {i} layer {slot}"))
                    )
                new = replace(c, **{f"in{slot}": None})
                blocks = list(net)
                blocks[b] = block[:i] + (new,) + block[i + 1 :]
                out.append(
                    (normalise(blocks), Move("remove-edge", f"block {b} cell {i} edge {slot}"))
                )
    return out


def grow_trim_candidates(
    net: Network, max_cells: int, ops: Sequence[str] = CELL_OPS, grow: str = "full"
) -> list[tuple[Network, Move]]:
    """Grow and trim candidates of ``net``, each network once, ``net`` itself left out.

    Args:
        grow: the grow enumeration (:data:`GROW_MODES`, see :func:`grow_candidates`).
    """
    seen = {net}
    out = []
    for cand, move in grow_candidates(net, max_cells, ops, grow) + trim_candidates(net):
        if cand not in seen:
            seen.add(cand)
            out.append((cand, move))
    return out


# ---- torch modules ----------------------------------------------------------------------


def _layer(op: str, c: int) -> nn.Module:
    if op == "conv3x3":
        return ConvBNAct(c, c, 3)
    if op == "conv1x1":
        return ConvBNAct(c, c, 1)
    if op == "sep3x3":
        return nn.Sequential(ConvBNAct(c, c, 3, groups=c), ConvBNAct(c, c, 1))
    if op == "maxpool3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    if op == "identity":
        return nn.Identity()
    raise SpaceError(f"unknown MemNAS cell layer {op!r}; valid: {', '.join(CELL_OPS)}")


class MemNASBlock(nn.Module):
    """A block of cells; output = sum of the output cells' representations."""

    def __init__(self, block: Block, channels: int):
        super().__init__()
        self.cells = block
        self.layers = nn.ModuleList(
            nn.ModuleList(_layer(op, channels) for _, op in c.edges()) for c in block
        )
        self.outs = _out_reps(block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reps = [x]
        for c, layers in zip(self.cells, self.layers, strict=True):
            e = c.edges()
            y = layers[0](reps[e[0][0]])
            if len(e) > 1:
                y = y + layers[1](reps[e[1][0]])
            reps.append(y)
        if not self.outs:
            return x
        y = reps[self.outs[0]]
        for j in self.outs[1:]:
            y = y + reps[j]
        return y


class MemNASNetwork(nn.Module):
    """Stem, blocks (stride-2 width-doubling conv between them), pooling, classifier."""

    def __init__(self, net: Network, channels: int = 16, num_classes: int = 10):
        super().__init__()
        self.stem = ConvBNAct(3, channels, 3)
        body: list[nn.Module] = []
        c = channels
        for b, block in enumerate(net):
            if b > 0:
                body.append(ConvBNAct(c, c * 2, 3, stride=2))
                c *= 2
            body.append(MemNASBlock(block, c))
        self.body = nn.Sequential(*body)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(self.stem(x)).mean((2, 3)))


# ---- the space ---------------------------------------------------------------------------

_CELL_RE = re.compile(r"^([a-z0-9]+)@(\d+)(?:\+([a-z0-9]+)@(\d+))?(\*?)$")


@SPACES.register("memnas-cells")
class MemNASSpace(SearchSpace):
    """MemNAS' blocks-of-cells CNN (see the module docstring), 32x32 inputs, 10 classes.

    String form: blocks separated by ``" / "``, cells by ``";"``, a cell as
    ``op@input[+op@input]`` with ``*`` when it feeds the block output, an
    empty block as ``-``; e.g. ``conv3x3@0* / conv3x3@0+identity@0* / -``.

    Args:
        blocks: number of blocks (MemNAS' CIFAR-10 network has five).
        max_cells: cell slots per block (bounds growth).
        channels: stem width; block ``b`` runs at ``channels * 2**b``.
    """

    name = "memnas-cells"
    input_size = 32
    num_classes = 10

    def __init__(
        self,
        input_size: int | None = None,
        num_classes: int | None = None,
        blocks: int = 3,
        max_cells: int = 4,
        channels: int = 16,
    ):
        super().__init__(input_size=input_size, num_classes=num_classes)
        if blocks < 1 or max_cells < 1 or channels < 1:
            raise SpaceError(
                f"memnas-cells needs blocks, max_cells and channels >= 1, got {blocks}, {max_cells}, {channels}"
            )
        self.blocks = int(blocks)
        self.max_cells = int(max_cells)
        self.channels = int(channels)
        self.ops = CELL_OPS

    # ---- decisions <-> networks ----------------------------------------------------

    def decisions(self) -> list[int]:
        one = [self.max_cells + 1, len(self.ops), self.max_cells + 1, len(self.ops), 2]
        return one * (self.blocks * self.max_cells)

    def decision_names(self) -> list[str]:
        names = []
        for b in range(self.blocks):
            for i in range(self.max_cells):
                names += [f"b{b}.c{i}.{f}" for f in ("in1", "op1", "in2", "op2", "out")]
        return names

    def decode(self, choices: Sequence[int]) -> Network:
        """The (not yet normalised) network a choice list describes."""
        net = []
        k = 0
        for _ in range(self.blocks):
            cells = []
            for _ in range(self.max_cells):
                i1, o1, i2, o2, out = (int(v) for v in choices[k : k + FIELDS])
                k += FIELDS
                cells.append(
                    Cell(
                        i1 - 1 if i1 else None,
                        self.ops[o1],
                        i2 - 1 if i2 else None,
                        self.ops[o2],
                        bool(out),
                    )
                )
            net.append(tuple(cells))
        return tuple(net)

    def choices_of(self, net: Sequence[Sequence[Cell]]) -> tuple[int, ...]:
        """The choice list of a network (normalised first).

        Raises:
            SpaceError: more cells in a block than ``max_cells``, or a wrong block count.
        """
        net = normalise(net)
        if len(net) != self.blocks:
            raise SpaceError(
                f"memnas-cells has {self.blocks} blocks, got a network with {len(net)}"
            )
        out: list[int] = []
        for b, block in enumerate(net):
            if len(block) > self.max_cells:
                raise SpaceError(
                    f"block {b} has {len(block)} cells but this space allows {self.max_cells}; "
                    "build the space with a larger max_cells"
                )
            for c in block:
                out += [
                    0 if c.in1 is None else c.in1 + 1,
                    self.ops.index(c.op1) if c.in1 is not None else 0,
                    0 if c.in2 is None else c.in2 + 1,
                    self.ops.index(c.op2) if c.in2 is not None else 0,
                    int(c.out),
                ]
            out += [0] * (FIELDS * (self.max_cells - len(block)))
        return tuple(out)

    def network(self, arch: Arch) -> Network:
        """The canonical network of ``arch``."""
        self.validate(arch)
        return normalise(self.decode(arch.choices))

    def arch(self, choices: Sequence[int]) -> Arch:
        """An architecture in canonical form (any valid choice list is accepted)."""
        raw = Arch(self.name, tuple(int(c) for c in choices))
        self.validate(raw)
        return Arch(self.name, self.choices_of(self.decode(raw.choices)))

    def arch_of(self, net: Sequence[Sequence[Cell]]) -> Arch:
        return Arch(self.name, self.choices_of(net))

    def sample(self, rng: np.random.Generator) -> Arch:
        """A random network: 1..max_cells cells per block, each with valid inputs.

        Uniform draws over the raw decisions would mostly give empty blocks
        (an input index pointing past the cell reads nothing), so cells are
        drawn directly: one or two edges from earlier representations, the
        last cell always an output, earlier ones with probability 1/2.
        """
        net = []
        for _ in range(self.blocks):
            n = int(rng.integers(1, self.max_cells + 1))
            cells = []
            for i in range(n):
                two = bool(rng.random() < 0.5)
                cells.append(
                    Cell(
                        int(rng.integers(0, i + 1)),
                        self.ops[int(rng.integers(len(self.ops)))],
                        int(rng.integers(0, i + 1)) if two else None,
                        self.ops[int(rng.integers(len(self.ops)))],
                        i == n - 1 or bool(rng.random() < 0.5),
                    )
                )
            net.append(tuple(cells))
        return self.arch_of(net)

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change one decision so that the canonical form differs in exactly one decision.

        Normalisation can turn a one-field change into none (an unused cell
        dropped) or several (edges reordered), so random single changes are
        tried until one survives as a single change; failing that (e.g. an
        empty network, where adding a cell takes two fields), the first
        change that alters the network at all is returned.

        Raises:
            SpaceError: no single-decision change alters the network.
        """
        self.validate(arch)
        dec = self.decisions()
        fallback: Arch | None = None
        for _ in range(500):
            i = int(rng.integers(len(dec)))
            new = list(arch.choices)
            new[i] = int((new[i] + 1 + rng.integers(dec[i] - 1)) % dec[i])
            child = self.arch(new)
            diff = sum(a != b for a, b in zip(arch.choices, child.choices, strict=True))
            if diff == 1:
                return child
            if diff > 1 and fallback is None:
                fallback = child
        if fallback is None:
            raise SpaceError(f"no single change alters {self.format(arch)}; sample a new network")
        return fallback

    def build(self, arch: Arch) -> MemNASNetwork:
        return MemNASNetwork(self.network(arch), self.channels, self.num_classes)

    def cell_tokens(self, arch: Arch) -> np.ndarray:
        """One token per cell slot (its five one-hot fields and its block's one-hot): (T, D).

        The input of MemNAS' controller: the encoder RNN reads a candidate cell by cell.
        """
        slot = sum(self.decisions()[:FIELDS])
        onehot = self.encode(arch).reshape(self.blocks * self.max_cells, slot)
        block = np.repeat(np.eye(self.blocks, dtype=np.float32), self.max_cells, axis=0)
        return np.concatenate([onehot, block], axis=1)

    def default_base(self) -> Arch:
        """MemNAS' starting point here: one single-conv cell per block."""
        return self.arch_of([(Cell(0, "conv3x3", None, "conv3x3", True),)] * self.blocks)

    # ---- strings ---------------------------------------------------------------------

    def format(self, arch: Arch) -> str:
        parts = []
        for block in self.network(arch):
            if not block:
                parts.append("-")
                continue
            cells = []
            for c in block:
                s = "+".join(f"{op}@{src}" for src, op in c.edges())
                cells.append(s + ("*" if c.out else ""))
            parts.append(";".join(cells))
        return " / ".join(parts)

    def parse(self, text: str) -> Arch:
        form = "'conv3x3@0* / conv3x3@0+identity@0* / -'"
        if not isinstance(text, str):
            raise SpaceError(f"expected a memnas-cells string, got {type(text).__name__}")
        groups = [g.strip() for g in text.split("/")]
        if len(groups) != self.blocks:
            raise SpaceError(
                f"memnas-cells string {text!r} has {len(groups)} blocks separated by '/', "
                f"expected {self.blocks}; form {form}"
            )
        net = []
        for b, g in enumerate(groups):
            if g == "-":
                net.append(())
                continue
            cells = []
            for i, tok in enumerate(t.strip() for t in g.split(";")):
                m = _CELL_RE.match(tok)
                if not m:
                    raise SpaceError(
                        f"cell {tok!r} of block {b} is not op@input[+op@input][*]; form {form}"
                    )
                o1, s1, o2, s2, star = m.groups()
                for op in (o1, o2):
                    if op is not None and op not in self.ops:
                        raise SpaceError(
                            f"unknown layer {op!r} in {tok!r}; valid: {', '.join(self.ops)}"
                        )
                for src in (s1, s2):
                    if src is not None and int(src) > i:
                        raise SpaceError(
                            f"cell {i} of block {b} reads r{src}, but only r0..r{i} exist before it"
                        )
                cells.append(
                    Cell(
                        int(s1),
                        o1,
                        int(s2) if s2 is not None else None,
                        o2 or self.ops[0],
                        star == "*",
                    )
                )
            net.append(tuple(cells))
        return self.arch_of(net)
