"""AutoSlim: analytic FLOPs, the width grid, BN recalibration, sandwich training, greedy slimming."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import onnx
import pytest
import torch

from hwnas.errors import ConfigError
from hwnas.evaluators.base import AccuracyEvaluator
from hwnas.evaluators.data import load_images
from hwnas.models import count_params
from hwnas.models.mobilenetv2 import build_from_channels
from hwnas.models.slimmable import SlimmableMobileNetV2
from hwnas.objectives import LatencySource, MemoryEstimator, Objective
from hwnas.profilers.flops import count
from hwnas.searchers import create_searcher
from hwnas.searchers.autoslim import parse_flops, uniform_channels_for_flops
from hwnas.searchers.slimmable import (
    ChannelGrid,
    SlimTrainSettings,
    evaluate_width,
    mobilenetv2_macs,
    recalibrate_bn,
    train_slimmable,
)
from hwnas.spaces import get_space
from hwnas.threads import torch_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small networks on a shared CPU: one torch thread, as the searchers use."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def space():
    return get_space("mobilenetv2-channels", input_size=32, num_classes=10)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    "steps", [[2] * 25, [0, 1, 2, 0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 1, 2, 0, 1, 2, 2, 1, 0, 1, 2]]
)
def test_analytic_macs_match_the_onnx_counter(space, steps):
    ch = space.channels(space.arch(steps))
    buf = io.BytesIO()
    net = build_from_channels(ch, space.num_classes).eval()
    torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), buf, dynamo=False)
    rep = count(onnx.load_from_string(buf.getvalue()))
    assert mobilenetv2_macs(ch, 32, space.num_classes) == rep.macs


def test_grid_slims_one_group_skipping_rounded_duplicates(space):
    grid = ChannelGrid(space, 4)
    assert grid.channels(grid.widest()) == space.channels(space.arch([4] * 25))
    stem = space.decision_names().index("stem")
    # the stem's 10 % and 20 % steps both round to 8 channels: one slim goes to step 0 from 2
    steps = grid.widest()
    steps[stem] = 2
    assert grid.widths[stem][:2] == [8, 8]
    slimmed = grid.slim(steps, stem)
    assert slimmed is not None and slimmed[stem] < 2
    assert grid.channels(slimmed)[stem] < grid.channels(steps)[stem]
    assert grid.slim(grid.narrowest(), stem) is None
    with pytest.raises(ConfigError):
        ChannelGrid(space, 10)


def test_bn_recalibration_is_the_average_of_the_batches(space):
    grid = ChannelGrid(space, 2)
    torch.manual_seed(0)
    net = SlimmableMobileNetV2(grid.channels(grid.widest()), 10)
    ch = grid.channels([1] * 25)
    net.set_channels(ch)
    batches = [torch.randn(8, 3, 32, 32) for _ in range(3)]
    recalibrate_bn(net, batches)
    c = ch[0]
    conv = net.net.stem[0]
    means = [
        torch.nn.functional.conv2d(x, conv.weight[:c], None, 2, 1).mean((0, 2, 3)) for x in batches
    ]
    expect = torch.stack(means).mean(0)
    torch.testing.assert_close(net.net.stem[1].running_mean[:c], expect, rtol=1e-4, atol=1e-5)
    # the recalibrated slice, copied out, computes what the slimmable network computes
    net.eval()
    sub = net.subnet(ch).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(sub(x), net(x), rtol=1e-4, atol=1e-4)


def test_sandwich_rule_and_inplace_distillation(space, monkeypatch):
    import hwnas.searchers.slimmable as slim

    grid = ChannelGrid(space, 1)
    data = load_images("digits", 32, max_samples=160, seed=0)
    torch.manual_seed(0)
    net = SlimmableMobileNetV2(grid.channels(grid.widest()), 10)
    widths: list[list[int]] = []
    set_channels = net.set_channels
    monkeypatch.setattr(net, "set_channels", lambda ch: (widths.append(list(ch)), set_channels(ch)))
    targets: list[torch.Tensor] = []
    soft_ce = slim._soft_ce
    monkeypatch.setattr(
        slim, "_soft_ce", lambda logits, soft: (targets.append(soft), soft_ce(logits, soft))[1]
    )
    calib = [data.images[:64]]
    before = evaluate_width(net, grid.channels(grid.widest()), calib, data)[1]
    widths.clear()
    settings = SlimTrainSettings(epochs=2, batch_size=32, lr=0.1, num_random=2)
    losses = train_slimmable(net, grid, data, settings, 0)
    steps = 2 * 5
    widest, narrowest = grid.channels(grid.widest()), grid.channels(grid.narrowest())
    # each step: the largest, the smallest and two random widths; then back to the largest
    assert len(widths) == steps * 4 + 1 and widths[-1] == widest
    assert all(widths[4 * k] == widest and widths[4 * k + 1] == narrowest for k in range(steps))
    assert len({tuple(w) for w in widths}) > 3
    # in-place distillation: every other width learns from the largest's detached predictions
    assert len(targets) == steps * 3
    assert all(
        not t.requires_grad and torch.allclose(t.sum(1), torch.ones(len(t))) for t in targets
    )
    assert len(losses) == 2 and all(np.isfinite(losses))
    after = evaluate_width(net, widest, calib, data)[1]
    assert after < before


class FlopsAccuracy(AccuracyEvaluator):
    """A stand-in for proxy training from scratch (not what is tested here)."""

    name = "flops-accuracy"

    def evaluate(self, space, archs: Sequence) -> list[float]:
        return [float(mobilenetv2_macs(space.channels(a), 32, 10)) / 1e5 for a in archs]

    def config(self) -> dict:
        return {"evaluator": self.name}


class MacsLatency(LatencySource):
    """A stand-in device: 1 ms per million multiply-accumulates."""

    def latency_ms(self, space, archs):
        return [(mobilenetv2_macs(space.channels(a), 32, 10) / 1e6, "macs") for a in archs]

    def config(self) -> dict:
        return {"latency": "macs"}


class ParamMemory(MemoryEstimator):
    """A stand-in memory estimate: 4 bytes per parameter, activations 0 (no export)."""

    def estimate(self, space, arch):
        return 0, 4 * count_params(space.build(arch)), "params"


def test_autoslim_search_meets_targets_in_order(space):
    grid = ChannelGrid(space, 1)
    widest = space.arch(grid.widest())
    widest_ms = MacsLatency().latency_ms(space, [widest])[0][0]
    widest_bytes = ParamMemory().estimate(space, widest)[1]
    lat_t, mem_t = 0.9 * widest_ms, int(0.9 * widest_bytes)
    obj = Objective(
        FlopsAccuracy(),
        MacsLatency(),
        ParamMemory(),
        reward="constraint",
        latency_target_ms=lat_t,  # the objective's own targets join the settings' ones
        memory_target_bytes=mem_t,
    )
    searcher = create_searcher(
        "autoslim",
        [
            "max_step=1",
            "epochs=1",
            "max_samples=120",
            "calib_batch_size=32",
            "flops_targets=95%,88%",
        ],
    )
    hist = searcher.run(space, obj, budget=10, seed=0)
    final = hist.final
    # 120 digits, 15 % held out: fewer than the paper's 2,000, so all training images, said so
    bn = final["bn_calibration"]
    assert 90 <= bn["images"] < 120 and bn["requested"] == 2000 and bn["note"].startswith("all")
    assert bn["batches"] == -(-bn["images"] // 32)
    path = final["path"]
    flops = [p["flops"] for p in path]
    assert all(a > b for a, b in zip(flops, flops[1:], strict=False))  # every step slims
    assert all(p["slimmed"] in space.decision_names() for p in path[1:])
    met = {t["kind"] + t["text"]: t["met_at"] for t in final["targets"]}
    assert set(met) == {"flops95%", "flops88%", f"latency{lat_t:g}ms", f"memory{mem_t}B"}
    assert met["flops95%"] < met["flops88%"]
    hit_targets = [t for c in final["configs"] for t in c["targets"]]
    assert sorted(hit_targets) == sorted(
        ["flops<=95%", "flops<=88%", f"latency<={lat_t:g}ms", f"memory<={mem_t}B"]
    )

    def value(kind, step):
        arch = space.arch(path[step]["steps"])
        if kind == "flops":
            return path[step]["flops"]
        if kind == "latency":
            return MacsLatency().latency_ms(space, [arch])[0][0]
        return ParamMemory().estimate(space, arch)[1]

    for t in final["targets"]:
        bound = (
            parse_flops(t["text"], final["widest_flops"]) if t["kind"] == "flops" else t["value"]
        )
        k = t["met_at"]
        # the first configuration meeting the target: the one before did not
        assert value(t["kind"], k) <= bound < value(t["kind"], k - 1)
    for c, rec in zip(final["configs"], hist.records, strict=True):
        assert space.channels(rec.arch) == c["channels"] and rec.origin == "autoslim"
        assert rec.feasible == (
            c["step"] >= max(met[f"latency{lat_t:g}ms"], met[f"memory{mem_t}B"])
        )


def test_targets_and_baselines(space):
    assert parse_flops("50%", 1000.0) == 500.0
    assert parse_flops("12M", 1.0) == 12e6 and parse_flops("1.5k", 1.0) == 1500.0
    for bad in ("", "50", "-3M", "12X"):
        if bad == "50":
            assert parse_flops(bad, 1.0) == 50.0
            continue
        with pytest.raises(ConfigError):
            parse_flops(bad, 1.0)
    target = 2.0 * mobilenetv2_macs(space.channels(space.arch([3] * 25)), 32, 10)
    ratio, ch = uniform_channels_for_flops(space, target, input_size=32)
    got = 2.0 * mobilenetv2_macs(ch, 32, 10)
    assert abs(got - target) / target < 0.1 and 0.3 < ratio < 0.9
    obj = Objective(FlopsAccuracy(), reward="constraint", memory_target_bytes=10**9)
    with pytest.raises(ConfigError, match="mobilenetv2-channels"):
        create_searcher("autoslim").run(get_space("nb201"), obj, budget=1)
    with pytest.raises(ConfigError, match="latency source"):
        create_searcher(
            "autoslim", ["latency_targets=5ms", "epochs=1", "max_samples=100", "max_step=0"]
        ).run(space, obj, budget=1)
