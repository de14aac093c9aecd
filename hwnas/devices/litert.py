"""``cpu-litert``: the LiteRT (TFLite) interpreter on this machine's CPU, in-process.

The model is loaded and its inputs set by the same code the board-side
runner uses (:func:`hwnas.devices.runner.load_litert`), so a .tflite file is
timed the same way here, over ssh on a board, and inside the stand-in
``benchmark_model`` the adb tests push.
"""

from __future__ import annotations

import time

from hwnas.devices.base import Device
from hwnas.devices.hostinfo import host_info, runtime_versions
from hwnas.errors import DeviceError, require
from hwnas.export.artifact import Artifact
from hwnas.profilers.latency import Measurement, MeasureSettings, time_callable


class LiteRTCpuDevice(Device):
    """The LiteRT interpreter (``ai-edge-litert``) on the CPU.

    Args:
        threads: interpreter threads (``num_threads``).
        xnnpack: apply the XNNPACK delegate (LiteRT's default CPU path); ``False``
            runs the built-in kernels only, the figure older phones get.
        quantize: when given an ONNX artifact with a torch source, the .tflite
            form to export (``None`` = fp32, ``"dynamic-int8"``).
    """

    artifact_format = "tflite"

    def __init__(
        self,
        threads: int = 1,
        xnnpack: bool = True,
        quantize: str | None = None,
        name: str = "cpu-litert",
    ):
        super().__init__(threads)
        require("ai_edge_litert.interpreter", "tflite", "the cpu-litert device")
        self.xnnpack = bool(xnnpack)
        self.quantize = quantize
        self.name = name

    def info(self) -> dict:
        return {
            **host_info(),
            "device": self.name,
            "runtime": "litert-interpreter",
            "versions": runtime_versions("ai-edge-litert", "numpy"),
            "threads": self.threads,
            "xnnpack": self.xnnpack,
        }

    def prepare(self, artifact: Artifact) -> Artifact:
        """The .tflite artifact to run (ONNX artifacts from hwnas models are re-exported)."""
        from hwnas.export.tflite import ensure_tflite

        art = ensure_tflite(artifact, self.quantize)
        self.check_artifact(art)
        return art

    def measure(self, artifact: Artifact, settings: MeasureSettings | None = None) -> Measurement:
        from hwnas.devices.runner import RunnerError, load_litert

        settings = self.settings_for(settings)
        art = self.prepare(artifact)
        t0 = time.perf_counter()
        try:
            invoke, rinfo = load_litert(art.path, self.threads, xnnpack=self.xnnpack)
        except RunnerError as exc:
            raise DeviceError(f"{self.name}: {exc}; re-export the model or check the file") from exc
        init_ms = (time.perf_counter() - t0) * 1e3
        try:
            samples, warm = time_callable(invoke, settings)
        except Exception as exc:
            raise DeviceError(f"LiteRT failed running {art.label}: {exc}") from exc
        env = self.info()
        env["xnnpack_delegated"] = rinfo.get("xnnpack_delegated")
        return self._measurement(
            art,
            settings,
            samples,
            warmup=warm,
            environment=env,
            extra={
                "init_ms": init_ms,
                "ops": rinfo.get("ops"),
                "tflite_path": art.path,
                "converted_from_sha256": artifact.sha256 if art is not artifact else None,
            },
        )
