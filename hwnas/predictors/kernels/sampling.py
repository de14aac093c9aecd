"""Kernel configurations to measure: sampling, one-kernel torch modules, calibration networks.

nn-Meter trains each kernel regressor on configurations drawn from a *prior*:
the distribution of configurations that real networks use (a 1x1 conv at
7x7 has hundreds of channels, a stem conv at 224x224 has three), then adds
samples around the configurations the first regressor predicts worst
(adaptive sampling). We do the same: for convolutions (dense, grouped and
depthwise), poolings and linear layers :func:`sample_config` draws
:data:`EMPIRICAL_SHARE` of its samples from the configurations the zoo models
and the search spaces really contain (:mod:`.prior`, read from the modules),
half of them moved to neighbouring widths; the rest, and every other type,
come from a parametric prior modelled on MobileNetV2 / MnasNet / ResNet
layers (resolutions 7 to 224 and CIFAR's 8 to 32, channels 16 to 1280
coupled to the resolution, kernels 1/3/5/7, strides 1/2, expansion ratios
3/4/6), so the regressors also see configurations nobody uses yet.
:func:`perturb_config` samples the neighbourhood of a badly predicted one.

Every configuration is a tuple of plain values, stored in the measurement
database as an :class:`~hwnas.arch.Arch` of space ``kernel:<type>``, and
:func:`build_kernel` turns it back into a one-kernel torch module.

Calibration networks (space ``kernel-net``) are small random networks built
from the zoo's blocks (MBConv, depthwise-separable, ResNet basic blocks, with
or without SE) at random resolutions and widths. They are measured whole;
the predictor uses them to learn how kernels measured alone relate to the
same kernels inside a model (see :mod:`hwnas.predictors.kernel`). None of
them is a zoo model.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.arch import Arch
from hwnas.errors import ConfigError
from hwnas.predictors.kernels.data import KERNEL_SPACE_PREFIX, NETWORK_SPACE

SAMPLED_TYPES = (
    "conv",
    "dwconv",
    "se",
    "add",
    "fc",
    "gap",
    "maxpool",
    "avgpool",
    "concat",
    "bn",
    "elementwise",
)

# Share of each type in a sample of N kernels: convolutions dominate real
# networks' latency and vary the most, so they get most of the budget.
TYPE_WEIGHTS = {
    "conv": 0.34,
    "dwconv": 0.24,
    "se": 0.08,
    "add": 0.08,
    "fc": 0.05,
    "gap": 0.04,
    "maxpool": 0.04,
    "avgpool": 0.02,
    "concat": 0.03,
    "bn": 0.02,
    "elementwise": 0.06,
}

CHANNELS = (
    8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 96, 112, 120, 128, 144, 160, 184, 192, 200,
    240, 256, 288, 320, 336, 384, 432, 480, 512, 576, 640, 672, 720, 768, 864, 960, 1024,
    1152, 1280,
)  # fmt: skip

# Resolution -> (probability, channel range) of layers at that resolution in
# MobileNetV2 / MnasNet / ResNet (ImageNet) and ResNet-20 style (CIFAR) nets.
HW_PRIOR: dict[int, tuple[float, tuple[int, int]]] = {
    224: (0.05, (8, 64)),
    112: (0.16, (16, 144)),
    56: (0.17, (16, 288)),
    28: (0.17, (24, 576)),
    14: (0.17, (48, 1152)),
    7: (0.14, (96, 1280)),
    32: (0.06, (8, 96)),
    16: (0.04, (16, 192)),
    8: (0.04, (32, 384)),
}

ACTS: dict[str, Callable[[], nn.Module] | None] = {
    "none": None,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid,
    "hsigmoid": nn.Hardsigmoid,
    "silu": nn.SiLU,
}
# Element-wise kernels the zoo's runtimes execute on their own: activations
# ORT/LiteRT do not fuse, SE's gating multiply, ShuffleNet's channel shuffle
# (a transpose) and channel split. Not SiLU: it exports as two ONNX nodes, so
# the rules see two kernels (ORT fuses them into one QuickGelu).
ELEMENTWISE_OPS = (
    "relu", "relu6", "sigmoid", "hswish", "mul", "hsigmoid", "transpose", "split",
)  # fmt: skip
EMPIRICAL_SHARE = 0.7

MAX_MACS = 3e9  # a single kernel slower than a whole ResNet-18 is not worth the time
MAX_ACT_BYTES = 64 << 20


def _pick(rng: np.random.Generator, options: dict[Any, float]) -> Any:
    keys = list(options)
    p = np.asarray([options[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _channels(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Log-uniform in [lo, hi], snapped to the widths real networks use."""
    c = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return min(CHANNELS, key=lambda v: abs(math.log(v / c)))


def _hw_and_channels(rng: np.random.Generator, wide: float = 0.15) -> tuple[int, int]:
    hw = _pick(rng, {h: p for h, (p, _) in HW_PRIOR.items()})
    lo, hi = HW_PRIOR[hw][1]
    if rng.random() < wide:  # off-prior samples, so the regressors do not only interpolate
        lo, hi = 16, 960
    return hw, _channels(rng, lo, hi)


def _snap(c: float) -> int:
    return min(CHANNELS, key=lambda v: abs(v - c))


def sample_type(rng: np.random.Generator, types: tuple[str, ...] | None = None) -> str:
    """A kernel type drawn with :data:`TYPE_WEIGHTS` (restricted to ``types``)."""
    pool = {t: w for t, w in TYPE_WEIGHTS.items() if types is None or t in types}
    if not pool:
        raise ConfigError(
            f"no kernel type to sample in {types}; choose among {', '.join(SAMPLED_TYPES)}"
        )
    return _pick(rng, pool)


def sample_config(kind: str, rng: np.random.Generator) -> tuple:
    """One configuration of a ``kind`` kernel from the prior (see module docstring).

    Returns:
        conv ``(hw, cin, cout, k, stride, act[, groups])``; dwconv ``(hw, c, k, stride, act)``;
        se ``(hw, c, mid)``; add ``(hw, c, act)``; fc ``(cin, cout, act)``; gap
        ``(hw, c)``; max/avgpool ``(hw, c, k, stride)``; concat ``(hw, c, n)``;
        bn ``(hw, c, act)``; elementwise ``(hw, c, op)``.
    """
    for _ in range(100):
        cfg = _sample_empirical(kind, rng)
        if cfg is None:
            cfg = _sample_config_once(kind, rng)
        if _small_enough(kind, cfg):
            return cfg
    raise ConfigError(f"could not sample a {kind} kernel under the size limits")  # pragma: no cover


def _sample_empirical(kind: str, rng: np.random.Generator) -> tuple | None:
    """A configuration of the zoo / spaces (:mod:`.prior`), perhaps moved; None: use the parametric prior."""
    from hwnas.predictors.kernels.prior import empirical_prior

    if rng.random() >= EMPIRICAL_SHARE:
        return None
    pool = empirical_prior().get(kind)
    if not pool:
        return None
    cfg = pool[int(rng.integers(0, len(pool)))]
    if kind == "conv":
        act = _pick(rng, {"relu": 0.4, "relu6": 0.15, "none": 0.3, "hswish": 0.1, "silu": 0.05})
        cfg = (*cfg[:5], act, *cfg[6:])
    elif kind == "dwconv":
        act = _pick(rng, {"relu": 0.4, "relu6": 0.25, "none": 0.15, "hswish": 0.1, "silu": 0.1})
        cfg = (*cfg[:4], act)
    if rng.random() < 0.5:
        cfg = perturb_config(kind, cfg, rng)
    return tuple(cfg)


def _sample_config_once(kind: str, rng: np.random.Generator) -> tuple:
    if kind == "conv":
        if rng.random() < 0.12:  # a stem: three input channels at full resolution
            hw = _pick(rng, {224: 0.6, 32: 0.25, 112: 0.15})
            k = _pick(rng, {3: 0.7, 7: 0.2, 5: 0.1})
            stride = 1 if hw == 32 and rng.random() < 0.7 else 2
            cout = int(rng.choice([16, 24, 32, 40, 48, 64]))
            return (hw, 3, cout, k, stride, _pick(rng, {"relu": 0.5, "relu6": 0.3, "hswish": 0.2}))
        hw, cin = _hw_and_channels(rng)
        k = _pick(rng, {1: 0.55, 3: 0.33, 5: 0.06, 7: 0.06})
        stride = _pick(rng, {1: 0.8, 2: 0.2})
        role = rng.random()
        if role < 0.35:  # MBConv expansion
            cout = _snap(cin * _pick(rng, {3: 0.3, 4: 0.2, 6: 0.5}))
        elif role < 0.65:  # MBConv projection
            cout = _snap(cin / _pick(rng, {3: 0.3, 4: 0.2, 6: 0.5}))
        elif role < 0.85:  # same width (ResNet body) or a stage change
            cout = _snap(cin * _pick(rng, {1: 0.7, 2: 0.3}))
        else:
            lo, hi = HW_PRIOR[hw][1]
            cout = _channels(rng, lo, hi)
        act = _pick(rng, {"relu": 0.4, "relu6": 0.2, "none": 0.3, "hswish": 0.1})
        return (hw, cin, cout, k, stride, act)
    if kind == "dwconv":
        hw, c = _hw_and_channels(rng)
        if rng.random() < 0.5:  # depthwise convs run on expanded widths
            c = _snap(min(c * _pick(rng, {3: 0.4, 6: 0.6}), 1280))
        k = _pick(rng, {3: 0.5, 5: 0.35, 7: 0.15})
        stride = _pick(rng, {1: 0.75, 2: 0.25})
        act = _pick(rng, {"relu": 0.45, "relu6": 0.3, "none": 0.1, "hswish": 0.15})
        return (hw, c, k, stride, act)
    if kind == "se":
        hw, c = _hw_and_channels(rng)
        hw = min(hw, 112)
        c = _snap(min(c * _pick(rng, {1: 0.3, 3: 0.3, 6: 0.4}), 1280))
        mid = max(4, int(c // _pick(rng, {4: 0.3, 8: 0.1, 12: 0.25, 16: 0.1, 24: 0.25})))
        return (hw, c, mid)
    if kind == "add":
        hw, c = _hw_and_channels(rng)
        return (hw, c, _pick(rng, {"none": 0.6, "relu": 0.4}))
    if kind == "fc":
        cin = int(rng.choice([64, 128, 256, 512, 576, 768, 960, 1024, 1280, 1536, 2048]))
        cout = int(rng.choice([10, 100, 128, 256, 512, 1000, 1024]))
        return (cin, cout, _pick(rng, {"none": 0.8, "relu": 0.2}))
    if kind == "gap":
        hw = _pick(rng, {7: 0.45, 14: 0.15, 8: 0.15, 4: 0.05, 28: 0.1, 56: 0.1})
        c = _channels(rng, 64, 1280)
        return (hw, c)
    if kind in ("maxpool", "avgpool"):
        hw, c = _hw_and_channels(rng)
        return (hw, c, _pick(rng, {3: 0.6, 2: 0.4}), _pick(rng, {2: 0.8, 1: 0.2}))
    if kind == "concat":
        hw, c = _hw_and_channels(rng)
        return (hw, c, _pick(rng, {2: 0.6, 3: 0.2, 4: 0.2}))
    if kind == "bn":
        hw, c = _hw_and_channels(rng)
        return (hw, c, _pick(rng, {"none": 0.5, "relu": 0.5}))
    if kind == "elementwise":
        hw, c = _hw_and_channels(rng)
        return (hw, c, str(rng.choice(ELEMENTWISE_OPS)))
    raise ConfigError(f"unknown kernel type '{kind}'; choose among {', '.join(SAMPLED_TYPES)}")


def _small_enough(kind: str, cfg: tuple) -> bool:
    if kind == "fc":
        return True
    hw, c = cfg[0], cfg[1]
    act = hw * hw * c * 4
    if kind == "conv":
        _, cin, cout, k, s, _ = cfg[:6]
        out = math.ceil(hw / s)
        macs = out * out * cout * k * k * cin
        return macs <= MAX_MACS and max(act, out * out * cout * 4) <= MAX_ACT_BYTES
    if kind == "concat":
        act *= cfg[2]
    return act <= MAX_ACT_BYTES


def perturb_config(kind: str, cfg: tuple, rng: np.random.Generator) -> tuple:
    """A configuration next to ``cfg``: channels moved one or two widths, the rest kept.

    nn-Meter's adaptive sampling measures more configurations where the
    regressor is worst; the neighbours of a badly predicted one are the
    cheapest way to find out whether the error is noise or a real cliff.
    """

    def move(c: int) -> int:
        i = min(range(len(CHANNELS)), key=lambda j: abs(CHANNELS[j] - c))
        j = int(np.clip(i + rng.choice([-2, -1, 1, 2]), 0, len(CHANNELS) - 1))
        return CHANNELS[j]

    for _ in range(20):
        new = list(cfg)
        if kind == "conv" and len(cfg) > 6 and cfg[6] > 1:
            # a grouped conv keeps its group width (cin == cout in RegNet/ResNeXt blocks)
            gw = max(1, cfg[1] // cfg[6])
            groups = max(1, round(move(cfg[1]) / gw))
            new[1] = new[2] = groups * gw
            new[6] = groups
        elif kind == "conv":
            if cfg[1] != 3 and rng.random() < 0.5:
                new[1] = move(cfg[1])
            else:
                new[2] = move(cfg[2])
        elif kind == "fc":
            i = int(rng.integers(0, 2))
            new[i] = move(cfg[i])
        elif kind == "se":
            new[1] = move(cfg[1])
            new[2] = max(4, int(new[1] * cfg[2] / max(cfg[1], 1)))
        else:
            new[1] = move(cfg[1])
        out = tuple(new)
        if out != tuple(cfg) and _small_enough(kind, out):
            return out
    return tuple(cfg)


# ---- one-kernel torch modules ------------------------------------------------------------


class _Lambda(nn.Module):
    """A parameter-free module; ``repr`` names the operation so export caching keys differ."""

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.name = name
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


def _shuffle(x: torch.Tensor, c: int) -> torch.Tensor:
    h, w = x.shape[2], x.shape[3]
    return x.reshape(1, 2, c // 2, h, w).transpose(1, 2).reshape(1, c, h, w)


def _act(name: str) -> nn.Module:
    if name not in ACTS:
        raise ConfigError(f"unknown activation '{name}'; use one of {', '.join(ACTS)}")
    factory = ACTS[name]
    return factory() if factory is not None else nn.Identity()


@contextlib.contextmanager
def _seeded(key: tuple):
    """Weights drawn from a generator seeded by ``key``, the global torch RNG left untouched.

    The same configuration then always gives the same module, so its ONNX
    export (cached by the module's weights) and its runtime-read kernels are
    found in the caches by a re-run, or by a campaign prepared beforehand:
    only the measuring is left for the quiet machine.
    """
    seed = int(hashlib.sha256(repr(key).encode()).hexdigest()[:8], 16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_kernel(kind: str, cfg: tuple) -> tuple[nn.Module, tuple[int, ...]]:
    """A torch module that exports to exactly one ``kind`` kernel, and its input shape
    (weights seeded by the configuration; see :func:`_build_kernel`)."""
    with _seeded(("kernel", kind, tuple(cfg))):
        return _build_kernel(kind, cfg)


def build_network(spec: tuple) -> tuple[nn.Module, tuple[int, ...]]:
    """The torch module of a :func:`sample_network` spec and its input shape (weights
    seeded by the spec; see :func:`_build_network`)."""
    with _seeded(("network", spec)):
        return _build_network(spec)


def _build_kernel(kind: str, cfg: tuple) -> tuple[nn.Module, tuple[int, ...]]:
    """A torch module that exports to exactly one ``kind`` kernel, and its input shape.

    The modules reuse the zoo's blocks (``ConvBNAct``, ``SqueezeExcite``) so a
    sampled kernel exports to the same ONNX ops as the kernel inside a model.

    Raises:
        ConfigError: unknown type or malformed configuration.
    """
    from hwnas.models.blocks import ConvBNAct, SqueezeExcite, init_weights

    try:
        if kind == "conv":
            hw, cin, cout, k, s, act = cfg[:6]
            groups = int(cfg[6]) if len(cfg) > 6 else 1
            m: nn.Module = ConvBNAct(cin, cout, k, s, groups=groups, act=ACTS[act])
            shape = (1, cin, hw, hw)
        elif kind == "dwconv":
            hw, c, k, s, act = cfg
            m = ConvBNAct(c, c, k, s, groups=c, act=ACTS[act])
            shape = (1, c, hw, hw)
        elif kind == "se":
            hw, c, mid = cfg
            m = SqueezeExcite(c, mid)
            shape = (1, c, hw, hw)
        elif kind == "add":
            hw, c, act = cfg
            a = _act(act)
            m = _Lambda(f"add+{act}", lambda x: a(x + x))
            shape = (1, c, hw, hw)
        elif kind == "fc":
            cin, cout, act = cfg
            m = nn.Sequential(nn.Linear(cin, cout), _act(act))
            shape = (1, cin)
        elif kind == "gap":
            hw, c = cfg
            m = _Lambda("gap", lambda x: x.mean((2, 3)))
            shape = (1, c, hw, hw)
        elif kind in ("maxpool", "avgpool"):
            hw, c, k, s = cfg
            pool = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
            m = pool(k, s, padding=k // 2 if k % 2 else 0)
            shape = (1, c, hw, hw)
        elif kind == "concat":
            hw, c, n = cfg
            m = _Lambda(f"concat{n}", lambda x: torch.cat([x] * int(n), dim=1))
            shape = (1, c, hw, hw)
        elif kind == "bn":
            hw, c, act = cfg
            m = nn.Sequential(nn.BatchNorm2d(c), _act(act))
            shape = (1, c, hw, hw)
        elif kind == "elementwise":
            hw, c, op = cfg
            if op == "mul":
                m = _Lambda("mul", lambda x: x * x)
            elif op == "transpose":  # ShuffleNet's channel shuffle of two groups
                m = _Lambda("shuffle2", lambda x: _shuffle(x, c))
            elif op == "split":
                m = _Lambda("split2", lambda x: x.chunk(2, dim=1)[1])
            else:
                m = _act(op)
            shape = (1, c, hw, hw)
        else:
            raise ConfigError(
                f"unknown kernel type '{kind}'; choose among {', '.join(SAMPLED_TYPES)}"
            )
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"malformed {kind} kernel configuration {cfg!r} ({exc})") from exc
    init_weights(m)
    if kind == "bn":  # non-trivial statistics, so the exported BN is a real affine op
        bn = m[0]
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
    return m.eval(), tuple(int(d) for d in shape)


def kernel_arch(kind: str, cfg: tuple) -> Arch:
    return Arch(KERNEL_SPACE_PREFIX + kind, tuple(cfg))


# ---- calibration networks ----------------------------------------------------------------

# "fire", "dense", "shuffle" and "inception" are the zoo's own SqueezeNet, DenseNet,
# ShuffleNetV2 and GoogLeNet blocks: calibration networks must hold their concats,
# channel shuffles, in-network poolings and narrow 1x1 convs, or the calibration never
# sees how those kernels behave inside a model.
BLOCK_KINDS = ("mb", "ds", "basic", "conv", "fire", "dense", "shuffle", "inception")
BRANCHY_KINDS = ("fire", "dense", "shuffle", "inception")


def sample_network(rng: np.random.Generator) -> tuple:
    """A random small network spec: ``(resolution, stem, blocks, head, classes)``.

    ``stem`` is ``(channels, kernel, stride, maxpool)``; each block is
    ``(kind, out_channels, kernel, stride, expand, se, act)`` with kind in
    :data:`BLOCK_KINDS`; ``head`` is the width of a final 1x1 conv (0: none).
    """
    family = _pick(rng, {"mobile": 0.45, "resnet": 0.2, "mixed": 0.1, "branchy": 0.25})
    res = _pick(rng, {224: 0.35, 192: 0.1, 160: 0.15, 128: 0.15, 96: 0.1, 64: 0.05, 32: 0.1})
    small = res <= 64
    stem_c = int(rng.choice([16, 24, 32, 48, 64]))
    if family == "resnet":
        stem = (stem_c, 3 if small else 7, 1 if small else 2, 0 if small else 1)
    else:
        stem = (stem_c, 3, 1 if small else 2, int(family == "branchy" and not small))
    branchy = str(rng.choice(BRANCHY_KINDS)) if family == "branchy" else ""
    n_blocks = int(rng.integers(3, 17))
    n_down = int(rng.integers(2, 5)) if not small else int(rng.integers(1, 3))
    down_at = set(rng.choice(np.arange(n_blocks), size=min(n_down, n_blocks), replace=False))
    act = _pick(rng, {"relu": 0.5, "relu6": 0.3, "hswish": 0.2})
    c = stem_c
    blocks = []
    hw = res // (stem[2] * (2 if stem[3] else 1))  # spatial size entering the blocks
    for i in range(n_blocks):
        stride = 2 if i in down_at else 1
        if branchy and hw < 8:
            stride = 1  # the pooling windows of these families need room
        hw = -(-hw // stride)
        if stride == 2 or rng.random() < 0.25:
            c = max(c, _snap(min(c * _pick(rng, {1.5: 0.5, 2: 0.5}), 640)))  # dense may pass 640
        if branchy:
            kind = branchy if rng.random() < 0.8 else str(rng.choice(BRANCHY_KINDS))
            if kind == "dense":
                c = c + 32  # DenseNet's growth of 32 per layer
            elif kind == "shuffle" and stride == 1:
                c = int(blocks[-1][1]) if blocks else stem_c  # a stride-1 unit keeps its width
        elif family == "resnet" or (family == "mixed" and rng.random() < 0.4):
            kind = "basic"
        else:
            kind = _pick(rng, {"mb": 0.8, "ds": 0.12, "conv": 0.08})
        k = _pick(rng, {3: 0.6, 5: 0.3, 7: 0.1}) if kind != "basic" else 3
        expand = _pick(rng, {3: 0.4, 4: 0.1, 6: 0.5}) if kind == "mb" else 1
        se = int(kind in ("mb", "ds", "conv") and rng.random() < 0.35)
        blocks.append((kind, int(c), int(k), int(stride), int(expand), se, act))
    head = int(rng.choice([0, 0, 640, 960, 1280])) if family != "resnet" else 0
    classes = int(rng.choice([10, 100, 1000]))
    return (int(res), stem, tuple(blocks), head, classes)


def _branchy_block(kind: str, cin: int, cout: int, stride: int) -> list[nn.Module]:
    """A zoo block of SqueezeNet, DenseNet, ShuffleNetV2 or GoogLeNet from ``cin`` to ``cout``.

    Strides are the families' own: a 3x3/2 max pool before a Fire or an Inception
    block, a 2x2 average pool after a dense layer (DenseNet's transition), the
    stride-2 ShuffleNet unit.
    """
    from hwnas.models.densenet import DenseLayer
    from hwnas.models.googlenet import Inception
    from hwnas.models.shufflenet import ShuffleUnit
    from hwnas.models.squeezenet import Fire

    pool = [nn.MaxPool2d(3, 2, ceil_mode=True)] if stride == 2 else []
    if kind == "fire":
        e = max(8, cout // 2)
        return [*pool, Fire(cin, max(8, cout // 8), e, cout - e)]
    if kind == "dense":
        tail = [nn.AvgPool2d(2, 2)] if stride == 2 else []
        return [DenseLayer(cin, cout - cin, 4), *tail]
    if kind == "shuffle":
        return [ShuffleUnit(cin, cout, stride)]
    c1, c5, pp = cout // 4, max(1, cout // 8), max(1, cout // 8)
    c3 = cout - c1 - c5 - pp
    return [*pool, Inception(cin, c1, max(1, c3 // 2), c3, max(1, c5 // 2), c5, pp)]


def _build_network(spec: tuple) -> tuple[nn.Module, tuple[int, ...]]:
    """The torch module of a :func:`sample_network` spec, and its input shape."""
    from hwnas.models.blocks import (
        ClassifierHead,
        ConvBlock,
        ConvBNAct,
        DepthwiseSeparable,
        InvertedResidual,
        init_weights,
    )
    from hwnas.models.resnet import BasicBlock

    try:
        res, (stem_c, stem_k, stem_s, pool), blocks, head, classes = spec
        layers: list[nn.Module] = [ConvBNAct(3, stem_c, stem_k, stem_s, act=nn.ReLU)]
        if pool:
            layers.append(nn.MaxPool2d(3, 2, padding=1))
        c = stem_c
        for kind, cout, k, s, e, se, act in blocks:
            a = ACTS[act]
            ratio = 0.25 if se else 0.0
            if kind == "mb":
                layers.append(InvertedResidual(c, cout, s, e, k, ratio, act=a))
            elif kind == "ds":
                layers.append(DepthwiseSeparable(c, cout, s, k, ratio, act=a))
            elif kind == "conv":
                layers.append(ConvBlock(c, cout, s, k, ratio, act=a))
            elif kind == "basic":
                layers.append(BasicBlock(c, cout, s))
            elif kind in BRANCHY_KINDS:
                layers += _branchy_block(kind, c, cout, s)
            else:
                raise ConfigError(f"unknown block kind '{kind}'; use one of {BLOCK_KINDS}")
            c = cout
        if head:
            layers.append(ConvBNAct(c, head, 1, act=nn.ReLU))
            c = head
        layers.append(ClassifierHead(c, classes))
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"malformed network spec {spec!r} ({exc})") from exc
    net = nn.Sequential(*layers)
    init_weights(net)
    return net.eval(), (1, 3, int(res), int(res))


def network_arch(spec: tuple) -> Arch:
    return Arch(NETWORK_SPACE, tuple(spec))
