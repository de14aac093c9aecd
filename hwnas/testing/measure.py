"""What the ``hwnas_latency`` fixture measures and how: the model's artifact, and the
model, the reference (and the baseline's own model, when kept) timed in interleaved rounds.

Kept apart from the pytest plugin so that scripts (``benchmarks/regression_ci.py``)
time models exactly as the fixture does.
"""

from __future__ import annotations

from typing import Any

from hwnas.errors import ConfigError


def shape_text(input_shape: Any) -> str | None:
    """``(1, 3, 224, 224)`` or ``"1,3,224,224"`` -> ``"1,3,224,224"``; ``None`` stays."""
    if input_shape is None:
        return None
    if isinstance(input_shape, str):
        return input_shape
    return ",".join(str(int(d)) for d in input_shape)


def model_artifact(model: Any, device: Any, input_shape: Any = None, label: str | None = None):
    """An .onnx or .tflite path, a zoo name or a torch module -> the Artifact ``device`` runs.

    Zoo models and modules are exported (cached by content hash); a TFLite device
    converts ONNX artifacts of zoo models itself (``ensure_tflite``), and a module is
    exported straight to .tflite for it.

    Raises:
        ConfigError / ProfilingError / ExportError: as the loaders and exporters do.
    """
    import os
    from dataclasses import replace

    if isinstance(model, str | os.PathLike):
        name = str(model)
        if name.lower().endswith(".tflite"):
            from hwnas.export.tflite import load_tflite

            return load_tflite(name, label=label)
        from hwnas.commands._common import resolve_model

        art = resolve_model(name, shape_text(input_shape)).artifact
        return replace(art, label=label) if label else art
    import torch

    from hwnas.export.artifact import parse_shape

    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            "hwnas_latency takes an .onnx/.tflite path, a zoo name or a torch.nn.Module, "
            f"got {type(model).__name__}"
        )
    if input_shape is None:
        raise ConfigError(
            "a torch module needs its input shape: hwnas_latency(module, input_shape=(1, 3, 224, 224))"
        )
    shape = parse_shape(shape_text(input_shape) or "")
    name = label or type(model).__name__
    if device.artifact_format == "tflite":
        from hwnas.export import to_tflite

        return to_tflite(model, shape, label=name)
    from hwnas.export import to_onnx

    return to_onnx(model, shape, label=name)


def merge_rounds(parts: list[Any], info: dict) -> Any:
    """One Measurement of the rounds' measurements, samples in the order they ran;
    ``extra["rounds"]`` keeps each round's sample count."""
    from hwnas.profilers.latency import Measurement

    first = parts[0]
    return Measurement(
        samples_ms=tuple(s for p in parts for s in p.samples_ms),
        device=first.device,
        label=first.label,
        artifact_sha256=first.artifact_sha256,
        settings={**first.settings, "rounds": len(parts)},
        environment=info,
        warmup_ms=tuple(s for p in parts for s in p.warmup_ms),
        extra={"rounds": [len(p.samples_ms) for p in parts]},
    )


def measure_rounds(device: Any, artifacts: dict[str, Any], settings: Any, rounds: int):
    """Time every artifact of ``artifacts`` (name -> Artifact or ``None``) in ``rounds``
    interleaved rounds; the order reverses every other round (model, reference,
    reference, model, ...) so that none always runs first or always inherits
    another's cache state. Whatever the machine does during the session falls on
    all alike, which is what lets a reference's ratio between two sessions stand
    for the machine's drift.

    Returns:
        name -> Measurement merged over its rounds (``None`` for a ``None`` artifact).
    """
    got: dict[str, list[Any]] = {k: [] for k in artifacts}
    order = [(k, a) for k, a in artifacts.items() if a is not None]
    for r in range(rounds):
        for which, art in order if r % 2 == 0 else order[::-1]:
            got[which].append(device.measure(art, settings))
    info = device.info()
    return {k: merge_rounds(v, info) if v else None for k, v in got.items()}


def measure_interleaved(device: Any, artifact: Any, reference: Any, settings: Any, rounds: int):
    """``artifact`` and ``reference`` (or ``None``) in interleaved rounds (:func:`measure_rounds`).

    Returns:
        (model Measurement, reference Measurement or None), each merged over its rounds.
    """
    got = measure_rounds(device, {"model": artifact, "reference": reference}, settings, rounds)
    return got["model"], got["reference"]
