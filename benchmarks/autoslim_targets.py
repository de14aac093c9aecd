"""AutoSlim at three FLOPs targets against uniform width multipliers of the same FLOPs.

The slimmable MobileNetV2 (mobilenetv2-channels space, widest = grid step
``--max-step``) is trained on 32x32 digits with the sandwich rule and
in-place distillation, then slimmed greedily; the configuration meeting each
FLOPs target is trained from scratch on the proxy task (digits) and measured
on cpu-ort. The baseline at each target is MobileNetV2 with one width
multiplier for every layer, bisected to the same FLOPs, trained the same way.
All six networks are then measured on cpu-ort in ``--rounds`` interleaved
rounds, so AutoSlim and uniform latencies are compared side by side.

    .venv/bin/python benchmarks/autoslim_targets.py [--targets 60%,40%,25%] [--max-step 4]
        [--epochs 5] [--proxy-epochs 6] [--seeds 1] [--rounds 5] [--db /tmp/hwnas_autoslim.db]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="60%,40%,25%")
    ap.add_argument("--max-step", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--proxy-epochs", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=1, help="proxy trainings per network")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure-seconds", type=float, default=3.0)
    ap.add_argument(
        "--rounds", type=int, default=5, help="interleaved re-measurement rounds of all networks"
    )
    ap.add_argument("--db", default="/tmp/hwnas_autoslim.db")
    args = ap.parse_args()

    import torch

    from hwnas.devices import create_device
    from hwnas.evaluators.proxy import (
        ProxyEvaluator,
        ProxySettings,
        _deterministic,
        train_and_evaluate,
    )
    from hwnas.export import to_onnx
    from hwnas.models.mobilenetv2 import build_from_channels
    from hwnas.objectives import Objective
    from hwnas.profilers.latency import MeasureSettings
    from hwnas.searchers import SearchLog, create_searcher
    from hwnas.searchers.autoslim import uniform_channels_for_flops
    from hwnas.searchers.slimmable import mobilenetv2_macs
    from hwnas.spaces import get_space
    from hwnas.store import Store

    torch.set_num_threads(1)
    space = get_space("mobilenetv2-channels", input_size=32, num_classes=10)
    store = Store(args.db)
    msettings = MeasureSettings(budget_s=args.measure_seconds)

    def proxy_settings(seed: int) -> ProxySettings:
        return ProxySettings(
            epochs=args.proxy_epochs, batch_size=32, lr=0.1, weight_decay=4e-5, seed=seed
        )

    def proxy_acc_of_channels(ch: list[int]) -> list[float]:
        out = []
        for s in range(args.seed, args.seed + args.seeds):
            ev = ProxyEvaluator(proxy_settings(s))
            train, val = ev.split(32)
            torch.manual_seed(s)
            model = build_from_channels(ch, 10, space.dropout)
            with _deterministic():
                out.append(train_and_evaluate(model, train, val, ev.settings))
        return out

    t0 = time.perf_counter()
    # No latency source: the targets are FLOPs, and every network's latency is measured
    # once, interleaved, below (not again during the search).
    objective = Objective(ProxyEvaluator(proxy_settings(args.seed)), reward="accuracy", store=store)
    searcher = create_searcher(
        "autoslim",
        [f"max_step={args.max_step}", f"epochs={args.epochs}", f"flops_targets={args.targets}"],
    )
    hist = searcher.run(space, objective, budget=100, seed=args.seed, log=SearchLog(args.db))
    objective.close()
    t_search = time.perf_counter() - t0
    f = hist.final
    rows = []
    for rec, cfg in zip(hist.records, f["configs"], strict=True):
        ch = cfg["channels"]
        accs = [rec.terms.accuracy] + (proxy_acc_of_channels(ch)[1:] if args.seeds > 1 else [])
        rows.append(
            ["AutoSlim", cfg["targets"][0], ch, cfg["flops"], accs, cfg["slimmable_val_acc"]]
        )
        ratio, uch = uniform_channels_for_flops(space, cfg["flops"], input_size=32)
        uflops = 2 * mobilenetv2_macs(uch, 32, 10)
        rows.append(
            [
                f"uniform {ratio:.3f}x",
                cfg["targets"][0],
                uch,
                uflops,
                proxy_acc_of_channels(uch),
                None,
            ]
        )
    # Latency side by side: every network measured once per round, rounds interleaved,
    # so a slow spell of this shared machine hits all of them alike.
    arts = []
    for name, target, ch, *_ in rows:
        torch.manual_seed(0)
        net = build_from_channels(ch, 10, space.dropout)
        arts.append(to_onnx(net, space.input_shape, label=f"{target} {name}"))
    device = create_device("cpu-ort")
    samples: list[list[float]] = [[] for _ in rows]
    for _ in range(args.rounds):
        for i, art in enumerate(arts):
            samples[i].append(device.measure(art, msettings).median)
    device.close()

    widest = f["widest"]
    print()
    print(f"AutoSlim on mobilenetv2-channels, 32x32 digits: widest = step {args.max_step} "
          f"({2 * mobilenetv2_macs(widest, 32, 10) / 1e6:.2f} MFLOPs), slimmable training "
          f"{args.epochs} epochs, greedy path of {len(f['path']) - 1} steps; search {t_search:.0f} s")  # fmt: skip
    print(f"proxy: trained from scratch, {args.proxy_epochs} epochs on digits (batch 32, lr 0.1), "
          f"{args.seeds} seed(s); latency: cpu-ort, 1 thread")  # fmt: skip
    print(f"latency: median over {args.rounds} interleaved rounds of each round's median; "
          "range over rounds in brackets; 'vs uniform' is the paired median ratio")  # fmt: skip
    print("| target | network | MFLOPs | proxy accuracy % | cpu-ort ms | vs uniform | "
          "slimmable acc % |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for i, (name, target, _, flops, accs, sacc) in enumerate(rows):
        acc = statistics.mean(accs)
        spread = f" ± {statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
        ms = samples[i]
        paired = "-"
        if name == "AutoSlim":
            paired = (
                f"{statistics.median(a / b for a, b in zip(ms, samples[i + 1], strict=True)):.3f}"
            )
        print(f"| {target} | {name} | {flops / 1e6:.2f} | {acc:.1f}{spread} | "
              f"{statistics.median(ms):.3f} [{min(ms):.3f}-{max(ms):.3f}] | {paired} | "
              f"{'-' if sacc is None else f'{sacc:.1f}'} |")  # fmt: skip
    print()
    names = space.decision_names()
    print("channels (" + ", ".join(names) + "):")
    print(f"  widest: {widest}")
    for name, target, ch, *_ in rows:
        print(f"  {target} {name}: {ch}")


if __name__ == "__main__":
    main()
