"""``adb:SERIAL``: an Android phone, timed by TFLite's ``benchmark_model`` over adb.

What happens for one measurement:

1. the phone must be in state ``device`` (an unauthorized, offline or absent
   phone gives an error saying what to do);
2. a thermal guard waits, up to ``thermal_wait_s``, until the hottest CPU
   thermal zone is under ``thermal_limit_c`` (a hot phone throttles, and its
   figures drift from run to run);
3. the CPU frequencies, governors and temperatures are read;
4. the .tflite file (and ``benchmark_model`` when ``benchmark_binary`` is
   given) is pushed into a scratch directory under ``/data/local/tmp``;
5. ``benchmark_model`` runs pinned with ``taskset`` to the big cores (the
   cores with the highest ``cpuinfo_max_freq``; configurable);
6. its output is parsed (:mod:`hwnas.devices.tflite_benchmark`), frequencies
   and temperatures are read again, and the model is removed.

If the phone drops (cable, reboot, adb server restart) the measurement is
retried with exponential back-off; a phone that stays away becomes a
:class:`~hwnas.errors.DeviceError` for that one model, and a campaign that
stores results as they arrive resumes where it stopped.

``benchmark_model`` prints statistics, not each run (its source keeps only a
running ``Stat``; ``--verbose`` merely lists the parameters): the Measurement's
``samples_ms`` holds one figure per ``benchmark_model`` invocation (its median
when the build prints percentiles, else its mean) and ``extra["summary_only"]``
is ``True``. ``repeats`` > 1 runs the tool several times for a spread across
invocations. Nothing is invented: every number comes from the tool's output.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import time
import warnings
from collections import Counter
from pathlib import Path

from hwnas.devices.base import Device
from hwnas.devices.tflite_benchmark import benchmark_flags, parse_benchmark_output
from hwnas.devices.transport import AdbTransport, TransportLost, measure_with_retries
from hwnas.errors import ConfigError, DeviceError
from hwnas.export.artifact import Artifact, sha256_file
from hwnas.profilers.latency import Measurement, MeasureSettings

ON_PHONE_BENCHMARK = "/data/local/tmp/benchmark_model"
BENCHMARK_DOWNLOAD = (
    "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/"
    "lite/tools/nightly/latest/android_aarch64_benchmark_model"
)

PROPS = (
    "ro.product.model",
    "ro.product.manufacturer",
    "ro.board.platform",
    "ro.soc.model",
    "ro.hardware",
    "ro.build.version.release",
    "ro.build.version.sdk",
    "ro.product.cpu.abi",
)

_PROP_SCRIPT = "for p in " + " ".join(PROPS) + '; do printf "%s=%s\\n" "$p" "$(getprop "$p")"; done'

# A fixed snippet (no user input): per-core state, thermal zones, battery.
_SNAPSHOT_SCRIPT = r"""for c in /sys/devices/system/cpu/cpu[0-9]*; do
  printf 'cpu %s %s %s %s %s\n' "${c##*/}" "$(cat "$c/online" 2>/dev/null || echo 1)" "$(cat "$c/cpufreq/cpuinfo_max_freq" 2>/dev/null || echo -)" "$(cat "$c/cpufreq/scaling_cur_freq" 2>/dev/null || echo -)" "$(cat "$c/cpufreq/scaling_governor" 2>/dev/null || echo -)"
done
for z in /sys/class/thermal/thermal_zone[0-9]*; do
  printf 'zone %s %s %s\n' "${z##*/}" "$(cat "$z/temp" 2>/dev/null || echo -)" "$(cat "$z/type" 2>/dev/null | tr ' ' '_')"
done
printf 'battery %s\n' "$(cat /sys/class/power_supply/battery/temp 2>/dev/null || echo -)"
"""

_CPU_ZONE = re.compile(r"cpu|soc|tsens|cluster|big|little|apc|mtktscpu|core", re.IGNORECASE)

STATE_HELP = {
    "unauthorized": (
        "is unauthorized: unlock it and accept the 'Allow USB debugging?' prompt (tick "
        "'Always allow'), then retry; if no prompt shows, revoke USB debugging "
        "authorisations in Developer options and reconnect"
    ),
    "offline": (
        "is offline: wake it, unplug and replug the USB cable (or run `adb reconnect`); "
        "if it stays offline, restart the adb server with `adb kill-server`"
    ),
    "no permissions": (
        "cannot be opened (no permissions): add a udev rule for its USB vendor id "
        "(https://developer.android.com/studio/run/device) or put your user in the plugdev group"
    ),
    "authorizing": "is still authorizing: wait a few seconds and retry",
}


def parse_devices_list(text: str) -> dict[str, str]:
    """``adb devices -l`` -> {serial: state}."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server")):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        state = parts[1]
        if state == "no" and len(parts) > 2 and parts[2].startswith("permissions"):
            state = "no permissions"
        found[parts[0]] = state
    return found


def _khz(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _celsius(raw: str, battery: bool = False) -> float | None:
    try:
        v = float(raw)
    except ValueError:
        return None
    if battery:
        v /= 10.0  # power_supply temp is in tenths of a degree
    elif abs(v) >= 1000:
        v /= 1000.0  # thermal zones usually report millidegrees
    elif abs(v) > 200:
        v /= 10.0
    return v if 0.0 < v < 150.0 else None


def parse_snapshot(text: str) -> dict:
    """The snapshot script's output -> cores, thermal zones, battery temperature."""
    cores, zones = [], {}
    battery = None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "cpu" and len(parts) >= 6:
            cores.append(
                {
                    "cpu": int(parts[1][3:]) if parts[1][3:].isdigit() else parts[1],
                    "online": parts[2] != "0",
                    "max_khz": _khz(parts[3]),
                    "cur_khz": _khz(parts[4]),
                    "governor": None if parts[5] == "-" else parts[5],
                }
            )
        elif parts[0] == "zone" and len(parts) >= 3:
            t = _celsius(parts[2])
            if t is not None:
                zones[parts[1]] = {"type": parts[3] if len(parts) > 3 else "", "c": t}
        elif parts[0] == "battery" and len(parts) >= 2:
            battery = _celsius(parts[1], battery=True)
    cores.sort(key=lambda c: c["cpu"] if isinstance(c["cpu"], int) else 1 << 20)
    return {"cores": cores, "thermal_zones": zones, "battery_c": battery}


def cpu_temperature(snapshot: dict) -> float | None:
    """Hottest CPU-like thermal zone; any zone if none is named like a CPU; else the battery."""
    zones = snapshot.get("thermal_zones") or {}
    cpu = [z["c"] for z in zones.values() if _CPU_ZONE.search(z.get("type", ""))]
    if cpu:
        return max(cpu)
    if zones:
        return max(z["c"] for z in zones.values())
    return snapshot.get("battery_c")


def big_core_mask(cores: list[dict], threads: int) -> tuple[str | None, list[int]]:
    """The taskset mask of the fastest cores, enough for ``threads`` threads.

    Cores are ranked by ``cpuinfo_max_freq``; the top tier is taken, then the
    next, until there are at least ``threads`` cores. ``(None, [])`` when the
    frequencies cannot be read or all cores are alike (nothing to choose).
    """
    known = [c for c in cores if c.get("online") and isinstance(c.get("max_khz"), int)]
    if not known or len({c["max_khz"] for c in known}) < 2:
        return None, []
    chosen: list[int] = []
    for freq in sorted({c["max_khz"] for c in known}, reverse=True):
        chosen += [c["cpu"] for c in known if c["max_khz"] == freq]
        if len(chosen) >= threads:
            break
    chosen.sort()
    mask = sum(1 << c for c in chosen)
    return f"{mask:x}", chosen


def _mask_cores(mask: str) -> list[int]:
    value = int(mask, 16)
    return [i for i in range(value.bit_length()) if value >> i & 1]


class AdbDevice(Device):
    """An Android phone over adb, timed by TFLite's ``benchmark_model``.

    Args:
        target: the serial (``adb devices -l``); ``None`` takes the only phone attached.
        threads: ``--num_threads``.
        benchmark_binary: a local ``benchmark_model`` built for the phone's ABI,
            pushed for the session; ``None`` uses ``/data/local/tmp/benchmark_model``.
        cpu_mask: ``"auto"`` (big cores where the topology is readable), a hex
            taskset mask (``"f0"``), or ``"none"`` (no pinning).
        use_gpu / use_nnapi / use_xnnpack: delegate flags of ``benchmark_model``.
        op_profiling: ``--enable_op_profiling=true``; the per-op table lands in
            ``Measurement.extra["op_profile"]`` (profiling slows the runs a little).
        repeats: ``benchmark_model`` invocations per measurement (one sample each).
        thermal_limit_c / thermal_wait_s / thermal_poll_s: the thermal guard
            (``thermal_limit_c`` None or 0: off).
        retries / backoff_s: reconnection attempts and the first wait (doubling).
        quantize: the .tflite form to export from ONNX artifacts with a torch source.
        adb: the adb executable (default: ``adb`` on PATH).
        remote_dir: where the scratch directory is created on the phone.
    """

    artifact_format = "tflite"

    def __init__(
        self,
        target: str | None = None,
        threads: int = 1,
        benchmark_binary: str | Path | None = None,
        cpu_mask: str | None = "auto",
        use_gpu: bool = False,
        use_nnapi: bool = False,
        use_xnnpack: bool = True,
        op_profiling: bool = False,
        repeats: int = 1,
        thermal_limit_c: float | None = 45.0,
        thermal_wait_s: float = 300.0,
        thermal_poll_s: float = 10.0,
        retries: int = 4,
        backoff_s: float = 2.0,
        quantize: str | None = None,
        adb: str | None = None,
        remote_dir: str = "/data/local/tmp",
    ):
        super().__init__(threads)
        if int(repeats) < 1:
            raise ConfigError(f"repeats must be >= 1, got {repeats}")
        if cpu_mask not in (None, "auto", "none", "") and not re.fullmatch(
            r"(0x)?[0-9a-fA-F]+", str(cpu_mask)
        ):
            raise ConfigError(
                f"bad cpu_mask {cpu_mask!r}: use 'auto', 'none' or a hex taskset mask such as f0"
            )
        if benchmark_binary is not None and not Path(benchmark_binary).is_file():
            raise ConfigError(
                f"benchmark binary {benchmark_binary} does not exist; download the prebuilt "
                f"android_aarch64 benchmark_model ({BENCHMARK_DOWNLOAD}) or build it with bazel"
            )
        adb_path = adb or shutil.which("adb")
        if adb_path is None:
            raise DeviceError(
                "adb is not installed (not on PATH): install Android platform-tools "
                "(Debian/Ubuntu: apt install adb; elsewhere "
                "https://developer.android.com/tools/releases/platform-tools), "
                "enable USB debugging on the phone and connect it"
            )
        self.adb = adb_path
        self.benchmark_binary = str(benchmark_binary) if benchmark_binary else None
        self.cpu_mask = cpu_mask.lower().removeprefix("0x") if cpu_mask else "none"
        self.use_gpu, self.use_nnapi, self.use_xnnpack = (
            bool(use_gpu),
            bool(use_nnapi),
            bool(use_xnnpack),
        )
        self.op_profiling = bool(op_profiling)
        self.repeats = int(repeats)
        # None or <= 0 turns the guard off (a registry or CLI value of None is
        # dropped as "keep the default", so 0 is the way to say "off" there).
        self.thermal_limit_c = thermal_limit_c if thermal_limit_c and thermal_limit_c > 0 else None
        self.thermal_wait_s = float(thermal_wait_s)
        self.thermal_poll_s = float(thermal_poll_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.quantize = quantize
        self.serial = self._select(target)
        self.name = f"adb:{self.serial}"
        self.transport = AdbTransport(self.serial, adb=self.adb, remote_dir=remote_dir)
        self._info: dict | None = None
        self._bm_remote: str | None = None

    # -- the phone's state ---------------------------------------------------
    def _devices(self) -> dict[str, str]:
        import subprocess

        try:
            proc = subprocess.run(
                [self.adb, "devices", "-l"], capture_output=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeviceError(
                f"`adb devices -l` failed ({exc}); restart the server with `adb kill-server`"
            ) from exc
        if proc.returncode != 0:
            raise DeviceError(
                f"`adb devices -l` failed: {proc.stderr.decode(errors='replace').strip()[-300:]}; "
                "restart the server with `adb kill-server`"
            )
        return parse_devices_list(proc.stdout.decode(errors="replace"))

    def _select(self, target: str | None) -> str:
        devices = self._devices()
        listing = ", ".join(f"{s} ({st})" for s, st in devices.items()) or "none"
        if target:
            if target not in devices:
                raise DeviceError(
                    f"phone {target} is not attached (attached: {listing}); check the cable, "
                    "that USB debugging is on, and `adb devices -l`"
                )
            state = devices[target]
            if state != "device":
                raise DeviceError(
                    f"phone {target} {STATE_HELP.get(state, f'is in state {state!r}')}"
                )
            return target
        ready = [s for s, st in devices.items() if st == "device"]
        if len(ready) == 1:
            return ready[0]
        if len(ready) > 1:
            raise DeviceError(
                f"several phones are attached ({', '.join(ready)}); choose one with adb:SERIAL"
            )
        if devices:
            serial, state = next(iter(devices.items()))
            raise DeviceError(f"phone {serial} {STATE_HELP.get(state, f'is in state {state!r}')}")
        raise DeviceError(
            "no phone attached: connect one by USB with USB debugging on "
            "(Settings > Developer options), then check `adb devices -l`"
        )

    def _check_state(self) -> None:
        state = self.transport.get_state()
        if state == "device":
            return
        if state in ("unauthorized", "no permissions"):
            raise DeviceError(f"phone {self.serial} {STATE_HELP[state]}")
        raise TransportLost(f"phone {self.serial} is {state}")

    def snapshot(self) -> dict:
        """Per-core max/cur frequency and governor, thermal zones and battery temperature."""
        res = self.transport.run_script(_SNAPSHOT_SCRIPT, timeout=60.0)
        snap = parse_snapshot(res.stdout)
        snap["cpu_temp_c"] = cpu_temperature(snap)
        snap["time"] = time.time()
        return snap

    def _props(self) -> dict[str, str]:
        res = self.transport.run_script(_PROP_SCRIPT, timeout=60.0)
        props = {}
        for line in res.stdout.splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                props[k.strip()] = v.strip()
        return props

    def _resolve_mask(self, cores: list[dict]) -> tuple[str | None, list[int], str]:
        if self.cpu_mask in ("none", ""):
            return None, [], "no pinning (cpu_mask='none')"
        if self.cpu_mask != "auto":
            return self.cpu_mask, _mask_cores(self.cpu_mask), "given"
        mask, chosen = big_core_mask(cores, self.threads)
        if mask is None:
            return None, [], "no pinning: core frequencies unreadable or all cores alike"
        return mask, chosen, "big cores by cpuinfo_max_freq"

    def info(self) -> dict:
        """The phone: model, SoC, Android version, cores, chosen CPU mask, tool settings."""
        if self._info is None:
            props = self._props()
            snap = self.snapshot()
            mask, chosen, why = self._resolve_mask(snap["cores"])
            taskset = self.transport.has_command("taskset")
            if mask and not taskset:
                mask, chosen, why = None, [], "no pinning: taskset is missing on the phone"
            governors = Counter(
                c["governor"]
                for c in snap["cores"]
                if c["governor"] and (not chosen or c["cpu"] in chosen)
            )
            self._info = {
                "device": self.name,
                "serial": self.serial,
                "model": props.get("ro.product.model"),
                "manufacturer": props.get("ro.product.manufacturer"),
                "board_platform": props.get("ro.board.platform"),
                "soc_model": props.get("ro.soc.model") or None,
                "hardware": props.get("ro.hardware"),
                "android": props.get("ro.build.version.release"),
                "sdk": props.get("ro.build.version.sdk"),
                "abi": props.get("ro.product.cpu.abi"),
                "cpu_model": " ".join(
                    x for x in (props.get("ro.board.platform"), props.get("ro.soc.model")) if x
                )
                or None,
                "logical_cores": len(snap["cores"]),
                "cores": [{k: c[k] for k in ("cpu", "max_khz", "governor")} for c in snap["cores"]],
                "cpu_mask": mask,
                "usable_cores": chosen or [c["cpu"] for c in snap["cores"]],
                "pinning": why,
                "governor": governors.most_common(1)[0][0] if governors else None,
                "runtime": "tflite benchmark_model",
                "benchmark_binary": self.benchmark_binary or ON_PHONE_BENCHMARK,
                "benchmark_binary_sha256": (
                    sha256_file(self.benchmark_binary) if self.benchmark_binary else None
                ),
                "threads": self.threads,
                "use_gpu": self.use_gpu,
                "use_nnapi": self.use_nnapi,
                "use_xnnpack": self.use_xnnpack,
                "versions": {"adb": self._adb_version()},
            }
        return dict(self._info)

    def _adb_version(self) -> str | None:
        import subprocess

        try:
            proc = subprocess.run(
                [self.adb, "version"], capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        first = proc.stdout.decode(errors="replace").strip().splitlines()
        return first[0] if first else None

    # -- the thermal guard ---------------------------------------------------
    def thermal_guard(self) -> dict:
        """Wait until the CPU is under ``thermal_limit_c`` (at most ``thermal_wait_s``).

        A phone still hot at the limit is measured anyway, with a warning: the
        record says how hot it was, and stopping a campaign would lose more.
        """
        record, _ = self._thermal_guard()
        return record

    def _thermal_guard(self) -> tuple[dict, dict | None]:
        """The guard's record and its last snapshot (reused as the "before" state)."""
        if self.thermal_limit_c is None:
            return {"enabled": False}, None
        t0 = time.monotonic()
        snap = self.snapshot()
        start = temp = snap["cpu_temp_c"]
        if temp is None:
            return {"enabled": True, "readable": False}, snap
        while temp is not None and temp > self.thermal_limit_c:
            if time.monotonic() - t0 >= self.thermal_wait_s:
                break
            time.sleep(
                min(self.thermal_poll_s, max(0.0, self.thermal_wait_s - (time.monotonic() - t0)))
            )
            snap = self.snapshot()
            temp = snap["cpu_temp_c"]
        cooled = temp is None or temp <= self.thermal_limit_c
        record = {
            "enabled": True,
            "readable": True,
            "limit_c": self.thermal_limit_c,
            "start_c": start,
            "end_c": temp,
            "waited_s": round(time.monotonic() - t0, 3),
            "cooled": cooled,
        }
        if not cooled:
            warnings.warn(
                f"{self.name}: CPU still at {temp:.1f} C after waiting {self.thermal_wait_s:.0f} s "
                f"(limit {self.thermal_limit_c:.1f} C); measuring anyway, expect throttled figures: "
                "let the phone cool, remove its case, or raise thermal_wait_s",
                RuntimeWarning,
                stacklevel=4,
            )
        return record, snap

    # -- measuring -------------------------------------------------------------
    def _benchmark_path(self) -> str:
        if self.benchmark_binary:
            if self._bm_remote is None:
                remote = self.transport.push(self.benchmark_binary, "benchmark_model")
                self.transport.run(["chmod", "755", remote]).check("chmod benchmark_model")
                self._bm_remote = remote
            return self._bm_remote
        if self._bm_remote is not None:
            return self._bm_remote
        res = self.transport.run(["test", "-x", ON_PHONE_BENCHMARK])
        if res.returncode != 0:
            raise DeviceError(
                f"no benchmark_model on phone {self.serial} at {ON_PHONE_BENCHMARK}: download the "
                f"prebuilt one for the phone's ABI ({BENCHMARK_DOWNLOAD}) and pass it as "
                f"benchmark_binary=PATH (CLI: --benchmark-binary), or `adb push` it there and "
                "`chmod 755` it"
            )
        self._bm_remote = ON_PHONE_BENCHMARK
        return ON_PHONE_BENCHMARK

    def _flags(self, graph: str, settings: MeasureSettings) -> list[str]:
        return benchmark_flags(
            graph,
            threads=self.threads,
            warmup_runs=settings.warmup,
            num_runs=settings.runs,
            max_secs=settings.budget_s if settings.runs is None else settings.timeout_s,
            use_gpu=self.use_gpu,
            use_nnapi=self.use_nnapi,
            use_xnnpack=self.use_xnnpack,
            op_profiling=self.op_profiling,
        )

    def _measure_once(self, art: Artifact, settings: MeasureSettings, attempt: int) -> Measurement:
        self._check_state()
        info = self.info()
        if attempt:
            # The phone may have lost the scratch directory and what was in it.
            self.transport.run(["mkdir", "-p", "--", self.transport.workdir()]).check(
                "creating the scratch directory"
            )
            self._bm_remote = None
        bm = self._benchmark_path()
        guard, before = self._thermal_guard()
        if before is None:
            before = self.snapshot()
        graph = self.transport.push(art.path, f"{art.sha256[:12]}-{Path(art.path).name}")
        argv = (["taskset", info["cpu_mask"]] if info["cpu_mask"] else []) + [bm]
        argv += self._flags(graph, settings)
        runs = []
        try:
            for _ in range(self.repeats):
                res = self.transport.run(argv, timeout=settings.timeout_s)
                parsed = parse_benchmark_output(res.stdout + "\n" + res.stderr)
                if res.returncode != 0:
                    why = "; ".join(parsed.errors[-3:]) or (res.stderr or res.stdout).strip()[-300:]
                    raise DeviceError(
                        f"benchmark_model failed on {self.name} for {art.label} "
                        f"(exit {res.returncode}): {why}; run `adb shell {shlex.join(argv)}` "
                        "to see the whole log"
                    )
                parsed.require_inference(art.label)
                runs.append(parsed)
        finally:
            # If the phone is gone nothing can be removed; the scratch directory goes at close().
            with contextlib.suppress(DeviceError):
                self.transport.remove(graph)
        after = self.snapshot()
        samples = [p.inference.central_us / 1000.0 for p in runs]  # type: ignore[union-attr]
        kind = "median" if runs[-1].inference.median_us is not None else "mean"  # type: ignore[union-attr]
        env = {**info, "before": before, "after": after}
        return self._measurement(
            art,
            settings,
            samples,
            environment=env,
            extra={
                "summary_only": True,
                "sample_kind": (
                    f"one sample per benchmark_model invocation: its {kind} over "
                    f"{runs[-1].inference.count} runs; benchmark_model prints no per-run times"  # type: ignore[union-attr]
                ),
                "benchmark_model": [p.to_dict() for p in runs],
                "op_profile": runs[-1].op_profile.to_dict() if runs[-1].op_profile else None,
                "thermal_guard": guard,
                "attempts": attempt + 1,
                "command": shlex.join(argv),
            },
        )

    def measure(self, artifact: Artifact, settings: MeasureSettings | None = None) -> Measurement:
        """Time ``artifact`` with ``benchmark_model``, retrying if the phone drops.

        Raises:
            DeviceError: the phone is unauthorized, has no ``benchmark_model``,
                the tool failed, or the phone stayed away through every retry.
        """
        from hwnas.export.tflite import ensure_tflite

        settings = self.settings_for(settings)
        art = ensure_tflite(artifact, self.quantize)
        self.check_artifact(art)

        return measure_with_retries(
            self.name,
            lambda attempt: self._measure_once(art, settings, attempt),
            retries=self.retries,
            backoff_s=self.backoff_s,
            lost="dropped and did not come back",
            fix="reconnect it (cable, `adb devices -l`) and re-run: stored results are kept and "
            "the campaign resumes where it stopped",
        )

    def close(self) -> None:
        try:
            self.transport.cleanup()
        finally:
            self._bm_remote = None
