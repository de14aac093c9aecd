"""Does ``--hwnas-fail-regression`` tell a real slowdown from a noisy machine? (issue 19)

A model, and the same model with a slowdown injected by a known amount: an
added convolution branch on the input (Conv -> GlobalAveragePool -> MatMul,
added to the output times 1e-12, so no optimiser can drop it) whose channel
count is calibrated on this machine to cost about 3%, 5% and 10% of the model.
The slowdown each variant really has is then measured in one long interleaved
calibration run and reported beside the nominal one.

Each *session* is a separate ``pytest`` process running one ``hwnas_latency``
test (the plugin as a user runs it) and writing ``--benchmark-json``. Per
repetition: one baseline session of the unchanged model, then one session per
variant (0% = the unchanged model again: false alarms), in a shuffled order.
Every new session is judged against its repetition's baseline by

* hwnas as a user runs it: the session itself is run with ``--hwnas-baseline
  BASE.json --hwnas-fail-regression <threshold>``; the baseline session kept its
  model file (``--hwnas-keep-models``), so a changed model is judged against the
  baseline's model timed again beside it, an unchanged one (same file) by the
  reference model's drift;
* hwnas with the reference model only: the bootstrap CI of the drift-corrected
  median ratio from the two JSON files (what it does when the baseline's model
  file is not at hand);
* hwnas without the reference: the same test, drift not taken out;
* pytest-benchmark's own ``--benchmark-compare-fail=median:<threshold>``, applied with
  its own ``PercentageRegressionCheck`` to the same two JSON files.

Targets (issue 19): false alarms on unchanged models <= 5% of sessions; a 10%
slowdown detected in >= 95% of sessions, a 5% one in >= 80%.

    .venv/bin/python benchmarks/regression_ci.py --sessions 20 --out regression_ci
    .venv/bin/python benchmarks/regression_ci.py --sessions 2 --model cifar_resnet20 \\
        --runs 5 --rounds 2 --exporter torchscript --out /tmp/rci     # smoke test only

Timing work: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hwnas.testing.pytest_plugin import DEFAULTS as PLUGIN_DEFAULTS  # noqa: E402
from hwnas.testing.runs import compare_entries, load_json_run  # noqa: E402

PLUGIN = "hwnas.testing.pytest_plugin"
TEST_FILE = """
import os


def test_m(hwnas_latency):
    hwnas_latency(os.environ["HWNAS_RCI_MODEL"], device="cpu-ort", threads=1, label="model")
"""


def export(name: str, exporter: str, cache: Path) -> Path:
    import torch

    from hwnas.export import to_onnx
    from hwnas.models import create_model, model_input_shape

    torch.manual_seed(0)
    art = to_onnx(
        create_model(name), model_input_shape(name), label=name, cache_dir=cache, exporter=exporter
    )
    return Path(art.path)


def inject(src: Path, dest: Path, channels: int, seed: int = 0) -> Path:
    """``src`` plus a side branch on its input: Conv(3x3, ``channels``) -> GlobalAveragePool ->
    Flatten -> MatMul -> *1e-12, added to the output. Its cost grows with ``channels``."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name for i in g.initializer}
    x = next(i for i in g.input if i.name not in inits)
    cin = x.type.tensor_type.shape.dim[1].dim_value
    out = g.output[0].name
    for node in g.node:  # the producer of the output now writes an inner name
        node.output[:] = ["rci_orig" if o == out else o for o in node.output]
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((channels, cin, 3, 3)) * 0.1).astype(np.float32)
    m = (rng.standard_normal((channels, 1)) * 0.1).astype(np.float32)
    g.initializer.extend(
        [
            numpy_helper.from_array(w, "rci_w"),
            numpy_helper.from_array(m, "rci_m"),
            numpy_helper.from_array(np.array([1e-12], dtype=np.float32), "rci_eps"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Conv", [x.name, "rci_w"], ["rci_c"], pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["rci_c"], ["rci_p"]),
            helper.make_node("Flatten", ["rci_p"], ["rci_f"]),
            helper.make_node("MatMul", ["rci_f", "rci_m"], ["rci_s"]),
            helper.make_node("Mul", ["rci_s", "rci_eps"], ["rci_t"]),
            helper.make_node("Add", ["rci_orig", "rci_t"], [out]),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))
    return dest


def paired_ratio(a: Path, b: Path, rounds: int, runs: int) -> float:
    """Median latency of ``b`` over ``a``, measured in interleaved rounds in this process
    (as the fixture measures a model and its reference)."""
    from hwnas.devices import create_device
    from hwnas.export.artifact import load_onnx
    from hwnas.profilers.latency import MeasureSettings
    from hwnas.testing.measure import measure_interleaved

    dev = create_device("cpu-ort", threads=1)
    s = MeasureSettings(warmup=5, runs=runs)
    ma, mb = measure_interleaved(dev, load_onnx(a), load_onnx(b), s, rounds)
    return mb.median / ma.median


def calibrate(
    base: Path, work: Path, targets: list[float], args
) -> dict[float, tuple[Path, float]]:
    """Channels per target from a probe (cost is linear in channels; the probe is doubled until
    it costs at least 2%, well above the noise), then each variant's real slowdown."""
    ch0 = args.probe_channels
    for _ in range(5):
        probe = inject(base, work / "probe.onnx", ch0)
        s0 = paired_ratio(base, probe, args.cal_rounds, args.runs) - 1.0
        print(f"probe: {ch0} channels cost {s0:+.2%}")
        if s0 >= 0.02:
            break
        ch0 *= 2
    out = {0.0: (base, 1.0)}
    for t in targets:
        ch = max(1, round(ch0 * t / max(s0, 0.02)))
        p = inject(base, work / f"slow_{round(t * 100)}pct.onnx", ch)
        real = paired_ratio(base, p, args.cal_rounds, args.runs)
        print(f"target {t:.0%}: {ch} channels, measured {real - 1:+.2%}")
        out[t] = (p, real)
    return out


def plugin_args() -> list[str]:
    eps = metadata.entry_points(group="pytest11")
    return [] if any(ep.value == PLUGIN for ep in eps) else ["-p", PLUGIN]


def session(work: Path, model: Path, ref: Path, out: Path, args, judge_against=None) -> Path:
    """One pytest process measuring ``model`` beside ``ref``; its pytest-benchmark JSON.
    With ``judge_against`` (a baseline JSON) the plugin judges it there, as in CI."""
    env = {
        **os.environ,
        "HWNAS_RCI_MODEL": str(model),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", ".",
        *plugin_args(),
        "test_rci.py", "--benchmark-json", str(out), "--hwnas-reference", str(ref),
        "--hwnas-runs", str(args.runs), "--hwnas-rounds", str(args.rounds),
        "--hwnas-warmup", str(args.warmup), "--hwnas-keep-models", str(work / "models"),
    ]  # fmt: skip
    if judge_against is not None:
        cmd += ["--hwnas-baseline", str(judge_against),
                "--hwnas-fail-regression", f"{args.threshold:g}%"]  # fmt: skip
    res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=3600)
    # exit 1 is a test failed by the verdict; its JSON is written all the same
    if res.returncode not in (0, 1) or not out.exists():
        sys.exit(f"session failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return out


def judge(base_json: Path, new_json: Path, threshold: float, confidence: float) -> dict:
    from pytest_benchmark.utils import parse_compare_fail

    (b,) = load_json_run(base_json).entries.values()
    (n,) = load_json_run(new_json).entries.values()
    c = compare_entries(b, n, threshold=threshold, confidence=confidence)
    b.reference_ms = n.reference_ms = None
    raw = compare_entries(b, n, threshold=threshold, confidence=confidence)
    stats = [json.loads(p.read_text())["benchmarks"][0]["stats"] for p in (base_json, new_json)]
    check = parse_compare_fail(f"median:{threshold * 100:g}%")
    verdict = json.loads(new_json.read_text())["benchmarks"][0]["extra_info"]["hwnas"]["verdict"]
    return {
        "hwnas": verdict["verdict"] == "slower",
        "hwnas_against": verdict["against"],
        "hwnas_in_session_ratio": verdict["ratio"],
        "hwnas_reference": c.verdict == "slower",
        "hwnas_no_reference": raw.verdict == "slower",
        "pytest_benchmark": bool(check.fails(stats[1], stats[0])),
        "ratio": c.estimate.ratio,
        "ci": [c.estimate.lo, c.estimate.hi],
        "drift": c.estimate.drift,
        "model_ratio": c.estimate.model_ratio,
    }


def plot(rows: list[dict], path: Path, threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [("hwnas", "hwnas (baseline model kept)"),
               ("hwnas_reference", "hwnas, reference model only"),
               ("hwnas_no_reference", "hwnas, no reference"),
               ("pytest_benchmark", f"pytest-benchmark median:{threshold:.0%}")]  # fmt: skip
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    for i, (key, label) in enumerate(methods):
        ax.bar(x + (i - 1.5) * 0.2, [r[key] * 100 for r in rows], 0.2, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(
        [f"+{r['nominal']:.0%} (measured {r['measured'] - 1:+.1%})" for r in rows], fontsize=8
    )
    ax.axhline(5, color="gray", ls=":", lw=1)
    ax.axhline(80, color="gray", ls="--", lw=1)
    ax.axhline(95, color="gray", ls="--", lw=1)
    ax.set_ylabel("sessions flagged as a regression (%)")
    ax.set_ylim(0, 105)
    ax.set_title(
        f"injected slowdown vs detection, {rows[0]['sessions']} sessions each", fontsize=10
    )
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenetv2", help="zoo model (default mobilenetv2)")
    ap.add_argument("--reference", default="cifar_resnet20", help="reference zoo model")
    ap.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"))
    ap.add_argument("--slowdowns", default="3,5,10", help="injected slowdowns, percent")
    ap.add_argument("--sessions", type=int, default=20, help="repetitions (default 20)")
    ap.add_argument("--threshold", type=float, default=5.0, help="percent (default 5)")
    ap.add_argument("--confidence", type=float, default=0.95)
    d = PLUGIN_DEFAULTS  # the plugin's own settings, as a user's CI runs them
    ap.add_argument("--runs", type=int, default=d["runs"], help="timed runs per round")
    ap.add_argument("--rounds", type=int, default=d["rounds"], help="interleaved rounds")
    ap.add_argument("--warmup", type=int, default=d["warmup"], help="warm-up runs per round")
    ap.add_argument("--probe-channels", type=int, default=8)
    ap.add_argument("--cal-rounds", type=int, default=20, help="rounds of the calibration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("regression_ci"))
    args = ap.parse_args()
    out = args.out
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "test_rci.py").write_text(TEST_FILE)
    threshold = args.threshold / 100
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()}")
    base = export(args.model, args.exporter, out / "cache")
    ref = export(args.reference, args.exporter, out / "cache")
    targets = [float(s) / 100 for s in args.slowdowns.split(",")]
    variants = calibrate(base, work, targets, args)
    rng = random.Random(args.seed)
    results: dict[float, list[dict]] = {t: [] for t in variants}
    t0 = time.time()
    for rep in range(args.sessions):
        base_json = session(work, base, ref, work / f"r{rep}_base.json", args)
        order = list(variants)
        rng.shuffle(order)
        for t in order:
            new_json = session(
                work, variants[t][0], ref, work / f"r{rep}_{t:.2f}.json", args, base_json
            )
            results[t].append(judge(base_json, new_json, threshold, args.confidence))
        print(f"repetition {rep + 1}/{args.sessions} done, {time.time() - t0:.0f} s")
    rows = []
    for t in sorted(results):
        rs = results[t]
        rows.append(
            {
                "nominal": t,
                "measured": variants[t][1],
                "sessions": len(rs),
                **{
                    k: float(np.mean([r[k] for r in rs]))
                    for k in ("hwnas", "hwnas_reference", "hwnas_no_reference", "pytest_benchmark")
                },
                "median_ratio": float(np.median([r["ratio"] for r in rs])),
                "median_in_session_ratio": float(
                    np.median([r["hwnas_in_session_ratio"] for r in rs])
                ),
                "median_drift": float(np.median([r["drift"] or 1.0 for r in rs])),
            }
        )
    lines = [
        f"model {args.model}, reference {args.reference}, threshold {args.threshold:g}%, "
        f"{args.rounds} rounds x {args.runs} runs per session, {args.sessions} sessions per variant",
        "",
        "| injected | measured | hwnas flagged | hwnas, reference model only | hwnas, no reference "
        f"| pytest-benchmark median:{args.threshold:g}% | median ratio (hwnas verdict) "
        "| median ratio (reference) | median reference drift |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| +{r['nominal']:.0%} | {r['measured'] - 1:+.1%} | {r['hwnas']:.0%} | "
            f"{r['hwnas_reference']:.0%} | {r['hwnas_no_reference']:.0%} | "
            f"{r['pytest_benchmark']:.0%} | {r['median_in_session_ratio']:.3f} | "
            f"{r['median_ratio']:.3f} | {r['median_drift']:.3f} |"
        )
    text = "\n".join(lines)
    print("\n" + text)
    print("\ntargets: unchanged <= 5% flagged; +5% >= 80%; +10% >= 95%")
    (out / "regression_ci.md").write_text(text + "\n")
    (out / "regression_ci.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "rows": rows,
                "sessions": {str(t): rs for t, rs in results.items()},
            },
            indent=1,
        )  # fmt: skip
    )
    plot(rows, out / "regression_ci.png", threshold)
    print(f"wrote {out / 'regression_ci.md'}, .json and .png; load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
