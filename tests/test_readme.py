"""Every `hwnas` example of README.md runs, in a fast mode, so the README cannot rot.

The bash blocks of README.md are read in order; each `hwnas ...` command (with
backslash continuations joined, comments dropped, ``T=...`` style variables
expanded) runs in one shared temporary directory, so a later example finds the
files an earlier one made (``gold.npz``, ``mnasnet_cpu.db``, ``model.onnx``), as a
reader following the README would. ``pytest tests/...`` examples run too, on the
README's own test file (a ``python`` block whose first line names it). Sizes are cut down (``-n``, ``--budget``,
``--train-size``, ``--runs``, ...; see :data:`SMALL`): the test checks that the
commands work as written, not the figures they print. Commands that need hardware
or a cluster (a phone, an ssh board, Ray, a GPU, ``make``) are skipped with the
reason, and so are long versions (their comment says ``# long version``) whose short
version sits beside them. Slow by nature (exports, proxy training): marked ``slow``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHARED = REPO.parent / "shared"
TIMEOUT_S = int(os.environ.get("HWNAS_README_TIMEOUT", "600"))

# option -> largest value the fast mode keeps
SMALL: dict[str, int] = {
    "-n": 12,
    "--budget": 3,
    "--train-size": 10,
    "--runs": 5,
    "--time-limit": 2,
    "--repeats": 2,
    "--adaptive": 4,
}
# searcher and evaluator settings (``--set K=V``, ``--accuracy-set K=V``) -> largest value kept
SMALL_SETTINGS: dict[str, int] = {
    "predictor_samples": 12,
    "epochs": 1,
    "rounds": 1,
}
# (pattern in the command, reason): examples that need what this machine may not have.
SKIPS: tuple[tuple[str, str], ...] = (
    (r"\badb\b", "needs an Android phone (adb)"),
    (r"\bssh:", "needs an ssh board"),
    (r"--ray\b", "starts or joins a Ray cluster (the `ray` tests cover it)"),
    (r"\bcuda-", "needs an NVIDIA GPU"),
    (r"\bcpu-litert\b|\.tflite\b", "needs the tflite extra and minutes of conversion"),
)
# An example the fast sizes cannot shorten enough says so in its comment ("# long version
# ..."), next to a short version of the same command that the test runs.
LONG_MARK = re.compile(r"#\s*long version\b", re.I)


def _blocks(text: str, lang: str = "bash") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def readme_test_files(text: str) -> dict[str, str]:
    """The README's Python test files: a ``python`` block whose first line is
    ``# tests/...py`` is that file, which its ``pytest tests/...`` examples run."""
    files = {}
    for block in _blocks(text, "python"):
        m = re.match(r"#\s*(tests/\S+\.py)\n", block)
        if m:
            files[m.group(1)] = block
    return files


def readme_commands(text: str) -> list[tuple[str, dict[str, str]]]:
    """``(command line, variables set before it)`` for every line of every bash block."""
    out: list[tuple[str, dict[str, str]]] = []
    variables: dict[str, str] = {}
    for block in _blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if not line:
                continue
            m = re.fullmatch(r"([A-Z_]+)=(\S+)", line)
            if m:
                variables[m.group(1)] = m.group(2)
                continue
            out.append((line, dict(variables)))
    return out


def _expand(line: str, variables: dict[str, str]) -> list[str]:
    for k, v in variables.items():
        line = line.replace(f"${k}", v)
    line = line.replace("../shared/", f"{SHARED}/")
    return shlex.split(line, comments=True)


def shrink(argv: list[str]) -> list[str]:
    """The fast mode: every option of :data:`SMALL` capped at its small value."""
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        if a in SMALL and out[i + 1].isdigit():
            out[i + 1] = str(min(int(out[i + 1]), SMALL[a]))
        elif a in ("--set", "--accuracy-set") and "=" in out[i + 1]:
            key, value = out[i + 1].split("=", 1)
            if key in SMALL_SETTINGS and value.isdigit():
                out[i + 1] = f"{key}={min(int(value), SMALL_SETTINGS[key])}"
    return out


def skip_reason(line: str) -> str | None:
    words = shlex.split(line, comments=True)
    if not words:
        return "comment"
    if words[0] == "pytest":
        if not any(w.startswith("tests/") for w in words[1:]):
            return "a pytest command on files the README does not write"
    elif words[0] != "hwnas":
        return f"not an hwnas command ({words[0]})"
    for pattern, reason in SKIPS:
        if re.search(pattern, line):
            return reason
    if LONG_MARK.search(line):
        return "a long version, named so in the README; its short version runs"
    if "nb201" in line and not (SHARED / "data" / "nb201").exists():
        return f"the shared NB201 table is not at {SHARED}/data/nb201"
    return None


COMMANDS = readme_commands(README.read_text())
TEST_FILES = readme_test_files(README.read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


def test_readme_has_examples():
    """The extraction itself: continuation lines joined, variables kept."""
    lines = [c for c, _ in COMMANDS]
    assert any(c.startswith("hwnas profile") for c in lines)
    joined = [c for c in lines if c.startswith("hwnas import-table")]
    assert joined and "--device-name" in joined[0]
    assert shrink(["hwnas", "sample", "x", "-n", "1000"])[-1] == "12"
    assert (
        shrink(["hwnas", "search", "--set", "predictor_samples=100"])[-1] == "predictor_samples=12"
    )
    assert shrink(["hwnas", "search", "--set", "lam=1"])[-1] == "lam=1"
    assert skip_reason("hwnas search autoslim --budget 10   # long version: an hour") is not None
    assert skip_reason("hwnas search autoslim --budget 1   # ~5 min here") is None
    assert skip_reason("pytest tests/perf --benchmark-json base.json") is None
    assert skip_reason("pytest --version") is not None
    # the fixture example the pytest lines run is a file of its own
    assert any("hwnas_latency" in body for body in TEST_FILES.values())


@pytest.mark.slow
@pytest.mark.readme
@pytest.mark.parametrize(
    "line, variables", COMMANDS, ids=[f"{i:02d}:{c[:60]}" for i, (c, _) in enumerate(COMMANDS)]
)
def test_readme_example(line, variables, workdir):
    reason = skip_reason(line)
    if reason:
        pytest.skip(reason)
    argv = shrink(_expand(line, variables))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if argv[0] == "pytest":  # the README's own test files, written where it says
        for rel, body in TEST_FILES.items():
            (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
            (workdir / rel).write_text(body)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv[1:]]
    else:
        cmd = [sys.executable, "-m", "hwnas.cli", *argv[1:]]
    try:
        proc = subprocess.run(
            cmd,
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"timed out after {TIMEOUT_S} s in fast mode: {' '.join(argv)}")
    assert proc.returncode == 0, (
        f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    )
