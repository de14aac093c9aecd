"""Prediction intervals on the NAS-Bench-201 table: empirical coverage and width, per device.

For each device of ../shared/data/nb201/nb201_benchmark.csv (all seven; a
table acting as the device, so nothing here depends on this machine's timing):
take N random cells (100 and 900), keep a share of them aside for
calibration (10 % and 20 %), fit ``mlp`` and ``gbdt`` (default settings) on
the rest, calibrate split-conformal intervals on the share kept aside
(:meth:`Predictor.calibrate`), and score the 80 % and 90 % central intervals
on every other cell of the table: empirical coverage (share of measurements
inside, to compare with 80 / 90) and mean relative width ((hi - lo) / point).
Means over seeds, per device, then a summary over devices.

Both calibration scores come from the same fits: ``log`` (log(y/yhat), the
default) and ``linear`` (y - yhat, ms), so the choice between them is made
over all seven devices, never one. ``--ensemble K`` adds uncalibrated ``mlp``
ensembles (log-normal from the members' spread) for comparison.

Why the intervals are computed on cached predictions: calibration and
quantiles only ever call ``predict``, so each model predicts the calibration
and test cells once and :class:`Fixed` (a predictor whose feature *is* that
prediction) runs the same base-class code (:meth:`Predictor.calibrate`,
:meth:`Predictor.predict_interval`) on it, for both scores and both levels.

Run:  .venv/bin/python benchmarks/predictor_intervals.py [--seeds 3] [--ensemble 5]
      (--devices a,b --json part.json in several processes, then --summarize part1.json,part2.json)
Smoke: --devices raspi4 --train-sizes 100 --predictors gbdt --seeds 1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hwnas.predictors import create_predictor  # noqa: E402
from hwnas.predictors.base import Predictor  # noqa: E402
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


class Fixed(Predictor):
    """A predictor whose only feature is a prediction already made (see the module doc)."""

    name = "fixed"

    def fit(self, X: Any, y_ms: np.ndarray, **kwargs: Any) -> Fixed:
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(X, dtype=np.float64)[:, 0]

    def get_state(self) -> dict[str, np.ndarray]:
        return {}

    def set_state(self, arrays: dict[str, np.ndarray]) -> None:
        pass


def score_intervals(yhat_cal, y_cal, yhat_te, y_te, scores) -> dict[str, list[float]]:
    """(coverage %, relative width %) per ``score@level`` on the test cells."""
    out = {}
    f = Fixed()
    for score in scores:
        f.calibrate(yhat_cal[:, None], y_cal, score=score)
        for c in LEVELS:
            lo, hi = f.predict_interval(yhat_te[:, None], c)
            m = interval_metrics(y_te, lo, hi, yhat_te, c)
            out[f"{score}@{c}"] = [m.coverage, m.width]
    return out


def fmt(cov: float, width: float) -> str:
    w = "unbounded" if not math.isfinite(width) else f"{width:.1f}"
    return f"{cov:.1f} / {w}"


def mean_cells(runs: list[list[float]]) -> tuple[float, float]:
    v = np.array(runs, dtype=float)
    return float(v[:, 0].mean()), float(v[:, 1].mean())


def run_device(args, space, dev: str, preds, sizes, shares, scores) -> dict[str, Any]:
    """Every result for one device: ``{"pred|N|share": {"score@level": [[cov, width], ...]}}``."""
    ds = load_table(args.csv, space, f"latency_ms_{dev}")
    X_all = ds.features("onehot", space)
    index = {a.id: i for i, a in enumerate(ds.archs)}

    def rows(d):
        return X_all[[index[a.id] for a in d.archs]]

    res: dict[str, Any] = {}
    for size in sizes:
        for seed in range(args.seeds):
            train, test = split(ds, size, seed)
            Xte = rows(test)
            for share in shares:
                fit, cal = split_calibration(train, share, seed)
                for name in preds:
                    p = create_predictor(name, seed=seed).fit(rows(fit), fit.y_ms)
                    r = score_intervals(
                        p.predict(rows(cal)), cal.y_ms, p.predict(Xte), test.y_ms, scores
                    )
                    cell = res.setdefault(f"{name}|{size}|{share}", {})
                    for k, v in r.items():
                        cell.setdefault(k, []).append(v)
            if args.ensemble > 1:
                p = create_predictor("mlp", seed=seed, ensemble=args.ensemble)
                p.fit(rows(train), train.y_ms)
                point = p.predict(Xte)
                cell = res.setdefault(f"ensemble{args.ensemble}|{size}|0", {})
                for c in LEVELS:
                    lo, hi = p.predict_interval(Xte, c)
                    m = interval_metrics(test.y_ms, lo, hi, point, c)
                    cell.setdefault(f"spread@{c}", []).append([m.coverage, m.width])
    return res


def print_device(dev: str, res: dict[str, Any]) -> None:
    print(f"\n#### {dev}\n")
    print("| predictor | N | cal. share (n) | score | 80%: cov / width | 90%: cov / width |")
    print("|" + "---|" * 6)
    for key, cell in res.items():
        name, size, share = key.split("|")
        n_cal = int(round(float(share) * int(size)))
        for score in sorted({k.split("@")[0] for k in cell}):
            cells = [fmt(*mean_cells(cell[f"{score}@{c}"])) for c in LEVELS]
            shown = f"{float(share):.0%} ({n_cal})" if n_cal else "none"
            print(f"| {name} | {size} | {shown} | {score} | {' | '.join(cells)} |")
    sys.stdout.flush()


def print_summary(all_res: dict[str, dict[str, Any]]) -> None:
    devices = list(all_res)
    print(f"\n### summary over {len(devices)} devices ({', '.join(devices)})\n")
    print("coverage: mean [min, max] of the per-device means; width: mean of them\n")
    print(
        "| predictor | N | cal. share (n) | score | 80%: cov [min, max] / width | 90%: cov [min, max] / width |"
    )
    print("|" + "---|" * 6)
    keys = list(dict.fromkeys(k for r in all_res.values() for k in r))
    for key in keys:
        name, size, share = key.split("|")
        n_cal = int(round(float(share) * int(size)))
        cellkeys = list(dict.fromkeys(k for r in all_res.values() for k in r.get(key, {})))
        for score in sorted({k.split("@")[0] for k in cellkeys}):
            cells = []
            for c in LEVELS:
                per = [mean_cells(r[key][f"{score}@{c}"]) for r in all_res.values() if key in r]
                cov = np.array([v[0] for v in per])
                wid = np.array([v[1] for v in per])
                w = "unbounded" if not np.all(np.isfinite(wid)) else f"{wid.mean():.1f}"
                cells.append(f"{cov.mean():.1f} [{cov.min():.1f}, {cov.max():.1f}] / {w}")
            shown = f"{float(share):.0%} ({n_cal})" if n_cal else "none"
            print(f"| {name} | {size} | {shown} | {score} | {' | '.join(cells)} |")


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
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--summarize", default=None, help="only print the summary of these JSON files")
    args = ap.parse_args()
    if args.summarize:
        merged: dict[str, Any] = {}
        for f in args.summarize.split(","):
            for dev, r in json.loads(Path(f).read_text()).items():
                merged.setdefault(dev, {}).update(r)  # parts may split by device or by N
        for dev, r in merged.items():
            print_device(dev, r)
        print_summary(merged)
        return
    space = get_space("nb201")
    preds = [p for p in args.predictors.split(",") if p]  # empty: ensembles only
    sizes = [int(s) for s in args.train_sizes.split(",")]
    shares = [float(s) for s in args.shares.split(",")]
    scores = args.scores.split(",")
    print(f"NB201 table, {args.seeds} seeds; test = every cell outside the N drawn")
    print(
        "cells: empirical coverage % / mean relative width % of the central interval, mean over seeds"
    )
    t0 = time.time()
    all_res: dict[str, dict[str, Any]] = {}
    for dev in args.devices.split(","):
        all_res[dev] = run_device(args, space, dev, preds, sizes, shares, scores)
        print_device(dev, all_res[dev])
        print(f"# {dev} done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(all_res))
    print_summary(all_res)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
