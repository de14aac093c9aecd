"""space_cost: counts of space architectures without one export per network.

The fast tests check the per-cell model against torch's own counts (conv MACs,
parameters), which need no export; the slow ones check the full figure against
the exported graph counted by hwnas.profilers.flops, the reference it replaces.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwnas.errors import ConfigError
from hwnas.profilers.space_cost import Cost, SpaceCost, supports
from hwnas.spaces import get_space
from hwnas.spaces.nb201 import NB201Cell

# Cells where the exporter merges ops (shared ReLU, skip aliasing node 0, repeated pools).
TRICKY = [
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|none~0|skip_connect~1|avg_pool_3x3~2|",
    "|skip_connect~0|+|none~0|none~1|+|avg_pool_3x3~0|avg_pool_3x3~1|nor_conv_3x3~2|",
    "|skip_connect~0|+|avg_pool_3x3~0|skip_connect~1|+|nor_conv_1x1~0|nor_conv_3x3~1|nor_conv_1x1~2|",
]


def _torch_counts(space, arch) -> tuple[int, int]:
    """(conv MACs, parameters with every BN that follows a cell conv folded away) on torch."""
    torch.manual_seed(0)
    model = space.build(arch).eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-1 forwards of a small net: more threads only contend
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(torch.zeros(space.input_shape))
    finally:
        torch.set_num_threads(threads)
    params = sum(p.numel() for p in model.parameters())
    folded = sum(
        2 * m.num_features
        for cell in model.modules()
        if isinstance(cell, NB201Cell)
        for m in cell.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    )
    return int(fc.get_total_flops()) // 2, params - folded


def test_nb201_cell_counts_agree_with_torch_differences():
    """Unit MACs and params move exactly as torch's when cells change (the skeleton cancels)."""
    space = get_space("nb201")
    sc = SpaceCost(space)
    rng = np.random.default_rng(0)
    archs = [space.parse(t) for t in TRICKY] + [space.sample(rng) for _ in range(2)]
    ref_arch = archs[0]
    ref_macs, ref_params = _torch_counts(space, ref_arch)
    ref = sc.units(ref_arch)
    for a in archs[1:]:
        macs, params = _torch_counts(space, a)
        got = sc.units(a) - ref
        assert got.macs == macs - ref_macs, space.format(a)
        assert got.params == params - ref_params, space.format(a)


def test_nb201_cell_merges_shared_ops():
    """Two convs reading one node share a ReLU; a skip makes node 1 the input tensor itself."""
    from hwnas.profilers.space_cost import _nb201_cell

    c, s = 16, 32
    hw = c * s * s
    conv3 = 2 * hw * c * 9
    # Edges 1<-0 and 2<-0 both nor_conv_3x3 read node 0: one ReLU for both.
    ops = ("nor_conv_3x3", "nor_conv_3x3", "skip_connect", "skip_connect", "skip_connect", "none")
    cell = _nb201_cell(ops, c, s)
    relus = 1 + 0  # node 0 once; node 1 feeds no conv
    adds = 1 + 2
    muls = 1
    assert cell.flops == 2 * conv3 + relus * hw + adds * hw + muls * hw
    # With 1<-0 a skip, convs on node 0 and node 1 read the same tensor: one ReLU again.
    ops2 = ("skip_connect", "nor_conv_1x1", "nor_conv_1x1", "none", "none", "none")
    cell2 = _nb201_cell(ops2, c, s)
    conv1 = 2 * hw * c
    # none~0 and none~1 read the same tensor too: one Mul for both, plus none~2.
    assert cell2.flops == 2 * conv1 + 1 * hw + (1 + 2) * hw + 2 * hw


def test_unsupported_space_is_a_config_error():
    space = get_space("mobilenetv2-channels")
    assert not supports(space)
    with pytest.raises(ConfigError, match="one export per architecture"):
        SpaceCost(space)


def test_cost_arithmetic():
    assert Cost(3, 2, 1) + Cost(1, 1, 1) - Cost(1, 0, 0) == Cost(3, 3, 2)
    assert Cost(1, 2, 3).scale(5) == Cost(5, 10, 15)


@pytest.mark.slow
def test_nb201_equals_exported_graph():
    """Exact agreement with export + count, including merged ops (about 1 min per export here)."""
    from hwnas.predictors.encoders import export_arch
    from hwnas.profilers.flops import count

    space = get_space("nb201")
    sc = SpaceCost(space)
    rng = np.random.default_rng(1)
    for a in [space.parse(t) for t in TRICKY] + [space.sample(rng)]:
        r = count(export_arch(space, a))
        assert sc(a) == Cost(r.flops, r.macs, r.params), space.format(a)


@pytest.mark.slow
def test_mnasnet_agrees_with_exported_graph():
    """Per-layer exports summed give the whole network's count within 0.5%."""
    from hwnas.predictors.encoders import export_arch
    from hwnas.profilers.flops import count

    space = get_space("mnasnet")
    sc = SpaceCost(space)
    rng = np.random.default_rng(3)
    for a in [space.sample(rng) for _ in range(2)]:
        r = count(export_arch(space, a))
        got = sc(a)
        assert got.flops == pytest.approx(r.flops, rel=5e-3)
        assert got.macs == pytest.approx(r.macs, rel=5e-3)
        assert got.params == pytest.approx(r.params, rel=5e-3)


def test_flops_encoding_uses_space_cost(monkeypatch):
    """The flops encoder's hook: a supported space is never exported per architecture."""
    from hwnas.predictors import encoders
    from hwnas.profilers import space_cost

    space = get_space("nb201")
    archs = [space.from_index(i) for i in range(4)]
    monkeypatch.setattr(encoders, "export_arch", lambda *a, **k: pytest.fail("exported"))
    monkeypatch.setattr(
        space_cost, "count_flops", lambda sp, aa, **k: np.arange(len(aa), dtype=np.float64)
    )
    x = encoders.get_encoding("flops").encode_archs(space, archs)
    assert x.shape == (4, 1)
    assert np.allclose(x[:, 0], np.arange(4) / 1e6)
