"""MemNAS rounds at lambda = 0.5 and 0.8 on the memnas-cells family (32x32 digits).

Each round grows and trims the base network, ranks every candidate with the
structure-correlation controller, evaluates the top-k (plus ``explore``
random ones): accuracy by a short proxy training on the digits, parameter
and peak-activation memory by the lifetime estimator on the exported ONNX
graph. Prints, per round: candidates generated (grow/trim), Kendall tau of
the controller's predictions against the realised rewards of the evaluated
candidates, and the chosen network with its accuracy and memories.

    .venv/bin/python benchmarks/memnas_rounds.py [--lambdas 0.5,0.8] [--rounds 3] [--top-k 3]
        [--explore 1] [--proxy-epochs 3] [--keep-base] [--grow full|last]
        [--memory-weights paper|code] [--db /tmp/hwnas_memnas.db]
"""

from __future__ import annotations

import argparse
import time


def _kb(b) -> str:
    return "-" if b is None else f"{b / 1024:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lambdas", default="0.5,0.8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--explore", type=int, default=1)
    ap.add_argument("--proxy-epochs", type=int, default=3)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--db", default="/tmp/hwnas_memnas.db")
    ap.add_argument(
        "--keep-base", action="store_true", help="keep the base when no candidate beats it"
    )
    ap.add_argument(
        "--grow", default="full", help="full (MemNAS' grow step) or last (earlier runs)"
    )
    ap.add_argument(
        "--memory-weights", default="paper", help="paper (1/1) or code (0.7/0.3, released code)"
    )
    args = ap.parse_args()

    import torch

    from hwnas.evaluators.proxy import ProxyEvaluator, ProxySettings
    from hwnas.objectives import MemoryEstimator, Objective
    from hwnas.searchers import SearchLog, create_searcher
    from hwnas.spaces.memnas_cells import MemNASSpace
    from hwnas.store import Store

    torch.set_num_threads(1)
    space = MemNASSpace(channels=args.channels)
    store = Store(args.db)
    log = SearchLog(args.db)
    proxy = ProxyEvaluator(ProxySettings(epochs=args.proxy_epochs, batch_size=32, seed=args.seed))
    for lam in (float(x) for x in args.lambdas.split(",")):
        t0 = time.perf_counter()
        objective = Objective(proxy, memory=MemoryEstimator(store), reward="accuracy", store=store)
        searcher = create_searcher(
            "memnas",
            [
                f"lam={lam}",
                f"rounds={args.rounds}",
                f"top_k={args.top_k}",
                f"explore={args.explore}",
                f"keep_base={args.keep_base}",
                f"grow={args.grow}",
                f"memory_weights={args.memory_weights}",
            ],
        )
        hist = searcher.run(space, objective, budget=1000, seed=args.seed, log=log)
        f = hist.final
        secs = time.perf_counter() - t0
        print()
        print(f"MemNAS, lambda = {lam:g}: {len(hist.records)} evaluations in {secs:.0f} s "
              f"(proxy: {args.proxy_epochs} epochs on digits, batch 32; memory: lifetime estimate of "
              f"the ONNX graph, float32, batch 1, 32x32)")  # fmt: skip
        print("| round | candidates (grow/trim) | evaluated | Kendall tau | chosen network | move | "
              "accuracy % | params KB | peak activations KB | R |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|")
        init = f["initial"]
        print(f"| 0 | - | 1 | - | `{init['arch']}` | start | {init['accuracy']:.2f} | "
              f"{_kb(init['param_bytes'])} | {_kb(init['peak_activation_bytes'])} | - |")  # fmt: skip
        for r in f["rounds"]:
            tau = r["kendall_tau"]
            print(f"| {r['round']} | {r['candidates']} ({r['grow']}/{r['trim']}) | {r['evaluated']} | "
                  f"{tau:+.2f} | `{r.get('chosen', '-')}` | {r.get('move', '-')} | "
                  f"{(r.get('accuracy') or float('nan')):.2f} | {_kb(r.get('param_bytes'))} | "
                  f"{_kb(r.get('peak_activation_bytes'))} | {r.get('reward', float('nan')):+.3f} |")  # fmt: skip
        taus = [r["kendall_tau"] for r in f["rounds"] if r["kendall_tau"] == r["kendall_tau"]]
        if taus:
            print(f"mean Kendall tau over rounds: {sum(taus) / len(taus):+.2f} "
                  "(round 1: untrained controller)")  # fmt: skip
        fin = f["final"]
        print(f"final: {fin['arch']}: {fin['accuracy']:.2f} %, params {_kb(fin['param_bytes'])} KB, "
              f"peak activations {_kb(fin['peak_activation_bytes'])} KB (start: "
              f"{init['accuracy']:.2f} %, {_kb(init['param_bytes'])} KB, "
              f"{_kb(init['peak_activation_bytes'])} KB)")  # fmt: skip


if __name__ == "__main__":
    main()
