"""Replay the adaptive timing rule on run-time streams a campaign already stored.

Every measurement row keeps its warm-up and timed runs in order, so the stop
rule of :func:`hwnas.profilers.latency.adaptive_loop` can be re-run on them
offline: what it would have kept, how many runs it would have paid for, and
how the resulting medians agree with a second, independent store of the same
architectures (e.g. the ``seq`` and ``phase`` stores of
``benchmarks/campaign_overhead.py``). Nothing is timed here: a figure from this
script is a replay of recorded times, and says so.

A stream that ends before the rule stops (the original rule stopped sooner)
is counted as "ran out" and its full stream used.

Run:  .venv/bin/python benchmarks/stop_rule_replay.py A.db B.db [--device cpu-ort] [--rel-ci 0.01,0.02]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hwnas.profilers.latency import MeasureSettings, adaptive_loop  # noqa: E402


class _RanOut(Exception):
    pass


def streams(db: Path, device: str) -> dict[str, tuple[list[float], list[float]]]:
    """arch id -> (warm-up runs, timed runs) of every ok row (the last row per arch)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT arch_id, warmup, samples FROM measurements WHERE status='ok' AND device=? "
            "ORDER BY id",
            (device,),
        ).fetchall()
    finally:
        con.close()
    return {a: (json.loads(w or "[]"), json.loads(s or "[]")) for a, w, s in rows}


def replay(warm: list[float], timed: list[float], settings: MeasureSettings):
    """(kept, warm-up, ran out) of the rule on the recorded sequence warm + timed."""
    it = iter(warm + timed)

    def run_once() -> float:
        try:
            return next(it)
        except StopIteration:
            raise _RanOut from None

    try:
        kept, w = adaptive_loop(run_once, settings)
        return kept, w, False
    except _RanOut:
        return timed, warm, True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db", type=Path, help="store whose streams are replayed")
    ap.add_argument("other", type=Path, help="an independent store of the same archs")
    ap.add_argument("--device", default="cpu-ort")
    ap.add_argument("--rel-ci", default="0.01,0.02", help="comma-separated precisions")
    args = ap.parse_args()
    a, b = streams(args.db, args.device), streams(args.other, args.device)
    common = sorted(set(a) & set(b))
    if not common:
        print(f"not run: {args.db} and {args.other} share no measured architecture")
        return 0
    ref = np.array([np.median(b[k][1]) for k in common])
    print(f"# replay of {len(common)} stored streams of {args.db.name} (not a timing run)")
    print(
        f"{'rule':24} {'runs mean':>9} {'runs med':>8} {'timed s':>8} {'warm s':>7} "
        f"{'+-5%':>5} {'+-10%':>6} {'ran out':>7}"
    )
    orig = np.array([np.median(a[k][1]) for k in common])
    r = orig / ref - 1
    runs = [len(a[k][1]) for k in common]
    print(
        f"{'as stored':24} {np.mean(runs):9.1f} {np.median(runs):8.0f} "
        f"{np.mean([sum(a[k][1]) for k in common]) / 1e3:8.3f} "
        f"{np.mean([sum(a[k][0]) for k in common]) / 1e3:7.3f} "
        f"{np.mean(np.abs(r) <= 0.05):5.0%} {np.mean(np.abs(r) <= 0.10):6.0%} {'-':>7}"
    )
    for ci in (float(x) for x in args.rel_ci.split(",") if x.strip()):
        kept, warm, out = zip(
            *(replay(a[k][0], a[k][1], MeasureSettings(rel_ci=ci)) for k in common), strict=True
        )
        med = np.array([np.median(x) for x in kept])
        r = med / ref - 1
        print(
            f"{'this rule, rel_ci ' + str(ci):24} {np.mean([len(x) for x in kept]):9.1f} "
            f"{np.median([len(x) for x in kept]):8.0f} {np.mean([sum(x) for x in kept]) / 1e3:8.3f} "
            f"{np.mean([sum(x) for x in warm]) / 1e3:7.3f} {np.mean(np.abs(r) <= 0.05):5.0%} "
            f"{np.mean(np.abs(r) <= 0.10):6.0%} {sum(out):7d}"
        )
    print(f"# agreement: medians within +-5% / +-10% of {args.other.name}'s medians")
    return 0


if __name__ == "__main__":
    sys.exit(main())
