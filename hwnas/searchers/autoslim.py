"""AutoSlim: one-shot search of per-layer channel numbers (Yu & Huang, 2019).

On the ``mobilenetv2-channels`` space (MobileNetV2 whose every searched
layer keeps 10 %, 20 %, ... 100 % of its 1.5x width), AutoSlim

1. trains one slimmable MobileNetV2 with the sandwich rule and in-place
   distillation (:func:`hwnas.searchers.slimmable.train_slimmable`);
2. slims greedily from the widest configuration: at each step every layer
   loses one channel group in turn, the slimmable network (BN statistics
   recalibrated for that width on 2,000 training images, as in the paper,
   or on all of them when there are fewer: digits' training split holds
   about 1,500; ``History.final["bn_calibration"]`` says which) is evaluated
   on held-out images, and the removal that loses the least accuracy is kept;
3. outputs the configuration at which each resource target is first met:
   FLOPs (analytic), latency (the objective's source: measured on a
   device and cached, or predicted) and memory (the lifetime estimate).

Every configuration so found is handed to the objective, so the history
holds its accuracy from the objective's evaluator (``proxy``: trained from
scratch, which is AutoSlim's final step), its latency and memory.
``History.final`` holds the whole greedy path and each target's channels.

Sizes: the slimmable network trains on 32x32 digits (``input_size``) and
the widest configuration is ``max_step`` on the space's grid (4 = 50 % of
the 1.5x widths, i.e. MobileNetV2 0.75x; 9 = AutoSlim's full 1.5x), so a
default search runs in a few minutes on one CPU thread. The network's depth
is the space's (all 17 MobileNetV2 blocks). FLOPs and latency are those of
the network at the *space's* input size, what would be deployed.

FLOPs here are ``2 x`` the multiply-accumulates of the convolutions and
the classifier (AutoSlim's "FLOPs" count multiply-adds: halve ours to compare).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from hwnas.errors import ConfigError
from hwnas.models.slimmable import SlimmableMobileNetV2
from hwnas.objectives import MemoryEstimator, parse_bytes, parse_latency_ms
from hwnas.report.progress import step
from hwnas.searchers._data import load_split, n_batches
from hwnas.searchers.base import Candidate, History, Record, Searcher
from hwnas.searchers.registry import SEARCHERS
from hwnas.searchers.slimmable import (
    ChannelGrid,
    GreedySlimmer,
    SlimStep,
    SlimTrainSettings,
    mobilenetv2_macs,
    train_slimmable,
)

if TYPE_CHECKING:
    from hwnas.objectives import Objective
    from hwnas.spaces.base import SearchSpace

_FLOPS_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}

# What the plan lines say before a step starts: estimates from CPU profiles (process
# time, one thread) of a batch and of one BN recalibration + evaluation, not wall timing.
_TRAIN_NOTE = "about 1 s per batch on one thread (the bar shows the real rate)"
_GREEDY_NOTE = (
    "about 2.5 s per width judged with 2,000 calibration images on one thread, less with "
    "fewer (calib_images) and for narrower widths"
)


def parse_flops(text: str, widest_flops: float) -> float:
    """``"50%"`` (of the widest configuration), ``"12M"``, ``"1.2G"``, ``"300k"`` -> FLOPs.

    Raises:
        ConfigError: an unreadable value or unit, or a value that is not positive.
    """
    t = str(text).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|[kKmMgG]?)", t)
    if not m:
        raise ConfigError(
            f"cannot read FLOPs target {text!r}; write a share of the widest network (50%) "
            "or a count with k/M/G (12M)"
        )
    v = float(m.group(1))
    v = v / 100.0 * widest_flops if m.group(2) == "%" else v * _FLOPS_UNITS[m.group(2).lower()]
    if not v > 0:
        raise ConfigError(f"a FLOPs target must be positive, got {text!r}")
    return v


@dataclass(frozen=True)
class AutoSlimSettings:
    """Settings of an AutoSlim search.

    Attributes:
        max_step: widest grid step (0-based, 9 = 1.5x): the slimmable network's size.
        epochs / batch_size / lr / momentum / weight_decay: slimmable training (SGD,
            Nesterov momentum, cosine schedule).
        warmup_epochs / grad_clip: linear learning-rate warm-up and gradient-norm
            clipping (without them the deep network diverges in its first steps).
        num_random: random widths per step besides the largest and smallest (sandwich rule).
        data: ``digits`` or a folder of class-named subfolders of images.
        input_size: image side for training and the greedy evaluation.
        max_samples: use a seeded subset of the images.
        val_fraction: share of the images held out to judge removals.
        calib_images / calib_batch_size: BN recalibration before each evaluation,
            on ``calib_images`` training images (the paper uses 2,000; when the
            training split holds fewer, all of it is used, and the search's
            final record says so under ``bn_calibration``) in batches of about
            ``calib_batch_size``.
        flops_targets: ``50%`` (of the widest) or counts (``12M``).
        latency_targets: e.g. ``5ms`` (the objective's latency source); the
            objective's ``--latency-target`` is added.
        memory_targets: e.g. ``400KB`` (the lifetime estimate, in the objective's
            memory metric); the objective's ``--memory-target`` is added.
        threads: torch threads.
    """

    max_step: int = 4
    epochs: int = 5
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_epochs: float = 1.0
    grad_clip: float = 5.0
    num_random: int = 2
    data: str = "digits"
    input_size: int = 32
    max_samples: int | None = None
    val_fraction: float = 0.15
    calib_images: int = 2000
    calib_batch_size: int = 128
    flops_targets: tuple[str, ...] = ("50%", "30%")
    latency_targets: tuple[str, ...] = ()
    memory_targets: tuple[str, ...] = ()
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "calib_images", "calib_batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"autoslim {name} must be >= 1, got {getattr(self, name)}")
        if self.num_random < 0:
            raise ConfigError(f"num_random must be >= 0, got {self.num_random}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.input_size < 32:
            raise ConfigError(
                f"input_size must be >= 32 (MobileNetV2 downsamples 32x), got {self.input_size}"
            )
        for t in self.latency_targets:
            parse_latency_ms(t)
        for t in self.memory_targets:
            parse_bytes(t)


@dataclass
class Target:
    """A resource bound and where the greedy path first met it."""

    kind: str  # flops | latency | memory
    text: str
    value: float
    met_at: int | None = None

    def label(self) -> str:
        return f"{self.kind}<={self.text}"


@SEARCHERS.register("autoslim")
class AutoSlim(Searcher):
    """AutoSlim: a slimmable MobileNetV2, then greedy channel slimming to FLOPs/latency/memory targets.

    See the module docstring.
    """

    name = "autoslim"
    Settings = AutoSlimSettings

    # ---- set-up: data, slimmable training ----------------------------------------------

    def reset(self, space: SearchSpace, seed: int, budget: int, objective: Objective) -> None:
        from hwnas.spaces.mobilenetv2_channels import MobileNetV2ChannelSpace

        if not isinstance(space, MobileNetV2ChannelSpace):
            raise ConfigError(
                f"autoslim searches per-layer channel numbers of MobileNetV2; space '{space.name}' "
                "is not that space; use --space mobilenetv2-channels"
            )
        s = self.settings
        obj = objective
        self.space = space
        self.grid = ChannelGrid(space, s.max_step)
        train, val = load_split(
            s.data, s.input_size, (1.0 - s.val_fraction, s.val_fraction), seed, s.max_samples
        )
        torch.manual_seed(seed)
        net = SlimmableMobileNetV2(
            self.grid.channels(self.grid.widest()), len(train.classes), space.dropout
        )
        per_epoch = n_batches(len(train), s.batch_size)
        bar_cm = step(
            s.epochs * per_epoch,
            "autoslim slimmable training",
            plan=(
                f"autoslim: training a slimmable MobileNetV2 ({self.grid.n_layers} layers, widest "
                f"= step {s.max_step}) for {s.epochs} epochs x {per_epoch} batches of "
                f"{s.batch_size} '{s.data}' images at {s.input_size}x{s.input_size}, "
                f"{2 + s.num_random} widths per batch (sandwich rule); {_TRAIN_NOTE}"
            ),
            unit="batches",
        )
        with bar_cm as bar:
            self.train_losses = train_slimmable(
                net,
                self.grid,
                train,
                SlimTrainSettings(
                    s.epochs,
                    s.batch_size,
                    s.lr,
                    s.momentum,
                    s.weight_decay,
                    s.num_random,
                    s.threads,
                    s.warmup_epochs,
                    s.grad_clip,
                ),
                seed,
                on_batch=lambda e: bar.advance(status=f"epoch {e}/{s.epochs}"),
            )
        gen = torch.Generator().manual_seed(seed + 1)
        order = torch.randperm(len(train), generator=gen)
        # AutoSlim re-estimates BN statistics on 2,000 training images; fewer than
        # that gives noisy statistics for the narrow widths, so use all there are
        n_cal = max(2, min(s.calib_images, len(train)))
        chunks = torch.tensor_split(order[:n_cal], -(-n_cal // s.calib_batch_size))
        calib = [train.images[c] for c in chunks if c.numel() >= 2]
        self.bn_calibration = {
            "images": n_cal,
            "batches": len(calib),
            "requested": s.calib_images,
            "note": (
                f"all {n_cal} training images (fewer than the {s.calib_images} asked for)"
                if n_cal < s.calib_images
                else f"{n_cal} training images"
            ),
        }
        num_classes = space.num_classes
        size = space.input_size
        self.slimmer = GreedySlimmer(
            net,
            self.grid,
            calib,
            val,
            lambda ch: mobilenetv2_macs(ch, size, num_classes),
            space.decision_names(),
            s.threads,
        )
        start = self.slimmer.start()
        self.widest_flops = 2.0 * start.macs
        self.narrowest_flops = 2.0 * mobilenetv2_macs(
            self.grid.channels(self.grid.narrowest()), size, num_classes
        )
        self.targets = self._targets(obj)
        self.latency_cache: dict[int, float] = {}
        self.memory_cache: dict[int, int] = {}
        self.hits: list[dict[str, Any]] = []
        self.exhausted = False
        self.resolve_pending = True

    def _targets(self, obj: Objective | None) -> list[Target]:
        s = self.settings
        out = [Target("flops", t, parse_flops(t, self.widest_flops)) for t in s.flops_targets]
        lat = [(t, parse_latency_ms(t)) for t in s.latency_targets]
        mem = [(t, float(parse_bytes(t))) for t in s.memory_targets]
        if obj is not None and obj.latency_target_ms is not None:
            lat.append((f"{obj.latency_target_ms:g}ms", float(obj.latency_target_ms)))
        if obj is not None and obj.memory_target_bytes is not None:
            mem.append((f"{obj.memory_target_bytes}B", float(obj.memory_target_bytes)))
        if lat and (obj is None or obj.latency is None):
            raise ConfigError(
                "autoslim latency targets need a latency source: --latency device:NAME or predictor:FILE"
            )
        out += [Target("latency", t, v) for t, v in lat]
        out += [Target("memory", t, v) for t, v in mem]
        if not out:
            raise ConfigError(
                "autoslim needs at least one target: --set flops_targets=50%,30% , "
                "latency_targets=5ms, memory_targets=400KB, or --latency-target/--memory-target"
            )
        # loosest first within a kind: the order the greedy path meets them
        out.sort(key=lambda t: (t.kind, -t.value))
        return out

    # ---- resources of a point on the path ----------------------------------------------

    def _latency(self, st: SlimStep) -> float:
        if st.step not in self.latency_cache:
            obj = self.objective
            assert obj.latency is not None and self.space is not None
            ms, _ = obj.latency.latency_ms(self.space, [self.grid.arch(st.steps)])[0]
            self.latency_cache[st.step] = float(ms)
        return self.latency_cache[st.step]

    def _memory(self, st: SlimStep) -> float:
        if st.step not in self.memory_cache:
            obj = self.objective
            est = obj.memory if obj.memory is not None else MemoryEstimator()
            peak, params, _ = est.estimate(self.space, self.grid.arch(st.steps))
            metric = obj.memory_metric
            self.memory_cache[st.step] = {
                "total": peak + params,
                "activations": peak,
                "params": params,
            }[metric]
        return float(self.memory_cache[st.step])

    def _value(self, t: Target, st: SlimStep) -> float:
        if t.kind == "flops":
            return 2.0 * st.macs
        if t.kind == "latency":
            return self._latency(st)
        return self._memory(st)

    def _met_now(self, st: SlimStep) -> list[Target]:
        met = []
        for t in self.targets:
            if t.met_at is None and self._value(t, st) <= t.value:
                t.met_at = st.step
                met.append(t)
        return met

    # ---- the three steps ---------------------------------------------------------------

    def done(self) -> bool:
        return self.exhausted or all(t.met_at is not None for t in self.targets)

    def expected_evaluations(self) -> int:
        """At most one configuration per target (a progress bar's total)."""
        return len(self.targets)

    def propose(self, n: int) -> list[Candidate]:
        st = self.slimmer.current
        met = self._met_now(st) if self.resolve_pending else []
        self.resolve_pending = False
        if not met:
            with self._greedy_bar(st) as tick:
                while not met:
                    if all(t.met_at is not None for t in self.targets):
                        return []
                    nxt = self.slimmer.step()
                    if nxt is None:
                        self.exhausted = True
                        return []
                    st = nxt
                    met = self._met_now(st)
                    tick(st, bool(met))
        hit = {
            "targets": [t.label() for t in met],
            "step": st.step,
            "channels": st.channels,
            "flops": 2 * st.macs,
            "slimmable_val_acc": st.val_acc,
        }
        if st.step in self.latency_cache:
            hit["latency_ms"] = self.latency_cache[st.step]
        if st.step in self.memory_cache:
            hit["memory_bytes"] = self.memory_cache[st.step]
        self.hits.append(hit)
        return [Candidate(self.grid.arch(st.steps), "autoslim", dict(hit))]

    @contextlib.contextmanager
    def _greedy_bar(self, st: SlimStep) -> Iterator[Callable[[SlimStep, bool], None]]:
        """A bar over the greedy descent to the next target, in points of the way there.

        The next target met is the loosest unmet FLOPs target when there is one (FLOPs
        fall at every step); for latency or memory alone, the way down to the narrowest
        network (the bar then jumps to the end when the target is met earlier).
        """
        unmet = [t for t in self.targets if t.met_at is None]
        flops = [t for t in unmet if t.kind == "flops"]
        start = 2.0 * st.macs
        goal = max(t.value for t in flops) if flops else self.narrowest_flops
        label = (flops[0] if flops else unmet[0]).label() if unmet else "the narrowest network"
        removals = sum(self.grid.slim(st.steps, i) is not None for i in range(self.grid.n_layers))
        plan = (
            f"autoslim: greedy slimming from {start / self.widest_flops:.0%} of the widest FLOPs "
            f"towards {label}: each step judges up to {removals} one-group removals, each after "
            f"recalibrating BN on {self.bn_calibration['images']} images; {_GREEDY_NOTE}"
        )
        with step(100, "autoslim greedy slimming", plan=plan, unit="%") as bar:
            judged = [0]

            def on_eval() -> None:
                judged[0] += 1
                bar.update(status=f"step {len(self.slimmer.path)}: {judged[0]} widths judged")

            def tick(now: SlimStep, met: bool) -> None:
                judged[0] = 0
                done = 100 if met else int(100 * (start - 2.0 * now.macs) / max(1.0, start - goal))
                bar.update(
                    completed=max(0, min(100, done)),
                    status=f"step {now.step}: {2.0 * now.macs / self.widest_flops:.0%} of widest FLOPs",
                )

            self.slimmer.on_eval = on_eval
            try:
                yield tick
            finally:
                self.slimmer.on_eval = None

    def update(self, records: list[Record]) -> None:
        """The path depends on the slimmable network only, not on the evaluated candidates."""

    def finalize(self, history: History, space: SearchSpace, objective: Objective) -> dict | None:
        path = [
            {
                "step": p.step,
                "slimmed": p.slimmed,
                "steps": p.steps,
                "val_acc": p.val_acc,
                "val_ce": round(p.val_ce, 5),
                "flops": 2 * p.macs,
                "flops_share": 2 * p.macs / self.widest_flops,
                "evaluated": p.evaluated,
            }
            for p in self.slimmer.path
        ]
        return {
            "widest": self.grid.channels(self.grid.widest()),
            "widest_flops": self.widest_flops,
            "train_losses": self.train_losses,
            "targets": [asdict(t) for t in self.targets],
            "configs": self.hits,
            "bn_calibration": self.bn_calibration,
            "path": path,
            "layers": space.decision_names(),
        }


def uniform_channels_for_flops(
    space: SearchSpace, flops: float, max_ratio: float = 1.5, input_size: int | None = None
) -> tuple[float, list[int]]:
    """The uniform width multiplier (every layer the same share of 1.0x) with the given FLOPs.

    Bisects the multiplier so the baseline AutoSlim is compared with has the
    same FLOPs as the configuration it found (widths rounded to multiples of
    the space's divisor, so the match is as close as rounding allows).
    """
    from hwnas.models.mobilenetv2 import base_channels
    from hwnas.spaces.mobilenetv2_channels import round_channels

    base = base_channels()
    size = int(input_size or space.input_size)
    div = int(getattr(space, "divisor", 8))

    def chans(r: float) -> list[int]:
        return [round_channels(b * r, div) for b in base]

    def f(r: float) -> float:
        return 2.0 * mobilenetv2_macs(chans(r), size, space.num_classes)

    lo, hi = 0.01, max_ratio
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < flops else (lo, mid)
    cands = sorted({lo, hi}, key=lambda r: abs(f(r) - flops))
    return cands[0], chans(cands[0])


__all__ = [
    "AutoSlim",
    "AutoSlimSettings",
    "parse_flops",
    "uniform_channels_for_flops",
]
