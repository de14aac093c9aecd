"""The hwnas_latency pytest plugin, its regression statistics and `hwnas compare`.

Statistics are checked on given samples (synthetic, known slowdowns); the plugin
runs in pytester sessions on a tiny ONNX model with a fixed small number of runs.
Nothing here asserts on elapsed time: where a measured run is judged, the
baseline is edited to be 100x faster or slower than anything the machine can do.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx  # noqa: F401 - see below
import onnxruntime  # noqa: F401
import pytest

import hwnas.commands._common  # noqa: F401
import hwnas.devices.cpu  # noqa: F401
from hwnas.cli import main as hwnas_main
from hwnas.errors import ConfigError
from hwnas.testing.runs import (
    Entry,
    Run,
    compare_entries,
    compare_runs,
    identity_mismatch,
    load_run,
    parse_benchmark_json,
)
from hwnas.testing.stats import (
    median_ratio_ci,
    parse_threshold,
    ratio_to_baseline_model,
    verdict,
    verdict_line,
)

pytest_plugins = ["pytester"]
# pytester's in-process runs drop the modules a run imported; onnx's protobuf extension
# aborts the process when imported a second time, so everything the plugin imports
# with a C extension is imported here, once, before any run.

PLUGIN = "hwnas.testing.pytest_plugin"
SMALL = ["--hwnas-runs", "5", "--hwnas-rounds", "2", "--hwnas-warmup", "1"]


def _plugin_args() -> list[str]:
    """Load the plugin explicitly unless the installed package already registers it
    (``pytest11`` entry point): registering one module twice is an error in pytest."""
    eps = metadata.entry_points(group="pytest11")
    if any(ep.value == PLUGIN for ep in eps):
        return []
    return ["-p", PLUGIN]


def tiny_onnx(path: Path, n: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A MatMul+Relu stack built with onnx.helper: microseconds per run, no torch export."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((n, n)) * 0.1).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]),
            helper.make_node("Relu", [f"h{i}"], [f"r{i}"]),
        ]
        prev = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def lognormal(median: float, n: int = 200, cv: float = 0.03, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(rng.lognormal(np.log(median), cv, n))


# -- statistics on given samples ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"), [("5%", 0.05), ("0%", 0.0), (" 2.5 % ", 0.025), ("10%", 0.10)]
)
def test_parse_threshold(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["5", "0.05", "five%", "-5%", "%", "5%%", "2000%", ""])
def test_parse_threshold_refuses_what_is_not_a_percentage(text):
    with pytest.raises(ConfigError, match="percentage"):
        parse_threshold(text)


@pytest.mark.parametrize(
    ("lo", "hi", "t", "expected"),
    [
        (1.01, 1.06, 0.05, "slower"),  # certainly slower, beyond 5% not ruled out
        (1.01, 1.04, 0.05, "same"),  # certainly slower but within the threshold
        (0.98, 1.20, 0.05, "same"),  # nothing shown
        (1.001, 1.002, 0.0, "slower"),  # threshold 0: any significant slowdown
        (0.90, 0.97, 0.05, "faster"),
        (0.97, 0.99, 0.05, "same"),  # certainly faster, by less than the threshold
    ],
)
def test_verdict_rule(lo, hi, t, expected):
    assert verdict(lo, hi, t) == expected


@pytest.mark.parametrize(
    ("factor", "expected"), [(1.0, "same"), (1.10, "slower"), (1.20, "slower"), (0.85, "faster")]
)
def test_known_slowdowns_give_the_right_verdicts(factor, expected):
    base = lognormal(5.0, seed=1)
    new = lognormal(5.0 * factor, seed=2)
    est = median_ratio_ci(base, new)
    assert est.lo <= est.ratio <= est.hi
    assert est.ratio == pytest.approx(factor, rel=0.02)
    assert est.verdict(0.05) == expected


def test_reference_drift_is_taken_out():
    base, ref_base = lognormal(5.0, seed=1), lognormal(2.0, seed=3)
    # The whole machine is 10% slower in the new session; the model did not change.
    new, ref_new = lognormal(5.5, seed=2), lognormal(2.2, seed=4)
    raw = median_ratio_ci(base, new)
    assert raw.verdict(0.05) == "slower"  # what a summary threshold would call it
    est = median_ratio_ci(base, new, ref_base, ref_new)
    assert est.drift == pytest.approx(1.10, rel=0.02)
    assert est.ratio == pytest.approx(1.0, abs=0.02)
    assert est.verdict(0.05) == "same"
    # The machine got 10% faster and the model stayed put: relatively, the model is slower.
    est = median_ratio_ci(base, lognormal(5.0, seed=5), ref_base, lognormal(1.8, seed=6))
    assert est.ratio == pytest.approx(1 / 0.9, rel=0.02)
    assert est.verdict(0.05) == "slower"


def test_bootstrap_is_reproducible_and_wider_for_noisier_samples():
    base, new = lognormal(5.0, n=60, seed=1), lognormal(5.0, n=60, seed=2)
    assert median_ratio_ci(base, new, seed=3) == median_ratio_ci(base, new, seed=3)
    quiet = median_ratio_ci(base, new)
    noisy = median_ratio_ci(lognormal(5.0, n=60, cv=0.2, seed=1), lognormal(5.0, n=60, cv=0.2))
    assert noisy.hi - noisy.lo > 2 * (quiet.hi - quiet.lo)


def test_rounds_are_resampled_as_blocks():
    """Rounds that differ from one another (a runtime session's own offset) must widen the
    interval: the pooled samples alone would claim far more certainty than they hold."""
    rng = np.random.default_rng(0)

    def session(offsets):
        return [list(rng.lognormal(np.log(5.0 * o), 0.01, 20)) for o in offsets]

    base = session(rng.normal(1.0, 0.03, 10))
    new = session(rng.normal(1.0, 0.03, 10))
    flat = median_ratio_ci([s for r in base for s in r], [s for r in new for s in r])
    blocks = median_ratio_ci(base, new)
    assert blocks.ratio == pytest.approx(flat.ratio)  # same point estimate, pooled median
    assert blocks.n_base == flat.n_base == 200
    assert blocks.hi - blocks.lo > 2 * (flat.hi - flat.lo)


def test_baseline_model_timed_again_takes_out_any_drift():
    """The baseline's own model beside the new one: a session 40% slower than the baseline's
    and rounds that swing by 2x leave a 5% slowdown as plain as on a quiet machine."""
    rng = np.random.default_rng(3)
    swing = rng.uniform(0.8, 1.6, 10)  # what each round of the new session suffers
    base_then = [lognormal(10.0, n=20, cv=0.01, seed=i) for i in range(10)]
    base_now = [
        list(np.array(lognormal(14.0, n=20, cv=0.01, seed=20 + i)) * w) for i, w in enumerate(swing)
    ]
    new = [
        list(np.array(lognormal(14.0 * 1.05, n=20, cv=0.01, seed=40 + i)) * w)
        for i, w in enumerate(swing)
    ]
    est = ratio_to_baseline_model(base_then, base_now, new)
    assert est.ratio == pytest.approx(1.05, rel=0.03) and est.verdict(0.03) == "slower"
    assert est.against == "baseline model" and est.drift == pytest.approx(
        1.4 * np.median(swing), rel=0.15
    )
    assert est.model_ratio == pytest.approx(est.drift * est.ratio, rel=0.05)
    # the rounds are resampled in pairs: far narrower than resampling each side alone
    alone = median_ratio_ci(base_now, new)
    assert est.hi - est.lo < (alone.hi - alone.lo) / 3
    assert "baseline model drift" in verdict_line("t", est, 0.03)
    # unchanged: same
    same = ratio_to_baseline_model(base_then, base_now, base_now)
    assert same.ratio == 1.0 and same.verdict(0.05) == "same"


def test_split_rounds():
    from hwnas.testing.runs import split_rounds

    assert split_rounds([1.0, 2.0, 3.0, 4.0], [1, 3]) == [[1.0], [2.0, 3.0, 4.0]]
    assert split_rounds([1.0, 2.0, 3.0], [1, 3]) == [1.0, 2.0, 3.0]  # sizes do not fit: flat
    assert split_rounds([1.0, 2.0], None) == [1.0, 2.0]


def test_ratio_ci_refuses_bad_samples():
    with pytest.raises(ConfigError, match="at least 3"):
        median_ratio_ci([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="non-positive"):
        median_ratio_ci([1.0, 0.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="both sessions"):
        median_ratio_ci([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], base_ref=[1.0, 2.0, 3.0])


def test_verdict_line_says_ratio_ci_drift_and_verdict():
    est = median_ratio_ci(lognormal(5.0), lognormal(5.5, seed=2), lognormal(2.0), lognormal(2.0))
    line = verdict_line("t.py::test_m", est, 0.05)
    assert line.startswith("t.py::test_m: 1.")
    for part in ("x the baseline", "95% CI", "reference drift", "threshold 5.0%", "REGRESSION"):
        assert part in line
    assert "\n" not in line


# -- runs from pytest-benchmark JSON and stores ----------------------------------------------

MACHINE = {"machine": "x86_64", "system": "Linux", "cpu": {"brand_raw": "CPU A", "count": 2}}


def bench_json(
    tests: dict[str, float], *, seed: int = 0, drift: float = 1.0, cpu: str = "CPU A"
) -> dict:
    """A pytest-benchmark document as hwnas_latency writes it: samples in extra_info."""
    benchmarks = []
    for i, (name, median) in enumerate(tests.items()):
        samples = lognormal(median * drift, seed=seed * 100 + i)
        ident = {"device": "cpu-ort", "runtime": "onnxruntime", "threads": 1, "cpu_model": cpu}
        benchmarks.append(
            {
                "group": None,
                "name": name,
                "fullname": f"test_lat.py::{name}",
                "params": None,
                "param": None,
                "options": {},
                "stats": {"data": [s / 1e3 for s in samples], "median": float(np.median(samples))},
                "extra_info": {
                    "hwnas": {
                        "device": "cpu-ort",
                        "identity": ident,
                        "samples_ms": samples,
                        "reference": {
                            "label": "ref",
                            "sha256": "abc",
                            "samples_ms": lognormal(2.0 * drift, seed=seed * 100 + 50 + i),
                        },
                    }
                },
            }
        )
    return {"machine_info": MACHINE, "benchmarks": benchmarks, "version": "5.3.1"}


def write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_compare_runs_on_synthetic_files(tmp_path):
    base = write(tmp_path / "base.json", bench_json({"test_a": 5, "test_b": 5, "test_c": 5}))
    # the new session: machine 3% slower overall, b 10% slower, c 15% faster, a unchanged
    new_doc = bench_json(
        {"test_a": 5, "test_b": 5.5, "test_c": 4.25, "test_d": 1}, seed=1, drift=1.03
    )
    new = write(tmp_path / "new.json", new_doc)
    rows, notes = compare_runs(load_run(base), load_run(new), threshold=0.05)
    got = {r.name.split("::")[1]: r.verdict for r in rows}
    assert got == {"test_a": "same", "test_b": "slower", "test_c": "faster"}
    assert all(r.estimate.drift == pytest.approx(1.03, rel=0.02) for r in rows)
    assert notes == ["only in NEW: test_lat.py::test_d"]


def test_plain_pytest_benchmark_entries_use_stats_data(tmp_path):
    doc = bench_json({"test_a": 5})
    del doc["benchmarks"][0]["extra_info"]["hwnas"]
    run = parse_benchmark_json(doc, "x.json")
    e = run.entries["test_lat.py::test_a"]
    assert len(e.samples_ms) == 200 and e.reference_ms is None
    assert e.identity == {
        "cpu_model": "CPU A",
        "machine": "x86_64",
        "logical_cores": 2,
        "system": "Linux",
    }
    del doc["benchmarks"][0]["stats"]["data"]  # saved without --benchmark-save-data
    bare = parse_benchmark_json(doc, "x.json").entries["test_lat.py::test_a"]
    with pytest.raises(ConfigError, match="no raw samples.*--benchmark-save-data"):
        compare_entries(bare, bare, threshold=0.05)


def test_baseline_from_another_machine_is_refused_unless_forced():
    base = parse_benchmark_json(bench_json({"test_a": 5}), "b").entries["test_lat.py::test_a"]
    other = parse_benchmark_json(bench_json({"test_a": 5}, cpu="CPU B"), "n")
    new = other.entries["test_lat.py::test_a"]
    assert identity_mismatch(base.identity, new.identity) == ["cpu_model: 'CPU A' != 'CPU B'"]
    with pytest.raises(ConfigError, match="another device or machine.*--hwnas-force"):
        compare_entries(base, new, threshold=0.05, force_option="--hwnas-force")
    forced = compare_entries(base, new, threshold=0.05, force=True)
    assert forced.verdict == "same" and "forced across devices" in forced.note


def test_different_reference_models_are_not_used_for_drift():
    base = Entry("t", lognormal(5), {}, lognormal(2), "sha-1")
    new = Entry("t", lognormal(5, seed=1), {}, lognormal(3, seed=2), "sha-2")
    c = compare_entries(base, new, threshold=0.05)
    assert c.estimate.drift is None and "reference model differs" in c.note


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"benchmarks": [', "not valid JSON"),
        ('{"machine_info": {}}', "not a pytest-benchmark JSON"),
        ('{"benchmarks": [{"name": "x"}]}', "has no 'fullname'"),
        ('{"benchmarks": [{"fullname": "x", "stats": {"data": ["a"]}}]}', "malformed samples"),
    ],
)
def test_malformed_json_is_one_line(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(ConfigError, match=match) as info:
        load_run(p)
    assert "\n" not in str(info.value)


def test_no_common_tests_is_an_error():
    a = Run("a", "json", {"x": Entry("x", [1.0, 2.0, 3.0])})
    b = Run("b", "json", {"y": Entry("y", [1.0, 2.0, 3.0])})
    with pytest.raises(ConfigError, match="no test or model in common"):
        compare_runs(a, b, threshold=0.05)


def _store(path: Path, median: float, seed: int) -> Path:
    from hwnas.arch import Arch
    from hwnas.profilers.latency import Measurement
    from hwnas.store import Store

    with Store(path) as st:
        st.add_device("cpu-ort", {"cpu_model": "CPU A", "runtime": "onnxruntime", "threads": 1})
        arch_id = st.add_arch(Arch("zoo", ("m",)), label="m")
        env = {"cpu_model": "CPU A", "runtime": "onnxruntime", "threads": 1}
        m = Measurement(tuple(lognormal(median, seed=seed)), "cpu-ort", "m", environment=env)
        st.add_measurement(arch_id, m, input_shape=(1, 3, 8, 8))
    return path


# -- the `hwnas compare` command --------------------------------------------------------------


def test_cli_compare_two_json_files(tmp_path, capsys):
    base = write(tmp_path / "base.json", bench_json({"test_a": 5, "test_b": 5}))
    new = write(tmp_path / "new.json", bench_json({"test_a": 5, "test_b": 6}, seed=1))
    plot = tmp_path / "cmp.png"
    assert hwnas_main(["compare", str(base), str(new), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "test_a" in out and "same" in out and "slower" in out
    assert plot.stat().st_size > 0
    assert hwnas_main(["compare", str(base), str(new), "--json", "--threshold", "5%"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by = {m["name"]: m for m in doc["models"]}
    assert by["test_lat.py::test_b"]["verdict"] == "slower"
    assert by["test_lat.py::test_b"]["ratio"] == pytest.approx(1.2, rel=0.02)
    assert by["test_lat.py::test_a"]["ci"][0] < 1.0 < by["test_lat.py::test_a"]["ci"][1]
    assert hwnas_main(["compare", str(base), str(new), "--fail-on-slower"]) == 1
    capsys.readouterr()
    assert (
        hwnas_main(["compare", str(base), str(new), "--fail-on-slower", "--model", "test_a"]) == 0
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--threshold", "0.05"], "is not a percentage"),
        (["--confidence", "95"], "between 0 and 1"),
    ],
)
def test_cli_compare_bad_options_exit_2_with_one_line(tmp_path, capsys, args, match):
    base = write(tmp_path / "base.json", bench_json({"test_a": 5}))
    assert hwnas_main(["compare", str(base), str(base), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err


def test_cli_compare_bad_files_exit_2(tmp_path, capsys):
    base = write(tmp_path / "base.json", bench_json({"test_a": 5}))
    other = write(tmp_path / "other.json", bench_json({"test_a": 5}, cpu="CPU B"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for new, match in (
        (bad, "not valid JSON"),
        (tmp_path / "missing.json", "no such file"),
        (other, "another device or machine"),
    ):
        assert hwnas_main(["compare", str(base), str(new)]) == 2
        err = capsys.readouterr().err.strip()
        assert match in err and "\n" not in err
    assert hwnas_main(["compare", str(base), str(other), "--force"]) == 0
    capsys.readouterr()
    assert hwnas_main(["compare", str(base), str(base), "--model", "test_zz"]) == 2
    assert "no test or model named test_zz in common" in capsys.readouterr().err
    assert hwnas_main(["compare", str(base), str(base), "--plot", str(base / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "--plot" in err and "not a directory" in err and "\n" not in err.strip()


def test_cli_compare_two_stores(tmp_path, capsys):
    base = _store(tmp_path / "base.db", 5.0, seed=1)
    new = _store(tmp_path / "new.db", 6.0, seed=2)
    before = base.read_bytes()
    assert hwnas_main(["compare", str(base), str(new), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in doc["models"]] == ["cpu-ort/m/1x3x8x8"]
    assert doc["models"][0]["verdict"] == "slower"
    assert "no reference model in either run" in doc["models"][0]["note"]  # drift stays in
    assert base.read_bytes() == before  # opened read-only


# -- the pytest plugin, in pytester sessions --------------------------------------------------


@pytest.fixture
def lat_project(pytester):
    """A project with a tiny model, a tiny reference and one latency test."""
    tiny_onnx(pytester.path / "m.onnx")
    tiny_onnx(pytester.path / "ref.onnx", n=16, seed=1)
    pytester.makepyfile(
        test_lat="""
        def test_m(hwnas_latency):
            r = hwnas_latency("m.onnx", device="cpu-ort", threads=1)
            assert r.measurement.stats.n == 10
            assert r.reference is not None and r.reference.stats.n == 10
        """
    )
    return pytester


def run_lat(pytester, *args: str):
    return pytester.runpytest(
        *_plugin_args(), "-p", "no:cacheprovider", *SMALL, "--hwnas-reference", "ref.onnx", *args
    )


def test_fixture_writes_pytest_benchmark_json_with_raw_samples(lat_project):
    res = run_lat(lat_project, "--benchmark-json", "out.json")
    res.assert_outcomes(passed=1)
    doc = json.loads((lat_project.path / "out.json").read_text())
    (b,) = doc["benchmarks"]
    assert b["fullname"] == "test_lat.py::test_m"
    hw = b["extra_info"]["hwnas"]
    assert len(b["stats"]["data"]) == 10 == b["stats"]["rounds"]
    assert [s * 1e3 for s in b["stats"]["data"]] == pytest.approx(hw["samples_ms"])
    assert b["stats"]["median"] * 1e3 == pytest.approx(np.median(hw["samples_ms"]))
    assert len(hw["reference"]["samples_ms"]) == 10 and hw["reference"]["label"] == "ref"
    assert hw["device"] == "cpu-ort" and hw["identity"]["runtime"] == "onnxruntime"
    assert hw["environment"]["cpu_model"] and hw["settings"]["rounds"] == 2
    assert hw["round_sizes"] == [5, 5] == hw["reference"]["round_sizes"]
    assert b["options"]["timer"] == "hwnas cpu-ort"
    assert "machine_info" in doc and "commit_info" in doc


@pytest.mark.slow
def test_autosave_compare_and_histogram_work_as_usual(lat_project):
    store = f"file://{lat_project.path / 'bench'}"
    run_lat(lat_project, "--benchmark-autosave", "--benchmark-storage", store).assert_outcomes(
        passed=1
    )
    (saved,) = list((lat_project.path / "bench").rglob("*.json"))
    hw = json.loads(saved.read_text())["benchmarks"][0]["extra_info"]["hwnas"]
    assert len(hw["samples_ms"]) == 10  # raw samples kept without --benchmark-save-data
    res = run_lat(
        lat_project,
        "--benchmark-compare",
        "--benchmark-storage",
        store,
        "--hwnas-fail-regression",
        "5%",
    )
    out = res.stdout.str()
    assert "Comparing against benchmarks from" in out or "0001" in out
    assert "hwnas latency verdicts" in out and "x the baseline" in out
    assert "reference drift" in out
    # --benchmark-histogram imports pygal, which leaves in-process pytester runs unable to
    # load pytest-benchmark afterwards: it runs in a child process.
    hist = lat_project.runpytest_subprocess(
        *_plugin_args(),
        *SMALL,
        "--hwnas-reference",
        "ref.onnx",
        "--benchmark-compare",
        "--benchmark-storage",
        store,
        "--benchmark-histogram",
        str(lat_project.path / "hist"),
        timeout=300,
    )
    hist.assert_outcomes(passed=1)
    assert list(lat_project.path.glob("hist*.svg"))
    # pytest-benchmark's own command reads the saved runs
    cmp = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", str(saved)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cmp.returncode == 0 and "test_m" in cmp.stdout
    assert "Traceback" not in out


def _baseline(pytester, median_ms: float, **edit) -> Path:
    """A baseline of test_m written directly (no measuring run): this machine's identity, the
    reference's file hash, model samples around ``median_ms``, reference samples near the
    tiny reference's real latency. Baselines 1000x off leave no doubt about the verdict."""
    from hwnas.devices import create_device
    from hwnas.export.artifact import sha256_file
    from hwnas.testing.runs import identity_of

    identity = identity_of({**create_device("cpu-ort", threads=1).info(), "device": "cpu-ort"})
    identity.update(edit.get("identity", {}))
    hw = {
        "device": "cpu-ort",
        "identity": identity,
        "samples_ms": lognormal(median_ms, n=10),
        "reference": {
            "label": "ref",
            "sha256": sha256_file(pytester.path / "ref.onnx"),
            "samples_ms": lognormal(0.03, n=10, seed=1),
        },
    }
    bench = {"fullname": edit.get("fullname", "test_lat.py::test_m"), "name": "test_m"}
    bench["extra_info"] = {"hwnas": hw}
    p = pytester.path / "base.json"
    p.write_text(json.dumps({"machine_info": {}, "benchmarks": [bench]}))
    return p


def test_regression_fails_the_test_with_the_verdict_line(lat_project):
    _baseline(lat_project, 1e-5)  # a baseline 1000x faster than anything possible
    res = run_lat(lat_project, "--hwnas-fail-regression", "5%", "--hwnas-baseline", "base.json")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    res.stdout.fnmatch_lines(
        ["*test_lat.py::test_m: *x the baseline *CI*reference drift*: REGRESSION*"]
    )
    assert "Traceback" not in out and "def test_m" not in out


def test_a_changed_model_is_judged_against_the_baseline_model_timed_again(lat_project):
    """The first run keeps m.onnx by its hash; after m.onnx changes (much slower), the
    judging run times the kept baseline model beside it and says so."""
    run_lat(lat_project, "--benchmark-json", "base.json").assert_outcomes(passed=1)
    kept = list((lat_project.path / ".benchmarks" / "hwnas-models").glob("*.onnx"))
    from hwnas.export.artifact import sha256_file

    assert [k.stem for k in kept] == [sha256_file(lat_project.path / "m.onnx")]
    tiny_onnx(lat_project.path / "m.onnx", n=384, layers=8)  # the change: many times slower
    args = ["--hwnas-fail-regression", "5%", "--hwnas-baseline", "base.json"]
    res = run_lat(lat_project, *args, "--benchmark-json", "new.json")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(
        [
            "*test_m: *x the baseline*baseline model drift*REGRESSION; judged against the baseline's own model*"
        ]
    )
    hw = json.loads((lat_project.path / "new.json").read_text())["benchmarks"][0]["extra_info"][
        "hwnas"
    ]
    assert (
        len(hw["baseline_model"]["samples_ms"]) == 10
        and hw["baseline_model"]["sha256"] == kept[0].stem
    )
    assert hw["verdict"]["against"] == "baseline model" and hw["verdict"]["verdict"] == "slower"
    # nothing kept: the reference model takes the drift out, as before
    res = run_lat(lat_project, *args, "--hwnas-keep-models", str(lat_project.path / "empty"))
    res.assert_outcomes(failed=1)
    assert "reference drift" in res.stdout.str() and "baseline model drift" not in res.stdout.str()


def test_faster_than_baseline_passes_with_its_verdict(lat_project):
    _baseline(lat_project, 100.0)  # 100 ms: 1000x slower than the tiny model
    res = run_lat(lat_project, "--hwnas-fail-regression", "5%", "--hwnas-baseline", "base.json")
    res.assert_outcomes(passed=1)
    res.stdout.fnmatch_lines(["*hwnas latency verdicts*", "*test_lat.py::test_m: 0.0*: faster"])
    assert "reference drift" in res.stdout.str()


def test_baseline_from_another_machine_is_an_error_unless_forced(lat_project):
    _baseline(lat_project, 100.0, identity={"cpu_model": "Some Other CPU"})
    args = ["--hwnas-fail-regression", "5%", "--hwnas-baseline", "base.json"]
    res = run_lat(lat_project, *args)
    res.assert_outcomes(passed=1, errors=1)  # the call ran; its teardown refuses to judge
    out = res.stdout.str()
    assert "PytestWarning: hwnas: test_lat.py::test_m: the baseline ran on another" in out
    assert "ERROR at teardown" in out and "another device or machine" in out
    assert "Some Other CPU" in out and "--hwnas-force" in out and "Traceback" not in out
    forced = run_lat(lat_project, *args, "--hwnas-force")
    forced.assert_outcomes(passed=1)
    forced.stdout.fnmatch_lines(["*: faster; forced across devices*"])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--hwnas-fail-regression", "5"], "'5' is not a percentage"),
        (["--hwnas-fail-regression", "5%", "--hwnas-baseline", "nope.json"], "no such file"),
        (["--hwnas-fail-regression", "5%", "--hwnas-baseline", "bad.json"], "not valid JSON"),
        (["--hwnas-fail-regression", "5%"], "needs a baseline"),
    ],
)
def test_bad_regression_input_is_an_error_with_one_line(lat_project, args, match):
    (lat_project.path / "bad.json").write_text('{"benchmarks": [')
    res = run_lat(lat_project, *args)
    res.assert_outcomes(errors=1)
    out = res.stdout.str()
    assert "ERROR at setup" in out and match in out
    assert "Traceback" not in out and "During handling" not in out


def test_baseline_missing_the_test_is_an_error(lat_project):
    _baseline(lat_project, 1.0, fullname="test_lat.py::test_other")
    res = run_lat(lat_project, "--hwnas-fail-regression", "5%", "--hwnas-baseline", "base.json")
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(["*has no result for test_lat.py::test_m; save a baseline*"])


def test_hwnas_device_option_overrides_the_tests_device(pytester):
    tiny_onnx(pytester.path / "m.onnx")
    pytester.makepyfile(
        test_dev="""
        def test_d(hwnas_latency):
            r = hwnas_latency("m.onnx", device="no-such-device", reference=None)
            assert r.reference is None
        """
    )
    res = pytester.runpytest(*_plugin_args(), *SMALL, "--benchmark-json", "o.json")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*hwnas: *no-such-device*"])
    assert "Traceback" not in res.stdout.str()
    res = pytester.runpytest(
        *_plugin_args(), *SMALL, "--hwnas-device", "cpu-ort", "--benchmark-json", "o.json"
    )
    res.assert_outcomes(passed=1)
    hw = json.loads((pytester.path / "o.json").read_text())["benchmarks"][0]["extra_info"]["hwnas"]
    assert hw["device"] == "cpu-ort" and hw["reference"] is None


@pytest.mark.android
@pytest.mark.skipif(
    importlib.util.find_spec("litert_torch") is None
    or importlib.util.find_spec("ai_edge_litert") is None,
    reason="the tflite extra (litert-torch, ai-edge-litert) is not installed",
)
def test_same_tests_run_on_a_phone_with_hwnas_device(pytester, monkeypatch):
    """``--hwnas-device adb:SERIAL`` against the stand-in adb and benchmark_model (tests/fake_adb)."""
    import shutil

    from fake_adb.phone import FakePhone
    from fake_adb.tiny import tiny_tflite

    phone = FakePhone(pytester.path / "phone")
    phone.apply(monkeypatch)
    shutil.copyfile(tiny_tflite().path, pytester.path / "m.tflite")
    shutil.copyfile(pytester.path / "m.tflite", pytester.path / "ref.tflite")
    pytester.makepyfile(
        test_phone="""
        def test_p(hwnas_latency):
            r = hwnas_latency("m.tflite", device="cpu-ort", optimization="basic")
            assert r.measurement.device == "adb:FAKE0001" and r.measurement.stats.n == 2
        """
    )
    res = pytester.runpytest(
        *_plugin_args(), *SMALL, "--hwnas-device", "adb:FAKE0001", "--hwnas-reference",
        "ref.tflite", "--hwnas-device-opt", f"benchmark_binary={phone.stand_in_benchmark}",
        "--hwnas-device-opt", "thermal_limit_c=0", "--benchmark-json", "phone.json",
    )  # fmt: skip
    res.assert_outcomes(passed=1)
    (b,) = json.loads((pytester.path / "phone.json").read_text())["benchmarks"]
    hw = b["extra_info"]["hwnas"]
    assert hw["device"] == "adb:FAKE0001" and hw["identity"]["model"] == "Pixel 7"
    assert len(b["stats"]["data"]) == 2 and len(hw["reference"]["samples_ms"]) == 2


def test_benchmark_skip_and_disable_are_honoured(lat_project):
    run_lat(lat_project, "--benchmark-skip").assert_outcomes(skipped=1)
    lat_project.makepyfile(
        test_lat="""
        def test_m(hwnas_latency):
            r = hwnas_latency("m.onnx")
            assert r.measurement.stats.n == 1 and r.reference is None
        """
    )
    run_lat(lat_project, "--benchmark-disable").assert_outcomes(passed=1)


def test_plugin_module_imports_nothing_heavy():
    code = (
        "import sys, hwnas.testing.pytest_plugin; "
        "heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'numpy') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_fixture_takes_a_torch_module(pytester):
    pytester.makepyfile(
        test_mod="""
        import torch
        def test_t(hwnas_latency):
            m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
            r = hwnas_latency(m, input_shape=(1, 8), reference=None, label="lin")
            assert r.measurement.label == "lin" and r.measurement.stats.n == 10
        """
    )
    pytester.runpytest(*_plugin_args(), *SMALL).assert_outcomes(passed=1)
