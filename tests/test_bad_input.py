"""What a hostile (or careless) user types: every command, every numeric option, every path.

Each case runs ``hwnas.cli.main`` in this process and asserts exit status 2, no
traceback, and a message that names the problem. Most fail while the options
are parsed, before torch is imported, which keeps the suite fast.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from hwnas.cli import build_parser, describe, main
from hwnas.errors import StoreError
from hwnas.store import Store


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Files of every kind a user may point an option at."""
    d = tmp_path_factory.mktemp("bad-input")
    store = d / "store.db"
    Store(store).close()
    foreign = d / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE people (name TEXT)")
    con.commit()
    con.close()
    newer = d / "newer.db"
    Store(newer).close()
    con = sqlite3.connect(newer)
    con.execute("PRAGMA user_version=99")
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.execute("PRAGMA journal_mode=DELETE")  # one file, so "untouched" is checkable
    con.close()
    text = d / "notes.txt"
    text.write_text("not a database\n" * 50)
    latin1 = d / "latin1.csv"
    latin1.write_bytes("arch,latency_ms_cpu\ncaf\xe9,1.0\n".encode("latin-1"))
    nolat = d / "nolat.csv"
    nolat.write_text("arch,latency_ms_cpu\n0,\n1,\n")
    a_file = d / "a_file"
    a_file.write_text("x")
    folder = d / "folder"
    folder.mkdir()
    return {
        "tmp": str(d),
        "db": str(store),
        "foreign": str(foreign),
        "newer": str(newer),
        "text": str(text),
        "latin1": str(latin1),
        "nolat": str(nolat),
        "file": str(a_file),
        "dir": str(folder),
        "missing_dir": str(d / "no" / "such" / "dir"),
    }


SAMPLE = ["sample", "nb201", "-n", "2", "--db", "{tmp}/s.db"]
SEARCH = ["search", "random", "--space", "nb201", "--accuracy", "naswot", "--budget", "2"]
TRAIN = ["train-predictor", "--predictor", "mlp", "--out", "{tmp}/p.npz"]

# (argv, what the message must contain)
CASES: list[tuple[list[str], str]] = [
    # --- sample: counts, seconds, seeds, shapes, classes, paths ---
    (["sample", "nb201", "-n", "0"], "-n must be >= 1"),
    (["sample", "nb201", "-n", "-3"], "-n must be >= 1"),
    (["sample", "nb201", "-n", "many"], "'many' is not an integer"),
    ([*SAMPLE, "--budget", "0"], "--budget must be a number of seconds > 0"),
    ([*SAMPLE, "--budget", "-1"], "--budget must be a number of seconds > 0"),
    ([*SAMPLE, "--seconds", "nan"], "--seconds must be a number of seconds > 0"),
    ([*SAMPLE, "--seconds", "inf"], "--seconds must be a number of seconds > 0"),
    ([*SAMPLE, "--timeout", "0"], "--timeout must be a number of seconds > 0"),
    ([*SAMPLE, "--timeout", "soon"], "not a number of seconds"),
    ([*SAMPLE, "--runs", "0"], "--runs must be >= 1"),
    ([*SAMPLE, "--warmup", "-1"], "--warmup must be >= 0"),
    ([*SAMPLE, "--threads", "0"], "--threads must be >= 1"),
    ([*SAMPLE, "--input-size", "0"], "--input-size must be an input side >= 1"),
    ([*SAMPLE, "--input-size", "-5"], "--input-size must be an input side >= 1"),
    ([*SAMPLE, "--input-size", "1000000"], "memory"),
    ([*SAMPLE, "--num-classes", "0"], "--num-classes must be between 1"),
    ([*SAMPLE, "--num-classes", "-1"], "--num-classes must be between 1"),
    ([*SAMPLE, "--seed", "-1"], "--seed must be between 0"),
    ([*SAMPLE, "--seed", str(2**40)], "--seed must be between 0"),
    ([*SAMPLE, "--export-workers", "-1"], "--export-workers must be >= 0"),
    ([*SAMPLE, "--retry-after", "-5"], "--retry-after must be a number of seconds > 0"),
    ([*SAMPLE, "--exporter", "tflite"], "invalid choice: 'tflite'"),
    (["sample", "nb201", "-n", "1", "--db", "{dir}"], "is a directory"),
    (["sample", "nb201", "-n", "1", "--db", "{foreign}"], "not an hwnas store"),
    (["sample", "nb201", "-n", "1", "--db", "{text}"], "not an hwnas SQLite database"),
    (["sample", "nb201", "-n", "1", "--db", "{newer}"], "newer hwnas"),
    (["sample", "no-such-space", "-n", "1", "--db", "{tmp}/s.db"], "unknown space"),
    # --- import-table ---
    (
        ["import-table", "{tmp}/none.csv", "--space", "nb201", "--latency-column", "x"],
        "does not exist",
    ),
    (["import-table", "{dir}", "--space", "nb201", "--latency-column", "x"], "is a directory"),
    (
        [
            "import-table",
            "{latin1}",
            "--space",
            "nb201",
            "--latency-column",
            "latency_ms_cpu",
            "--db",
            "{tmp}/i.db",
        ],
        "not UTF-8",
    ),  # fmt: skip
    (
        [
            "import-table",
            "{nolat}",
            "--space",
            "nb201",
            "--latency-column",
            "latency_ms_cpu",
            "--db",
            "{tmp}/i2.db",
        ],
        "no usable latency",
    ),  # fmt: skip
    (
        [
            "import-table",
            "{nolat}",
            "--space",
            "nb201",
            "--latency-column",
            "x",
            "--input-size",
            "0",
        ],
        "--input-size must be",
    ),  # fmt: skip
    # --- export: read-only store, output paths ---
    (["export", "--db", "{db}", "--out", "{missing_dir}/m.csv"], "does not exist"),
    (["export", "--db", "{db}", "--out", "{dir}"], "is a directory"),
    (["export", "--db", "{db}", "--out", ""], "is empty"),
    (["export", "--db", "{tmp}/none.db", "--out", "{tmp}/m.csv"], "no database"),
    (["export", "--db", "{foreign}", "--out", "{tmp}/m.csv"], "not an hwnas store"),
    (["export", "--db", "{text}", "--out", "{tmp}/m.csv"], "not an hwnas SQLite database"),
    (["export", "--db", "{newer}", "--out", "{tmp}/m.csv"], "newer hwnas"),
    (["export", "--db", "{dir}", "--out", "{tmp}/m.csv"], "is a directory"),
    (["export", "--db", "{db}", "--out", "/proc/no/such.csv"], "/proc/no"),
    # --- compare-flops ---
    (
        ["compare-flops", "--db", "{db}", "--out", "{tmp}/c", "--sample", "0"],
        "--sample must be >= 1",
    ),
    (
        ["compare-flops", "--db", "{db}", "--out", "{tmp}/c", "--sample", "-1"],
        "--sample must be >= 1",
    ),
    (["compare-flops", "--db", "{db}", "--out", "{tmp}/c", "--tol", "-1"], "--tol must be"),
    (["compare-flops", "--db", "{db}", "--out", "{tmp}/c", "--tol", "nan"], "--tol must be"),
    (
        ["compare-flops", "--db", "{db}", "--out", "{tmp}/c", "--pairs", "-1"],
        "--pairs must be >= 0",
    ),
    (["compare-flops", "--db", "{db}", "--out", "{tmp}/c", "--seed", "-2"], "--seed must be"),
    (["compare-flops", "--db", "{db}", "--out", "{file}"], "is a file"),
    (["compare-flops", "--db", "{foreign}", "--out", "{tmp}/c"], "not an hwnas store"),
    # --- search ---
    ([*SEARCH[:-1], "0"], "--budget must be >= 1"),
    ([*SEARCH[:-1], "-1"], "--budget must be >= 1"),
    ([*SEARCH, "--seed", "-1"], "--seed must be"),
    ([*SEARCH, "--input-size", "0"], "--input-size must be"),
    ([*SEARCH, "--num-classes", "0"], "--num-classes must be"),
    ([*SEARCH, "--runs", "0"], "--runs must be >= 1"),
    ([*SEARCH, "--seconds", "0"], "--seconds must be"),
    ([*SEARCH, "--measure-seconds", "-1"], "--measure-seconds must be"),
    ([*SEARCH, "--timeout", "-1"], "--timeout must be"),
    ([*SEARCH, "--alpha", "nan"], "--alpha must be a finite number"),
    ([*SEARCH, "--out", "{file}"], "is a file"),
    (["search", "mnasnet-rl", "--set", "lr=nan"], "lr takes a finite number"),
    (["search", "mnasnet-rl", "--set", "entropy=inf"], "entropy takes a finite number"),
    (["search", "evolution", "--set", "population_size=-1"], "population_size must be >= 2"),
    (["search", "evolution", "--set", "population_size"], "expected key=value"),
    (["search", "evolution", "--set", "populaton_size=3"], "Did you mean 'population_size'"),
    # --- predictors ---
    ([*TRAIN, "--set", "epochs=-1"], "--set epochs=-1"),
    ([*TRAIN, "--set", "ensemble=0"], "--set ensemble=0"),
    ([*TRAIN, "--set", "epochs=ten"], "takes an integer"),
    ([*TRAIN, "--set", "lr=NaN"], "finite"),
    ([*TRAIN, "--set", "hidden=[0]"], "integers >= 1"),
    ([*TRAIN, "--set", "hidden=[1,"], "integers >= 1"),
    ([*TRAIN, "--set", "weight_decay=-0.1"], "must be >= 0"),
    ([*TRAIN, "--train-size", "0"], "--train-size must be >= 1"),
    ([*TRAIN, "--seed", "-1"], "--seed must be"),
    (["train-predictor", "--out", "{missing_dir}/p.npz"], "does not exist"),
    (["eval-predictor", "{tmp}/none.npz", "--plot", "{missing_dir}/x.png"], "does not exist"),
    # --- profile, flops, memory, kernels ---
    (["profile", "mobilenetv2", "--runs", "0"], "--runs must be >= 1"),
    (["profile", "mobilenetv2", "--seconds", "-1"], "--seconds must be"),
    (["profile", "mobilenetv2", "--budget", "0"], "--budget must be"),
    (["profile", "mobilenetv2", "--input-shape", "0,3"], "bad input shape"),
    (["profile", "mobilenetv2", "--input-shape", "1,3,100000,100000"], "memory"),
    (["profile", "mobilenetv2", "--plot", "{missing_dir}/p.png"], "does not exist"),
    (["flops", "mobilenetv2", "--input-shape", "1,3,0,4"], "bad input shape"),
    (["flops", "mobilenetv2", "--input-shape", "abc"], "bad input shape"),
    (["flops", "{tmp}/none.onnx"], "none.onnx"),
    (["flops", "{text}"], "notes.txt"),
    (["memory", "mobilenetv2", "--time-limit", "0"], "--time-limit must be"),
    (["memory", "mobilenetv2", "--limit", "-1"], "--limit must be >= 0"),
    (["memory", "mobilenetv2", "--alignment", "0"], "--alignment must be >= 1"),
    (["memory", "mobilenetv2", "--plot", "{missing_dir}/m.png"], "does not exist"),
    (["memory", "mobilenetv2", "--write-reordered", "{dir}"], "is a directory"),
    (["sample-kernels", "--db", "{tmp}/k.db", "-n", "-1"], "-n must be >= 0"),
    (["sample-kernels", "--db", "{tmp}/k.db", "--networks", "-1"], "--networks must be >= 0"),
    (["sample-kernels", "--db", "{tmp}/k.db", "--adaptive", "-1"], "--adaptive must be >= 0"),
    (["sample-kernels", "--db", "{tmp}/k.db", "--seconds", "0"], "--seconds must be"),
    (["sample-kernels", "--db", "{tmp}/k.db", "--threads", "0"], "--threads must be >= 1"),
    (["kernels", "mobilenetv2", "--input-shape", "1,-3"], "bad input shape"),
    # --- remote ---
    (["remote", "adb", "--runs", "-1"], "--runs must be >= 1"),
    (["remote", "adb", "--warmup", "-1"], "--warmup must be >= 0"),
    (["remote", "adb", "--timeout", "0"], "--timeout must be"),
    (["remote", "adb", "--repeats", "0"], "--repeats must be >= 1"),
    (["remote", "adb", "--thermal-wait", "0"], "--thermal-wait must be"),
    (["remote", "adb", "--thermal-limit", "-1"], "--thermal-limit must be"),
    (["remote", "adb", "--device-opt", "remote_dir=/data/$(reboot)"], "remote_dir must be"),
    (["remote", "adb", "--device-opt", "remote_dir=relative/dir"], "remote_dir must be"),
    (["remote", "adb", "--device-opt", "remote_dir=/data/x;reboot"], "remote_dir must be"),
    (["remote", "adb", "--device-opt", "remote_dir=/data/`id`"], "remote_dir must be"),
    (["remote", "adb", "--device-opt", "remote_dir=/data/../etc"], "remote_dir must be"),
    (["remote", "adb", "--device-opt", "repeats=-2"], "give a number >= 0"),
    (["remote", "adb", "--device-opt", "nonsense"], "KEY=VALUE"),
    (["remote", "ssh:me@host", "--ssh-option", "Host=x\nProxyCommand=sh"], "not an ssh option"),
    # --- measurement quality (trust) options ---
    ([*SAMPLE, "--canary-drift", "0"], "--canary-drift must be a number between 0 and 1"),
    ([*SAMPLE, "--canary-drift", "2"], "--canary-drift must be a number between 0 and 1"),
    ([*SAMPLE, "--interference-wait", "-1"], "--interference-wait must be"),
    ([*SAMPLE, "--repeatability", "-1"], "--repeatability must be >= 0"),
    (["repeatability", "--db", "{db}", "-n", "0"], "-n must be >= 1"),
    (["repeatability", "--db", "{db}", "--seed", "-1"], "--seed must be"),
    (["profile", "mobilenetv2", "--interleave", "0"], "--interleave must be >= 1"),
    (["profile", "mobilenetv2", "--seed", "-1"], "--seed must be"),
    (["compare", "{text}", "{text}", "--confidence", "1.5"], "--confidence must be a number"),
    (["compare", "{text}", "{text}", "--plot", "{missing_dir}/c.png"], "does not exist"),
    # --- spaces ---
    (["spaces", "sample", "nb201", "-n", "0"], "-n must be >= 1"),
    (["spaces", "sample", "nb201", "-n", "99999999"], "only 15625 distinct"),
    (["spaces", "sample", "nb201", "--seed", "-1"], "--seed must be"),
    (["spaces", "sample", "nb201", "--input-size", "0"], "--input-size must be"),
    (["spaces", "sample", "nb201", "--num-classes", "0"], "--num-classes must be"),
    (["spaces", "show", "nb201", "not-an-arch"], "not-an-arch"),
]


def _fill(argv: list[str], files: dict[str, str]) -> list[str]:
    return [a.format(**files) for a in argv]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(a)[:70] for a, _ in CASES])
def test_bad_input_exits_2_with_a_message_and_no_traceback(files, capsys, argv, message):
    code = main(_fill(argv, files))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == 2, err
    assert message.format(**files) in err, err
    assert err.strip().splitlines()[-1].startswith(("hwnas", "usage")), err


def test_invalid_options_store_nothing(files):
    """A refused option leaves no database behind (no failed rows blocking the next run)."""
    for argv, _ in CASES:
        if argv[0] == "sample" and "{tmp}/s.db" in argv:
            main(_fill(argv, files))
    assert not Path(files["tmp"], "s.db").exists()


def test_foreign_and_text_files_are_left_untouched(files):
    for key in ("foreign", "text", "newer"):
        path = Path(files[key])
        before = path.read_bytes()
        assert main(["export", "--db", str(path), "--out", f"{files['tmp']}/x.csv"]) == 2
        assert main(["sample", "nb201", "-n", "1", "--db", str(path)]) == 2
        assert path.read_bytes() == before
        assert not Path(f"{path}-wal").exists()
    con = sqlite3.connect(files["foreign"])
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["people"]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    con.close()


def test_read_only_commands_do_not_write_to_the_store(tmp_path):
    db = tmp_path / "ro.db"
    Store(db).close()
    before = db.read_bytes()
    assert main(["export", "--db", str(db), "--out", str(tmp_path / "o.csv")]) == 0
    assert db.read_bytes() == before
    with Store(db, readonly=True) as s, pytest.raises(StoreError, match="read-only"):
        s.add_device("x", {})
    with pytest.raises(StoreError, match="no database"):
        Store(tmp_path / "absent.db", readonly=True)
    assert not (tmp_path / "absent.db").exists()


def test_old_time_budget_spelling_still_works_and_says_so(capsys):
    parser = build_parser()
    args = parser.parse_args(["sample", "nb201", "-n", "1", "--budget", "2.5"])
    assert args.seconds == 2.5
    assert "--budget is deprecated here; use --seconds" in capsys.readouterr().err
    args = parser.parse_args(["sample", "nb201", "-n", "1", "--seconds", "3"])
    assert args.seconds == 3.0 and capsys.readouterr().err == ""
    args = parser.parse_args(["search", "random", "--measure-seconds", "4"])
    assert args.measure_seconds == 4.0
    assert "use --seconds" in capsys.readouterr().err
    args = parser.parse_args(["search", "random", "--budget", "7"])
    assert args.budget == 7  # evaluations in search


def test_isolate_defaults_agree_between_sample_and_search():
    parser = build_parser()
    sample = parser.parse_args(["sample", "nb201", "-n", "1"])
    search = parser.parse_args(["search", "random"])
    assert sample.isolate is True and search.isolate is True
    assert parser.parse_args(["search", "random", "--no-isolate"]).isolate is False


def test_insecure_ssh_option_warns(capsys):
    parser = build_parser()
    args = parser.parse_args(["remote", "ssh:me@h", "--ssh-option", "StrictHostKeyChecking=no"])
    assert args.ssh_option == ["StrictHostKeyChecking=no"]
    assert "turns off host key checking" in capsys.readouterr().err
    parser.parse_args(["remote", "ssh:me@h", "--ssh-option", "ConnectTimeout=5"])
    assert capsys.readouterr().err == ""


def _raising(exc: BaseException):
    def run(args):
        raise exc

    return run


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (PermissionError(13, "Permission denied", "/ro/out.csv"), 2, "/ro/out.csv: permission"),
        (FileNotFoundError(2, "No such file", "/no/dir/x.png"), 2, "/no/dir/x.png"),
        (IsADirectoryError(21, "Is a directory", "/tmp"), 2, "it is a directory"),
        (OSError(28, "No space left on device", "/full/x"), 2, "disk is full"),
        (UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid byte"), 2, "not UTF-8"),
        (json.JSONDecodeError("Expecting value", "x", 0), 2, "not valid JSON"),
        (MemoryError(), 2, "ran out of memory"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: 1TB"), 2, "ran out of memory"),
        (sqlite3.DatabaseError("database disk image is malformed"), 2, "--db file"),
        (KeyError("bug"), 1, "--debug"),
        (ZeroDivisionError("division by zero"), 1, "a bug in hwnas"),
    ],
)
def test_cli_edge_maps_errors_to_one_line(monkeypatch, capsys, exc, code, message):
    import hwnas.commands.zoo as zoo

    monkeypatch.setattr(zoo, "run", _raising(exc), raising=False)
    parser = build_parser()
    ns = parser.parse_args(["zoo"])
    monkeypatch.setattr("hwnas.cli.build_parser", lambda: _FixedParser(ns, _raising(exc)))
    assert main(["zoo"]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert describe(exc)[1] == code


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    parser = build_parser()
    ns = parser.parse_args(["zoo"])
    monkeypatch.setattr(
        "hwnas.cli.build_parser", lambda: _FixedParser(ns, _raising(KeyboardInterrupt()))
    )
    assert main(["zoo"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err


def test_debug_shows_the_traceback(monkeypatch):
    parser = build_parser()
    ns = parser.parse_args(["zoo"])
    monkeypatch.setattr(
        "hwnas.cli.build_parser", lambda: _FixedParser(ns, _raising(ZeroDivisionError("x")))
    )
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "zoo"])


class _FixedParser:
    """A parser stand-in whose command raises what the test wants."""

    def __init__(self, ns, func):
        ns.func = func
        self.ns = ns

    def parse_args(self, argv):
        return self.ns

    def print_help(self):  # pragma: no cover
        pass
