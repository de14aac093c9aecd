"""pytest plugin: the ``hwnas_latency`` fixture, a latency test recorded by pytest-benchmark.

```python
def test_my_model_latency(hwnas_latency):
    hwnas_latency("model.onnx", device="cpu-ort", threads=1)  # or a zoo name / torch module
```

The fixture measures with an hwnas device (fixed rounds of timed runs, every
raw sample, the device's environment) and hands the samples to pytest-benchmark's
own ``benchmark`` fixture, so ``--benchmark-json``, ``--benchmark-autosave``,
``--benchmark-compare``, ``--benchmark-histogram``, ``--benchmark-compare-fail``
and ``pytest-benchmark compare`` work on it as on any benchmark. A reference
model is measured beside the model, interleaved round by round, and stored in
the entry's ``extra_info["hwnas"]`` with the model's samples and the device's
identity; ``--hwnas-fail-regression 5%`` uses it to take the machine's drift out
before it calls a slowdown (see :mod:`hwnas.testing.stats`). Every model file
measured is kept by its hash (``--hwnas-keep-models``); when the baseline's model
differs from the one under test and its file is there, it is timed again beside
the new one and the verdict is on that in-session ratio, which the machine's
drift between the two sessions cannot enter.

Registered through the ``pytest11`` entry point, this module loads in every
pytest session of anyone who installs hwnas: it imports only pytest and
hwnas' light modules here, and torch, onnxruntime and numpy inside the fixture.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hwnas.errors import ConfigError, HwnasError

#: The reference model measured beside every model unless told otherwise: a
#: small zoo network (about 41 MMACs), cheap next to most models under test.
DEFAULT_REFERENCE = "cifar_resnet20"
#: 40 short rounds rather than 10 long ones: each round opens a new runtime session, and on a
#: VM two sessions of one model can differ by ~20 %, so the number of rounds, not of runs,
#: narrows the verdict's interval (benchmarks/RESULTS.md, "Latency regression tests").
DEFAULTS = {"runs": 5, "rounds": 40, "warmup": 2}
_UNSET: Any = object()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hwnas", "hwnas latency tests (the hwnas_latency fixture)")
    g.addoption(
        "--hwnas-device",
        metavar="DEVICE",
        default=None,
        help="run every hwnas_latency test on this device instead of the one the test names "
        "(cpu-ort, cpu-litert, adb:SERIAL, ssh:HOST, ...)",
    )
    g.addoption(
        "--hwnas-device-opt",
        metavar="KEY=VALUE",
        action="append",
        default=None,
        help="a device option (repeatable), e.g. benchmark_binary=./benchmark_model for adb; "
        "with --hwnas-device these replace the options the tests give their own device",
    )
    g.addoption(
        "--hwnas-threads",
        metavar="N",
        type=int,
        default=None,
        help="threads, overriding the tests'",
    )
    g.addoption(
        "--hwnas-runs",
        metavar="N",
        type=int,
        default=None,
        help=f"timed runs per round (default {DEFAULTS['runs']})",
    )
    g.addoption(
        "--hwnas-rounds",
        metavar="N",
        type=int,
        default=None,
        help=f"interleaved rounds of model and reference (default {DEFAULTS['rounds']})",
    )
    g.addoption(
        "--hwnas-warmup",
        metavar="N",
        type=int,
        default=None,
        help=f"warm-up runs before each round (default {DEFAULTS['warmup']})",
    )
    g.addoption(
        "--hwnas-reference",
        metavar="MODEL",
        default=None,
        help=f"reference model measured beside each model: zoo name or .onnx file, or 'none' "
        f"(default {DEFAULT_REFERENCE})",
    )
    g.addoption(
        "--hwnas-fail-regression",
        metavar="PCT",
        default=None,
        help="fail a test whose drift-corrected median latency is slower than the baseline with "
        "confidence, by possibly more than PCT (e.g. 5%%)",
    )
    g.addoption(
        "--hwnas-baseline",
        metavar="JSON",
        default=None,
        help="pytest-benchmark JSON to judge against (default: the run --benchmark-compare loads)",
    )
    g.addoption(
        "--hwnas-confidence",
        metavar="P",
        type=float,
        default=0.95,
        help="two-sided confidence of the ratio's interval (default 0.95)",
    )
    g.addoption(
        "--hwnas-keep-models",
        metavar="DIR",
        default=None,
        help="where every measured model file is kept, named by its sha256, so that a later "
        "session judging against this run times the baseline's own model beside the new one "
        "(default: hwnas-models/ in pytest-benchmark's storage, .benchmarks/; 'none': keep nothing)",
    )
    g.addoption(
        "--hwnas-force",
        action="store_true",
        default=False,
        help="judge even against a baseline from another device or machine",
    )


_STATE = pytest.StashKey["_Session"]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = _Session(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    state = terminalreporter.config.stash.get(_STATE, None)
    if state is not None and state.lines:
        terminalreporter.section("hwnas latency verdicts")
        for line in state.lines:
            terminalreporter.write_line(line)


class _Session:
    """Per pytest session: devices and artifacts made once, the baseline read once."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.devices: dict[tuple, Any] = {}
        self.artifacts: dict[tuple, Any] = {}
        self.lines: list[str] = []
        self._baseline: Any = None
        self._baseline_error: HwnasError | None = None

    def option(self, name: str) -> Any:
        return self.config.getoption(name)

    def threshold(self) -> float | None:
        text = self.option("hwnas_fail_regression")
        if text is None:
            return None
        from hwnas.testing.stats import parse_threshold

        return parse_threshold(text)

    def _baseline_path(self) -> str:
        given = self.option("hwnas_baseline")
        if given:
            return given
        bs = getattr(self.config, "_benchmarksession", None)
        mapping = getattr(bs, "compared_mapping", None) or {}
        root = getattr(getattr(bs, "storage", None), "path", None)
        if mapping and root is not None:
            rel = Path(str(list(mapping)[-1]))
            return str(rel if rel.is_absolute() else Path(root) / rel)
        raise ConfigError(
            "--hwnas-fail-regression needs a baseline: give --hwnas-baseline FILE.json, or "
            "--benchmark-compare [NUM] with a run saved by --benchmark-autosave"
        )

    def baseline(self) -> Any:
        """The baseline run (read once; its error, if any, repeated for every test)."""
        if self._baseline_error is not None:
            raise self._baseline_error
        if self._baseline is None:
            from hwnas.testing.runs import load_json_run

            try:
                self._baseline = load_json_run(self._baseline_path())
            except HwnasError as exc:
                self._baseline_error = exc
                raise
        return self._baseline

    def device(self, spec: str, threads: int, options: dict[str, Any]) -> Any:
        from hwnas.devices import create_device

        key = (spec, threads, tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key not in self.devices:
            self.devices[key] = create_device(spec, threads=threads, **options)
        return self.devices[key]

    def artifact(self, model: Any, device: Any, input_shape: Any, label: str | None) -> Any:
        from hwnas.testing.measure import model_artifact

        if not isinstance(model, str | os.PathLike):  # a torch module: to_onnx caches it
            return model_artifact(model, device, input_shape, label)
        key = (str(model), str(input_shape), label, device.artifact_format)
        if key not in self.artifacts:
            self.artifacts[key] = model_artifact(model, device, input_shape, label)
        return self.artifacts[key]

    def models_dir(self) -> Path | None:
        """Where model files are kept (``--hwnas-keep-models``; ``None``: not kept)."""
        given = self.option("hwnas_keep_models")
        if given:
            return None if given.lower() == "none" else Path(given)
        bs = getattr(self.config, "_benchmarksession", None)
        root = getattr(getattr(bs, "storage", None), "path", None)
        if root is None:  # not a file storage (e.g. elasticsearch): beside the tests
            root = self.config.rootpath / ".benchmarks"
        return Path(root) / "hwnas-models"

    def keep(self, art: Any) -> None:
        """A copy of the model file measured, by content hash (written once, atomically)."""
        import shutil

        from hwnas.export.atomic import publish, temp_path

        where = self.models_dir()
        if where is None or not art.sha256:
            return
        dest = where / f"{art.sha256}{Path(art.path).suffix}"
        if dest.exists():
            return
        try:
            where.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(where, dest.suffix)
            shutil.copyfile(art.path, tmp)
            publish(tmp, dest)
        except OSError as exc:
            raise ConfigError(
                f"cannot keep the model file in {where} ({exc}); give a writable "
                "--hwnas-keep-models DIR, or none"
            ) from None

    def kept(self, sha256: str | None) -> Path | None:
        """The kept model file with this hash, if there is one."""
        where = self.models_dir()
        if where is None or not sha256 or not where.is_dir():
            return None
        return next(iter(sorted(where.glob(f"{sha256}.*"))), None)

    def close(self) -> None:
        import contextlib

        for dev in self.devices.values():
            with contextlib.suppress(Exception):  # closing is best effort at session end
                dev.close()
        self.devices.clear()


@dataclass
class LatencyResult:
    """What ``hwnas_latency(...)`` returns.

    Attributes:
        measurement: the model's :class:`~hwnas.profilers.latency.Measurement`
            (every round's samples, in order).
        reference: the reference model's, measured interleaved (``None``: no reference).
        comparison: the verdict against the baseline (``None``: no
            ``--hwnas-fail-regression``).
    """

    measurement: Any
    reference: Any = None
    comparison: Any = None

    @property
    def median_ms(self) -> float:
        return self.measurement.median


class LatencyFixture:
    """The callable the ``hwnas_latency`` fixture gives a test; usable once per test."""

    def __init__(self, request: pytest.FixtureRequest, benchmark: Any, state: _Session):
        self.request = request
        self.benchmark = benchmark
        self.state = state
        self.threshold: float | None = None
        self.baseline_entry: Any = None
        self.teardown_error: str | None = None
        self._used = False

    def __call__(
        self,
        model: Any,
        device: str = "cpu-ort",
        threads: int = 1,
        *,
        input_shape: Any = None,
        runs: int | None = None,
        rounds: int | None = None,
        warmup: int | None = None,
        reference: Any = _UNSET,
        label: str | None = None,
        **device_options: Any,
    ) -> LatencyResult:
        """Measure ``model`` (interleaved with the reference), record it, judge it.

        Args:
            model: an .onnx or .tflite path, a zoo name, or a torch module (with ``input_shape``).
            device / threads: where to run; ``--hwnas-device`` / ``--hwnas-threads`` override them.
            runs / rounds / warmup: timed runs per round, rounds, warm-up runs per
                round; the command line's ``--hwnas-*`` options override them.
            reference: the reference model (zoo name, .onnx path, torch module),
                or ``None`` for none; default ``--hwnas-reference`` or
                :data:`DEFAULT_REFERENCE`.
            label: the name recorded with the measurement.
            device_options: passed to the device factory (``create_device``); replaced
                by ``--hwnas-device-opt`` when ``--hwnas-device`` overrides the device.
        """
        if self._used:
            pytest.fail(
                "hwnas_latency can be called only once per test (one benchmark per test); "
                "parametrize the test over models instead",
                pytrace=False,
            )
        self._used = True
        try:
            return self._run(
                model, device, threads, input_shape, runs, rounds, warmup, reference, label,
                device_options,
            )  # fmt: skip
        except HwnasError as exc:
            problem = f"hwnas: {exc}"
        self.benchmark.has_error = True
        pytest.fail(problem, pytrace=False)

    def _setting(self, name: str, given: int | None) -> int:
        cli = self.state.option(f"hwnas_{name}")
        value = cli if cli is not None else given if given is not None else DEFAULTS[name]
        if int(value) < (0 if name == "warmup" else 1):
            raise ConfigError(f"{name} must be a positive integer, got {value}")
        return int(value)

    def _run(
        self, model, device, threads, input_shape, runs, rounds, warmup, reference, label, options
    ) -> LatencyResult:
        from hwnas.profilers.latency import MeasureSettings
        from hwnas.testing.measure import measure_rounds
        from hwnas.testing.runs import Entry, compare_entries, identity_of, split_rounds

        state, bench = self.state, self.benchmark
        spec = state.option("hwnas_device") or device
        threads = state.option("hwnas_threads") or threads
        if state.option("hwnas_device_opt") or state.option("hwnas_device"):
            from hwnas.commands.remote import parse_device_options

            given = parse_device_options(state.option("hwnas_device_opt"))
            # The test's options are for the device it names, not for an override.
            options = given if state.option("hwnas_device") else {**options, **given}
        dev = state.device(spec, int(threads), options)
        art = state.artifact(model, dev, input_shape, label)
        if reference is _UNSET:
            reference = state.option("hwnas_reference") or DEFAULT_REFERENCE
        if isinstance(reference, str) and reference.lower() == "none":
            reference = None
        disabled = bench.disabled
        n_runs, n_rounds = self._setting("runs", runs), self._setting("rounds", rounds)
        n_warm = self._setting("warmup", warmup)
        if disabled:  # --benchmark-disable: run the model once, as pytest-benchmark does
            n_runs, n_rounds, reference = 1, 1, None
        ref_art = state.artifact(reference, dev, None, None) if reference is not None else None
        # Judging a changed model: the baseline's own model, if its file was kept, is timed
        # again beside it (the verdict is then on that in-session ratio).
        base_art = None
        base_sha = getattr(self.baseline_entry, "artifact_sha256", None)
        if self.threshold is not None and not disabled and base_sha and base_sha != art.sha256:
            kept = state.kept(base_sha)
            if kept is not None:
                base_art = state.artifact(str(kept), dev, None, "baseline model")
        settings = MeasureSettings(warmup=n_warm, runs=n_runs)
        got = measure_rounds(
            dev, {"model": art, "reference": ref_art, "baseline": base_art}, settings, n_rounds
        )
        m, ref, base_now = got["model"], got["reference"], got["baseline"]
        info = m.environment
        result = LatencyResult(m, ref)
        if disabled:
            return result
        identity = identity_of({**info, "device": dev.name})
        self._record(m, ref, identity, info, n_runs, n_rounds, n_warm)
        state.keep(art)
        base_now_rounds = None
        if base_now is not None:
            self.benchmark.extra_info["hwnas"]["baseline_model"] = {
                "sha256": base_now.artifact_sha256,
                "median_ms": base_now.median,
                "samples_ms": list(base_now.samples_ms),
                "round_sizes": base_now.extra["rounds"],
            }
            base_now_rounds = split_rounds(list(base_now.samples_ms), base_now.extra["rounds"])
        if self.threshold is None:
            return result
        new = Entry(
            self.request.node.nodeid,
            list(m.samples_ms),
            identity,
            list(ref.samples_ms) if ref else None,
            ref.artifact_sha256 if ref else None,
            ref.label if ref else None,
            dev.name,
            m.extra["rounds"],
            ref.extra["rounds"] if ref else None,
            m.artifact_sha256,
        )
        try:
            cmp = compare_entries(
                self.baseline_entry,
                new,
                threshold=self.threshold,
                confidence=state.option("hwnas_confidence"),
                force=state.option("hwnas_force"),
                force_option="--hwnas-force",
                base_model_now=base_now_rounds,
            )
        except ConfigError as exc:
            # Refused to judge: warn now, report the test as an error at teardown.
            self.request.node.warn(pytest.PytestWarning(f"hwnas: {exc}"))
            self.teardown_error = f"hwnas: {exc}"
            return result
        from hwnas.testing.stats import verdict_line

        line = verdict_line(self.request.node.nodeid, cmp.estimate, self.threshold, cmp.note)
        state.lines.append(line)
        est = cmp.estimate
        bench.extra_info["hwnas"]["verdict"] = {
            "verdict": cmp.verdict, "ratio": est.ratio, "ci": [est.lo, est.hi],
            "model_ratio": est.model_ratio, "drift": est.drift, "against": est.against,
            "threshold": self.threshold, "confidence": est.confidence, "note": cmp.note,
        }  # fmt: skip
        result.comparison = cmp
        if cmp.verdict == "slower":
            pytest.fail(line, pytrace=False)
        return result

    def _record(self, m, ref, identity, info, runs: int, rounds: int, warmup: int) -> None:
        """Hand the samples to pytest-benchmark: its Stats get every raw sample (seconds, one
        iteration per round as pytest-benchmark counts them) and ``extra_info["hwnas"]`` the rest."""
        bench = self.benchmark
        stats = bench._make_stats(1)
        for s in m.samples_ms:
            stats.update(s / 1e3)
        bench._mode = "hwnas_latency(...)"
        stats.options = {
            "disable_gc": False,
            "timer": f"hwnas {m.device}",
            "min_rounds": runs * rounds,
            "max_time": None,
            "min_time": None,
            "precision": None,
            "confidence": None,
            "warmup": warmup,
        }
        bench.extra_info["hwnas"] = {
            "device": m.device,
            "label": m.label,
            "artifact_sha256": m.artifact_sha256,
            "identity": identity,
            "environment": info,
            "settings": {"runs_per_round": runs, "rounds": rounds, "warmup_per_round": warmup},
            "stats_ms": m.stats.to_dict(),
            "samples_ms": list(m.samples_ms),
            "round_sizes": m.extra["rounds"],
            "reference": None
            if ref is None
            else {
                "label": ref.label,
                "sha256": ref.artifact_sha256,
                "median_ms": ref.median,
                "samples_ms": list(ref.samples_ms),
                "round_sizes": ref.extra["rounds"],
            },
        }


@pytest.fixture
def hwnas_latency(request: pytest.FixtureRequest, benchmark: Any):
    """Measure a model's latency with an hwnas device and record it in pytest-benchmark's JSON.

    Call it once in a test: ``hwnas_latency("model.onnx", device="cpu-ort", threads=1)``;
    see :meth:`LatencyFixture.__call__`. Problems with the baseline of
    ``--hwnas-fail-regression`` are reported as the test's error, in one line.
    """
    state = request.config.stash[_STATE]
    fixture = LatencyFixture(request, benchmark, state)
    problem = None
    try:
        fixture.threshold = state.threshold()
        if fixture.threshold is not None:
            run = state.baseline()
            fixture.baseline_entry = run.entries.get(request.node.nodeid)
            if fixture.baseline_entry is None:
                raise ConfigError(
                    f"the baseline {run.path} has no result for {request.node.nodeid}; save a baseline "
                    "that ran this test, or run it without --hwnas-fail-regression"
                )
    except HwnasError as exc:
        problem = f"hwnas: {exc}"
    if problem:  # outside the except block: one line, no chained traceback
        benchmark._mode = "hwnas_latency (not run)"  # no "fixture not used" warning on top
        benchmark.has_error = True
        pytest.fail(problem, pytrace=False)
    yield fixture
    if fixture.teardown_error:
        pytest.fail(fixture.teardown_error, pytrace=False)
