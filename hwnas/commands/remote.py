"""`hwnas remote DEVICE [MODEL...]`: measure on a phone (adb) or a board (ssh), with their options.

``hwnas profile --device adb:SERIAL`` works with the defaults; this command
adds what only those devices take: the ``benchmark_model`` binary to push,
the CPU mask, delegates, op profiling, the thermal guard (adb); the runtime,
Python and ssh keys (ssh). With no MODEL it checks the device and prints
what it is (model, SoC, Android version, cores, chosen CPU mask; or the
board's CPU, Python and runtimes). ``--device-opt KEY=VALUE`` passes any
other constructor argument.

Each model's result is written to ``--db`` as soon as it is measured, and a
model that fails (phone dropped for good, runtime error) is recorded as a
failure without stopping the others.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from hwnas.commands._common import (
    add_seconds_option,
    console,
    count,
    err_console,
    input_shape,
    nonneg_int,
    print_json,
    seconds,
    table,
)
from hwnas.errors import ConfigError, HwnasError

#: A directory on the far side: an absolute path without shell syntax. The transports
#: quote it, but ``$(...)`` would still become a literal directory on the phone: a typo
#: or an attack, refused either way.
_SAFE_REMOTE_DIR = re.compile(r"^/[^$`;|&<>()'\"\\\n\r*?]*$")

#: ssh options that turn off the check that the board is the board.
_INSECURE_SSH = re.compile(
    r"^\s*(StrictHostKeyChecking\s*[= ]\s*(no|off)|UserKnownHostsFile\s*[= ]\s*/dev/null)\s*$",
    re.I,
)


def _nonneg_float(text: str) -> float:
    from hwnas.commands._common import fraction

    return fraction(text)


def ssh_option(text: str) -> str:
    """``-o`` option for ssh: ``KEY=VALUE`` on one line; warns when it disables host checking."""
    if "\n" in text or "\r" in text or not re.match(r"^\s*[A-Za-z]+\s*[= ]", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ssh option; give KEY=VALUE, e.g. ConnectTimeout=10"
        )
    if _INSECURE_SSH.match(text):
        print(
            f"hwnas: warning: --ssh-option {text.strip()} turns off host key checking: anyone "
            "on the network path can pose as the board; prefer --known-hosts FILE",
            file=sys.stderr,
        )
    return text


def _check_device_option(key: str, value: object, item: str) -> None:
    if key.endswith("_dir") and (
        not isinstance(value, str) or not _SAFE_REMOTE_DIR.match(value) or ".." in value.split("/")
    ):
        raise ConfigError(
            f"bad --device-opt {item!r}: {key} must be an absolute path without shell syntax "
            "($ ` ; | & < > ( ) quotes * ?) or '..' (e.g. /data/local/tmp)"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"bad --device-opt {item!r}: give a finite number")
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"bad --device-opt {item!r}: give a number >= 0")


def parse_device_options(items: list[str] | None) -> dict:
    """``["repeats=3", "use_gpu=true", "cpu_mask=f0"]`` -> typed keyword arguments."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"bad --device-opt {item!r}: use KEY=VALUE, e.g. repeats=3")
        low = raw.lower()
        value: object = raw
        if low in ("true", "yes", "on"):
            value = True
        elif low in ("false", "no", "off"):
            value = False
        elif low in ("none", "null"):
            value = None
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    continue
        _check_device_option(key, value, item)
        out[key] = value
    return out


def _device_kwargs(args) -> dict:
    kw = {
        "threads": args.threads,
        "benchmark_binary": args.benchmark_binary,
        "cpu_mask": args.cpu_mask,
        "use_gpu": True if args.use_gpu else None,
        "use_nnapi": True if args.use_nnapi else None,
        "use_xnnpack": False if args.no_xnnpack else None,
        "op_profiling": True if args.op_profiling else None,
        "repeats": args.repeats,
        "thermal_limit_c": args.thermal_limit,
        "thermal_wait_s": args.thermal_wait,
        "runtime": args.runtime,
        "python": args.python,
        "identity_file": args.identity_file,
        "known_hosts_file": args.known_hosts,
        "ssh_options": args.ssh_option,
        "quantize": args.quantize,
    }
    kw = {k: v for k, v in kw.items() if v is not None}
    kw.update(parse_device_options(args.device_opt))
    return kw


def _resolve(name: str, input_shape: str | None):
    """(label, arch, artifact) for a zoo name, an .onnx file or a .tflite file."""
    from hwnas.arch import Arch

    if name.lower().endswith(".tflite"):
        from hwnas.export.tflite import load_tflite

        art = load_tflite(name)
        return Path(name).name, Arch("tflite", (art.sha256,)), art
    from hwnas.commands._common import resolve_model

    m = resolve_model(name, input_shape)
    return m.name, m.arch, m.artifact


def _notes(m) -> str:
    notes = []
    if m.extra.get("summary_only"):
        notes.append("benchmark_model summary")
    before, after = m.environment.get("before") or {}, m.environment.get("after") or {}
    if before.get("cpu_temp_c") is not None and after.get("cpu_temp_c") is not None:
        notes.append(f"{before['cpu_temp_c']:.1f}->{after['cpu_temp_c']:.1f} C")
    prof = m.extra.get("op_profile") or {}
    top = sorted(prof.get("by_type") or [], key=lambda r: -(r.get("avg_ms") or 0))[:2]
    if top:
        notes.append("top ops " + ", ".join(f"{r['node_type']} {r['avg_ms']:.2f} ms" for r in top))
    if m.extra.get("attempts", 1) > 1:
        notes.append(f"{m.extra['attempts']} attempts")
    return "; ".join(notes)


def run(args) -> int:
    from hwnas.devices import DEVICES
    from hwnas.profilers.latency import MeasurementFailure, MeasureSettings
    from hwnas.store import Store

    DEVICES.factory(args.device)  # unknown name: the registry's message lists the valid ones
    try:
        device = DEVICES.create(args.device, **_device_kwargs(args))
    except TypeError as exc:
        raise ConfigError(
            f"an option does not apply to device {args.device} ({exc}); see `hwnas remote --help`"
        ) from None
    store = Store(args.db) if args.db else None
    rows: list[dict] = []
    try:
        if not args.models:
            info = device.info()
            if args.json:
                print_json(info)
            else:
                console.print(table(f"{device.name}", ["field", "value"], sorted(info.items())))
            return 0
        kw = {
            "runs": args.runs,
            "warmup": args.warmup,
            "budget_s": args.budget,
            "timeout_s": args.timeout,
        }
        settings = MeasureSettings(**{k: v for k, v in kw.items() if v is not None})
        for name in args.models:
            label, arch, art = _resolve(name, args.input_shape)
            try:
                m = device.measure(art, settings)
            except HwnasError as exc:
                err_console.print(f"[red]{label}: {exc}[/]")
                rows.append({"model": label, "status": "failed", "reason": str(exc)})
                if store:
                    store.add_arch(arch, label=label)
                    store.add_measurement(
                        arch.id,
                        MeasurementFailure(device.name, label, "device", str(exc), art.sha256),
                        art.input_shape,
                    )
                continue
            rows.append({"model": label, "status": "ok", **m.to_dict(), "notes": _notes(m)})
            if store:
                store.add_device(m.device, m.environment)
                store.add_arch(arch, label=label)
                store.add_artifact(art, arch.id)
                store.add_measurement(arch.id, m, art.input_shape)
    finally:
        device.close()
        if store:
            store.close()
    if args.json:
        print_json(rows)
    else:
        console.print(
            table(
                f"hwnas remote {device.name}",
                ["model", "median ms", "IQR ms", "n", "notes"],
                [
                    (
                        r["model"],
                        r.get("median_ms", "failed"),
                        r.get("iqr_ms"),
                        r.get("n"),
                        r.get("notes") or r.get("reason"),
                    )
                    for r in rows
                ],
            )
        )
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def register(sub) -> None:
    p = sub.add_parser(
        "remote",
        help="measure on a phone (adb) or a board (ssh) with device options; no MODEL: device info",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("device", help="adb, adb:SERIAL, ssh:user@host[:port] (or any device name)")
    p.add_argument("models", nargs="*", help="zoo names, .onnx or .tflite files")
    p.add_argument("--threads", type=count, default=None, help="runtime threads (default 1)")
    p.add_argument("--runs", type=count, default=None, help="timed runs (default: the device's)")
    p.add_argument("--warmup", type=nonneg_int, default=None, help="warm-up runs")
    add_seconds_option(p, help="seconds of timed runs (adaptive)", dest="budget")
    p.add_argument("--timeout", type=seconds, default=None, help="seconds before a run is killed")
    p.add_argument(
        "--input-shape",
        type=input_shape,
        default=None,
        help="input shape of an .onnx with dynamic dims",
    )
    p.add_argument(
        "--quantize", choices=["dynamic-int8"], default=None, help="TFLite form to export"
    )
    a = p.add_argument_group("adb (Android phone, TFLite benchmark_model)")
    a.add_argument("--benchmark-binary", default=None, help="local benchmark_model to push")
    a.add_argument("--cpu-mask", default=None, help="taskset mask, 'auto' (big cores) or 'none'")
    a.add_argument("--use-gpu", action="store_true", help="GPU delegate")
    a.add_argument("--use-nnapi", action="store_true", help="NNAPI delegate")
    a.add_argument("--no-xnnpack", action="store_true", help="disable the XNNPACK delegate")
    a.add_argument("--op-profiling", action="store_true", help="per-op profile table")
    a.add_argument("--repeats", type=count, default=None, help="benchmark_model invocations")
    a.add_argument(
        "--thermal-limit", type=_nonneg_float, default=None, help="deg C to cool under (45; 0: off)"
    )
    a.add_argument("--thermal-wait", type=seconds, default=None, help="max seconds to wait (300)")
    s = p.add_argument_group("ssh (Linux board, hwnas runner)")
    s.add_argument(
        "--runtime", choices=["ort", "litert"], default=None, help="runtime on the board"
    )
    s.add_argument("--python", default=None, help="Python on the board (default python3)")
    s.add_argument("--identity-file", default=None, help="ssh private key")
    s.add_argument("--known-hosts", default=None, help="known_hosts file for the board's key")
    s.add_argument(
        "--ssh-option",
        type=ssh_option,
        action="append",
        default=None,
        help="ssh -o option (repeatable)",
    )
    p.add_argument(
        "--device-opt", action="append", default=None, help="KEY=VALUE constructor option"
    )
    p.add_argument("--db", default=None, help="SQLite file to store results in")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
