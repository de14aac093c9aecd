"""``ssh:user@host``: a Linux board (Raspberry Pi, Jetson...) timed by our runner over ssh.

The board needs ``python3`` with numpy and a runtime: ``onnxruntime`` for
.onnx files, ``ai-edge-litert`` (or ``tflite-runtime``) for .tflite files.
On first use the host copies :mod:`hwnas.devices.runner` (one file, no hwnas
import) to a scratch directory there, asks it what the board has, and says
what to install if something is missing. Each measurement copies the model,
runs ``python3 runner.py run ...`` and reads back one JSON line holding every
raw run time, measured on the board (so the network adds nothing to them).

:class:`RunnerDevice` is the same with any transport; over a
:class:`~hwnas.devices.transport.LocalTransport` it runs the runner as a
separate process on this machine (used by tests and the side-by-side figure
to tell the runner's cost from the ssh path's).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from hwnas.devices.base import Device
from hwnas.devices.transport import SshTransport, Transport, measure_with_retries
from hwnas.errors import ConfigError, DeviceError
from hwnas.export.artifact import Artifact
from hwnas.profilers.latency import Measurement, MeasureSettings

RUNNER_PATH = Path(__file__).with_name("runner.py")
RUNTIMES = {"ort": "onnx", "litert": "tflite"}
_INSTALL = {
    "numpy": "numpy",
    "ort": "onnxruntime",
    "litert": "ai-edge-litert (or tflite-runtime where no ai-edge-litert wheel exists)",
}


def parse_runner_output(stdout: str, stderr: str, where: str) -> dict:
    """The JSON after the runner's last ``HWNAS_RESULT`` line.

    Raises:
        DeviceError: no result line (the runner crashed or never started).
    """
    from hwnas.devices.runner import RESULT_PREFIX

    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                return json.loads(line[len(RESULT_PREFIX) :])
            except json.JSONDecodeError as exc:
                raise DeviceError(f"the runner on {where} printed a broken result ({exc})") from exc
    tail = (stderr.strip() or stdout.strip())[-500:]
    raise DeviceError(
        f"the runner on {where} printed no result: {tail or 'no output'}; "
        "the runtime probably crashed (out of memory?) - try a smaller model or fewer threads"
    )


class RunnerDevice(Device):
    """Our runner, reached through a transport.

    Args:
        transport: where it runs (:class:`SshTransport`, :class:`LocalTransport`).
        threads: runtime threads.
        runtime: ``"ort"`` (ONNX Runtime, takes .onnx) or ``"litert"`` (takes .tflite).
        python: the interpreter on the far side.
        optimization: ONNX Runtime graph optimisation level.
        xnnpack: LiteRT's XNNPACK delegate on/off.
        quantize: for ``litert``, the .tflite form to export from ONNX artifacts.
        retries / backoff_s: reconnection attempts and first wait (doubling).
        name: registry name.
    """

    def __init__(
        self,
        transport: Transport,
        threads: int = 1,
        runtime: str = "ort",
        python: str = "python3",
        optimization: str = "all",
        xnnpack: bool = True,
        quantize: str | None = None,
        retries: int = 2,
        backoff_s: float = 2.0,
        name: str = "runner",
    ):
        super().__init__(threads)
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
        if optimization not in ("disable", "basic", "extended", "all"):
            raise ConfigError(
                f"unknown ONNX Runtime optimisation level {optimization!r}; "
                "use disable, basic, extended or all"
            )
        self.transport = transport
        self.runtime = runtime
        self.artifact_format = RUNTIMES[runtime]
        self.python = python
        self.optimization = optimization
        self.xnnpack = bool(xnnpack)
        self.quantize = quantize
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.name = name
        self._runner: str | None = None
        self._probe: dict | None = None
        self._has_timeout: bool | None = None
        self._pushed: tuple[str, str] | None = None  # (sha256, remote path)

    # -- readiness -------------------------------------------------------------
    def _ensure_ready(self) -> dict:
        """Copy the runner and check the far side has python3, numpy and the runtime."""
        if self._runner is None:
            self._runner = self.transport.push(RUNNER_PATH, "hwnas_runner.py")
        if self._probe is None:
            res = self.transport.run([self.python, self._runner, "probe"], timeout=120.0)
            if res.returncode in (126, 127) or "not found" in res.stderr.lower():
                raise DeviceError(
                    f"{self.transport.where}: cannot run {self.python!r} "
                    f"({res.stderr.strip()[-200:]}); install Python 3 there "
                    "(Debian/Raspberry Pi OS: sudo apt install python3) or pass python=PATH"
                )
            probe = parse_runner_output(res.stdout, res.stderr, self.transport.where)
            versions = probe.get("versions") or {}
            missing = []
            if not versions.get("numpy"):
                missing.append("numpy")
            if self.runtime == "ort" and not versions.get("onnxruntime"):
                missing.append("ort")
            if self.runtime == "litert" and not (
                versions.get("ai-edge-litert") or versions.get("tflite-runtime")
            ):
                missing.append("litert")
            if missing:
                pkgs = " and ".join(_INSTALL[m] for m in missing)
                raise DeviceError(
                    f"{self.transport.where} lacks {pkgs} for {probe.get('executable')} "
                    f"(Python {probe.get('python')}, {probe.get('machine')}); install it there: "
                    f"{shlex.quote(self.python)} -m pip install "
                    + " ".join(_INSTALL[m].split()[0] for m in missing)
                    + " (in a venv if the system Python refuses; then pass python=VENV/bin/python)"
                )
            self._probe = probe
            self._has_timeout = self.transport.has_command("timeout")
        return self._probe

    def info(self) -> dict:
        """The far side: CPU, cores, governor, Python and runtime versions, threads."""
        probe = self._ensure_ready()
        versions = probe.get("versions") or {}
        keep = ("numpy", "onnxruntime") if self.runtime == "ort" else (
            "numpy", "ai-edge-litert", "tflite-runtime",
        )  # fmt: skip
        return {
            "device": self.name,
            "transport": self.transport.kind,
            "where": self.transport.where,
            "hostname": probe.get("hostname"),
            "cpu_model": probe.get("cpu_model"),
            "board_model": probe.get("device_model"),
            "machine": probe.get("machine"),
            "logical_cores": probe.get("logical_cores"),
            "usable_cores": probe.get("usable_cores"),
            "governor": probe.get("governor"),
            "cpu_max_khz": probe.get("cpu_max_khz"),
            "cpu_cur_khz": probe.get("cpu_cur_khz"),
            "os": probe.get("os"),
            "python": probe.get("python"),
            "runtime": "onnxruntime" if self.runtime == "ort" else "litert-interpreter",
            "versions": {k: versions.get(k) for k in keep if versions.get(k) or k == "numpy"},
            "threads": self.threads,
            **(
                {"graph_optimization_level": self.optimization}
                if self.runtime == "ort"
                else {"xnnpack": self.xnnpack}
            ),
        }

    # -- measuring -------------------------------------------------------------
    def prepare(self, artifact: Artifact) -> Artifact:
        if self.runtime == "litert":
            from hwnas.export.tflite import ensure_tflite

            artifact = ensure_tflite(artifact, self.quantize)
        self.check_artifact(artifact)
        return artifact

    def _push_model(self, art: Artifact) -> str:
        if self._pushed and self._pushed[0] == art.sha256:
            return self._pushed[1]
        if self._pushed:  # one model at a time on the board
            self.transport.remove(self._pushed[1])  # rm -f: already gone is fine
            self._pushed = None
        remote = self.transport.push(art.path, f"{art.sha256[:12]}-{Path(art.path).name}")
        self._pushed = (art.sha256, remote)
        return remote

    def runner_argv(self, model: str, art: Artifact, settings: MeasureSettings) -> list[str]:
        argv: list[str] = [self.python, self._runner or "hwnas_runner.py", "run"]
        argv += ["--model", model, "--runtime", self.runtime, "--threads", str(self.threads)]
        if settings.warmup is not None:
            argv += ["--warmup", str(settings.warmup)]
        if settings.runs is not None:
            argv += ["--runs", str(settings.runs)]
        argv += [
            "--min-runs", str(settings.min_runs),
            "--max-runs", str(settings.max_runs),
            "--budget-s", f"{settings.budget_s:g}",
            "--rel-ci", f"{settings.rel_ci:g}",
            "--optimization", self.optimization,
            "--shapes", json.dumps({n: list(s) for n, s in art.input_shapes}),
        ]  # fmt: skip
        if not self.xnnpack:
            argv.append("--no-xnnpack")
        return argv

    def _measure_once(self, art: Artifact, settings: MeasureSettings, attempt: int) -> Measurement:
        if attempt:
            # After a drop the scratch directory may be gone: make it and copy everything again.
            self._runner = None
            self._pushed = None
            self.transport.run(["mkdir", "-p", "--", self.transport.workdir()]).check(
                f"creating the scratch directory on {self.transport.where}"
            )
        self._ensure_ready()
        model = self._push_model(art)
        argv = self.runner_argv(model, art, settings)
        if self._has_timeout:
            # Kill the runner on the far side too: killing the local client
            # alone can leave it running and skew the next measurement.
            argv = ["timeout", "-k", "5", f"{settings.timeout_s:g}", *argv]
        res = self.transport.run(argv, timeout=settings.timeout_s + 30.0)
        if self._has_timeout and res.returncode == 124:
            raise DeviceError(
                f"{art.label} on {self.name} did not finish within {settings.timeout_s:.0f} s and "
                "was killed; raise MeasureSettings.timeout_s (--timeout) or use fewer runs"
            )
        result = parse_runner_output(res.stdout, res.stderr, self.transport.where)
        if not result.get("ok"):
            raise DeviceError(
                f"{self.name}: {result.get('kind')}: {result.get('error')}; "
                "check the model runs with the same runtime on this machine (cpu-ort/cpu-litert)"
            )
        env = self.info()
        host = result.get("host") or {}
        env["cpu_cur_khz"] = host.get("cpu_cur_khz", env.get("cpu_cur_khz"))
        return self._measurement(
            art,
            settings,
            result["samples_ms"],
            warmup=result.get("warmup_ms") or (),
            environment=env,
            extra={
                "init_ms": result.get("init_ms"),
                "runtime": result.get("runtime"),
                "round_trip_s": res.seconds,
                "attempts": attempt + 1,
            },
        )

    def measure(self, artifact: Artifact, settings: MeasureSettings | None = None) -> Measurement:
        """Copy the model over, time it on the far side, return every raw run.

        Raises:
            DeviceError: missing Python/runtime (with what to install), a
                runtime failure, or a board unreachable through every retry.
        """
        settings = self.settings_for(settings)
        art = self.prepare(artifact)

        return measure_with_retries(
            self.name,
            lambda attempt: self._measure_once(art, settings, attempt),
            retries=self.retries,
            backoff_s=self.backoff_s,
            lost="unreachable",
            fix="check the board and the network, then re-run: stored results are kept",
        )

    def close(self) -> None:
        try:
            self.transport.close()
        finally:
            self._runner = None
            self._probe = None
            self._pushed = None


class SshDevice(RunnerDevice):
    """A Linux board over ssh (see the module docstring).

    Args:
        target: ``user@host`` or ``user@host:port``.
        identity_file / known_hosts_file / ssh_options / ssh_config: ssh client
            settings (defaults: your ~/.ssh/config and keys).
        connect_timeout: seconds before an unreachable board is reported.
        Other arguments: see :class:`RunnerDevice`.
    """

    def __init__(
        self,
        target: str,
        threads: int = 1,
        runtime: str = "ort",
        python: str = "python3",
        identity_file: str | Path | None = None,
        known_hosts_file: str | Path | None = None,
        ssh_options: tuple[str, ...] | list[str] = (),
        ssh_config: str | Path | None = None,
        connect_timeout: float = 10.0,
        **kwargs: Any,
    ):
        transport = SshTransport(
            target,
            identity_file=identity_file,
            known_hosts_file=known_hosts_file,
            options=ssh_options,
            config_file=ssh_config,
            connect_timeout=connect_timeout,
        )
        super().__init__(
            transport,
            threads=threads,
            runtime=runtime,
            python=python,
            name=f"ssh:{target}",
            **kwargs,
        )
