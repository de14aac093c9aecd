"""FLOPs, MACs and params of architectures that were imported, not exported here.

A published table (NAS-Bench-201's 15,625 cells) has latencies but no FLOPs.
Exporting every cell to ONNX to count it would take hours, so these figures
are counted on the torch module instead, with ``torch.utils.flop_counter``:

* ``flops`` = what ``FlopCounterMode`` reports: 2 x MACs of convolutions and
  matrix products only (element-wise ops, pooling, batch norm are free);
* ``macs`` = ``flops // 2``;
* ``params`` = ``sum(p.numel() for p in module.parameters())`` (batch norm
  affine weights included, unlike an ONNX graph with BN folded).

These conventions differ slightly from the ONNX counts of
:mod:`hwnas.profilers.flops` used for architectures measured here, so each
row records ``extra.flops_method`` (``torch`` or ``torch-additive``).

When a space's counts are a sum of independent per-decision terms - true of
cell spaces like NAS-Bench-201, where each edge's op costs the same whatever
the other edges hold - :class:`AdditiveCounter` counts one module per
decision option and adds up the terms, which is exact and takes seconds for
the whole space. It checks the additivity on random architectures before
being used, and :func:`fill_static_metrics` falls back to counting every
module when the check fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwnas.arch import Arch
from hwnas.errors import ConfigError
from hwnas.spaces.base import SearchSpace

METHODS = ("auto", "additive", "torch")


def torch_counts(space: SearchSpace, arch: Arch, seed: int = 0) -> dict[str, int]:
    """FLOPs (2 x MACs of conv/matmul), MACs and params of ``arch`` counted on its torch module."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = space.build(arch).eval()
    x = torch.zeros(space.input_shape)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    flops = int(counter.get_total_flops())
    return {
        "flops": flops,
        "macs": flops // 2,
        "params": int(sum(p.numel() for p in module.parameters())),
    }


class AdditiveCounter:
    """Counts of a space whose costs add up over its decisions, from a few modules.

    With a base architecture ``b`` and ``d(i, o)`` = counts of ``b`` with
    decision ``i`` set to option ``o`` minus counts of ``b``, an architecture
    ``a`` costs ``counts(b) + sum_i d(i, a_i)``. Building ``1 + sum(options - 1)``
    modules (25 for NAS-Bench-201) gives every architecture's count.

    Args:
        space: the space.
        verify: random architectures counted directly to check additivity.
        seed: seed of those random architectures.

    Attributes:
        exact: every verified architecture matched exactly; use only if True.
        mismatch: the first architecture that did not match, and both counts.
    """

    keys = ("flops", "macs", "params")

    def __init__(
        self,
        space: SearchSpace,
        verify: int = 6,
        seed: int = 0,
        count: Callable[[SearchSpace, Arch], dict[str, int]] = torch_counts,
    ):
        self.space = space
        dec = space.decisions()
        base_choices = [0] * len(dec)
        base = space.arch(base_choices)
        self.base = count(space, base)
        self.delta: list[list[dict[str, int]]] = []
        for i, n in enumerate(dec):
            row = []
            for o in range(n):
                if o == base_choices[i]:
                    row.append(dict.fromkeys(self.keys, 0))
                    continue
                ch = list(base_choices)
                ch[i] = o
                c = count(space, space.arch(ch))
                row.append({k: c[k] - self.base[k] for k in self.keys})
            self.delta.append(row)
        self.mismatch: tuple[Arch, dict, dict] | None = None
        rng = np.random.default_rng(seed)
        for _ in range(verify):
            a = space.sample(rng)
            want = count(space, a)
            got = self(a)
            if any(want[k] != got[k] for k in self.keys):
                self.mismatch = (a, want, got)
                break
        self.exact = self.mismatch is None

    def __call__(self, arch: Arch) -> dict[str, int]:
        out = dict(self.base)
        for i, c in enumerate(arch.choices):
            for k in self.keys:
                out[k] += self.delta[i][c][k]
        return out


@dataclass
class FillSummary:
    """What :func:`fill_static_metrics` did."""

    filled: int = 0
    method: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def fill_static_metrics(
    store: Any,
    space: SearchSpace,
    archs: Sequence[Arch],
    *,
    method: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> FillSummary:
    """Count FLOPs/MACs/params of ``archs`` on torch modules and cache them in the store.

    Args:
        method: ``additive`` (:class:`AdditiveCounter`; fails if the space is not
            additive), ``torch`` (one module per architecture) or ``auto``
            (additive when verified, else torch).

    Raises:
        ConfigError: unknown method, or ``additive`` asked of a non-additive space.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown FLOPs method '{method}'; use one of {', '.join(METHODS)}")
    out = FillSummary()
    t0 = time.perf_counter()
    if not archs:
        return out
    counter: Callable[[Arch], dict[str, int]]
    # Additive counting builds 1 + sum(options - 1) modules: under "auto", only
    # worth it when that is fewer than one module per architecture.
    terms = 1 + sum(n - 1 for n in space.decisions())
    if method == "additive" or (method == "auto" and len(archs) > terms):
        add = AdditiveCounter(space)
        if add.exact:
            counter, out.method = add, "torch-additive"
        elif method == "additive":
            a, want, got = add.mismatch  # type: ignore[misc]
            raise ConfigError(
                f"space '{space.name}' is not additive ({space.format(a)}: counted {want}, "
                f"sum of terms {got}); use --flops-method torch"
            )
        else:
            out.notes.append(f"'{space.name}' costs are not additive; counted every module")
    if not out.method:

        def counter(a: Arch) -> dict[str, int]:
            return torch_counts(space, a)

        out.method = "torch"
    extra = {
        "flops_method": out.method,
        "flops_convention": "torch.utils.flop_counter: 2*MACs of conv/matmul only",
    }
    shape = space.input_shape
    for i, a in enumerate(archs):
        store.add_arch(a)  # metrics rows reference their architecture
        store.set_metrics(a.id, shape, **counter(a), extra=extra)
        out.filled += 1
        if progress is not None and (i % 100 == 99 or i == len(archs) - 1):
            progress(min(100, i % 100 + 1))
    out.seconds = time.perf_counter() - t0
    return out
