"""ModelSource: the one record of how to rebuild a model, and the export step that writes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hwnas.devices.cpu as cpu
from hwnas.campaigns.step import export_source, prepare_arch
from hwnas.errors import ConfigError
from hwnas.objectives import DeviceLatency
from hwnas.profilers.latency import MeasureSettings
from hwnas.source import ModelSource
from hwnas.spaces import get_space

FAST = MeasureSettings(warmup=1, runs=3)


def _classes(module: torch.nn.Module) -> int:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1].out_features


def test_round_trip_keeps_every_field():
    src = ModelSource("space", "nb201", (0, 1, 2, 3, 4, 0), 32, 100, seed=3, exporter="torchscript")
    assert ModelSource.from_dict(src.to_dict()) == src
    zoo = ModelSource.zoo("resnet18")
    assert ModelSource.from_dict(zoo.to_dict()) == zoo


def test_reads_records_written_before_it_existed():
    old = {"kind": "space", "space": "nb201", "choices": [0, 1, 2, 3, 4, 0]}
    src = ModelSource.from_dict(old)
    assert (src.name, src.choices, src.num_classes, src.seed) == (
        "nb201",
        (0, 1, 2, 3, 4, 0),
        None,
        0,
    )
    assert ModelSource.from_dict({"kind": "zoo", "name": "resnet18"}).kind == "zoo"


@pytest.mark.parametrize(
    "bad, match",
    [({}, "use cpu-ort"), ({"kind": "file"}, "unreadable"), ({"kind": "space"}, "unreadable")],
)
def test_bad_records_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        ModelSource.from_dict(bad)


def test_of_space_records_classes_and_input_size_and_builds_them():
    space = get_space("nb201", num_classes=100)
    arch = space.sample(np.random.default_rng(0))
    src = ModelSource.of_space(space, arch)
    assert (src.num_classes, src.input_size) == (100, 32)
    assert _classes(src.build()) == 100
    # the weights come from the seed, and the caller's RNG is left alone
    state = torch.random.get_rng_state()
    a, b = src.build(), src.build()
    assert torch.equal(torch.random.get_rng_state(), state)
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)


def test_campaign_step_writes_the_full_source(tmp_path):
    space = get_space("nb201", num_classes=100)
    arch = space.sample(np.random.default_rng(1))
    prep = prepare_arch(
        space,
        arch,
        cache_dir=tmp_path,
        check=False,
        with_metrics=False,
        seed=2,
        exporter="torchscript",
    )
    assert prep.artifact is not None, prep.failure
    src = ModelSource.from_dict(prep.artifact.meta["source"])
    assert src == ModelSource.of_space(space, arch, seed=2, exporter="torchscript")
    art = export_source(src, space=space, cache_dir=tmp_path, check=False)
    assert art.path == prep.artifact.path  # same recipe, same cached file


def test_cpu_torch_device_latency_times_the_searched_class_count(monkeypatch):
    """The bug of issue 18: DeviceLatency exported without num_classes, and cpu-torch
    rebuilt (and timed) the space's default 10-class network."""
    built: list[torch.nn.Module] = []
    real = cpu.build_from_source

    def spy(source: dict) -> torch.nn.Module:
        built.append(real(source))
        return built[-1]

    monkeypatch.setattr(cpu, "build_from_source", spy)
    space = get_space("nb201", num_classes=100)
    arch = space.sample(np.random.default_rng(2))
    lat = DeviceLatency("cpu-torch", settings=FAST)
    try:
        ms, _ = lat.latency_ms(space, [arch])[0]
    finally:
        lat.close()
    assert ms > 0 and len(built) == 1
    assert _classes(built[0]) == 100
