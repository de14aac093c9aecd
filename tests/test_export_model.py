"""`hwnas export-model` and the profile checks of hwnas.export.shapes: bad input is one line, exit 2."""

from __future__ import annotations

import stat

import onnx
import pytest
from onnx import TensorProto, helper

from hwnas.cli import main
from hwnas.errors import ConfigError
from hwnas.export.shapes import check_device_accepts, check_input_shape


def _relu_model(path, dims):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), path)
    return str(path)


def test_static_shape_mismatch_names_the_expected_shape(tmp_path):
    f = _relu_model(tmp_path / "m.onnx", [1, 3, 224, 224])
    with pytest.raises(
        ConfigError, match=r"expects input 'x' of shape 1,3,224,224.*not 1,3,128,128"
    ):
        check_input_shape(f, (1, 3, 128, 128))
    check_input_shape(f, (1, 3, 224))  # a wrong rank is the loader's error (tests/test_cli.py)
    check_input_shape(f, (1, 3, 224, 224))  # the declared shape is fine
    check_input_shape("mobilenetv2", (1, 3, 128, 128))  # zoo models are rebuilt at any size


def test_dynamic_dims_take_any_value(tmp_path):
    f = _relu_model(tmp_path / "d.onnx", ["N", 3, "H", "W"])
    check_input_shape(f, (2, 3, 64, 64))
    with pytest.raises(ConfigError, match=r"give --input-shape 2,3,64,64"):
        check_input_shape(f, (2, 4, 64, 64))


def test_rebuilding_device_refuses_files(tmp_path):
    f = _relu_model(tmp_path / "m.onnx", [1, 3, 8, 8])
    with pytest.raises(ConfigError, match="use --device cpu-ort"):
        check_device_accepts("cpu-torch", f)
    check_device_accepts("cpu-torch", "mobilenetv2")
    check_device_accepts("cpu-ort", f)


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_profile_mismatches_exit_2_before_measuring(tmp_path, capsys):
    f = _relu_model(tmp_path / "m.onnx", [1, 3, 224, 224])
    code, err = _err(capsys, ["profile", f, "--input-shape", "1,3,128,128"])
    assert code == 2 and len(err) == 1 and "1,3,224,224" in err[0]
    code, err = _err(capsys, ["profile", f, "--device", "cpu-torch"])
    assert code == 2 and len(err) == 1 and "cpu-ort" in err[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["resnet19", "--out", "{d}/m.onnx"], "is not a zoo model"),
        (["cifar_resnet20", "--out", "{d}/m.bin"], "cannot tell the format"),
        (["cifar_resnet20", "--out", "{d}/m.onnx", "--format", "tflite"], "ends in .onnx"),
        (["cifar_resnet20", "--out", "{d}/nodir/m.onnx"], "does not exist"),
        (["cifar_resnet20", "--out", "{d}/exists.onnx"], "give --force"),
        (["99999", "--space", "nb201", "--out", "{d}/m.onnx"], "index must be an int in 0..15624"),
        (["|bad|", "--space", "nb201", "--out", "{d}/m.onnx"], "node groups"),
        (["cifar_resnet20", "--out", "{d}/m.onnx", "--quantize", "dynamic-int8"], "tflite only"),
    ],
)
def test_export_model_bad_input(tmp_path, capsys, argv, expected):
    (tmp_path / "exists.onnx").write_bytes(b"x")
    code, err = _err(capsys, ["export-model", *[a.format(d=tmp_path) for a in argv]])
    assert code == 2
    assert len(err) == 1 and expected in err[0], err


@pytest.mark.slow
def test_export_model_writes_a_portable_file(tmp_path, capsys):
    """An nb201 index becomes an ordinary file (not 0600) that `hwnas profile` counts."""
    out = tmp_path / "cell.onnx"
    assert main(["export-model", "1", "--space", "nb201", "--out", str(out)]) == 0
    mode = stat.S_IMODE(out.stat().st_mode)
    assert mode & stat.S_IRGRP, oct(mode)  # readable by others too, unlike the cache's copies
    model = onnx.load(str(out))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 32]
    capsys.readouterr()
    assert main(["flops", str(out), "--json"]) == 0
    assert '"flops"' in capsys.readouterr().out
