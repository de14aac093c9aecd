"""Campaigns: deterministic sampling, resumption, failures stored with their reason."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from campaign_helpers import AdditiveTinySpace, TinySpace

from hwnas.campaigns import (
    measure_arch,
    record_result,
    run_campaign,
    sample_distinct,
    store_device_name,
)
from hwnas.devices import create_device
from hwnas.errors import ConfigError
from hwnas.profilers.latency import MeasureSettings
from hwnas.store import Store

TESTS = Path(__file__).resolve().parent
FAST = MeasureSettings(warmup=1, runs=5)


def _memory_profiler_available() -> bool:
    try:
        from hwnas.profilers.memory import estimate  # noqa: F401
    except ImportError:
        return False
    return True


def test_sampling_is_deterministic_distinct_and_prefix_stable():
    space = TinySpace()
    a = sample_distinct(space, 5, seed=3)
    assert len({x.id for x in a}) == 5
    assert [x.id for x in sample_distinct(space, 5, seed=3)] == [x.id for x in a]
    assert [x.id for x in sample_distinct(space, 3, seed=3)] == [x.id for x in a[:3]]
    assert {x.id for x in sample_distinct(space, 6, seed=3)} == {
        space.arch([w, k]).id for w in range(3) for k in range(2)
    }
    with pytest.raises(ConfigError, match="only 6 distinct"):
        sample_distinct(space, 7)


def test_store_device_name_separates_thread_counts():
    assert store_device_name("cpu-ort", 1) == "cpu-ort"
    assert store_device_name("cpu-ort", None) == "cpu-ort"
    assert store_device_name("cpu-ort", 2) == "cpu-ort-2t"


def _rows(db: Path, sql: str, *params) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def test_campaign_measures_counts_stores_and_resumes(tmp_path):
    space = TinySpace()
    db = tmp_path / "c.db"
    device = create_device("cpu-ort")
    with Store(db) as store:
        s = run_campaign(space, 3, device, store, seed=1, settings=FAST)
        assert (s.measured, s.failed, s.skipped) == (3, 0, 0)
        assert s.timings["timed_runs"] > 0 and s.wall_s > s.timings["timed_runs"]
        assert 0 < s.overhead_share < 1
        rows = store.measurements(device="cpu-ort")
        assert len(rows) == 3
        for r in rows:
            assert r["n"] == 5 and r["median_ms"] > 0
            assert r["campaign"] == "tiny-campaign-8px-seed1"
            assert r["input_shape"] == "1x3x8x8"
            assert r["label"] == space.format(store.arch(r["arch_id"]))
            assert r["flops"] > 0 and r["macs"] > 0 and r["params"] > 0
            if _memory_profiler_available():
                assert r["peak_activation_bytes"] > 0 and r["param_bytes"] > 0
        # conv MACs of an 8x8 output: width * kernel^2 * 3 * 64, plus the linear layer
        r0 = rows[0]
        w, k = space.format(store.arch(r0["arch_id"])).split("-")
        assert r0["macs"] == int(w[1:]) * int(k[1:]) ** 2 * 3 * 64 + int(w[1:]) * 3

        again = run_campaign(space, 3, device, store, seed=1, settings=FAST)
        assert (again.measured, again.failed, again.skipped) == (0, 0, 3)
        plans, ticks = [], []
        more = run_campaign(space, 4, device, store, seed=1, settings=FAST,
                            on_plan=lambda todo, skipped: plans.append((todo, skipped)),
                            progress=lambda n, status: ticks.append(n))  # fmt: skip
        assert (more.measured, more.skipped) == (1, 3)
        assert plans == [(1, 3)] and ticks == [1]
        assert len(store.measurements(device="cpu-ort")) == 4
        # another thread count is another experiment
        other = run_campaign(
            space, 1, device, store, seed=1, settings=FAST, device_name="cpu-ort-2t"
        )
        assert other.measured == 1


@pytest.mark.parametrize("stage", ["build", "export"])
def test_build_and_export_failures_are_stored_and_the_campaign_goes_on(tmp_path, stage):
    space = TinySpace(failing=stage)
    db = tmp_path / "f.db"
    with Store(db) as store:
        s = run_campaign(space, 6, create_device("cpu-ort"), store, settings=FAST)
        assert (s.measured, s.failed) == (4, 2)
        assert {k for _, k, _ in s.failures} == {stage}
        failed = store.measurements(status="failed")
        assert len(failed) == 2
        for r in failed:
            assert r["failure_kind"] == stage
            assert r["label"].startswith("w12")
            expected = "not buildable" if stage == "build" else "aten::frobnicate"
            assert expected in r["reason"]
        # failures count as done; --retry-failed tries them again
        assert run_campaign(space, 6, create_device("cpu-ort"), store, settings=FAST).skipped == 6
        retry = run_campaign(
            space, 6, create_device("cpu-ort"), store, settings=FAST, retry_failed=True
        )
        assert (retry.skipped, retry.failed) == (4, 2)


def test_timeout_is_stored_with_its_reason(tmp_path):
    from hwnas.devices.isolated import IsolatedDevice

    space = TinySpace()
    hang = MeasureSettings(warmup=0, runs=10**8, timeout_s=1.0)
    with Store(tmp_path / "t.db") as store, IsolatedDevice("cpu-ort") as device:
        s = run_campaign(space, 2, device, store, settings=hang)
        assert (s.measured, s.failed) == (0, 2)  # the second one ran after the first was killed
        rows = store.measurements(status="failed")
        assert [r["failure_kind"] for r in rows] == ["timeout", "timeout"]
        assert all("no result within 1 s" in r["reason"] for r in rows)
        assert all(r["artifact_sha256"] for r in rows)


def test_export_pool_gives_the_same_records_and_restores_affinity(tmp_path):
    space = TinySpace(failing="build")
    before = os.sched_getaffinity(0)
    with Store(tmp_path / "p.db") as store:
        s = run_campaign(space, 6, create_device("cpu-ort"), store, settings=FAST, export_workers=1)
        assert (s.measured, s.failed) == (4, 2)
        assert s.timings["export"] > 0 and s.timings["export_wait"] >= 0
        rows = store.measurements(status=None)
        assert sorted(r["status"] for r in rows) == ["failed"] * 2 + ["ok"] * 4
        assert all(r["flops"] for r in rows if r["status"] == "ok")
    assert os.sched_getaffinity(0) == before


def test_measure_arch_is_a_self_contained_step(tmp_path):
    space = AdditiveTinySpace()
    arch = space.arch([1, 1])
    res = measure_arch(space, arch, create_device("cpu-ort"), FAST)
    assert res.ok and res.median_ms > 0 and res.metrics["flops"] > 0
    assert res.artifact is not None and res.artifact.meta["source"]["space"] == "tiny-additive"
    with Store(tmp_path / "m.db") as store:
        record_result(store, res, device_name="cpu-ort", campaign="x")
        assert store.has_measurement(arch.id, "cpu-ort", space.input_shape, include_failed=False)


def _campaign_cmd(db: Path, n: int, runs: int) -> list[str]:
    args = ["sample", "tiny-campaign", "-n", str(n), "--db", str(db), "--runs", str(runs),
            "--warmup", "1", "--json"]  # fmt: skip
    code = f"import sys, campaign_helpers; from hwnas.cli import main; sys.exit(main({args!r}))"
    return [sys.executable, "-c", code]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


def _group_gone(pgid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_killed_campaign_resumes_without_measuring_twice(tmp_path):
    db = tmp_path / "k.db"
    n = 6
    # Warm the export cache so the killed run spends its time measuring.
    with Store(tmp_path / "warm.db") as store:
        run_campaign(TinySpace(), n, create_device("cpu-ort"), store, settings=FAST)
    # ~1 s of timed runs per architecture: the kill lands mid-campaign
    proc = subprocess.Popen(
        _campaign_cmd(db, n, runs=30000),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    done = _rows(db, "SELECT count(*) FROM measurements")[0][0]
                except sqlite3.OperationalError:  # schema not created yet
                    done = 0
            if done >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the campaign ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # the orphaned measurement worker notices its parent is gone and exits
        assert _group_gone(proc.pid, 30), "a worker outlived the killed campaign"
    finally:
        if proc.poll() is None or not _group_gone(proc.pid, 0.1):
            os.killpg(proc.pid, signal.SIGKILL)
    before = _rows(db, "SELECT id, arch_id, created, median_ms FROM measurements ORDER BY id")
    assert 2 <= len(before) < n
    out = subprocess.run(
        _campaign_cmd(db, n, runs=50),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["skipped"] == len(before)
    assert summary["measured"] == n - len(before)
    after = _rows(db, "SELECT id, arch_id, created, median_ms FROM measurements ORDER BY id")
    # Everything recorded before the kill survived: same rows, same order. A row the
    # interference guard flagged as taken on a busy machine may be re-measured in place on
    # resume (its first median is kept in measurement_flags); every other median is untouched.
    assert [r[:3] for r in after[: len(before)]] == [r[:3] for r in before]
    flagged = (
        {r[0] for r in _rows(db, "SELECT measurement_id FROM measurement_flags")}
        if _rows(db, "SELECT name FROM sqlite_master WHERE name='measurement_flags'")
        else set()
    )
    assert [r for r in after[: len(before)] if r[0] not in flagged] == [
        r for r in before if r[0] not in flagged
    ]
    if flagged:  # a re-measured row keeps its first median beside the new one
        originals = dict(
            _rows(db, "SELECT measurement_id, original_median_ms FROM measurement_flags")
        )
        now = {r[0]: r[3] for r in after}
        assert all(r[3] in (now[r[0]], originals[r[0]]) for r in before if r[0] in flagged)
    ids = [r[1] for r in after]
    assert len(ids) == n and len(set(ids)) == n  # nothing measured twice
    assert {r[1] for r in after} == {a.id for a in sample_distinct(TinySpace(), n, seed=0)}


def test_cli_sample_and_export(tmp_path, capsys):
    from hwnas.cli import main

    db = tmp_path / "cli.db"
    argv = ["sample", "tiny-campaign", "-n", "2", "--db", str(db), "--runs", "5", "--warmup", "1"]
    assert main([*argv, "--no-isolate", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["measured"] == 2 and summary["archs_per_minute"] > 0
    assert main([*argv, "--no-isolate"]) == 0
    assert "skipped (already stored)" in capsys.readouterr().out
    assert main(["export", "--db", str(db), "--out", str(tmp_path / "m.csv")]) == 0
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert len(lines) == 3 and "flops" in lines[0]
    assert main(["export", "--db", str(db), "--out", str(tmp_path / "m.json")]) == 0
    data = json.loads((tmp_path / "m.json").read_text())
    assert len(data["measurements"]) == 2 and len(data["measurements"][0]["samples"]) == 5
    assert main(["sample", "no-such-space", "-n", "1", "--db", str(db)]) == 2
    assert "unknown space" in capsys.readouterr().err
    assert main(["export", "--db", str(tmp_path / "none.db"), "--out", "x.csv"]) == 2


def test_ctrl_c_keeps_what_was_measured_and_the_rerun_continues(tmp_path):
    space = TinySpace()
    seen = []

    def interrupt_after_two(n: int, status: str) -> None:
        seen.append(status)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with Store(tmp_path / "i.db") as store:
        s = run_campaign(
            space, 5, create_device("cpu-ort"), store, settings=FAST, progress=interrupt_after_two
        )
        assert s.interrupted and s.measured == 2 and s.remaining == 3
        assert len(store.measurements()) == 2
        rest = run_campaign(space, 5, create_device("cpu-ort"), store, settings=FAST)
        assert (rest.skipped, rest.measured, rest.interrupted) == (2, 3, False)
        assert len({r["arch_id"] for r in store.measurements()}) == 5


def test_cli_sample_with_the_torchscript_exporter(tmp_path, capsys, monkeypatch):
    import torch

    from hwnas.cli import main

    used = []
    real = torch.onnx.export

    def spy(*args, **kwargs):
        used.append(kwargs.get("dynamo"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", spy)
    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))  # export for real, not from cache
    db = tmp_path / "ts.db"
    argv = ["sample", "tiny-campaign", "-n", "2", "--db", str(db), "--runs", "5", "--warmup", "1"]
    assert main([*argv, "--no-isolate", "--exporter", "torchscript", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["measured"] == 2 and summary["failed"] == 0
    assert used == [False, False]
    assert main([*argv, "--exporter", "tflite"]) == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
