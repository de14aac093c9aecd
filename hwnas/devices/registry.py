"""The device registry and the built-in devices' factories.

Kept apart from the package ``__init__`` (which re-exports it). Each factory
imports its device module only when called, so nobody pays for a back end
they do not use.
"""

from __future__ import annotations

from hwnas.devices.base import Device
from hwnas.registry import Registry

DEVICES: Registry[Device] = Registry("device")


def list_devices() -> list[str]:
    return DEVICES.names()


def create_device(name: str, **kwargs) -> Device:
    """Create the device ``name``; ``None`` kwargs keep the device's defaults."""
    return DEVICES.create(name, **kwargs)


@DEVICES.register("cpu-ort")
def _cpu_ort(threads: int = 1, optimization: str = "all") -> Device:
    """ONNX Runtime, CPUExecutionProvider, on this machine."""
    from hwnas.devices.cpu import OrtCpuDevice

    return OrtCpuDevice(threads=threads, optimization=optimization)


@DEVICES.register("cpu-torch")
def _cpu_torch(threads: int = 1) -> Device:
    """PyTorch eager mode on this machine's CPU."""
    from hwnas.devices.cpu import TorchCpuDevice

    return TorchCpuDevice(threads=threads)


# -- devices beyond this CPU (TFLite/LiteRT, adb, ssh, CUDA); heavy imports stay lazy --


@DEVICES.register("cpu-litert")
def _cpu_litert(threads: int = 1, xnnpack: bool = True, quantize: str | None = None) -> Device:
    """LiteRT (TFLite) interpreter on this machine's CPU, XNNPACK on/off."""
    from hwnas.devices.litert import LiteRTCpuDevice

    return LiteRTCpuDevice(threads=threads, xnnpack=xnnpack, quantize=quantize)


@DEVICES.register("adb")
def _adb(target: str | None = None, threads: int = 1, **options) -> Device:
    """Android phone over adb, timed by TFLite's benchmark_model (adb:SERIAL)."""
    from hwnas.devices.adb import AdbDevice

    return AdbDevice(target=target, threads=threads, **options)


@DEVICES.register("ssh")
def _ssh(target: str, threads: int = 1, **options) -> Device:
    """Linux board over ssh, timed by the hwnas runner (ssh:user@host[:port])."""
    from hwnas.devices.ssh import SshDevice

    return SshDevice(target, threads=threads, **options)


@DEVICES.register("cuda-torch")
def _cuda_torch(threads: int = 1, gpu: int = 0, dtype: str = "float32") -> Device:
    """PyTorch eager on an NVIDIA GPU, timed with CUDA events."""
    from hwnas.devices.cuda import CudaTorchDevice

    return CudaTorchDevice(threads=threads, gpu=gpu, dtype=dtype)


@DEVICES.register("cuda-ort")
def _cuda_ort(threads: int = 1, gpu: int = 0, optimization: str = "all") -> Device:
    """ONNX Runtime CUDAExecutionProvider with IO binding (no host-device copies timed)."""
    from hwnas.devices.cuda import CudaOrtDevice

    return CudaOrtDevice(threads=threads, gpu=gpu, optimization=optimization)
