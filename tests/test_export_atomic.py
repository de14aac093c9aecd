"""The atomic-write helper every exporter goes through: publish on success,
nothing left behind and one typed error on failure."""

from __future__ import annotations

import os

import pytest

from hwnas.errors import ExportError
from hwnas.export.atomic import PARTIAL_PREFIX, written_atomically


def _leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(PARTIAL_PREFIX)]


def test_success_publishes_the_written_file(tmp_path):
    dest = tmp_path / "model.onnx"
    with (
        written_atomically(tmp_path, ".onnx", dest, "export failed for m", "fix it") as tmp,
        open(tmp, "wb") as f,
    ):
        f.write(b"graph")
    assert dest.read_bytes() == b"graph"
    assert _leftovers(tmp_path) == []


def test_failure_is_an_export_error_and_leaves_nothing(tmp_path):
    dest = tmp_path / "model.onnx"
    with (
        pytest.raises(ExportError) as info,
        written_atomically(tmp_path, ".onnx", dest, "export failed for m", "fix it") as tmp,
    ):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("op Foo unsupported\nsecond line")
    assert str(info.value) == "export failed for m (RuntimeError: op Foo unsupported); fix it"
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_passthrough_errors_are_not_wrapped(tmp_path):
    dest = tmp_path / "model.tflite"
    with (
        pytest.raises(ImportError),
        written_atomically(
            tmp_path, ".tflite", dest, "x", "y", passthrough=(ExportError, ImportError)
        ),
    ):
        raise ImportError("litert_torch")
    with (
        pytest.raises(ExportError, match="parity"),
        written_atomically(tmp_path, ".tflite", dest, "x", "y"),
    ):
        raise ExportError("parity failed")
    assert _leftovers(tmp_path) == [] and not dest.exists()
