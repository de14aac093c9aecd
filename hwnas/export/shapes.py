"""Checks of a user's model against what they asked for, before anything is measured.

A static ONNX input of 1x3x224x224 given ``--input-shape 1,3,128,128`` used to be
re-declared at 128, counted at one shape and then rejected by ONNX Runtime inside
the measurement, whose raw error landed in a table. A device that rebuilds the
torch module (``cpu-torch``) cannot run a file hwnas did not build. Both are
bad input: these checks turn them into one-line errors that name the fix, raised
before any export, count or measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hwnas.errors import ConfigError

# Devices that time the torch module an artifact was exported from, not the file.
REBUILDING_DEVICES: tuple[str, ...] = ("cpu-torch", "cuda-torch")

__all__ = ["REBUILDING_DEVICES", "check_device_accepts", "check_input_shape", "is_model_file"]


def is_model_file(name: str) -> bool:
    """True when ``name`` names a model file rather than a zoo model (as ``resolve_model`` decides)."""
    p = Path(name)
    return p.suffix.lower() in (".onnx", ".tflite") or p.exists() or "/" in name


def _shown(dims: Sequence[int | None]) -> str:
    return ",".join("?" if d is None else str(d) for d in dims)


def check_input_shape(name: str, shape: Sequence[int] | None) -> None:
    """Refuse ``--input-shape`` that contradicts a static dimension of an ONNX file's input.

    Dynamic dimensions (symbolic or unset) take any value; zoo names are rebuilt at
    the shape given, so they are not checked. Unreadable files are left to the
    loader, whose error says what is wrong with them.

    Raises:
        ConfigError: a static dimension differs; the message names the expected shape.
    """
    if shape is None or not is_model_file(name) or Path(name).suffix.lower() != ".onnx":
        return
    import onnx

    try:
        model = onnx.load(str(name), load_external_data=False)
    except Exception:  # noqa: BLE001 - the loader reports a bad file with its own message
        return
    inits = {i.name for i in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if len(inputs) != 1 or not inputs[0].type.tensor_type.HasField("shape"):
        return
    dims: list[int | None] = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in inputs[0].type.tensor_type.shape.dim
    ]
    given = tuple(int(s) for s in shape)
    if len(dims) != len(given):
        return  # the loader says which rank it wants (ProfilingError, exit 2)
    if any(d is not None and d != g for d, g in zip(dims, given, strict=True)):
        fix = _shown([g if d is None else d for d, g in zip(dims, given, strict=True)])
        raise ConfigError(
            f"{name} expects input '{inputs[0].name}' of shape {_shown(dims)} (static), "
            f"not {_shown(given)}; give --input-shape {fix} or leave it out "
            "(to profile another resolution, re-export the model at that size)"
        )


def check_device_accepts(device: str, name: str) -> None:
    """Refuse a device that rebuilds torch modules for a model given as a file.

    Raises:
        ConfigError: ``device`` is one of :data:`REBUILDING_DEVICES` and ``name`` a file.
    """
    base = device.split(":", 1)[0]
    if base in REBUILDING_DEVICES and is_model_file(name):
        raise ConfigError(
            f"--device {device} times the torch module hwnas built (zoo models, space "
            f"architectures), not a file such as {name}; use --device cpu-ort for .onnx files"
        )
