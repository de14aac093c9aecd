"""FLOPs, MACs and params of search-space architectures without exporting each network.

Counting an architecture the exact way (:func:`hwnas.predictors.encoders.space_flops`:
export to ONNX, then :func:`hwnas.profilers.flops.count`) costs one export per
architecture: 14.5 minutes for NAS-Bench-201's 15,625 cells through torch. Yet the
networks of a space share almost everything: the same stem and head, and a few
distinct blocks repeated. :class:`SpaceCost` counts

    cost(arch) = fixed + sum of unit costs(arch)

where a *unit* is a part that varies with the architecture, counted once per
distinct configuration and cached, and *fixed* (stem, reductions, head) is
calibrated once: the exported count of one base architecture minus its units.
The conventions are those of :mod:`hwnas.profilers.flops` on the default
(``dynamo``) export, BN folded into convolutions included.

Units per space:

``nb201``
    a cell at (channels, resolution), counted analytically on a small symbolic
    graph of the cell. The exporter removes ``skip_connect`` (Identity) and merges
    identical pure ops (common-subexpression elimination): two convolutions reading
    one node share one ReLU, two ``none`` or ``avg_pool_3x3`` edges from one node
    share one Mul or AveragePool, and a skip makes node 1 the same tensor as node 0.
    The symbolic graph hash-conses those ops, so the count equals the export's.
``mnasnet``
    one layer (op, kernel, expansion, SE, skip, in/out channels, stride, input
    resolution), exported alone once with the same exporter and weight init and
    counted with the same counter; the few hundred distinct layers cover the space.

Agreement with the export (``tests/test_space_cost.py``, slow part): ``nb201``
exact on every architecture tried (FLOPs, MACs, params), merged ops included.
``mnasnet``: MACs and params exact; FLOPs exact on one sample and 37,632 FLOPs
(0.005%) high on another, where one element-wise op (48x28x28) of a layer
exported alone has no counterpart in the whole network's graph (the exporter's
graph rewrites see across layer boundaries); the test allows 0.5%. The 1x1 head
conv reads the last block's width, so it is a unit too, counted analytically.

Cost: ``nb201`` needs one calibration export, then ~0.3 ms per architecture
(15,625 cells in ~5 s). ``mnasnet`` pays one small export per distinct layer
(a few hundred over a whole campaign), so it wins over exporting each network
only when many architectures share layers, not for one or two.
Memory is not estimated here: the lifetime estimate needs the execution order of
the whole graph, which does not decompose into units.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hwnas.arch import Arch
from hwnas.errors import ConfigError

if TYPE_CHECKING:
    from hwnas.spaces.base import SearchSpace

__all__ = ["Cost", "SpaceCost", "supports"]


@dataclass(frozen=True)
class Cost:
    """FLOPs, MACs and parameters (conventions of :mod:`hwnas.profilers.flops`)."""

    flops: int = 0
    macs: int = 0
    params: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.macs + other.macs, self.params + other.params)

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.flops - other.flops, self.macs - other.macs, self.params - other.params)

    def scale(self, k: int) -> Cost:
        return Cost(self.flops * k, self.macs * k, self.params * k)


Unit = tuple[Hashable, Callable[[], Cost]]
"""A part of a network: a configuration key (cache key) and how to count it once."""


def _export_count(module, input_shape: Sequence[int]) -> Cost:
    """Count ``module`` on its ONNX export (cached on disk by :func:`hwnas.export.to_onnx`)."""
    from hwnas.export import to_onnx
    from hwnas.profilers.flops import count

    art = to_onnx(module, tuple(input_shape), label="space-cost-unit", check=False)
    r = count(art.path)
    return Cost(r.flops, r.macs, r.params)


# ---- nb201: a cell, analytically -----------------------------------------------------


def _nb201_cell(ops: tuple[str, ...], channels: int, size: int) -> Cost:
    """One NAS-Bench-201 cell at ``channels`` x ``size`` x ``size``, as the export counts it.

    Pure ops (ReLU, Mul by 0, AveragePool, Add) are keyed by their op and input
    tensors, so an op the exporter merges is counted once; convolutions have their
    own weights and never merge. Costs follow :mod:`hwnas.profilers.flops`: 1 FLOP
    per output element for ReLU, Mul and Add, 9 for a 3x3 AveragePool; a conv is
    2 FLOPs per MAC with no bias (the BN folded into it at initialisation gives an
    all-zero bias, which the exporter drops).
    """
    hw = channels * size * size
    seen: set[tuple] = set()
    flops = macs = params = 0
    nodes: list[Hashable] = ["input"]

    def pure(kind: str, *inputs: Hashable, cost: int) -> Hashable:
        nonlocal flops
        key = (kind, *inputs)
        if key not in seen:
            seen.add(key)
            flops += cost
        return key

    k = 0
    for node in (1, 2, 3):
        terms: list[Hashable] = []
        for j in range(node):
            op, src = ops[k], nodes[j]
            if op == "skip_connect":
                terms.append(src)
            elif op == "none":
                terms.append(pure("mul0", src, cost=hw))
            elif op == "avg_pool_3x3":
                terms.append(pure("avgpool", src, cost=9 * hw))
            else:
                kernel = 3 if op == "nor_conv_3x3" else 1
                relu = pure("relu", src, cost=hw)
                m = hw * channels * kernel * kernel
                macs += m
                flops += 2 * m
                params += channels * channels * kernel * kernel
                terms.append(("conv", k, relu))
            k += 1
        acc = terms[0]
        for t in terms[1:]:
            acc = pure("add", acc, t, cost=hw)
        nodes.append(acc)
    return Cost(flops, macs, params)


def _nb201_units(space: SearchSpace, arch: Arch) -> list[Unit]:
    from hwnas.spaces.nb201 import OPS

    ops = tuple(OPS[c] for c in arch.choices)
    units: list[Unit] = []
    for stage in range(3):
        c, s = 16 * 2**stage, math.ceil(space.input_size / 2**stage)
        units.append(
            (("nb201-cell5", ops, c, s), lambda ops=ops, c=c, s=s: _nb201_cell(ops, c, s).scale(5))
        )
    return units


# ---- mnasnet: one exported layer per configuration ----------------------------------


def _mnasnet_units(space: SearchSpace, arch: Arch) -> list[Unit]:
    from hwnas.models.blocks import init_weights
    from hwnas.models.mnasnet import make_layer
    from hwnas.models.mobilenetv2 import MBV2_HEAD, MBV2_STEM

    def layer_cost(cfg: tuple, size: int) -> Callable[[], Cost]:
        def run() -> Cost:
            import torch

            torch.manual_seed(0)
            layer = make_layer(*cfg)
            init_weights(layer)
            return _export_count(layer.eval(), (1, cfg[1], size, size))

        return run

    units: list[Unit] = []
    in_ch, size = MBV2_STEM, _conv_out(space.input_size, 2)
    for st in space.stages(arch):
        for i in range(st.layers):
            stride = st.stride if i == 0 else 1
            cfg = (st.op, in_ch, st.out, stride, st.kernel, st.expand, st.se_ratio, st.skip)
            units.append((("mnasnet-layer", cfg, size), layer_cost(cfg, size)))
            in_ch, size = st.out, _conv_out(size, stride)
    # The 1x1 head conv reads the last block's width: its weights vary with the
    # architecture (its ReLU does not and stays in the fixed part).
    m = size * size * in_ch * MBV2_HEAD
    units.append(
        (("mnasnet-head", in_ch, size), lambda m=m, c=in_ch: Cost(2 * m, m, c * MBV2_HEAD))
    )
    return units


def _conv_out(size: int, stride: int) -> int:
    """Output size of a same-padded convolution (kernel 3 or 5, padding k // 2)."""
    return (size - 1) // stride + 1


_UNITS: dict[str, Callable[[SearchSpace, Arch], list[Unit]]] = {
    "nb201": _nb201_units,
    "mnasnet": _mnasnet_units,
}


def supports(space: SearchSpace) -> bool:
    """True when :class:`SpaceCost` can count ``space`` without one export per architecture."""
    return space.name in _UNITS


class SpaceCost:
    """Counts architectures of one space from cached per-unit counts (see the module docstring).

    Args:
        space: a space for which :func:`supports` is true.

    Raises:
        ConfigError: the space has no unit decomposition.
    """

    def __init__(self, space: SearchSpace):
        if not supports(space):
            raise ConfigError(
                f"space '{space.name}' has no per-block FLOPs decomposition "
                f"(only {', '.join(sorted(_UNITS))}); its FLOPs need one export per architecture"
            )
        self.space = space
        self._units_of = _UNITS[space.name]
        self._cache: dict[Hashable, Cost] = {}
        self._fixed: Cost | None = None

    @property
    def distinct_units(self) -> int:
        """How many unit configurations were counted so far."""
        return len(self._cache)

    def units(self, arch: Arch) -> Cost:
        """The sum of the unit counts of ``arch`` (each distinct unit counted once, then cached)."""
        total = Cost()
        for key, counter in self._units_of(self.space, arch):
            if key not in self._cache:
                self._cache[key] = counter()
            total = total + self._cache[key]
        return total

    @property
    def fixed(self) -> Cost:
        """Everything but the units: one exported base architecture minus its units."""
        if self._fixed is None:
            from hwnas.predictors.encoders import export_arch
            from hwnas.profilers.flops import count

            # A middle option of every decision: a typical network, not a corner case.
            base = self.space.arch([n // 2 for n in self.space.decisions()])
            r = count(export_arch(self.space, base))
            self._fixed = Cost(r.flops, r.macs, r.params) - self.units(base)
        return self._fixed

    def __call__(self, arch: Arch) -> Cost:
        """The count of ``arch``, equal to that of its exported graph (see the module docstring)."""
        self.space.validate(arch)
        return self.fixed + self.units(arch)

    def many(
        self, archs: Sequence[Arch], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """``(len(archs), 3)`` int64 array of FLOPs, MACs, params.

        Args:
            progress: called with the number of architectures done since the last
                call (every 500 and at the end), for a progress bar.
        """
        out = np.empty((len(archs), 3), dtype=np.int64)
        fixed = self.fixed
        done = 0
        for i, a in enumerate(archs):
            c = fixed + self.units(a)
            out[i] = (c.flops, c.macs, c.params)
            if progress is not None and (i % 500 == 499 or i == len(archs) - 1):
                progress(i + 1 - done)
                done = i + 1
        return out


_INSTANCES: dict[tuple[str, int, int], SpaceCost] = {}


def for_space(space: SearchSpace) -> SpaceCost:
    """One :class:`SpaceCost` per (space, input size, classes) per process, so that the
    training and the held-out half of a table share the calibration and unit caches."""
    key = (space.name, int(space.input_size), int(space.num_classes))
    if key not in _INSTANCES:
        _INSTANCES[key] = SpaceCost(space)
    return _INSTANCES[key]


def count_flops(space: SearchSpace, archs: Sequence[Arch], *, show: bool = True) -> np.ndarray:
    """ONNX-graph FLOPs (float64) of ``archs``, with a one-line plan and a progress bar.

    The hook of :func:`hwnas.predictors.encoders.space_flops` for spaces that
    :func:`supports`: what took one export per architecture takes one calibration
    export (cached on disk afterwards) and milliseconds per architecture.
    """
    from hwnas.report.progress import err_console, progress

    sc = for_space(space)
    n = len(archs)
    if show and n > 1:
        first = "" if sc._fixed is not None else "one calibration export (~1 min, cached), "
        if space.name == "nb201":
            rest = f"then roughly {max(1, round(n / 3000))} s of counting"
        else:  # the per-layer exports dominate until most layers were seen
            rest = "then one small export per new distinct layer (~1-5 s each, cached)"
        err_console.print(
            f"counting FLOPs of {n} '{space.name}' architectures per distinct "
            f"{'cell' if space.name == 'nb201' else 'layer'}: {first}{rest}"
        )
    with progress(n, f"counting {space.name} FLOPs", enabled=show and n > 1) as bar:
        sc.fixed  # noqa: B018 - calibrate before the bar's clock matters
        out = sc.many(archs, progress=bar.advance)
    return out[:, 0].astype(np.float64)
