"""MemNAS: grow and trim on the blocks-of-cells family, the ranking controller, the search rounds."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import onnx
import pytest
import torch

from hwnas.errors import ConfigError, SpaceError
from hwnas.evaluators.base import AccuracyEvaluator
from hwnas.objectives import MemoryEstimator, Objective
from hwnas.profilers.memory import MEMNAS_WEIGHTS, MemoryTerms, estimate, memory_efficiency
from hwnas.searchers import create_searcher
from hwnas.searchers.memnas_controller import RankingTrainer, controller_loss, kendall_tau
from hwnas.spaces.memnas_cells import (
    Cell,
    MemNASSpace,
    grow_candidates,
    grow_trim_candidates,
    normalise_block,
    trim_candidates,
)
from hwnas.threads import torch_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small networks on a shared CPU: one torch thread, as the searchers use."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def space():
    return MemNASSpace(channels=4)


# ---- the network family ------------------------------------------------------------------


def test_canonical_form_drops_orphans_and_orders_edges(space):
    # cell 1 reads nothing that exists (r5) and is dropped; cell 0 is not an output
    # and nobody reads it: dropped too. The edges of cell 2 are listed in sorted order.
    block = (
        Cell(0, "conv3x3", None, "conv3x3", False),
        Cell(5, "conv1x1", None, "conv3x3", True),
        Cell(0, "sep3x3", 0, "conv1x1", True),
    )
    assert normalise_block(block) == (Cell(0, "conv1x1", 0, "sep3x3", True),)
    a = space.parse("conv3x3@0+identity@0* / conv1x1@0;conv3x3@1* / -")
    b = space.parse("identity@0+conv3x3@0* / conv1x1@0;conv3x3@1* / -")
    assert a == b and a.id == b.id
    # a cell reading a dropped cell loses that edge, and is dropped when it had no other
    c = space.parse("- / conv1x1@0;conv3x3@1* / conv3x3@0*")
    assert space.format(c) == "- / conv1x1@0;conv3x3@1* / conv3x3@0*"


def test_grow_last_adds_the_same_cell_to_every_block(space):
    base = space.network(space.default_base())
    grown = grow_candidates(base, space.max_cells, mode="last")
    assert len(grown) == len({net for net, _ in grown}) > 10
    for net, move in grown:
        assert move.kind == "grow"
        assert all(len(b) == 2 for b in net)
        assert len({b for b in net}) == 1  # identical blocks: the same growth everywhere
        assert [c.out for c in net[0]] == [False, True]  # the new cell is the block's output
    full = space.network(space.parse(" / ".join(["conv3x3@0;conv3x3@1;conv3x3@2;conv3x3@3*"] * 3)))
    assert grow_candidates(full, space.max_cells) == []
    assert grow_candidates(full, space.max_cells, mode="last") == []
    with pytest.raises(SpaceError, match="grow mode"):
        grow_candidates(base, space.max_cells, mode="some")


def test_grow_enumerates_every_position_layer_and_connection(space):
    """MemNAS' grow step: inputs r0 or r1 (2 positions) x 5 layers per edge, one edge or an
    unordered pair (10 + 55 = 65 cells), joining the output in place of what it reads or beside
    it; the 20 cells that read only r0 replace nothing, so both connections coincide:
    65 * 2 - 20 = 110 distinct networks."""
    base = space.network(space.default_base())
    grown = grow_candidates(base, space.max_cells)
    nets = {net for net, _ in grown}
    assert len(grown) == len(nets) == 110
    assert nets >= {net for net, _ in grow_candidates(base, space.max_cells, mode="last")}
    for net, _ in grown:
        assert len({b for b in net}) == 1 and all(len(b) == 2 for b in net)
        assert net[0][1].out  # the new cell always feeds the block output
    cells = {net[0][1] for net in nets}
    for pos in (0, 1):
        for op in space.ops:
            assert Cell(pos, op, None, space.ops[0], True) in cells
    # both connection methods: the old output cell kept beside the new one, or replaced
    outs = {tuple(c.out for c in net[0]) for net in nets if net[0][1].in1 == 1}
    assert outs == {(True, True), (False, True)}
    # a deeper block: a new cell may read any earlier representation, clamped per block
    deep = space.network(space.parse("conv3x3@0;conv1x1@1* / conv3x3@0* / conv1x1@0*"))
    reads = {(net[0][-1].in1, net[1][-1].in1) for net, _ in grow_candidates(deep, space.max_cells)}
    assert {(0, 0), (1, 1), (2, 1)} <= reads  # position 2 exists in block 0 only


def test_trim_changes_one_block_only(space):
    base = space.network(space.parse("conv3x3@0;sep3x3@1+conv1x1@0* / conv3x3@0* / conv1x1@0*"))
    trims = trim_candidates(base)
    kinds = {m.kind for _, m in trims}
    assert kinds == {"identity", "remove-edge"}
    for net, _ in trims:
        changed = [b for b in range(len(base)) if net[b] != base[b]]
        assert len(changed) == 1
    # removing the only edge of cell 0 of block 0 leaves cell 1 reading just r0
    net = dict((m.detail, n) for n, m in trims)["block 0 cell 0 edge 1"]
    assert net[0] == (Cell(0, "conv1x1", None, "conv3x3", True),)
    cands = grow_trim_candidates(base, space.max_cells)
    assert base not in {n for n, _ in cands}
    assert len(cands) == len({n for n, _ in cands})


def test_space_builds_and_tokens(space):
    arch = space.parse("conv3x3@0;maxpool3x3@1+sep3x3@0* / identity@0* / -")
    net = space.build(arch).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    tok = space.cell_tokens(arch)
    assert tok.shape == (
        space.blocks * space.max_cells,
        space.cell_tokens(space.default_base()).shape[1],
    )
    assert tok.sum() == space.blocks * space.max_cells * 6  # 5 one-hot fields + block id per slot


# ---- the controller ------------------------------------------------------------------------


def _synthetic_reward(space, arch) -> float:
    """Fewer conv3x3 layers and fewer cells are better (a memory-like signal)."""
    net = space.network(arch)
    conv = sum(op == "conv3x3" for b in net for c in b for _, op in c.edges())
    cells = sum(len(b) for b in net)
    return -1.0 * conv - 0.3 * cells


def test_controller_learns_to_rank_a_round(space):
    rng = np.random.default_rng(0)
    trainer = RankingTrainer(space.cell_tokens(space.default_base()).shape[1], steps=60, seed=0)
    for _ in range(3):
        archs = [space.sample(rng) for _ in range(16)]
        tokens = torch.from_numpy(np.stack([space.cell_tokens(a) for a in archs]))
        trainer.add_round(tokens, list(range(16)), [_synthetic_reward(space, a) for a in archs])
    archs = [space.sample(rng) for _ in range(30)]
    tokens = torch.from_numpy(np.stack([space.cell_tokens(a) for a in archs]))
    truth = [_synthetic_reward(space, a) for a in archs]
    before = kendall_tau(trainer.score(tokens), truth)
    assert np.isfinite(trainer.fit())
    after = kendall_tau(trainer.score(tokens), truth)
    assert after > 0.3 and after > before + 0.2


def test_losses_and_kendall():
    pred = torch.tensor([0.0, 1.0, 2.0])
    assert float(controller_loss(pred, pred, "mse")) == 0.0
    assert float(controller_loss(pred, pred * 10, "hinge")) == 0.0  # right order, wide margins
    assert float(controller_loss(pred, -pred, "hinge")) > 0.0
    with pytest.raises(ConfigError):
        controller_loss(pred, pred, "l1")
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(kendall_tau([1.0], [2.0]))
    assert np.isnan(kendall_tau([1, 2, 3], [5, 5, 5]))


# ---- the search ---------------------------------------------------------------------------------


class LayerCountAccuracy(AccuracyEvaluator):
    """A deterministic stand-in for proxy training: more conv layers, a bit more accuracy."""

    name = "layer-count"

    def evaluate(self, space, archs: Sequence) -> list[float]:
        out = []
        for a in archs:
            net = space.network(a)
            convs = sum(
                op.startswith(("conv", "sep")) for b in net for c in b for _, op in c.edges()
            )
            out.append(80.0 + 2.0 * convs)
        return out

    def config(self) -> dict:
        return {"evaluator": self.name}


class FastExportMemory(MemoryEstimator):
    """The lifetime estimator on a TorchScript-exported graph (the dynamo exporter takes seconds)."""

    def estimate(self, space, arch):
        buf = io.BytesIO()
        torch.onnx.export(
            space.build(arch).eval(), (torch.randn(*space.input_shape),), buf, dynamo=False
        )
        rep = estimate(onnx.load_from_string(buf.getvalue()))
        return int(rep.peak_activation_bytes), int(rep.param_bytes), "estimate"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_memnas_rounds(space):
    obj = Objective(
        LayerCountAccuracy(), memory=FastExportMemory(), reward="soft", memory_target_bytes=10**8
    )
    searcher = create_searcher(
        "memnas", ["rounds=2", "top_k=2", "explore=1", "lam=0.5", "controller_steps=20"]
    )
    hist = searcher.run(space, obj, budget=50, seed=0)
    assert (
        obj.reward_kind == "soft" and obj.memnas_base is None
    )  # the caller's objective is untouched
    assert [r.origin for r in hist.records][0] == "base"
    assert len(hist.records) == 1 + 2 * 3
    rounds = hist.final["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    base_terms = hist.records[0].terms
    for entry, recs in zip(rounds, (hist.records[1:4], hist.records[4:7]), strict=True):
        assert entry["candidates"] == entry["grow"] + entry["trim"] > entry["evaluated"] == 3
        assert -1.0 <= entry["kendall_tau"] <= 1.0 or np.isnan(entry["kendall_tau"])
        best = max(recs, key=lambda r: r.terms.memnas)
        assert entry["chosen"] == best.arch_str and entry["reward"] == pytest.approx(
            best.terms.memnas
        )
        assert entry["param_bytes"] > 0 and entry["peak_activation_bytes"] > 0
        assert [r.info["pick"] for r in recs] == ["top-k", "top-k", "explore"]
    assert hist.final["memory_weights"] == [1.0, 1.0] and hist.final["grow"] == "full"
    # round 1 rewards are ratios to the starting network's terms
    r1 = hist.records[1].terms
    expect = 0.5 * r1.accuracy / base_terms.accuracy - 0.5 * (
        r1.peak_activation_bytes / base_terms.peak_activation_bytes
        + r1.param_bytes / base_terms.param_bytes
    )
    assert r1.memnas == pytest.approx(expect)
    assert r1.reward == pytest.approx(expect)  # the search's reward is MemNAS' R
    # round 2 grew or trimmed round 1's choice
    assert rounds[1]["base"] == rounds[0]["chosen"]
    assert hist.final["final"]["arch"] == rounds[1]["chosen"]


def test_memnas_refuses_other_spaces():
    from hwnas.spaces import get_space

    obj = Objective(LayerCountAccuracy(), memory=FastExportMemory(), reward="memnas")
    with pytest.raises(ConfigError, match="memnas-cells"):
        create_searcher("memnas").run(get_space("nb201"), obj, budget=3)
    with pytest.raises(ConfigError):
        create_searcher("memnas", ["lam=1.5"])
    with pytest.raises(ConfigError, match="memory_weights"):
        create_searcher("memnas", ["memory_weights=half"])
    with pytest.raises(ConfigError, match="grow"):
        create_searcher("memnas", ["grow=all"])


def test_released_code_weights_activations_07_and_params_03():
    base = MemoryTerms(80.0, 1000.0, 400.0)
    cand = MemoryTerms(88.0, 500.0, 800.0)
    paper = memory_efficiency(cand, base, 0.5)
    code = memory_efficiency(cand, base, 0.5, MEMNAS_WEIGHTS["code"])
    assert paper == pytest.approx(0.5 * 1.1 - 0.5 * (0.5 + 2.0))
    assert code == pytest.approx(0.5 * 1.1 - 0.5 * (0.7 * 0.5 + 0.3 * 2.0))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_memnas_search_uses_the_chosen_weights(space):
    obj = Objective(LayerCountAccuracy(), memory=FastExportMemory(), reward="memnas")
    searcher = create_searcher(
        "memnas",
        ["rounds=1", "top_k=1", "explore=0", "memory_weights=code", "grow=last"],
    )
    hist = searcher.run(space, obj, budget=10, seed=0)
    assert hist.final["memory_weights"] == [0.7, 0.3] and hist.final["grow"] == "last"
    b, r = hist.records[0].terms, hist.records[1].terms
    expect = 0.5 * r.accuracy / b.accuracy - 0.5 * (
        0.7 * r.peak_activation_bytes / b.peak_activation_bytes
        + 0.3 * r.param_bytes / b.param_bytes
    )
    assert r.memnas == pytest.approx(expect)
    assert hist.final["rounds"][0]["base_reward"] == pytest.approx(0.5 - 0.5 * 1.0)


class ConstantAccuracy(LayerCountAccuracy):
    name = "constant"

    def evaluate(self, space, archs: Sequence) -> list[float]:
        return [90.0 for _ in archs]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_keep_base_and_no_candidate_evaluated_twice(space):
    """lambda = 1 and a flat accuracy: nothing beats the base, which is kept; later rounds
    pick candidates not evaluated before."""
    obj = Objective(ConstantAccuracy(), memory=FastExportMemory(), reward="memnas")
    searcher = create_searcher(
        "memnas",
        ["rounds=2", "top_k=2", "explore=0", "lam=1", "keep_base=true", "controller_steps=5"],
    )
    hist = searcher.run(space, obj, budget=50, seed=1)
    rounds = hist.final["rounds"]
    base = hist.records[0].arch_str
    assert all(r["chosen"] == base and r["move"].startswith("kept") for r in rounds)
    later = [r.arch.id for r in hist.records[1:]]
    assert len(later) == 4 and len(set(later)) == 4
