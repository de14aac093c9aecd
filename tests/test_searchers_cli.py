"""`hwnas search`: options, units, settings, resume, outputs and error messages."""

from __future__ import annotations

import csv
import json

import pytest
from search_helpers import write_cli_bench

from hwnas.cli import main


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Every NB201 cell with a made-up accuracy and latency (no shared data needed)."""
    return write_cli_bench(tmp_path_factory.mktemp("cli") / "bench.csv")


def _args(bench, tmp_path, algo="evolution", budget=20, *extra):
    return [
        "search",
        algo,
        "--space",
        "nb201",
        "--accuracy",
        f"table:{bench}:cifar10_acc",
        "--latency",
        "table:lat_ms",
        "--latency-target",
        "10ms",
        "--budget",
        str(budget),
        "--db",
        str(tmp_path / "s.db"),
        "--quiet",
        *extra,
    ]


def test_search_writes_history_figures_and_resumes(bench, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(bench, tmp_path, "evolution", 20, "--json", "--out", str(out))) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["unique"] == 20 and first["replayed"] == 0
    assert first["best"]["feasible"] and first["best"]["latency_ms"] <= 10.0
    for name in ("history.csv", "summary.json", "reward.png", "front.png"):
        assert (out / name).stat().st_size > 0
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == first["evaluated"] and {"accuracy", "latency_ms", "reward"} <= set(rows[0])
    # The same command with a larger budget continues the logged run.
    assert main(_args(bench, tmp_path, "evolution", 30, "--json")) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["replayed"] == first["evaluated"] and second["unique"] == 30
    # Another seed is another run in the same file.
    assert main(_args(bench, tmp_path, "evolution", 5, "--json", "--seed", "9")) == 0
    assert json.loads(capsys.readouterr().out)["replayed"] == 0


def test_search_settings_are_passed_and_checked(bench, tmp_path, capsys):
    code = main(
        _args(
            bench, tmp_path, "mnasnet-rl", 8, "--json", "--set", "batch_size=4", "--set", "hidden=8"
        )
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["unique"] == 8
    assert main(_args(bench, tmp_path, "mnasnet-rl", 8, "--set", "hiden=8")) == 2
    assert "Did you mean 'hidden'" in capsys.readouterr().err
    assert main(["search", "evolution", "--show-settings"]) == 0
    assert "population_size" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--latency-target", "10"), "no unit"),
        (("--latency-target", "10 parsecs"), "unknown time unit"),
        (("--latency-target", "soon"), "cannot read latency"),
        (("--memory-target", "2XB"), "unknown size unit"),
        (("--latency", "table:nope"), "no column 'nope'"),
        (("--accuracy", "table:/no/such.csv"), "does not exist"),
        (("--latency", "gpu"), "device:NAME"),
        (("--budget", "0"), "--budget must be >= 1"),
        (("--reward", "memnas"), "--memnas-base"),
    ],
)
def test_search_errors_name_the_fix(bench, tmp_path, capsys, change, message):
    args = _args(bench, tmp_path)
    i = args.index(change[0]) if change[0] in args else None
    if i is None:
        args += list(change)
    else:
        args[i + 1] = change[1]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_unknown_algorithm_and_missing_options(bench, tmp_path, capsys):
    assert main(["search", "evolutoin", "--space", "nb201"]) == 2
    assert "Did you mean 'evolution'" in capsys.readouterr().err
    assert main(["search", "random", "--space", "nb201", "--budget", "3"]) == 2
    err = capsys.readouterr().err
    assert "--accuracy" in err and "--db" in err


def test_help_names_every_builtin_searcher_without_importing_torch():
    """`hwnas --help` answers at once: the CLI names the searchers without importing them."""
    import subprocess
    import sys

    from hwnas.commands.search import BUILTIN_SEARCHERS
    from hwnas.searchers import list_searchers

    assert sorted(BUILTIN_SEARCHERS) == list_searchers()
    code = (
        "import sys, io, contextlib\n"
        "from hwnas import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(['--help'])\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
