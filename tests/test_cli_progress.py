"""Progress inside long steps, and the readable end-of-search summaries (issue 20).

Fast: tiny settings, NB201 latencies from a made-up table, stub latency sources.
"""

from __future__ import annotations

import json
import math

import pytest
from search_helpers import write_cli_bench

from hwnas.cli import main
from hwnas.errors import PredictorError
from hwnas.evaluators.base import AccuracyEvaluator
from hwnas.report.progress import announce, enable_steps, progress, step
from hwnas.spaces import get_space


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Every NB201 cell with a made-up accuracy and latency (no shared data needed)."""
    return write_cli_bench(tmp_path_factory.mktemp("progress") / "bench.csv")


# ---- the progress module ---------------------------------------------------------------


def test_steps_are_silent_outside_a_command(capsys):
    """A library call (a test, a user's script) prints nothing: steps show only when enabled."""
    with step(5, "inner", plan="about to do 5 things") as bar:
        for _ in range(5):
            bar.advance()
    announce("a plan line")
    assert capsys.readouterr().err == ""


def test_a_step_inside_a_bar_prints_its_plan_and_ends_at_n_of_n(capsys):
    with progress(2, "outer") as outer:
        with step(7, "measuring cells", plan="measuring 7 cells (~1 s each)") as bar:
            for _ in range(7):
                bar.advance()
        outer.advance()
        outer.advance()
    err = capsys.readouterr().err
    assert "measuring 7 cells (~1 s each)" in err
    assert "measuring cells: 7/7 in" in err  # the step's one-line record
    assert "2/2" in err  # the command's own bar


def test_disabled_bar_silences_its_steps(capsys):
    """--quiet / --json: the command's bar is off, and so is every step inside it."""
    with progress(3, "outer", enabled=False) as outer:
        announce("plan")
        with step(4, "inner", plan="plan of the step") as bar:
            bar.advance(4)
        outer.advance()
    assert capsys.readouterr().err == ""


def test_a_bar_that_ends_early_finishes_at_n_of_n(capsys):
    with progress(5, "search") as bar:
        bar.advance()
        bar.finish()
    err = capsys.readouterr().err
    assert "1/1" in err and "1/5" not in err


def test_steps_show_without_a_bar_when_enabled(capsys):
    with enable_steps(), step(3, "alone", unit="cells") as bar:
        bar.advance(3)
    assert "alone: 3/3 in" in capsys.readouterr().err


# ---- progress inside the searchers' long steps ----------------------------------------


class _ExpensiveStub:
    """A device-like latency source (cost 'expensive'), counting what it is asked."""

    cost = "expensive"

    def __init__(self, failing: bool = False):
        self.asked = 0
        self.failing = failing

    def latency_ms(self, space, archs):
        self.asked += len(archs)
        return [(math.inf if self.failing else 1.0 + sum(a.choices), "device:stub") for a in archs]

    def config(self):
        return {"latency": "device", "device": "stub"}


def test_latency_darts_shows_its_cell_measurements(capsys):
    """The ~100 cells Latency-DARTS measures for its latency module have a plan line and a bar."""
    from hwnas.searchers.latency_darts import fit_latency_predictor

    src = _ExpensiveStub(failing=True)  # every cell fails: the fit stops right after the bar
    with enable_steps(), pytest.raises(PredictorError, match="only 0 of 12"):
        fit_latency_predictor(get_space("nb201"), src, samples=12, seed=0)
    err = capsys.readouterr().err
    assert src.asked == 12
    assert "measuring 12 random nb201 cells on stub" in err
    assert "latency module: measuring cells: 12/12" in err


# ---- `hwnas search`: bars and summaries --------------------------------------------------


def _search(bench, tmp_path, algo, budget, *extra):
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
        *extra,
    ]


TINY_DARTS = (
    "--set", "epochs=2", "--set", "channels=4", "--set", "max_samples=120",
    "--set", "batch_size=32", "--set", "predictor_samples=10",
)  # fmt: skip


def test_latency_darts_bar_ends_at_n_of_n_and_summary_is_tables(bench, tmp_path, capsys):
    assert main(_search(bench, tmp_path, "latency-darts", 5, *TINY_DARTS)) == 0
    cap = capsys.readouterr()
    # the searcher hands 1 cell to the objective: the bar says 1/1, not 1/5 20%
    assert "at most 1 candidate" in cap.err
    assert "1/1" in cap.err and "1/5" not in cap.err
    assert "training the supernet for epochs 1-2 of 2" in cap.err
    assert "supernet (lambda 0.1): " in cap.err and "in 0" in cap.err  # the step's record line
    out = cap.out
    assert "latency-darts: the derived cell" in out and "latency-darts epochs" in out
    assert "looked up" in out  # where the latency came from
    assert "decided by: reward soft" in out and "not a bound" in out
    assert "{" not in out  # no raw JSON


def test_json_prints_no_bars(bench, tmp_path, capsys):
    assert main(_search(bench, tmp_path, "random", 4, "--json")) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["unique"] == 4
    assert "4/4" not in cap.err
    assert main(_search(bench, tmp_path, "random", 6)) == 0
    assert "6/6" in capsys.readouterr().err  # the same search without --json has its bar


def test_naswot_calls_its_value_score_and_shows_its_pick(bench, tmp_path, capsys):
    args = _search(bench, tmp_path, "naswot", 2, "--wide", "--accuracy-set", "batch_size=4")
    args += ["--accuracy-set", "input_size=16"]
    args[args.index("--latency-target") + 1] = "100ms"
    args[args.index("--accuracy") + 1] = "naswot"
    args[args.index("--latency") + 1] = f"table:{bench}:lat_ms"
    assert main(args) == 0
    cap = capsys.readouterr()
    assert "naswot: scoring 2 random nb201 networks" in cap.err
    assert "naswot pick: highest score among feasible networks" in cap.out
    assert "decided by: the highest NASWOT score" in cap.out
    header = next(line for line in cap.out.splitlines() if "┃ step" in line)
    assert "score" in header and "accuracy" not in header
    # --wide: full architecture strings
    assert "|+|" in cap.out and "…" not in cap.out


def test_architectures_are_shortened_without_wide(bench, tmp_path, capsys):
    assert main(_search(bench, tmp_path, "random", 5, "--quiet")) == 0
    cap = capsys.readouterr()
    assert "…" in cap.out and "--wide prints them in full" in cap.err


class _FlopsAccuracy(AccuracyEvaluator):
    """A stand-in for proxy training (what is tested here is the bars, not the accuracy)."""

    name = "flops-accuracy"

    def evaluate(self, space, archs):
        return [float(sum(space.channels(a))) for a in archs]

    def config(self) -> dict:
        return {"evaluator": self.name}


@pytest.mark.slow  # a slimmable MobileNetV2, even a tiny one, trains for tens of seconds
def test_autoslim_shows_training_and_greedy_slimming(capsys):
    """Slimmable training (batches) and the greedy descent to the next target have bars."""
    from hwnas.objectives import Objective
    from hwnas.searchers import create_searcher

    space = get_space("mobilenetv2-channels", input_size=32, num_classes=10)
    searcher = create_searcher(
        "autoslim",
        ["max_step=1", "epochs=1", "max_samples=100", "calib_images=16", "flops_targets=95%"],
    )
    with progress(1, "autoslim"):  # a budget of 1: no bar, but steps show (threads=1 default)
        hist = searcher.run(space, Objective(_FlopsAccuracy(), reward="accuracy"), budget=1, seed=0)
    err = capsys.readouterr().err
    assert "autoslim: training a slimmable MobileNetV2 (25 layers, widest = step 1)" in err
    assert "autoslim slimmable training: " in err and "in 0" in err
    assert "autoslim: greedy slimming from 100% of the widest FLOPs towards flops<=95%" in err
    assert "autoslim greedy slimming: 100/100" in err  # the target was met: the bar is full
    assert hist.final["configs"][0]["targets"] == ["flops<=95%"]
