"""Latency predictors on MnasNet-space architectures measured on this machine.

Needs a store filled by a campaign, e.g.::

    hwnas sample mnasnet -n 1000 --device cpu-ort --db mnasnet_cpu.db

then train on 800 random architectures and test on the other 200 (several
seeds), for ``mlp`` (one-hot encoding), ``gbdt`` and ``flops-linear`` (the
ONNX-graph FLOPs the campaign recorded). The issue's target: +-10 % accuracy
>= 95 % for ``mlp``.

Run:  .venv/bin/python benchmarks/predictor_mnasnet.py --db mnasnet_cpu.db [--device cpu-ort] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hwnas.predictors import create_predictor  # noqa: E402
from hwnas.predictors.data import dropped_note, load_store, split  # noqa: E402
from hwnas.predictors.metrics import HEADERS, evaluate, summarize  # noqa: E402
from hwnas.spaces import get_space  # noqa: E402

SHOWN = ("acc5", "acc10", "mape", "spearman", "kendall")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True, help="store written by `hwnas sample`")
    ap.add_argument("--device", default="cpu-ort")
    ap.add_argument("--space", default="mnasnet")
    ap.add_argument("--train-size", type=int, default=800)
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--ensemble", type=int, default=5, help="also an mlp ensemble (0: no)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--include-flagged",
        action="store_true",
        help="keep rows flagged by the interference guard or the canary (left out by default)",
    )
    args = ap.parse_args()
    if not args.db.exists():
        print(f"not run: {args.db} does not exist; measure the architectures first with")
        print(f"  hwnas sample {args.space} -n 1000 --device {args.device} --db {args.db}")
        return 0
    space = get_space(args.space)
    ds = load_store(args.db, space, device=args.device, include_flagged=args.include_flagged)
    if note := dropped_note(ds):
        print(note)
    need = args.train_size + args.test_size
    if len(ds) < need:
        print(
            f"not run: {args.db} has {len(ds)} usable '{args.space}' measurements on {args.device}; need {need}"
        )
        return 0
    X = ds.features("onehot", space)
    have_flops = bool(np.isfinite(ds.flops).all())
    names = ["mlp"] + ([f"mlp-ens{args.ensemble}"] if args.ensemble > 1 else []) + ["gbdt"]
    names += ["flops-linear"] if have_flops else []
    res: dict[str, list] = {n: [] for n in names}
    secs: dict[str, list[float]] = {n: [] for n in names}
    pos = {a.id: i for i, a in enumerate(ds.archs)}
    for seed in range(args.seeds):
        sub = ds.subset(np.random.default_rng(seed).permutation(len(ds))[:need])
        tr, te = split(sub, args.train_size, seed)
        itr = np.array([pos[a.id] for a in tr.archs])
        ite = np.array([pos[a.id] for a in te.archs])
        for n in names:
            t = time.time()
            if n == "flops-linear":
                F = ds.flops[:, None] / 1e6
                p = create_predictor(n).fit(F[itr], tr.y_ms)
                pred = p.predict(F[ite])
            else:
                kw = {
                    "seed": seed,
                    **({"ensemble": args.ensemble} if n.startswith("mlp-ens") else {}),
                }
                p = create_predictor("mlp" if n.startswith("mlp") else n, **kw).fit(X[itr], tr.y_ms)
                pred = p.predict(X[ite])
            secs[n].append(time.time() - t)
            res[n].append(evaluate(te.y_ms, pred))
            print(
                f"seed {seed} {n:<13} acc10 {res[n][-1].acc10:6.2f}  rho {res[n][-1].spearman:.4f}",
                flush=True,
            )
    print(
        f"\n{args.space} on {args.device}: train {args.train_size}, test {args.test_size}, {args.seeds} seeds (mean ± sd); {len(ds)} measured"
    )
    head = f"{'predictor':<14}" + "".join(f"{HEADERS[f]:>17}" for f in SHOWN) + f"{'fit s':>9}"
    print(head + "\n" + "-" * len(head))
    for n in names:
        s = summarize(res[n])
        cells = [
            f"{s[f][0]:>9.4f} ± {s[f][1]:<5.4f}"
            if f in ("spearman", "kendall")
            else f"{s[f][0]:>9.2f} ± {s[f][1]:<5.2f}"
            for f in SHOWN
        ]
        print(f"{n:<14}" + "".join(f"{c:>17}" for c in cells) + f"{np.mean(secs[n]):>9.1f}")
    if not have_flops:
        print("(flops-linear skipped: the store has no FLOPs for some architectures)")
    from hwnas.store.quality import ceiling_line  # the data's own agreement, side by side

    print(
        ceiling_line(str(args.db), args.device) or "(no noise ceiling stored: hwnas repeatability)"
    )
    if args.json:
        args.json.write_text(
            json.dumps({n: [m.to_dict() for m in res[n]] for n in names}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
