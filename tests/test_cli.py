"""The `hwnas` command: bad input gives one line naming the fix, exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

from hwnas.cli import main


def _relu_model(path, dims):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _error_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize(
    "make_argv, expected",
    [
        (lambda d: ["profile", str(d / "missing.onnx")], "no such file"),
        (
            lambda d: ["profile", "resnet19"],
            "neither an existing file nor a zoo model; zoo models: ",
        ),
        (lambda d: ["profile", "cifar_resnet20", "--device", "tpu"], "unknown device 'tpu'"),
        (lambda d: ["flops", str(d / "missing.onnx")], "no such file"),
    ],
)
def test_bad_names_give_one_line_and_status_2(tmp_path, capsys, make_argv, expected):
    code, err = _error_line(capsys, make_argv(tmp_path))
    assert code == 2
    assert len(err) == 1 and expected in err[0], err
    assert "Traceback" not in "\n".join(err)


def test_bad_files_give_one_line_and_status_2(tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf" * 10)
    dyn = _relu_model(tmp_path / "dyn.onnx", ["N", 3, 8, 8])
    data = dyn.read_bytes()
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(data[: len(data) // 2])
    for argv, expected in (
        (["profile", str(junk)], "not a valid ONNX model"),
        (["profile", str(trunc)], "not a valid ONNX model"),
        (["profile", str(dyn)], "dynamic dimensions"),
        (["profile", str(dyn), "--input-shape", "1,3,8"], "rank 4"),
        (["profile", str(dyn), "--input-shape", "a,b"], "bad input shape"),
        (["profile", str(dyn), "--runs", "0"], "--runs must be >= 1"),
        (["profile", str(tmp_path)], "is a directory"),
    ):
        code, err = _error_line(capsys, argv)
        assert code == 2, (argv, err)
        assert len(err) == 1 and expected in err[0], (argv, err)


def test_debug_shows_the_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "hwnas.cli", "--debug", "profile", str(tmp_path / "nope.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "Traceback" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "hwnas.cli", "profile", str(tmp_path / "nope.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("hwnas: error: no such file")


def test_profile_an_onnx_file_with_input_shape_and_store(tmp_path, capsys):
    dyn = _relu_model(tmp_path / "dyn.onnx", ["N", 3, 8, 8])
    db = tmp_path / "m.db"
    code = main(
        ["profile", str(dyn), "--input-shape", "2,3,8,8", "--runs", "5", "--warmup", "1",
         "--db", str(db), "--json", "--no-isolate"]
    )  # fmt: skip
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert (
        rows[0]["status"] == "ok" and rows[0]["n"] == 5 and rows[0]["input_shape"] == [2, 3, 8, 8]
    )
    assert rows[0]["flops"] == 2 * 3 * 8 * 8  # one FLOP per Relu output element
    from hwnas.store import Store

    with Store(db) as s:
        got = s.measurements()
        assert len(got) == 1 and got[0]["input_shape"] == "2x3x8x8" and got[0]["n"] == 5


@pytest.mark.parametrize("threads", ["1", "2"])
def test_profile_with_threads(tmp_path, capsys, threads):
    """--threads reaches the device and the interference guard once each (it was
    passed to the guard twice, a TypeError, whenever it was given)."""
    dyn = _relu_model(tmp_path / "dyn.onnx", [1, 3, 8, 8])
    code = main(
        ["profile", str(dyn), "--threads", threads, "--runs", "5", "--warmup", "1", "--json",
         "--no-isolate", "--db", str(tmp_path / "t.db")]
    )  # fmt: skip
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["status"] == "ok" and rows[0]["environment"]["threads"] == int(threads)


def test_profile_zoo_models_table_and_plot(tmp_path, capsys):
    png = tmp_path / "f.png"
    code = main(["profile", "cifar_resnet20", "--runs", "5", "--warmup", "1", "--plot", str(png)])
    out = capsys.readouterr()
    assert code == 0
    assert "cifar_resnet20" in out.out and "median" in out.out
    assert "at least two" in out.err and not png.exists()  # one model: no scatter


def test_devices_and_zoo_list(capsys):
    assert main(["devices", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ort = next(r for r in rows if r["device"] == "cpu-ort")
    assert ort["info"]["runtime"] == "onnxruntime" and ort["info"]["cpu_model"]
    assert main(["zoo", "--json"]) == 0
    zoo = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"mobilenetv2", "mnasnet_a1", "resnet18"} <= set(zoo)
