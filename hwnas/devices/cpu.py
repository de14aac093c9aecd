"""Devices that run on this machine's CPU, in-process: ONNX Runtime and torch eager."""

from __future__ import annotations

import time

import numpy as np

from hwnas.devices.base import Device
from hwnas.devices.hostinfo import host_info, runtime_versions
from hwnas.errors import ConfigError, DeviceError
from hwnas.export.artifact import Artifact
from hwnas.profilers.latency import Measurement, MeasureSettings, time_callable

_ORT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def random_feed(
    inputs: list[tuple[str, str]], shapes: dict[str, tuple[int, ...]], seed: int = 0
) -> dict[str, np.ndarray]:
    """Random inputs for ``(name, onnx type string)`` pairs at the recorded shapes."""
    rng = np.random.default_rng(seed)
    feed = {}
    for name, type_str in inputs:
        dtype = _NP_TYPES.get(type_str, np.float32)
        shape = shapes[name]
        if np.issubdtype(dtype, np.floating):
            feed[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feed


class OrtCpuDevice(Device):
    """ONNX Runtime, CPUExecutionProvider, in this process.

    Args:
        threads: intra-op threads (default 1: the figure for one core, and the
            one that does not fight with anything else for the machine).
        optimization: graph optimisation level: disable, basic, extended, all.
    """

    artifact_format = "onnx"

    def __init__(self, threads: int = 1, optimization: str = "all", name: str = "cpu-ort"):
        super().__init__(threads)
        if optimization not in _ORT_LEVELS:
            raise ConfigError(
                f"unknown ONNX Runtime optimisation level '{optimization}'; use one of {', '.join(_ORT_LEVELS)}"
            )
        self.optimization = optimization
        self.name = name

    def session_options(self):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _ORT_LEVELS[self.optimization]
        )
        so.log_severity_level = 3
        return so

    def session(self, artifact: Artifact):
        import onnxruntime as ort

        self.check_artifact(artifact)
        try:
            return ort.InferenceSession(
                artifact.path, self.session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise DeviceError(
                f"ONNX Runtime cannot load {artifact.path}: {str(exc).splitlines()[0][:200]}; "
                "check the file with `hwnas flops` or re-export it"
            ) from exc

    def info(self) -> dict:
        return {
            **host_info(),
            "device": self.name,
            "runtime": "onnxruntime",
            "provider": "CPUExecutionProvider",
            "versions": runtime_versions("onnxruntime", "onnx", "numpy"),
            "threads": self.threads,
            "graph_optimization_level": _ORT_LEVELS[self.optimization],
        }

    def measure(self, artifact: Artifact, settings: MeasureSettings | None = None) -> Measurement:
        settings = self.settings_for(settings)
        t0 = time.perf_counter()
        sess = self.session(artifact)
        init_ms = (time.perf_counter() - t0) * 1e3
        feed = random_feed([(i.name, i.type) for i in sess.get_inputs()], artifact.shapes_dict())
        try:
            samples, warm = time_callable(lambda: sess.run(None, feed), settings)
        except Exception as exc:
            raise DeviceError(f"ONNX Runtime failed running {artifact.label}: {exc}") from exc
        return self._measurement(
            artifact,
            settings,
            samples,
            warmup=warm,
            extra={"init_ms": init_ms},
        )


def build_from_source(source: dict):
    """Rebuild the torch module an artifact was exported from (see :class:`hwnas.source.ModelSource`)."""
    from hwnas.source import ModelSource

    return ModelSource.from_dict(source).build()


class TorchCpuDevice(Device):
    """torch eager mode on the CPU, ``torch.set_num_threads(threads)``, under ``inference_mode``."""

    artifact_format = "onnx"  # takes the same artifacts, rebuilding the module they came from

    def __init__(self, threads: int = 1, name: str = "cpu-torch"):
        super().__init__(threads)
        self.name = name

    def info(self) -> dict:
        return {
            **host_info(),
            "device": self.name,
            "runtime": "torch-eager",
            "versions": runtime_versions("torch", "numpy"),
            "threads": self.threads,
        }

    def measure(self, artifact: Artifact, settings: MeasureSettings | None = None) -> Measurement:
        import torch

        settings = self.settings_for(settings)
        module = build_from_source(artifact.meta.get("source") or {}).eval()
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        x = torch.randn(*artifact.input_shape)
        try:
            with torch.inference_mode():
                samples, warm = time_callable(lambda: module(x), settings)
        finally:
            torch.set_num_threads(previous)
        return self._measurement(
            artifact,
            settings,
            samples,
            warmup=warm,
        )
