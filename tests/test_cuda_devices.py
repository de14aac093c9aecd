"""CUDA devices: clear errors where no GPU is usable; real timings where one is (marked cuda)."""

from __future__ import annotations

import pytest
import torch

from hwnas.devices import create_device
from hwnas.devices.cuda import timed_loop
from hwnas.errors import DeviceError
from hwnas.profilers.latency import MeasureSettings


def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


HAS_GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(
    not HAS_GPU, reason="no NVIDIA GPU (torch.cuda.is_available() is False)"
)


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present: the no-GPU message cannot be checked")
def test_cuda_torch_without_a_gpu_says_so():
    with pytest.raises(DeviceError, match="no usable NVIDIA GPU.*cpu-torch"):
        create_device("cuda-torch")


@pytest.mark.skipif(_ort_has_cuda(), reason="onnxruntime here has the CUDA provider")
def test_cuda_ort_without_the_cuda_provider_says_so():
    with pytest.raises(DeviceError, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        create_device("cuda-ort")


def test_event_timed_loop_follows_the_settings():
    calls = []

    def run_once() -> float:
        calls.append(1)
        return 2.0

    samples, warm = timed_loop(run_once, MeasureSettings(warmup=3, runs=5))
    assert samples == [2.0] * 5 and warm == [2.0] * 3
    samples, warm = timed_loop(run_once, MeasureSettings(min_runs=10, rel_ci=0.5))
    assert len(samples) == 10  # constant times: the median's CI is zero at the first check
    assert len(warm) == 2  # warm-up by detection: the first run, then one no faster


@pytest.mark.cuda
@needs_gpu
def test_cuda_torch_times_a_zoo_model():
    from hwnas.commands._common import resolve_model

    art = resolve_model("cifar_resnet20").artifact
    dev = create_device("cuda-torch")
    m = dev.measure(art, MeasureSettings(warmup=5, runs=20))
    assert len(m.samples_ms) == 20 and min(m.samples_ms) > 0
    assert m.environment["gpu"] and m.environment["timer"] == "cuda events"


@pytest.mark.cuda
@pytest.mark.skipif(not (HAS_GPU and _ort_has_cuda()), reason="needs a GPU and onnxruntime-gpu")
def test_cuda_ort_times_with_io_binding():
    from hwnas.commands._common import resolve_model

    art = resolve_model("cifar_resnet20").artifact
    dev = create_device("cuda-ort")
    m = dev.measure(art, MeasureSettings(warmup=5, runs=20))
    assert len(m.samples_ms) == 20 and m.environment["io_binding"] is True
