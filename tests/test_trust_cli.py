"""The trust options on the command line: bad input, flagged rows, normalisation,
`hwnas repeatability`, `hwnas profile --interleave`, the noise-ceiling line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from campaign_helpers import TinyNet, TinySpace

from hwnas.campaigns import run_campaign
from hwnas.cli import main
from hwnas.devices import create_device
from hwnas.export import to_onnx
from hwnas.profilers.latency import Measurement, MeasureSettings
from hwnas.store import Store, quality

FAST = MeasureSettings(warmup=1, runs=3)


@pytest.mark.parametrize(
    "opts, message",
    [
        (["--interference", "often"], "unknown --interference policy 'often'"),
        (["--canary", "nope"], "unknown --canary model 'nope'"),
        (["--canary-every", "0"], "--canary-every needs K > 0"),
        (["--canary-every=-5,10s"], "--canary-every needs K > 0"),
        (["--canary-drift", "0"], "--canary-drift must be a number between 0 and 1"),
        (["--canary-drift", "1"], "--canary-drift must be a number between 0 and 1"),
    ],
)
def test_bad_trust_options_exit_2_with_one_line(opts, message, tmp_path, capsys):
    assert main(["sample", "tiny-campaign", "-n", "2", "--db", str(tmp_path / "x.db"), *opts]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.db").exists()  # nothing started


def test_bad_read_options_and_interleave(tmp_path, capsys):
    db = tmp_path / "e.db"
    Store(db).close()
    assert (
        main(["export", "--db", str(db), "--out", str(tmp_path / "o.csv"), "--flagged", "maybe"])
        == 2
    )
    assert "unknown --flagged 'maybe'" in capsys.readouterr().err
    assert (
        main(["export", "--db", str(db), "--out", str(tmp_path / "o.csv"), "--normalize", "x"]) == 2
    )
    assert "unknown --normalize 'x'" in capsys.readouterr().err
    assert main(["profile", "a.onnx", "--interleave", "1"]) == 2
    assert "--interleave needs R >= 2" in capsys.readouterr().err


def _store_with_flags_and_canary(db):
    from hwnas.arch import Arch

    with Store(db) as store:
        quality.ensure(store.conn)
        ids = []
        for i, ms in enumerate((10.0, 20.0, 30.0)):
            a = Arch("s", (i,))
            store.add_arch(a)
            m = Measurement(samples_ms=(ms,), device="d", label=a.id)
            ids.append(store.add_measurement(a.id, m, (1, 3, 8, 8), device="d", campaign="c"))
            # a canary after each row: baseline 2.0, then 2.0, then 2.5 (the machine 25% slow)
            canary = Measurement(samples_ms=((2.0, 2.0, 2.5)[i],), device="d")
            quality.add_canary(
                store.conn,
                campaign="c",
                device="d",
                model="m",
                m=canary,
                baseline_ms=2.0,
                drift=(0, 0, 0.25)[i],
                ok=i < 2,
            )
        quality.flag(store.conn, [ids[1]], "interference", "busy")
    return ids


def test_export_drops_flagged_rows_or_normalises_by_the_canary(tmp_path, capsys):
    db = tmp_path / "q.db"
    _store_with_flags_and_canary(db)
    out = tmp_path / "all.csv"
    assert main(["export", "--db", str(db), "--out", str(out)]) == 0
    assert "kept 1 flagged rows" in capsys.readouterr().out
    assert len(list(csv.DictReader(out.open()))) == 3
    assert main(["export", "--db", str(db), "--out", str(out), "--flagged", "drop"]) == 0
    assert "left out 1 flagged rows" in capsys.readouterr().out
    assert [float(r["median_ms"]) for r in csv.DictReader(out.open())] == [10.0, 30.0]
    assert main(["export", "--db", str(db), "--out", str(out), "--normalize", "canary"]) == 0
    assert "normalised 3 rows" in capsys.readouterr().out
    # row 1: canary before it? none (first canary) -> x1; row 2 after canary 1 (2.0) -> x1;
    # row 3 after canary 2 (2.0) -> x1 ... the 2.5 canary comes after row 3
    assert [float(r["median_ms"]) for r in csv.DictReader(out.open())] == [10.0, 20.0, 30.0]
    with Store(db) as store:
        rows = store.measurements()
        later = [dict(r, id=r["id"] + 10) for r in rows[-1:]]  # a row taken after the slow canary
        got, note = quality.apply_quality(store.conn, later, normalize="canary")
        assert got[0]["median_ms"] == pytest.approx(30.0 * 2.0 / 2.5) and "normalised 1" in note


def test_read_only_commands_do_not_create_quality_tables(tmp_path):
    db = tmp_path / "plain.db"
    Store(db).close()
    assert (
        main(["export", "--db", str(db), "--out", str(tmp_path / "p.csv"), "--flagged", "drop"])
        == 0
    )
    import sqlite3

    con = sqlite3.connect(db)
    assert not quality.has_tables(con)
    assert quality.ceiling_line(str(db), "d") is None


def test_repeatability_command_and_ceiling_line(tmp_path, capsys):
    db = tmp_path / "r.db"
    with Store(db) as store:
        s = run_campaign(
            TinySpace(),
            4,
            create_device("cpu-ort"),
            store,
            settings=FAST,
            exporter="torchscript",
            device_name="cpu-ort",
        )
        assert s.measured == 4
    args = ["repeatability", "--db", str(db), "-n", "3", "--no-isolate", "--runs", "3",
            "--warmup", "1", "--interference", "warn", "--json"]  # fmt: skip
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 3 and res["device"] == "cpu-ort" and 0 <= res["within10"] <= 1
    line = quality.ceiling_line(str(db), "cpu-ort")
    assert line.startswith("noise ceiling on cpu-ort") and "+-10%" in line
    assert main(["repeatability", "--db", str(tmp_path / "none.db")]) == 2


def test_profile_interleave_prints_ratios_with_intervals(tmp_path, capsys):
    paths = []
    for w in (4, 12):
        torch.manual_seed(0)
        art = to_onnx(
            TinyNet(w, 3, 3),
            (1, 3, 8, 8),
            label=f"w{w}",
            exporter="torchscript",
            cache_dir=tmp_path,
        )
        paths.append(art.path)
    args = ["profile", *paths, "--interleave", "3", "--runs", "3", "--warmup", "1",
            "--no-isolate", "--interference", "warn", "--json"]  # fmt: skip
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["ratio"] == 1.0 and rows[0]["ratio_low"] == 1.0
    assert len(rows[1]["round_medians_ms"]) == 3 and rows[1]["n"] == 9
    assert rows[1]["ratio_low"] <= rows[1]["ratio"] <= rows[1]["ratio_high"]


def test_eval_predictor_prints_the_noise_ceiling_of_the_db(tmp_path, capsys):
    from hwnas.spaces import get_space

    nb201 = get_space("nb201")
    rng = np.random.default_rng(0)
    archs: list = []
    while len(archs) < 60:
        a = nb201.sample(rng)
        if not nb201.is_degenerate(a) and a not in archs:
            archs.append(a)
    cost = np.array([0.1, 0.0, 1.0, 3.0, 0.6])
    db = tmp_path / "n.db"
    with Store(db) as store:
        store.add_imported_many(
            [(a, 2.0 + cost[np.array(a.choices)].sum()) for a in archs], device="d"
        )
    out = tmp_path / "p.npz"
    train = ["train-predictor", "--db", str(db), "--space", "nb201", "--train-size", "40",
             "--predictor", "gbdt", "--set", "n_estimators=20", "--no-eval", "--out", str(out)]  # fmt: skip
    assert main(train) == 0
    capsys.readouterr()
    assert main(["eval-predictor", str(out), "--db", str(db)]) == 0
    assert "no noise ceiling stored for d (hwnas repeatability" in capsys.readouterr().out
    with Store(db) as store:
        quality.ensure(store.conn)
        res = {"n": 50, "within5": 0.9, "within10": 0.98, "spearman": 0.993}
        quality.add_repeatability(
            store.conn, device="d", input_shape=None, campaign=None, result=res
        )
    assert main(["eval-predictor", str(out), "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "noise ceiling on d" in text and "+-10% 98.0%" in text and "0.993" in text


def test_cli_default_canary_matches_the_library_and_help_stays_torch_free():
    import subprocess
    import sys

    from hwnas.campaigns.canary import DEFAULT_CANARY
    from hwnas.commands._trust import DEFAULT_CANARY as CLI_DEFAULT

    assert CLI_DEFAULT == DEFAULT_CANARY
    code = "import sys; from hwnas.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
