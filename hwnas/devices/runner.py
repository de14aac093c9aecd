#!/usr/bin/env python3
"""The hwnas runner: time one model file on *this* machine and print one JSON line.

It is copied to the far side of a transport (a Raspberry Pi or Jetson over
ssh) and run there with the board's own ``python3``, so it imports nothing
from hwnas and only the standard library at module level: numpy and the
runtime (``onnxruntime``, ``ai_edge_litert`` or ``tflite_runtime``) are
imported when a model is run. hwnas itself also imports its helpers
(:func:`load_litert`, :func:`load_ort`) so that ``cpu-litert`` runs a
.tflite file exactly as a board would.

Usage::

    python3 runner.py probe
    python3 runner.py run --model M.onnx --runtime ort --threads 1 --warmup 5 --runs 50

The result is the last line of stdout that starts with ``HWNAS_RESULT``,
followed by JSON: runtimes print their own lines, so the host looks for the
prefix rather than trusting the whole stream. ``run`` reports every timed
run (``samples_ms``), never only a summary. The timing loop follows
``hwnas.profilers.latency.adaptive_loop``: a fixed number of runs when given,
otherwise adaptive until the 95% CI of the median is within ``rel_ci`` on
stationary runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

RESULT_PREFIX = "HWNAS_RESULT "
RUNNER_VERSION = 2  # 2: warm-up by detection, MSER-5 transient, stationarity check
EXIT_FAILED = 3

_ORT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class RunnerError(Exception):
    """A failure the host can explain: ``kind`` is missing-runtime, load or run."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _version(dist: str) -> str | None:
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - any metadata failure means "unknown"
        return None


def _cpu_model() -> str:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def probe() -> dict:
    """What this machine offers the runner: Python, numpy, runtimes, CPU."""
    cpu0 = "/sys/devices/system/cpu/cpu0/cpufreq"
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "runner_version": RUNNER_VERSION,
        "python": platform.python_version(),
        "python_ok": sys.version_info >= (3, 8),
        "executable": sys.executable,
        "hostname": platform.node(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "governor": _read(f"{cpu0}/scaling_governor"),
        "cpu_max_khz": _read(f"{cpu0}/cpuinfo_max_freq"),
        "cpu_cur_khz": _read(f"{cpu0}/scaling_cur_freq"),
        "device_model": _read("/proc/device-tree/model"),
        "versions": {
            "numpy": _version("numpy"),
            "onnxruntime": _version("onnxruntime")
            or _version("onnxruntime-gpu")
            or _version("onnxruntime-silicon"),
            "ai-edge-litert": _version("ai-edge-litert"),
            "tflite-runtime": _version("tflite-runtime"),
        },
    }


def _numpy():
    try:
        import numpy as np
    except ImportError as exc:
        raise RunnerError(
            "missing-runtime", "numpy is not installed for this python3: pip install numpy"
        ) from exc
    return np


def _random_array(np, rng, shape, dtype, low: int = 0, high: int = 2):
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    return rng.integers(low, high, size=shape).astype(dtype)


def litert_interpreter_class():
    """The LiteRT interpreter class and its package: ``ai_edge_litert`` first,
    then the older ``tflite_runtime`` that many boards ship."""
    try:
        from ai_edge_litert import interpreter as mod

        return mod, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as mod  # type: ignore[no-redef]

        return mod, "tflite-runtime"
    except ImportError as exc:
        raise RunnerError(
            "missing-runtime",
            "no LiteRT interpreter for this python3: pip install ai-edge-litert "
            "(or tflite-runtime on boards without an ai-edge-litert wheel)",
        ) from exc


def load_litert(path: str, threads: int = 1, xnnpack: bool = True, seed: int = 0):
    """Load a .tflite file into the LiteRT interpreter with random inputs set.

    The inputs are written once: ``invoke`` reads them again on every call,
    so the timed call is the inference alone.

    Returns:
        (invoke, info): the callable to time and what ran (package, version,
        whether the XNNPACK delegate took over part of the graph, op count).
    """
    np = _numpy()
    mod, package = litert_interpreter_class()
    resolver = (
        mod.OpResolverType.AUTO
        if xnnpack
        else (mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    )
    try:
        interp = mod.Interpreter(
            model_path=path, num_threads=int(threads), experimental_op_resolver_type=resolver
        )
        interp.allocate_tensors()
    except Exception as exc:  # noqa: BLE001 - the interpreter raises plain ValueError/RuntimeError
        raise RunnerError("load", f"LiteRT cannot load {path}: {exc}") from exc
    rng = np.random.default_rng(seed)
    inputs = []
    for d in interp.get_input_details():
        dtype = np.dtype(d["dtype"])
        shape = tuple(int(s) for s in d["shape"])
        low, high = (0, 2)
        if np.issubdtype(dtype, np.integer) and dtype.itemsize == 1:
            info = np.iinfo(dtype)
            low, high = int(info.min), int(info.max) + 1
        interp.set_tensor(d["index"], _random_array(np, rng, shape, dtype, low, high))
        inputs.append({"name": d["name"], "shape": list(shape), "dtype": dtype.name})
    try:
        ops = [op["op_name"] for op in interp._get_ops_details()]
    except Exception:  # noqa: BLE001 - private API: absent in some versions
        ops = []
    info = {
        "runtime": "litert",
        "package": package,
        "version": _version(package),
        "threads": int(threads),
        "xnnpack": bool(xnnpack),
        "xnnpack_delegated": "DELEGATE" in ops if ops else None,
        "ops": len(ops) or None,
        "op_types": ops,
        "inputs": inputs,
    }
    return interp.invoke, info


def load_ort(
    path: str,
    threads: int = 1,
    optimization: str = "all",
    shapes: dict | None = None,
    seed: int = 0,
):
    """Load an .onnx file into ONNX Runtime (CPU) with random inputs prepared.

    Returns:
        (run, info), as :func:`load_litert`.
    """
    np = _numpy()
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RunnerError(
            "missing-runtime",
            "onnxruntime is not installed for this python3: pip install onnxruntime",
        ) from exc
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[optimization])
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise RunnerError("load", f"ONNX Runtime cannot load {path}: {exc}") from exc
    types = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(double)": np.float64,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(uint8)": np.uint8,
        "tensor(int8)": np.int8,
        "tensor(bool)": np.bool_,
    }
    rng = np.random.default_rng(seed)
    feed = {}
    inputs = []
    for i in sess.get_inputs():
        shape = (shapes or {}).get(i.name)
        if shape is None:
            shape = i.shape
            if not all(isinstance(s, int) and s > 0 for s in shape):
                raise RunnerError(
                    "load",
                    f"input {i.name} has dynamic shape {shape}; pass --shapes with a fixed shape",
                )
        shape = tuple(int(s) for s in shape)
        feed[i.name] = _random_array(np, rng, shape, types.get(i.type, np.float32))
        inputs.append({"name": i.name, "shape": list(shape), "dtype": i.type})
    info = {
        "runtime": "onnxruntime",
        "package": "onnxruntime",
        "version": ort.__version__,
        "threads": int(threads),
        "provider": "CPUExecutionProvider",
        "graph_optimization_level": _ORT_LEVELS[optimization],
        "inputs": inputs,
    }
    return (lambda: sess.run(None, feed)), info


def _median_ci_halfwidth(sorted_samples: list[float], z: float = 1.96) -> float:
    n = len(sorted_samples)
    if n < 3:
        return math.inf
    lo = max(0, int(math.floor(n / 2 - z * math.sqrt(n) / 2)))
    hi = min(n - 1, int(math.ceil(n / 2 + z * math.sqrt(n) / 2)))
    return (sorted_samples[hi] - sorted_samples[lo]) / 2


def _warmup_settled(warm: list[float], tol: float = 0.10) -> bool:
    return len(warm) >= 2 and warm[-1] >= (1.0 - tol) * min(warm[:-1])


def _mser_truncation(x: list[float], batch: int = 5, keep: int = 0) -> int:
    m = len(x) // batch
    if m < 4:
        return 0
    means = [sum(x[i * batch : (i + 1) * batch]) / batch for i in range(m)]
    s1 = s2 = 0.0
    suffix = [(0.0, 0.0)] * (m + 1)
    for i in range(m - 1, -1, -1):
        s1 += means[i]
        s2 += means[i] * means[i]
        suffix[i] = (s1, s2)
    best, best_d = math.inf, 0
    for d in range(0, m // 2 + 1):
        k = m - d
        if k * batch < keep or k < 2:
            break
        t1, t2 = suffix[d]
        stat = max(0.0, t2 - t1 * t1 / k) / (k * k)
        if stat < best:
            best, best_d = stat, d
    return best_d * batch


def _stop_point(
    samples: list[float], adaptive_warmup: bool, min_runs: int, rel_ci: float
) -> tuple[bool, int]:
    drop = _mser_truncation(samples, keep=min_runs) if adaptive_warmup else 0
    kept = samples[drop:]
    if len(kept) < min_runs:
        return False, drop
    arr = sorted(kept)
    med = arr[len(arr) // 2]
    if med <= 0 or _median_ci_halfwidth(arr) / med > rel_ci:
        return False, drop
    h = len(kept) // 2
    first, second = sorted(kept[:h]), sorted(kept[h:])
    if abs(first[len(first) // 2] - second[len(second) // 2]) > 2 * rel_ci * med:
        return False, drop
    return True, drop


def time_fn(
    fn,
    warmup: int | None = None,
    runs: int | None = None,
    min_runs: int = 10,
    max_runs: int = 2000,
    budget_s: float = 10.0,
    rel_ci: float = 0.01,
    clock=time.perf_counter_ns,
) -> tuple[list[float], list[float]]:
    """Time ``fn``: (timed samples in ms, warm-up samples in ms).

    Same rules as ``hwnas.profilers.latency.adaptive_loop`` (warm-up by
    detection, MSER-5 transient, CI of the median, stationarity; kept in step
    run for run by a test on scripted times), restated here because this file
    must run without hwnas.
    """

    def run_once() -> float:
        t0 = clock()
        fn()
        return (clock() - t0) / 1e6

    warm: list[float] = []
    if warmup is not None:
        warm = [run_once() for _ in range(warmup)]
    else:
        while len(warm) < 50:
            warm.append(run_once())
            if _warmup_settled(warm):
                break
    if runs is not None:
        return [run_once() for _ in range(runs)], warm
    samples: list[float] = []
    spent = 0.0
    drop = 0
    next_check = min_runs
    while len(samples) < max_runs:
        samples.append(run_once())
        spent += samples[-1]
        if len(samples) >= next_check:
            next_check = max(next_check + 1, int(len(samples) * 1.1))
            stop, drop = _stop_point(samples, warmup is None, min_runs, rel_ci)
            if stop or spent / 1e3 >= budget_s:
                break
    else:
        _, drop = _stop_point(samples, warmup is None, min_runs, rel_ci)
    return samples[drop:], warm + samples[:drop]


def run(args: argparse.Namespace) -> dict:
    if not os.path.isfile(args.model):
        raise RunnerError("load", f"no model file at {args.model}")
    shapes = json.loads(args.shapes) if args.shapes else None
    t0 = time.perf_counter()
    if args.runtime == "litert":
        fn, info = load_litert(
            args.model, args.threads, xnnpack=not args.no_xnnpack, seed=args.seed
        )
    else:
        fn, info = load_ort(args.model, args.threads, args.optimization, shapes, seed=args.seed)
    init_ms = (time.perf_counter() - t0) * 1e3
    try:
        samples, warm = time_fn(
            fn,
            warmup=args.warmup,
            runs=args.runs,
            min_runs=args.min_runs,
            max_runs=args.max_runs,
            budget_s=args.budget_s,
            rel_ci=args.rel_ci,
        )
    except Exception as exc:  # noqa: BLE001 - report any runtime failure as JSON
        raise RunnerError("run", f"{info['runtime']} failed running {args.model}: {exc}") from exc
    info.pop("op_types", None)
    return {
        "ok": True,
        "samples_ms": samples,
        "warmup_ms": warm,
        "init_ms": init_ms,
        "runtime": info,
        "host": probe(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="hwnas runner: time one model, print JSON")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probe", help="report Python, numpy, runtimes and CPU")
    r = sub.add_parser("run", help="time one model file")
    r.add_argument("--model", required=True)
    r.add_argument("--runtime", choices=("ort", "litert"), required=True)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--warmup", type=int, default=None)
    r.add_argument("--runs", type=int, default=None)
    r.add_argument("--min-runs", type=int, default=10)
    r.add_argument("--max-runs", type=int, default=2000)
    r.add_argument("--budget-s", type=float, default=10.0)
    r.add_argument("--rel-ci", type=float, default=0.01)
    r.add_argument("--optimization", choices=tuple(_ORT_LEVELS), default="all")
    r.add_argument("--no-xnnpack", action="store_true")
    r.add_argument("--shapes", default=None, help='JSON: {"input": [1, 3, 224, 224]}')
    r.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        result = {"ok": True, **probe()} if args.cmd == "probe" else run(args)
        code = 0
    except RunnerError as exc:
        result = {"ok": False, "kind": exc.kind, "error": str(exc)}
        code = EXIT_FAILED
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
