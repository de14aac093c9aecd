"""The device interface: where a model runs, and what it ran on.

A device is three small parts (DESIGN.md): a *transport* (how files and
commands reach the place: local process, adb, ssh), a *runtime* on the far
side (ONNX Runtime, LiteRT, TFLite's ``benchmark_model``, torch) and a
*parser* of what that runtime prints. A concrete device combines them in a
few lines. In-process runtimes (``cpu-ort``, ``cpu-torch``) skip the transport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from hwnas.errors import ConfigError
from hwnas.export.artifact import Artifact
from hwnas.profilers.latency import Measurement, MeasureSettings


class Device(ABC):
    """Base class of every device.

    Attributes:
        name: the registry name it was created under (``cpu-ort``, ``adb:SERIAL``...).
        artifact_format: the file format :meth:`measure` accepts (``onnx``/``tflite``/``torch``).
    """

    name: str = ""
    artifact_format: str = "onnx"

    def __init__(self, threads: int = 1):
        if int(threads) < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)

    @abstractmethod
    def info(self) -> dict:
        """What the device is: model/SoC, cores used, governor, runtime versions, threads."""

    @abstractmethod
    def measure(self, artifact: Artifact, settings: MeasureSettings | None = None) -> Measurement:
        """Time ``artifact`` and return every raw sample with the environment."""

    def check_artifact(self, artifact: Artifact) -> None:
        if artifact.format != self.artifact_format:
            raise ConfigError(
                f"device {self.name} runs {self.artifact_format} files, got a {artifact.format} "
                f"artifact ({artifact.path}); export to {self.artifact_format} first"
            )

    def settings_for(self, settings: MeasureSettings | None) -> MeasureSettings:
        """The settings to use: the caller's, with this device's thread count."""
        from dataclasses import replace

        return replace(settings or MeasureSettings(), threads=self.threads)

    def _measurement(
        self,
        artifact: Artifact,
        settings: MeasureSettings,
        samples: Iterable[float],
        warmup: Iterable[float] = (),
        environment: dict | None = None,
        extra: dict | None = None,
    ) -> Measurement:
        """The record of one :meth:`measure`: samples and warm-up runs with what
        produced them (this device, the artifact, the settings, ``environment``
        or else :meth:`info`), so every device files its raw samples the same way."""
        return Measurement(
            samples_ms=tuple(samples),
            device=self.name,
            label=artifact.label,
            artifact_sha256=artifact.sha256,
            settings=settings.to_dict(),
            environment=self.info() if environment is None else environment,
            warmup_ms=tuple(warmup),
            extra={} if extra is None else extra,
        )

    def close(self) -> None:
        """Release sessions, connections, pushed files."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} threads={self.threads}>"
