"""Prediction intervals on the NAS-Bench-201 table: empirical coverage and width, per device.

For each device of ../shared/data/nb201/nb201_benchmark.csv (all seven; a
table acting as the device, so nothing here depends on this machine's timing):
take N random cells (100 and 900), keep a share of them aside for
calibration (10 % and 20 %), fit ``mlp`` and ``gbdt`` on the rest, calibrate
split-conformal intervals on the share kept aside (:meth:`Predictor.calibrate`),
and score the 80 % and 90 % central intervals on every other cell: empirical
coverage (share of measurements inside, to compare with 80 / 90) and mean
relative width ((hi - lo) / point). Means over seeds, per device, then a
summary over devices.

Both calibration scores are computed from the same fits: ``log`` (log(y/yhat),
the default) and ``linear`` (y - yhat, ms), so the choice between them is
made over all seven devices, never one. ``--ensemble K`` adds uncalibrated
``mlp`` ensembles (log-normal from the members' spread) for comparison.

Run:  .venv/bin/python benchmarks/predictor_intervals.py [--seeds 3] [--ensemble 5]
Smoke: --devices raspi4 --train-sizes 100 --predictors gbdt --seeds 1
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hwnas.predictors import create_predictor  # noqa: E402
from hwnas.predictors.data import load_table, split, split_calibration  # noqa: E402
from hwnas.predictors.metrics import interval_metrics  # noqa: E402
from hwnas.spaces import get_space  # noqa: E402

DEFAULT_CSV = REPO.parent / "shared" / "data" / "nb201" / "nb201_benchmark.csv"
DEVICES = (
    "gold_6226",
    "titan_rtx_1",
    "raspi4",
    "essential_ph_1",
    "samsung_s7",
    "silver_4114",
    "fpga",
)
LEVELS = (0.8, 0.9)


def run_one(pred, Xte, yte, X_cal, y_cal, scores) -> dict[str, tuple[float, float]]:
    """(coverage %, relative width %) of each (score, level) on the test cells."""
    out = {}
    point = pred.predict(Xte)
    for score in scores:
        pred.calibrate(X_cal, y_cal, score=score)
        for c in LEVELS:
            lo, hi = pred.predict_interval(Xte, c)
            m = interval_metrics(yte, lo, hi, point, c)
            out[f"{score}@{c}"] = (m.coverage, m.width)
    return out


def fmt(cov: float, width: float) -> str:
    w = "unbounded" if not math.isfinite(width) else f"{width:5.1f}"
    return f"{cov:5.1f} / {w}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", default=str(DEFAULT_CSV))
    ap.add_argument("--devices", default=",".join(DEVICES))
    ap.add_argument("--predictors", default="mlp,gbdt")
    ap.add_argument("--train-sizes", default="100,900")
    ap.add_argument("--shares", default="0.1,0.2")
    ap.add_argument("--scores", default="log,linear")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ensemble", type=int, default=0, help="also uncalibrated mlp ensembles of K")
    args = ap.parse_args()
    space = get_space("nb201")
    devices = args.devices.split(",")
    preds = [p for p in args.predictors.split(",") if p]  # empty: ensembles only
    sizes = [int(s) for s in args.train_sizes.split(",")]
    shares = [float(s) for s in args.shares.split(",")]
    scores = args.scores.split(",")
    # results[(pred, size, share, device)][key] -> list over seeds of (coverage, width)
    results: dict[tuple, dict[str, list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    ens: dict[tuple, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    t0 = time.time()
    for dev in devices:
        ds = load_table(args.csv, space, f"latency_ms_{dev}")
        X_all = ds.features("onehot", space)
        index = {a.id: i for i, a in enumerate(ds.archs)}
        for size in sizes:
            for seed in range(args.seeds):
                train, test = split(ds, size, seed)
                Xte = X_all[[index[a.id] for a in test.archs]]
                for share in shares:
                    fit, cal = split_calibration(train, share, seed)
                    Xf = X_all[[index[a.id] for a in fit.archs]]
                    Xc = X_all[[index[a.id] for a in cal.archs]]
                    for name in preds:
                        p = create_predictor(name, seed=seed).fit(Xf, fit.y_ms)
                        r = run_one(p, Xte, test.y_ms, Xc, cal.y_ms, scores)
                        for k, v in r.items():
                            results[(name, size, share, dev)][k].append(v)
                if args.ensemble > 1:
                    Xtr = X_all[[index[a.id] for a in train.archs]]
                    p = create_predictor("mlp", seed=seed, ensemble=args.ensemble)
                    p.fit(Xtr, train.y_ms)
                    point = p.predict(Xte)
                    for c in LEVELS:
                        lo, hi = p.predict_interval(Xte, c)
                        m = interval_metrics(test.y_ms, lo, hi, point, c)
                        ens[(size, dev)][f"ensemble@{c}"].append((m.coverage, m.width))
            print(f"# {dev} n={size} done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)

    print(f"NB201 table, {args.seeds} seeds, test = every cell outside the N drawn")
    print("cells: coverage % / mean relative width % of the central interval (mean over seeds)\n")
    for score in scores if preds else []:
        print(f"### score: {score}\n")
        head = "| predictor | N | cal. share (n) | device | 80%: cov / width | 90%: cov / width |"
        print(head)
        print("|" + "---|" * 6)
        for name in preds:
            for size in sizes:
                for share in shares:
                    n_cal = int(round(share * size))
                    for dev in devices:
                        r = results[(name, size, share, dev)]
                        cells = []
                        for c in LEVELS:
                            v = np.array(r[f"{score}@{c}"])
                            cells.append(fmt(v[:, 0].mean(), v[:, 1].mean()))
                        print(
                            f"| {name} | {size} | {share:.0%} ({n_cal}) | {dev} | {' | '.join(cells)} |"
                        )
        print()
    if not preds:
        scores = []
    print("### summary over devices (coverage: mean [min, max] of per-device means; width: mean)\n")
    print(
        "| predictor | N | cal. share (n) | score | 80%: cov [min, max] / width | 90%: cov [min, max] / width |"
    )
    print("|" + "---|" * 6)
    for name in preds:
        for size in sizes:
            for share in shares:
                for score in scores:
                    cells = []
                    for c in LEVELS:
                        per_dev = [
                            np.array(results[(name, size, share, d)][f"{score}@{c}"]).mean(0)
                            for d in devices
                        ]
                        cov = np.array([v[0] for v in per_dev])
                        wid = np.array([v[1] for v in per_dev])
                        w = "unbounded" if not np.all(np.isfinite(wid)) else f"{wid.mean():.1f}"
                        cells.append(f"{cov.mean():.1f} [{cov.min():.1f}, {cov.max():.1f}] / {w}")
                    n_cal = int(round(share * size))
                    print(
                        f"| {name} | {size} | {share:.0%} ({n_cal}) | {score} | {' | '.join(cells)} |"
                    )
    if ens:
        print(
            f"\n### uncalibrated mlp ensemble of {args.ensemble} (log-normal from member spread)\n"
        )
        print("| N | device | 80%: cov / width | 90%: cov / width |")
        print("|" + "---|" * 4)
        for size in sizes:
            for dev in devices:
                cells = []
                for c in LEVELS:
                    v = np.array(ens[(size, dev)][f"ensemble@{c}"])
                    cells.append(fmt(v[:, 0].mean(), v[:, 1].mean()))
                print(f"| {size} | {dev} | {' | '.join(cells)} |")
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
