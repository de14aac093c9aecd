"""Memory term: peak activation and parameter bytes from a lifetime estimate of the ONNX graph."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hwnas.arch import Arch
    from hwnas.spaces.base import SearchSpace
    from hwnas.store import Store


class MemoryEstimator:
    """Peak activation and parameter bytes of each architecture (lifetime estimate).

    The network is exported to ONNX (cached) and :func:`hwnas.profilers.memory.estimate`
    walks tensor lifetimes in the file's node order. Results are kept in the
    store's metrics table when a store is given, so no architecture is
    estimated twice across runs. A cheap term: no device, no training.
    """

    cost = "cheap"

    def __init__(self, store: Store | None = None):
        self.store = store
        self._cache: dict[tuple[str, str], tuple[int, int]] = {}

    def _from_store(self, arch_id: str, shape: str) -> tuple[int, int] | None:
        if self.store is None:
            return None
        row = self.store.metrics(arch_id, shape)
        if row is None or row["peak_activation_bytes"] is None or row["param_bytes"] is None:
            return None
        return int(row["peak_activation_bytes"]), int(row["param_bytes"])

    def estimate(self, space: SearchSpace, arch: Arch) -> tuple[int, int, str]:
        """(peak activation bytes, parameter bytes, provenance)."""
        import torch

        from hwnas.export import to_onnx
        from hwnas.profilers.memory import estimate
        from hwnas.source import ModelSource
        from hwnas.store.sqlite import shape_key

        shape = shape_key(space.input_shape)
        key = (arch.id, shape)
        if key in self._cache:
            return (*self._cache[key], "estimate (cached)")
        hit = self._from_store(arch.id, shape)
        if hit is not None:
            self._cache[key] = hit
            return (*hit, "estimate (store)")
        torch.manual_seed(0)
        art = to_onnx(
            space.build(arch),
            space.input_shape,
            label=arch.id,
            check=False,
            source=ModelSource.of_space(space, arch).to_dict(),
        )
        rep = estimate(art.path)
        value = (int(rep.peak_activation_bytes), int(rep.param_bytes))
        self._cache[key] = value
        if self.store is not None:
            self.store.add_arch(arch, label=space.format(arch))
            self.store.set_metrics(
                arch.id,
                space.input_shape,
                param_bytes=value[1],
                peak_activation_bytes=value[0],
            )
        return (*value, "estimate")

    def config(self) -> dict[str, Any]:
        return {"memory": "lifetime-estimate", "order": "onnx"}
