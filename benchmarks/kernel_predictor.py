"""nn-Meter-style ``kernel`` predictor on this machine: kernels measured alone -> zoo models.

Steps (each resumable; the database keeps every measurement):

1. ``sample_kernels``: ``--n`` kernels from the prior of real networks, plus
   ``--networks`` random calibration networks (never zoo models), plus
   ``--adaptive`` kernels around the worst-predicted ones, measured on
   ``--device`` with a short budget per kernel. The wall time is reported.
2. Per-kernel-type accuracy on held-out kernels: the regressors are trained
   on a random 80 % of the single-kernel measurements and predict the other
   20 % (stand-alone latency); the table gives MAPE and the share within
   +-10 % (nn-Meter's metric).
3. Calibration on held-out networks: same split over calibration networks.
4. The zoo: a predictor trained on everything predicts each zoo model
   (which it never saw, neither as kernels in context nor whole) and the
   models are measured on the same device; the table gives measured median,
   the plain sum of stand-alone kernel predictions, the calibrated prediction
   and their errors.

Run:  .venv/bin/python benchmarks/kernel_predictor.py [--db benchmarks/out/kernels_cpu-ort.db]
      [--n 1000] [--networks 60] [--adaptive 0] [--device cpu-ort] [--seed 0]
      [--models all] [--remeasure] [--out predictor.npz]

The machine may be shared: the device's medians are robust to a few slow runs,
but a heavily loaded machine shifts every latency; compare the figures only
with runs made in the same conditions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from hwnas.arch import Arch
from hwnas.predictors.kernel import KernelPredictor, NetworkRecord
from hwnas.predictors.kernels.campaign import kernel_training_data, sample_kernels
from hwnas.profilers.latency import MeasureSettings
from hwnas.store import Store

ZOO_SETTINGS = MeasureSettings(budget_s=6.0, min_runs=20, max_runs=2000, rel_ci=0.005)


def _split(n: int, rng: np.random.Generator, share: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    k = int(round(n * share))
    return np.sort(perm[:k]), np.sort(perm[k:])


def per_type_accuracy(X: list, y: np.ndarray, seed: int, forest: str) -> list[tuple]:
    singles = [i for i, r in enumerate(X) if not isinstance(r, NetworkRecord)]
    rng = np.random.default_rng(seed)
    tr, te = _split(len(singles), rng)
    tr_i = [singles[i] for i in tr]
    te_i = [singles[i] for i in te]
    p = KernelPredictor(forest=forest, seed=seed).fit([X[i] for i in tr_i], y[tr_i])
    rows = []
    known = [i for i in te_i if X[i].type in p.roofline]
    pred = dict(zip(known, p.predict_kernels([X[i] for i in known]), strict=True))
    types = sorted({X[i].type for i in singles})
    all_err = []
    for t in types:
        idx = [i for i in known if X[i].type == t]
        n_train = sum(1 for i in tr_i if X[i].type == t)
        if not idx:
            rows.append((t, n_train, 0, None, None, None))
            continue
        err = np.abs(np.asarray([pred[i] for i in idx]) / y[idx] - 1)
        all_err.extend(err)
        rows.append(
            (
                t,
                n_train,
                len(idx),
                float(np.mean(err)),
                float(np.mean(err <= 0.10)),
                float(np.median(y[idx])),
            )
        )
    e = np.asarray(all_err)
    rows.append(("all", len(tr_i), len(e), float(np.mean(e)), float(np.mean(e <= 0.10)), None))
    return rows


CALIBRATIONS = ("none", "scale", "scale+bytes")


def _predictor(forest: str, seed: int, calibration: str) -> KernelPredictor:
    if calibration == "none":
        return KernelPredictor(forest=forest, seed=seed, calibrate=False)
    return KernelPredictor(forest=forest, seed=seed, calibration=calibration)


def network_accuracy(X: list, y: np.ndarray, seed: int, forest: str) -> list[tuple] | None:
    """Held-out calibration networks: (calibration, n_train, n_test, MAPE, +-10% share)."""
    nets = [i for i, r in enumerate(X) if isinstance(r, NetworkRecord)]
    if len(nets) < 10:
        return None
    singles = [i for i, r in enumerate(X) if not isinstance(r, NetworkRecord)]
    rng = np.random.default_rng(seed + 1)
    tr, te = _split(len(nets), rng)
    tr_i = singles + [nets[i] for i in tr]
    te_i = [nets[i] for i in te]
    yt = y[te_i]
    rows = []
    for cal in CALIBRATIONS:
        p = _predictor(forest, seed, cal).fit([X[i] for i in tr_i], y[tr_i])
        e = np.abs(p.predict([X[i] for i in te_i]) / yt - 1)
        rows.append((cal, len(tr), len(te), float(np.mean(e)), float(np.mean(e <= 0.1))))
    return rows


def measure_zoo(store: Store, device_name: str, models: list[str], remeasure: bool) -> dict:
    import torch

    from hwnas.devices.isolated import IsolatedDevice
    from hwnas.export import to_onnx
    from hwnas.models import create_model, model_input_shape

    out = {}
    dev = None
    try:
        for name in models:
            torch.manual_seed(0)
            shape = model_input_shape(name)
            art = to_onnx(
                create_model(name), shape, label=name, source={"kind": "zoo", "name": name}
            )
            arch = Arch("zoo", (name,))
            rows = [
                r
                for r in store.measurements(device=device_name, space="zoo", with_samples=False)
                if r["arch_id"] == arch.id
            ]
            if rows and not remeasure:
                r = rows[-1]
                out[name] = (art, r["median_ms"], r["iqr_ms"])
                continue
            if dev is None:
                dev = IsolatedDevice(device_name)
            m = dev.measure(art, ZOO_SETTINGS)
            store.add_device(m.device, m.environment)
            store.add_arch(arch, label=name)
            store.add_artifact(art, arch.id)
            store.add_measurement(arch.id, m, shape)
            out[name] = (art, m.median, m.stats.iqr)
    finally:
        if dev is not None:
            dev.close()
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="benchmarks/out/kernels_cpu-ort.db")
    ap.add_argument("--device", default="cpu-ort")
    ap.add_argument("--n", type=int, default=1000, help="prior-sampled kernels (default 1000)")
    ap.add_argument("--networks", type=int, default=60, help="calibration networks (default 60)")
    ap.add_argument("--adaptive", type=int, default=0, help="adaptive extra kernels (default 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--forest", default="rf", choices=["rf", "gbdt"])
    ap.add_argument("--budget", type=float, default=0.5, help="seconds per kernel (default 0.5)")
    ap.add_argument("--models", default="all", help="zoo models, comma-separated (default all)")
    ap.add_argument("--remeasure", action="store_true", help="measure the zoo models again")
    ap.add_argument("--skip-sampling", action="store_true", help="use what the database holds")
    ap.add_argument("--out", default=None, help="save the final predictor (.npz)")
    args = ap.parse_args(argv)

    from dataclasses import replace

    from hwnas.models import list_models
    from hwnas.predictors.kernels.campaign import KERNEL_SETTINGS

    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    store = Store(args.db)
    if not args.skip_sampling:
        done = [0]

        def tick(what: str, label: str, status: str) -> None:
            done[0] += 1
            if done[0] % 25 == 0:
                print(f"  {done[0]} items, last {label}: {status}", file=sys.stderr, flush=True)

        s = sample_kernels(
            store,
            args.device,
            args.n,
            seed=args.seed,
            networks=args.networks,
            adaptive=args.adaptive,
            settings=replace(KERNEL_SETTINGS, budget_s=args.budget),
            on_progress=tick,
        )
        print(
            f"sampling: {s.measured} kernels and {s.networks_measured} networks measured now, "
            f"{s.skipped} already stored, {s.failed} failed, in {s.seconds:.0f} s "
            f"({s.seconds / max(1, s.measured + s.networks_measured):.1f} s per item incl. export)"
        )
        for f in s.failures[:5]:
            print(f"  failed: {f}")

    X, y = kernel_training_data(store, args.device)
    n_single = sum(1 for r in X if not isinstance(r, NetworkRecord))
    print(f"\ntraining data on {args.device}: {n_single} kernels, {len(X) - n_single} networks")

    print("\nPer kernel type, held-out 20% of kernels (stand-alone latency):")
    print(f"{'type':<12}{'train':>7}{'test':>6}{'MAPE':>8}{'+-10%':>8}{'median ms':>11}")
    for t, ntr, nte, mape, acc, med in per_type_accuracy(X, y, args.seed, args.forest):
        med_s = "-" if med is None else f"{med:.4f}"
        print(f"{t:<12}{ntr:>7}{nte:>6}{_pct(mape):>8}{_pct(acc):>8}{med_s:>11}")

    nets = network_accuracy(X, y, args.seed, args.forest)
    if nets is not None:
        print(f"\nCalibration networks, held-out {nets[0][2]} (calibration fit on {nets[0][1]}):")
        print(f"{'calibration':<14}{'MAPE':>8}{'+-10%':>8}")
        for cal, _, _, mape, acc in nets:
            print(f"{cal:<14}{_pct(mape):>8}{_pct(acc):>8}")

    t0 = time.perf_counter()
    preds = {cal: _predictor(args.forest, args.seed, cal).fit(X, y) for cal in CALIBRATIONS}
    fit_s = time.perf_counter() - t0
    final = preds["scale"]
    cal_txt = ", ".join(f"{t} x{v:.2f}" for t, v in sorted(final.calibration.items()))
    print(
        f"\nfinal predictors: fit in {fit_s:.1f} s (all three); 'scale' calibration: {cal_txt}; "
        f"per kernel {final.kernel_overhead_ms * 1e3:+.1f} us, per model {final.model_overhead_ms:+.3f} ms"
    )
    if args.out:
        final.save(args.out)
        print(f"saved {args.out} ('scale' calibration)")

    models = list_models() if args.models == "all" else args.models.split(",")
    zoo = measure_zoo(store, args.device, models, args.remeasure)
    print(f"\nZoo models on {args.device} (never seen in training); predicted ms (error):")
    head = "".join(f"{c:>22}" for c in ("sum alone", "calibrated: scale", "scale+bytes"))
    print(f"{'model':<16}{'kernels':>8}{'measured ms':>13}{'IQR':>8}{head}")
    within = {cal: 0 for cal in CALIBRATIONS}
    for name, (art, med, iqr) in zoo.items():
        n_k = len(final.breakdown(art.path))
        cells = ""
        for cal in CALIBRATIONS:
            p = preds[cal].predict_model(art.path)
            e = p / med - 1
            within[cal] += abs(e) <= 0.10
            cells += f"{p:>13.3f} ({100 * e:+5.1f}%)"
        print(f"{name:<16}{n_k:>8}{med:>13.3f}{iqr:>8.3f}{cells}")
    t1 = time.perf_counter()
    for _name, (art, _, _) in zoo.items():
        final.predict_model(art.path)
    per_model = (time.perf_counter() - t1) / max(1, len(zoo)) * 1e3
    print(f"\nprediction time: {per_model:.0f} ms per model (ONNX load, kernel detection, trees)")
    for cal in CALIBRATIONS:
        print(f"{within[cal]}/{len(zoo)} zoo models within +-10% with calibration '{cal}'")
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
