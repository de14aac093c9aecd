"""Arch, registry, latency statistics, store and export."""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from hwnas.arch import Arch
from hwnas.errors import ConfigError, ExportError, ProfilingError, SpaceError, StoreError
from hwnas.export import load_onnx, parse_shape, to_onnx
from hwnas.profilers.latency import (
    Measurement,
    MeasurementFailure,
    MeasureSettings,
    Stats,
    median_ci_halfwidth,
    time_callable,
)
from hwnas.registry import Registry
from hwnas.store import Store

# ---- Arch -------------------------------------------------------------------


def test_arch_is_hashable_with_a_stable_id():
    a = Arch("nb201", (1, 2, 3))
    b = Arch("nb201", [1, 2, 3])
    assert a == b and hash(a) == hash(b) and a.id == b.id
    # the id is a function of the canonical JSON only: fixed across processes
    assert a.canonical_json() == '{"choices":[1,2,3],"space":"nb201"}'
    assert a.id == "86f9f5c13ef200a0"  # pinned: must never change between releases
    assert Arch("nb201", (1, 2, 4)).id != a.id
    assert Arch("other", (1, 2, 3)).id != a.id


def test_arch_id_is_sha256_of_canonical_json():
    import hashlib

    a = Arch("s", (0, "x", (1, 2)))
    assert a.id == hashlib.sha256(a.canonical_json().encode()).hexdigest()[:16]


def test_arch_json_round_trip_and_nested_choices():
    a = Arch("mnasnet", ((0, 1), (2, 3), "k5"))
    assert Arch.from_json(a.to_json()) == a
    with pytest.raises(SpaceError):
        Arch.from_json("{not json")
    with pytest.raises(SpaceError):
        Arch("s", ({"a": 1},))


# ---- Registry -----------------------------------------------------------------


def test_registry_lists_creates_and_names_valid_entries_on_a_miss():
    reg: Registry = Registry("widget")

    @reg.register("small")
    def small(size: int = 3, target: str | None = None):
        """A small widget."""
        return ("small", size, target)

    assert reg.names() == ["small"] and "small" in reg
    assert reg.create("small", size=None) == ("small", 3, None)  # None keeps the default
    assert reg.create("small:abc", size=5) == ("small", 5, "abc")
    assert reg.help("small") == "A small widget."
    with pytest.raises(
        ConfigError, match="unknown widget 'smal'.*Did you mean 'small'.*Valid widgets: small"
    ):
        reg.create("smal")


# ---- latency statistics ------------------------------------------------------------


def test_stats_match_numpy_on_known_samples():
    s = Stats((1.0, 2.0, 3.0, 4.0, 100.0))
    assert s.median == 3.0
    assert s.mean == pytest.approx(22.0)
    assert s.iqr == pytest.approx(4.0 - 2.0)
    assert s.p90 == pytest.approx(np.percentile([1, 2, 3, 4, 100], 90))
    assert s.std == pytest.approx(np.std([1, 2, 3, 4, 100], ddof=1))
    assert s.cv == pytest.approx(s.std / s.mean)
    assert s.n == 5 and s.min == 1.0 and s.max == 100.0


def test_median_ci_shrinks_with_more_samples():
    rng = np.random.default_rng(0)
    small = np.sort(rng.normal(10, 1, 20))
    big = np.sort(rng.normal(10, 1, 2000))
    assert median_ci_halfwidth(big) < median_ci_halfwidth(small)
    assert math.isinf(median_ci_halfwidth(np.array([1.0, 2.0])))


def test_time_callable_exact_runs_and_adaptive_stop():
    calls = []
    samples, warm = time_callable(lambda: calls.append(1), MeasureSettings(warmup=2, runs=7))
    assert len(samples) == 7 and len(warm) == 2 and len(calls) == 9
    # A stable function stops as soon as the CI allows (well before max_runs) ...
    stable, _ = time_callable(lambda: sum(range(2000)), MeasureSettings(rel_ci=0.2, max_runs=5000))
    assert 10 <= len(stable) < 5000
    # ... and the budget bounds a noisy one.
    noisy, _ = time_callable(
        lambda: sum(range(int(np.random.default_rng().integers(1, 50_000)))),
        MeasureSettings(rel_ci=1e-6, budget_s=0.2, max_runs=10**6),
    )
    assert len(noisy) >= 10


def test_measurement_keeps_raw_samples_and_warns_when_noisy():
    m = Measurement(samples_ms=(1.0, 1.0, 1.0, 5.0), device="d", label="x")
    assert m.samples_ms == (1.0, 1.0, 1.0, 5.0)
    assert m.noisy
    with pytest.warns(RuntimeWarning, match="noisy"):
        m.warn_if_noisy()
    d = m.to_dict()
    assert d["median_ms"] == 1.0 and d["samples_ms"] == [1.0, 1.0, 1.0, 5.0]
    assert Measurement.from_dict(d).samples_ms == m.samples_ms
    with pytest.raises(ValueError):
        Measurement(samples_ms=(), device="d")


# ---- store ----------------------------------------------------------------------------


def test_store_commits_each_result_and_survives_reopening(tmp_path):
    db = tmp_path / "m.db"
    a = Arch("t", (1, 2))
    with Store(db) as s:
        s.add_device("cpu-ort", {"cpu_model": "X"})
        s.add_arch(a, label="a")
        s.set_metrics(a.id, (1, 3, 8, 8), flops=10, macs=5, params=3)
        s.add_measurement(a.id, Measurement((1.0, 2.0, 3.0), "cpu-ort"), (1, 3, 8, 8))
        # readable from a second connection before close: committed, not buffered
        other = sqlite3.connect(db)
        assert other.execute("SELECT count(*) FROM measurements").fetchone()[0] == 1
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        other.close()
        s.add_measurement(
            a.id, MeasurementFailure("cpu-ort", "a", "timeout", "no result in 5 s"), (1, 3, 8, 8)
        )
    with Store(db) as s:
        assert s.has_measurement(a.id, "cpu-ort", (1, 3, 8, 8))
        assert not s.has_measurement(a.id, "cpu-ort", (1, 3, 16, 16))
        ok = s.measurements()
        assert len(ok) == 1 and ok[0]["median_ms"] == 2.0 and ok[0]["flops"] == 10
        failed = s.measurements(status="failed")
        assert failed[0]["failure_kind"] == "timeout" and "5 s" in failed[0]["reason"]
        raw = s.measurements(with_samples=True)[0]
        assert raw["samples"] == [1.0, 2.0, 3.0]
        assert s.arch(a.id) == a
        assert s.counts() == {
            "devices": 1,
            "archs": 1,
            "measurements_ok": 1,
            "measurements_failed": 1,
        }
        n = s.export_csv(tmp_path / "out.csv")
        assert n == 2
        lines = (tmp_path / "out.csv").read_text().splitlines()
        assert lines[0].startswith("arch_id,space,choices") and len(lines) == 3
        s.export_json(tmp_path / "out.json")
        data = json.loads((tmp_path / "out.json").read_text())
        assert data["measurements"][0]["samples"] == [1.0, 2.0, 3.0]


def test_store_rejects_a_file_that_is_not_a_database(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not an hwnas SQLite database"):
        Store(bad)
    with pytest.raises(StoreError, match="is a directory"):
        Store(tmp_path)


def test_store_bulk_import_skips_what_is_there():
    s = Store(":memory:")
    rows = [(Arch("t", (i,)), float(i)) for i in range(5)]
    assert s.add_imported_many(rows, "pi4") == 5
    assert s.add_imported_many(rows, "pi4") == 0
    got = s.measurements(device="pi4")
    assert [r["median_ms"] for r in got] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert {r["source"] for r in got} == {"imported"}


# ---- export -----------------------------------------------------------------------------


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_to_onnx_exports_checks_and_caches(tmp_path):
    torch.manual_seed(0)
    m = _Tiny()
    a = to_onnx(m, (1, 3, 8, 8), label="tiny", cache_dir=tmp_path)
    assert a.format == "onnx" and a.input_shapes == (("input", (1, 3, 8, 8)),)
    onnx.checker.check_model(onnx.load(a.path))
    mtime = (tmp_path / a.path.split("/")[-1]).stat().st_mtime_ns
    b = to_onnx(m, (1, 3, 8, 8), label="tiny", cache_dir=tmp_path)
    assert b.path == a.path and b.sha256 == a.sha256
    assert (tmp_path / a.path.split("/")[-1]).stat().st_mtime_ns == mtime  # not re-exported
    # other weights: another artifact
    with torch.no_grad():
        m.fc.bias += 1
    assert to_onnx(m, (1, 3, 8, 8), cache_dir=tmp_path).sha256 != a.sha256


def test_torchscript_exporter_is_a_separate_checked_artifact(tmp_path):
    torch.manual_seed(0)
    m = _Tiny()
    d = to_onnx(m, (1, 3, 8, 8), cache_dir=tmp_path)
    t = to_onnx(m, (1, 3, 8, 8), cache_dir=tmp_path, exporter="torchscript")
    assert t.path != d.path  # cached under its own key
    assert (d.meta["exporter"], t.meta["exporter"]) == ("dynamo", "torchscript")
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    outs = [ort.InferenceSession(a.path).run(None, {"input": x})[0] for a in (d, t)]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ExportError, match="unknown exporter 'tflite'; use one of dynamo"):
        to_onnx(m, (1, 3, 8, 8), cache_dir=tmp_path, exporter="tflite")


def test_parity_check_catches_a_wrong_export(tmp_path, monkeypatch):
    from hwnas.export import onnx_export

    m = _Tiny().eval()
    a = to_onnx(m, (1, 3, 8, 8), cache_dir=tmp_path, check=False)
    with torch.no_grad():
        m.fc.bias += 1.0  # torch now disagrees with the file
    with pytest.raises(ExportError, match="differs from torch"):
        onnx_export.check_parity(m, a.path, torch.randn(1, 3, 8, 8))


def _dynamic_onnx(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 8, 8])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), path)


def test_load_onnx_bad_inputs_name_the_fix(tmp_path):
    with pytest.raises(ProfilingError, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_text("hello, I am not ONNX")
    with pytest.raises(ProfilingError, match="not a valid ONNX model"):
        load_onnx(junk)
    dyn = tmp_path / "dyn.onnx"
    _dynamic_onnx(dyn)
    with pytest.raises(ProfilingError, match="dynamic dimensions.*--input-shape"):
        load_onnx(dyn)
    art = load_onnx(dyn, (2, 3, 8, 8))
    assert art.input_shapes == (("x", (2, 3, 8, 8)),)
    truncated = tmp_path / "trunc.onnx"
    data = dyn.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProfilingError, match="not a valid ONNX model"):
        load_onnx(truncated)


def test_parse_shape():
    assert parse_shape("1,3,224,224") == (1, 3, 224, 224)
    assert parse_shape("1x3x32x32") == (1, 3, 32, 32)
    for bad in ("", "a,b", "1,0,3", "-1,3"):
        with pytest.raises(ConfigError, match="bad input shape"):
            parse_shape(bad)
