"""Exporters: torch -> ONNX (and torch -> TFLite with the ``tflite`` extra).

Every exporter returns an :class:`Artifact`: the file, its format, the sha256
of its bytes and the fixed input shapes it was exported for. Artifacts are
cached by a content hash of what went in (module structure, weights, input
shapes, exporter versions), so a campaign re-run exports nothing twice.
"""

from hwnas.export.artifact import Artifact, load_onnx, parse_shape

# The torch -> ONNX exporters ``to_onnx(exporter=...)`` accepts; here, not in
# onnx_export, so that the CLI can offer them without importing torch.
EXPORTERS = ("dynamo", "torchscript")


def to_onnx(*args, **kwargs):
    """torch -> ONNX, checked and cached; see :func:`hwnas.export.onnx_export.to_onnx`.

    Imported lazily so that devices and measurement workers need not load torch.
    """
    from hwnas.export.onnx_export import to_onnx as _to_onnx

    return _to_onnx(*args, **kwargs)


def default_cache_dir():
    from hwnas.export.onnx_export import default_cache_dir as _d

    return _d()


def to_tflite(*args, **kwargs):
    """torch -> .tflite through litert-torch (extra ``tflite``); see :mod:`hwnas.export.tflite`."""
    from hwnas.export.tflite import to_tflite as _to_tflite

    return _to_tflite(*args, **kwargs)


__all__ = [
    "EXPORTERS",
    "Artifact",
    "default_cache_dir",
    "load_onnx",
    "parse_shape",
    "to_onnx",
    "to_tflite",
]
