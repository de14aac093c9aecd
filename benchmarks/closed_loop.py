"""Closed loop on NAS-Bench-201: does a searched network meet its latency target on the device?

For every device column of the shared table (``../shared/data/nb201/``, seven
devices), with the table's CIFAR-10 accuracy as the accuracy term:

* T = the device's 25th latency percentile; the best *truly* feasible cell
  (measured latency <= T) is known exactly from the table;
* searchers ``random``, ``evolution``, ``mnasnet-rl``, ``npenas`` with ``--reward hard``,
  300 accuracy evaluations (``--budget``), cheap terms first at the 0.9 quantile;
* latency from: the table itself (``table``: no predictor in the loop), or an
  ``mlp`` predictor trained on 100 or 900 measured cells of that device
  (10 % of them held out for split-conformal calibration), without and with
  ``--verify table:CSV:COLUMN`` (the table acting as the device, 50 measurements
  at most); ``pred900+verify-q50`` screens on the point prediction
  (``--latency-quantile 0.5``) instead of the 0.9 quantile and lets verification
  catch the errors; ``-q10`` screens at the interval's optimistic end (a cell is
  rejected unpaid only when even its 0.1 quantile breaks T).

Reported per (mode, searcher, device): median and worst regret (CIFAR-10
points below the best truly feasible cell), the share of answers truly
feasible, and device measurements used (median / max). A search with no answer
(nothing it could vouch for) counts as not feasible and its regret is left out
of the median (the ``none`` column counts them).

Every result is appended to ``--results`` (JSON lines) as it finishes; a
re-run skips what is there, so the seed count can be raised later. Each row
carries the searcher's full settings (``config``); the table only counts rows
run with the current defaults, so changing a default never mixes old and new
runs. Table-based:
no timing is involved, the figures do not depend on the machine's load.

    python benchmarks/closed_loop.py --seeds 15 --jobs 2
    python benchmarks/closed_loop.py --table-only --markdown   # print the table of what is there
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

# One BLAS thread per search process (NPENAS' predictor solves small systems, where
# threads only contend; set before numpy is imported, in spawned workers too).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201_benchmark.csv"
ACC = "cifar10_acc"
SEARCHERS = ("random", "evolution", "mnasnet-rl", "npenas")
MODES = (
    "table",
    "pred100",
    "pred100+verify",
    "pred900",
    "pred900+verify",
    "pred900+verify-q50",
    "pred900+verify-q10",
)


def devices(csv: Path) -> list[str]:
    with open(csv) as f:
        header = f.readline().strip().split(",")
    return [c for c in header if c.startswith("latency_ms_")]


def _problem(csv: Path, device: str) -> dict:
    from hwnas.evaluators.table import load_table

    tab = load_table(csv)
    lat = tab.column(device)
    acc = tab.column(ACC)
    target = float(np.percentile(lat, 25))
    ok = lat <= target
    return {"target": target, "best": float(acc[ok].max())}


def train_predictor(csv: Path, device: str, n: int, work: Path, seed: int = 0) -> Path:
    """An ``mlp`` trained on ``n`` random measured cells of ``device`` (10 % calibrate it)."""
    path = work / f"{device}_{n}_s{seed}.npz"
    if path.exists():
        return path
    import torch

    from hwnas.evaluators.table import load_table
    from hwnas.predictors import create_predictor
    from hwnas.predictors.encoders import get_encoding
    from hwnas.spaces import get_space

    torch.set_num_threads(1)
    space = get_space("nb201")
    tab = load_table(csv)
    archs = tab.archs(space)
    y = tab.column(device)
    idx = np.random.default_rng(1000 + seed).permutation(len(archs))[:n]
    enc = get_encoding("onehot")
    X = np.asarray(enc.encode_archs(space, [archs[i] for i in idx]), dtype=np.float64)
    n_cal = max(10, n // 10)
    pred = create_predictor("mlp", seed=seed)
    pred.fit(X[n_cal:], y[idx[n_cal:]])
    pred.calibrate(X[:n_cal], y[idx[:n_cal]])
    pred.meta.update(
        space=space.name,
        encoding="onehot",
        encoding_length=enc.length(space),
        device=device,
        train_size=n - n_cal,
    )
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    pred.save(tmp)
    os.replace(tmp, path)
    return path


def run_one(task: dict) -> dict:
    """One search; returns its row (answer's true accuracy and latency, measurements)."""
    import torch

    torch.set_num_threads(1)
    from hwnas.evaluators.table import TableEvaluator, load_table
    from hwnas.objectives import Objective, PredictorLatency, TableLatency
    from hwnas.objectives.verify import Verifier
    from hwnas.searchers import create_searcher
    from hwnas.spaces import get_space

    csv, device, mode, algo, seed = (
        Path(task["csv"]),
        task["device"],
        task["mode"],
        task["searcher"],
        task["seed"],
    )
    space = get_space("nb201")
    target = task["target"]
    if mode == "table":
        latency = TableLatency(csv, device)
    else:
        latency = PredictorLatency(task["predictor"])
    # "-qNN": screen at the NN % quantile (q10: reject only what even the optimistic end breaks)
    quantile = int(mode.rsplit("-q", 1)[1]) / 100 if "-q" in mode else 0.9
    obj = Objective(
        TableEvaluator(csv, ACC),
        latency,
        latency_target_ms=target,
        reward="hard",
        latency_quantile=quantile,
    )
    if "+verify" in mode:
        obj.verifier = Verifier(TableLatency(csv, device), f"table:{device}", 50)
    settings = task.get("settings") or {}
    searcher = create_searcher(algo, **settings)
    hist = searcher.run(space, obj, task["budget"], seed=seed)
    ans = hist.answer()
    tab = load_table(csv)
    row = {k: task[k] for k in ("device", "mode", "searcher", "seed", "budget")}
    row["settings"] = settings
    row["config"] = config_of(algo, settings)
    row["measurements"] = int(hist.meta.get("device_measurements") or 0)
    row["accuracy_evaluations"] = int(hist.meta.get("accuracy_evaluations") or 0)
    row["stopped"] = hist.meta.get("stopped")
    if ans is None:
        row.update(answer=None, regret=None, feasible=False)
        return row
    true_lat = tab.value(space, ans.arch, device)
    true_acc = tab.value(space, ans.arch, ACC)
    row.update(
        answer=ans.arch_str,
        true_latency_ms=true_lat,
        predicted_ms=ans.terms.latency_predicted_ms,
        regret=task["best"] - true_acc,
        feasible=bool(true_lat <= target),
    )
    return row


def config_of(algo: str, settings: dict) -> dict:
    """The searcher's full settings (defaults and overrides) a run used."""
    from hwnas.evaluators.base import settings_to_dict
    from hwnas.searchers import create_searcher

    return settings_to_dict(create_searcher(algo, **settings).settings)


def _key(r: dict) -> tuple:
    return (
        r["device"],
        r["mode"],
        r["searcher"],
        int(r["seed"]),
        int(r["budget"]),
        json.dumps(r.get("settings") or {}, sort_keys=True),
        json.dumps(r.get("config") or {}, sort_keys=True),
    )


def load_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tasks_for(args, done: set) -> list[dict]:
    from hwnas.commands._common import console  # noqa: F401  (import check only)

    out = []
    settings = json.loads(args.settings) if args.settings else {}
    for dev in args.devices:
        prob = _problem(args.csv, dev)
        preds = {}
        for mode in args.modes:
            if mode.startswith("pred"):
                n = int(mode.removeprefix("pred").split("+")[0])
                if n not in preds:
                    preds[n] = str(train_predictor(args.csv, dev, n, args.work))
        for mode in args.modes:
            for algo in args.searchers:
                for seed in range(args.seed_offset, args.seed_offset + args.seeds):
                    t = {
                        "csv": str(args.csv),
                        "device": dev,
                        "mode": mode,
                        "searcher": algo,
                        "seed": seed,
                        "budget": args.budget,
                        "target": prob["target"],
                        "best": prob["best"],
                        "settings": settings.get(algo, {}),
                        "config": config_of(algo, settings.get(algo, {})),
                    }
                    if mode.startswith("pred"):
                        t["predictor"] = preds[int(mode.removeprefix("pred").split("+")[0])]
                    if _key(t) not in done:
                        out.append(t)
    # Seed by seed over every cell of the table: stopped early, each cell has some seeds.
    out.sort(key=lambda t: (t["seed"], MODES.index(t["mode"]), t["device"], t["searcher"]))
    return out


def summarise(rows: list[dict], budget: int) -> dict:
    groups: dict[tuple, list[dict]] = {}
    defaults: dict[str, dict] = {}
    for r in rows:
        if int(r["budget"]) != budget or r.get("settings"):
            continue
        algo = r["searcher"]
        if algo not in defaults:
            defaults[algo] = config_of(algo, {})
        if r.get("config") != defaults[algo]:
            continue  # run with other defaults than today's
        groups.setdefault((r["mode"], r["searcher"], r["device"]), []).append(r)
    out = {}
    for k, rs in groups.items():
        reg = [r["regret"] for r in rs if r["regret"] is not None]
        out[k] = {
            "n": len(rs),
            "median": statistics.median(reg) if reg else math.nan,
            "worst": max(reg) if reg else math.nan,
            "feasible": sum(r["feasible"] for r in rs) / len(rs),
            "none": sum(r["answer"] is None for r in rs),
            "meas_median": statistics.median(r["measurements"] for r in rs),
            "meas_max": max(r["measurements"] for r in rs),
        }
    return out


def markdown(rows: list[dict], budget: int) -> str:
    s = summarise(rows, budget)
    devs = sorted({k[2] for k in s})
    short = {d: d.removeprefix("latency_ms_") for d in devs}
    lines = [
        "| latency in the loop | searcher | " + " | ".join(short[d] for d in devs) + " |",
        "|---|---|" + "---|" * len(devs),
    ]
    for mode in MODES:
        for algo in SEARCHERS:
            cells = []
            for d in devs:
                c = s.get((mode, algo, d))
                if c is None:
                    cells.append("")
                    continue
                txt = f"{c['median']:.2f} / {c['worst']:.2f} / {c['feasible']:.0%}"
                if "verify" in mode:
                    txt += f" / {c['meas_median']:.0f}≤{c['meas_max']}"
                if c["none"]:
                    txt += f" ({c['none']} none)"
                cells.append(txt)
            if any(cells):
                n = max((s[(mode, algo, d)]["n"] for d in devs if (mode, algo, d) in s), default=0)
                lines.append(f"| {mode} | {algo} (n={n}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--csv", type=Path, default=CSV)
    p.add_argument("--devices", nargs="*", default=None, help="default: every latency column")
    p.add_argument("--searchers", nargs="*", default=list(SEARCHERS))
    p.add_argument("--modes", nargs="*", default=list(MODES))
    p.add_argument("--seeds", type=int, default=15)
    p.add_argument("--seed-offset", type=int, default=0, help="tuning runs use other seeds")
    p.add_argument("--budget", type=int, default=300)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument(
        "--settings",
        default=None,
        help="JSON {searcher: {setting: value}} (tuning runs; kept out of the table)",
    )
    p.add_argument("--work", type=Path, default=Path("/tmp/hwnas-closed-loop"))
    p.add_argument("--results", type=Path, default=Path("/tmp/hwnas-closed-loop/results.jsonl"))
    p.add_argument("--table-only", action="store_true", help="only print what --results holds")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    if not args.csv.exists():
        print(f"no table at {args.csv}", file=sys.stderr)
        return 2
    args.devices = args.devices or devices(args.csv)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        done = {_key(r) for r in load_results(args.results)}
        todo = tasks_for(args, done)
        print(f"{len(todo)} searches to run", file=sys.stderr)
        if args.jobs > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(args.jobs) as pool:
                for row in pool.imap_unordered(run_one, todo):
                    with open(args.results, "a") as f:
                        f.write(json.dumps(row) + "\n")
        else:
            for t in todo:
                row = run_one(t)
                with open(args.results, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(markdown(load_results(args.results), args.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
