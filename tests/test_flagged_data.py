"""Training data from a store leaves out rows the interference guard or the canary flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.errors import ConfigError
from hwnas.predictors.data import dropped_note, load_store
from hwnas.profilers.latency import Measurement
from hwnas.spaces import get_space
from hwnas.store import Store, quality

SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


def _fill(db, space, n=40, seed=0):
    """A real SQLite store of ``n`` measured nb201 cells on device ``cpu``: 2 + 3 x (convs)."""
    rng = np.random.default_rng(seed)
    archs = []
    while len(archs) < n:
        a = space.sample(rng)
        if not space.is_degenerate(a) and a not in archs:
            archs.append(a)
    ids = {}
    with Store(db) as store:
        for a in archs:
            store.add_arch(a, label=space.format(a))
            v = 2.0 + 3.0 * sum(1 for c in a.choices if c == 3)  # nor_conv_3x3 is index 3
            m = Measurement(samples_ms=(v, v, v), device="cpu", label=a.id)
            ids[a.id] = store.add_measurement(a.id, m, SHAPE, device="cpu", campaign="c")
    return archs, ids


def test_flagged_rows_are_left_out_unless_asked(nb201, tmp_path):
    db = tmp_path / "f.db"
    archs, ids = _fill(db, nb201)
    with Store(db) as store:
        # 3 rows drifted with the canary, 2 taken on a busy machine, 1 flagged and re-measured
        quality.flag(store.conn, [ids[a.id] for a in archs[:3]], "canary", "drift +20%")
        quality.flag(store.conn, [ids[a.id] for a in archs[3:5]], "interference", "busy")
        quality.flag(store.conn, [ids[archs[5].id]], "canary", "drift +9%")
        m = Measurement(samples_ms=(4.0,), device="cpu", label=archs[5].id)
        quality.replace_measurement(store.conn, ids[archs[5].id], m)

    ds = load_store(db, nb201, device="cpu")
    kept = {a.id for a in ds.archs}
    assert len(ds) == 35
    assert not kept & {a.id for a in archs[:5]} and archs[5].id in kept  # re-measured: clean
    assert ds.dropped == {
        "rows flagged by the canary": 3,
        "rows flagged by the interference guard": 2,
    }
    note = dropped_note(ds)
    assert note == (
        "left out 3 rows flagged by the canary, 2 rows flagged by the interference guard; "
        "--include-flagged to keep them"
    )

    everything = load_store(db, nb201, device="cpu", include_flagged=True)
    assert len(everything) == 40 and everything.dropped == {}
    assert dropped_note(everything) == ""


def test_repeat_of_a_flagged_arch_keeps_its_clean_row(nb201, tmp_path):
    db = tmp_path / "r.db"
    archs, ids = _fill(db, nb201, n=6)
    with Store(db) as store:
        again = Measurement(samples_ms=(7.0,), device="cpu", label=archs[0].id)
        store.add_measurement(archs[0].id, again, SHAPE, device="cpu", campaign="c2")
        quality.flag(store.conn, [ids[archs[0].id]], "interference", "busy")
    ds = load_store(db, nb201, device="cpu")
    assert len(ds) == 6  # the arch stays, with its unflagged repeat only
    assert ds.y_ms[[a.id for a in ds.archs].index(archs[0].id)] == 7.0
    assert ds.dropped == {"rows flagged by the interference guard": 1}


def test_all_rows_flagged_is_a_config_error_naming_the_option(nb201, tmp_path):
    db = tmp_path / "a.db"
    archs, ids = _fill(db, nb201, n=4)
    with Store(db) as store:
        quality.flag(store.conn, list(ids.values()), "canary", "drift")
    with pytest.raises(
        ConfigError, match="4 flagged rows left out; keep them with --include-flagged"
    ):
        load_store(db, nb201, device="cpu")


def test_store_without_quality_tables_reads_everything_and_stays_unchanged(nb201, tmp_path):
    db = tmp_path / "plain.db"
    _fill(db, nb201, n=8)
    assert len(load_store(db, nb201, device="cpu")) == 8
    with Store(db) as store:  # reading training data never creates the quality tables
        assert not quality.has_tables(store.conn)


def test_train_and_eval_predictor_cli_leave_flagged_rows_out(nb201, tmp_path, capsys):
    db = tmp_path / "cli.db"
    archs, ids = _fill(db, nb201, n=40)
    with Store(db) as store:
        quality.flag(store.conn, [ids[a.id] for a in archs[:4]], "canary", "drift")
    out = tmp_path / "p.npz"
    base = ["--db", str(db), "--device", "cpu", "--space", "nb201"]
    assert main(["train-predictor", *base, "--predictor", "gbdt", "--set", "n_estimators=20", "--train-size", "20",
                 "--out", str(out), "--json"]) == 0  # fmt: skip
    cap = capsys.readouterr()
    assert "left out 4 rows flagged by the canary; --include-flagged to keep them" in cap.err
    text = cap.out
    assert json.loads(text[text.index("{") :])["test"]["n"] == 16  # 40 - 4 flagged - 20 trained

    assert main(["eval-predictor", str(out), *base, "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["n"] == 16
    assert "left out 4 rows flagged by the canary" in cap.err
    assert main(["eval-predictor", str(out), *base, "--json", "--include-flagged"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["n"] == 20 and "flagged" not in cap.err
