"""NVIDIA GPUs: ``cuda-torch`` (torch eager, CUDA events) and ``cuda-ort`` (ONNX Runtime CUDA EP).

Why CUDA events and synchronisation: a kernel launch returns before the GPU
has run it, so a host clock around ``model(x)`` measures the launch, not the
work. ``cuda-torch`` records an event before and after each run on the
current stream and waits for the second one; ``elapsed_time`` is then GPU
time between the two, free of Python's own timing noise.

Why IO binding for ``cuda-ort``: ``session.run`` with numpy inputs copies
the input to the GPU and the output back on every call, which is PCIe
traffic, not the model. The input is copied to the GPU once, inputs and
outputs are bound to device memory, and only ``run_with_iobinding`` is timed
(ONNX Runtime synchronises the CUDA stream before it returns).

Warm-up matters more on a GPU than on a CPU: the first runs pay cuDNN
algorithm selection and the caching allocator's first allocations. The
warm-up follows :class:`~hwnas.profilers.latency.MeasureSettings` like every
device (adaptive unless given).

Neither device could be tested on a GPU where hwnas was written; they raise
a clear :class:`~hwnas.errors.DeviceError` where no GPU is usable.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hwnas.devices.base import Device
from hwnas.devices.hostinfo import host_info, runtime_versions
from hwnas.errors import ConfigError, DeviceError
from hwnas.export.artifact import Artifact
from hwnas.profilers.latency import (
    Measurement,
    MeasureSettings,
    adaptive_loop,
    time_callable,
)


def timed_loop(
    run_once: Callable[[], float], settings: MeasureSettings
) -> tuple[list[float], list[float]]:
    """:func:`~hwnas.profilers.latency.adaptive_loop`'s rules for a ``run_once`` that
    returns its own duration in ms (from CUDA events rather than the host clock)."""
    return adaptive_loop(run_once, settings)


def _gpu_info(torch, index: int) -> dict:
    props = torch.cuda.get_device_properties(index)
    return {
        "gpu": props.name,
        "gpu_index": index,
        "gpu_memory_mb": int(props.total_memory // (1 << 20)),
        "compute_capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def _require_torch_gpu(index: int):
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda
        raise DeviceError(
            "no usable NVIDIA GPU: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, "
            + (f"built for CUDA {built}" if built else "a CPU-only build")
            + "); on a machine with an NVIDIA GPU and driver install a CUDA build of torch "
            "(https://pytorch.org/get-started/locally/), or use cpu-torch / cpu-ort here"
        )
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"gpu index {index} does not exist: {torch.cuda.device_count()} GPU(s) visible "
            "(check CUDA_VISIBLE_DEVICES)"
        )
    return torch


class CudaTorchDevice(Device):
    """torch eager on an NVIDIA GPU, timed with CUDA events.

    Args:
        threads: host threads (only the Python side; the GPU does the work).
        gpu: CUDA device index.
        dtype: ``"float32"`` or ``"float16"`` (weights and input cast to it).
    """

    artifact_format = "onnx"  # like cpu-torch: rebuilds the module the artifact came from

    def __init__(
        self, threads: int = 1, gpu: int = 0, dtype: str = "float32", name: str = "cuda-torch"
    ):
        super().__init__(threads)
        if dtype not in ("float32", "float16"):
            raise ConfigError(f"dtype must be float32 or float16, got {dtype!r}")
        self.torch = _require_torch_gpu(int(gpu))
        self.gpu = int(gpu)
        self.dtype = dtype
        self.name = name

    def info(self) -> dict:
        return {
            **host_info(),
            **_gpu_info(self.torch, self.gpu),
            "device": self.name,
            "runtime": "torch-eager-cuda",
            "versions": runtime_versions("torch", "numpy"),
            "threads": self.threads,
            "dtype": self.dtype,
            "timer": "cuda events",
        }

    def measure(self, artifact: Artifact, settings: MeasureSettings | None = None) -> Measurement:
        from hwnas.devices.cpu import build_from_source

        torch = self.torch
        settings = self.settings_for(settings)
        dev = torch.device("cuda", self.gpu)
        dtype = getattr(torch, self.dtype)
        module = build_from_source(artifact.meta.get("source") or {}).eval().to(dev, dtype)
        x = torch.randn(*artifact.input_shape, device=dev, dtype=dtype)
        stream = torch.cuda.current_stream(dev)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def run_once() -> float:
            start.record(stream)
            module(x)
            end.record(stream)
            end.synchronize()
            return float(start.elapsed_time(end))

        try:
            with torch.inference_mode(), torch.cuda.device(dev):
                torch.cuda.reset_peak_memory_stats(dev)
                torch.cuda.synchronize(dev)
                samples, warm = timed_loop(run_once, settings)
        except torch.cuda.OutOfMemoryError as exc:
            raise DeviceError(
                f"{artifact.label} does not fit in GPU memory on {self.name}; use a smaller "
                "input or float16"
            ) from exc
        return self._measurement(
            artifact,
            settings,
            samples,
            warmup=warm,
            extra={"max_memory_allocated_mb": torch.cuda.max_memory_allocated(dev) / (1 << 20)},
        )


class CudaOrtDevice(Device):
    """ONNX Runtime with the CUDAExecutionProvider and IO binding (see module docstring).

    Args:
        threads: intra-op threads of the CPU part of the session.
        gpu: CUDA device index.
        optimization: graph optimisation level (disable, basic, extended, all).
    """

    artifact_format = "onnx"

    def __init__(
        self, threads: int = 1, gpu: int = 0, optimization: str = "all", name: str = "cuda-ort"
    ):
        super().__init__(threads)
        import onnxruntime as ort

        from hwnas.devices.cpu import _ORT_LEVELS

        if optimization not in _ORT_LEVELS:
            raise ConfigError(
                f"unknown ONNX Runtime optimisation level '{optimization}'; use one of {', '.join(_ORT_LEVELS)}"
            )
        providers = ort.get_available_providers()
        if "CUDAExecutionProvider" not in providers:
            raise DeviceError(
                "this onnxruntime has no CUDAExecutionProvider (available: "
                f"{', '.join(providers)}); on a machine with an NVIDIA GPU install "
                "onnxruntime-gpu matching your CUDA version (and uninstall onnxruntime), "
                "or use cpu-ort here"
            )
        self.ort = ort
        self.gpu = int(gpu)
        self.optimization = optimization
        self.name = name

    def info(self) -> dict:
        return {
            **host_info(),
            "device": self.name,
            "runtime": "onnxruntime",
            "provider": "CUDAExecutionProvider",
            "gpu_index": self.gpu,
            "versions": runtime_versions("onnxruntime-gpu", "onnxruntime", "numpy"),
            "threads": self.threads,
            "io_binding": True,
        }

    def measure(self, artifact: Artifact, settings: MeasureSettings | None = None) -> Measurement:
        from hwnas.devices.cpu import _ORT_LEVELS, random_feed

        ort = self.ort
        self.check_artifact(artifact)
        settings = self.settings_for(settings)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _ORT_LEVELS[self.optimization]
        )
        so.log_severity_level = 3
        t0 = time.perf_counter()
        try:
            sess = ort.InferenceSession(
                artifact.path,
                so,
                providers=[
                    ("CUDAExecutionProvider", {"device_id": self.gpu}),
                    "CPUExecutionProvider",
                ],
            )
        except Exception as exc:
            raise DeviceError(f"ONNX Runtime (CUDA) cannot load {artifact.path}: {exc}") from exc
        if sess.get_providers()[0] != "CUDAExecutionProvider":
            raise DeviceError(
                f"ONNX Runtime fell back to {sess.get_providers()[0]}: the CUDA provider could not "
                "start (driver/CUDA/cuDNN mismatch?); check `nvidia-smi` and the onnxruntime-gpu "
                "requirements for your CUDA version"
            )
        init_ms = (time.perf_counter() - t0) * 1e3
        feed = random_feed([(i.name, i.type) for i in sess.get_inputs()], artifact.shapes_dict())
        binding = sess.io_binding()
        for name, arr in feed.items():
            binding.bind_ortvalue_input(
                name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", self.gpu)
            )
        for out in sess.get_outputs():
            binding.bind_output(out.name, "cuda", self.gpu)
        binding.synchronize_inputs()
        try:
            samples, warm = time_callable(lambda: sess.run_with_iobinding(binding), settings)
        except Exception as exc:
            raise DeviceError(
                f"ONNX Runtime (CUDA) failed running {artifact.label}: {exc}"
            ) from exc
        return self._measurement(
            artifact,
            settings,
            samples,
            warmup=warm,
            extra={"init_ms": init_ms},
        )
