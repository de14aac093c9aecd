"""The ``--ray [ADDRESS]`` branch of ``hwnas sample``: the CLI side of :mod:`hwnas.distributed`.

The campaign command owns its options and output; with ``--ray`` it hands the
parsed arguments here, which swap the local loop for
:func:`hwnas.distributed.campaign.run_campaign_ray`. Kept in ``commands/`` (not
``distributed/``) so that the library never imports the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hwnas.errors import ConfigError


def sample_on_ray(
    args: Any,
    space: Any,
    settings: Any,
    print_summary: Callable[[Any, str], None],
) -> int:
    """``hwnas sample ... --ray [ADDRESS]``: the campaign on every ``--device`` at once.

    ``--device`` takes a comma-separated list (``adb:A,adb:B,ssh:pi@board``),
    each optionally ``DEVICE=STORE_NAME``; ``--device-name`` stores all of
    them under one name (a farm of identical devices sharing the work).

    Returns:
        the exit code: 0, 1 when some architecture failed, 130 after Ctrl-C.
    """
    from hwnas.commands._common import console, err_console, print_json, progress, table
    from hwnas.commands._trust import canary_from_args, policy_from_args, repeat_n
    from hwnas.devices import DEVICES
    from hwnas.distributed.campaign import DeviceSpec, run_campaign_ray
    from hwnas.distributed.cli import ray_address
    from hwnas.store import Store

    items = [d for d in str(args.device).split(",") if d.strip()]
    if not items:
        raise ConfigError("--device is empty; give one or more devices, e.g. adb:A,adb:B")
    specs = []
    for text in items:
        spec = DeviceSpec.parse(
            text, kwargs={"threads": args.threads}, isolate=bool(getattr(args, "isolate", True))
        )
        DEVICES.factory(spec.device)  # an unknown device fails before the cluster starts
        if args.device_name and spec.store_as is None:
            spec = DeviceSpec(
                spec.device, spec.kwargs, args.device_name, spec.resource, spec.isolate
            )
        specs.append(spec)
    groups = len({s.store_name for s in specs})
    policy, canary = policy_from_args(args), canary_from_args(args)  # bad values: exit 2 first
    log = err_console.print if not args.json else (lambda _m: None)
    if getattr(args, "export_workers", 0):
        err_console.print(
            "[yellow]note:[/] --export-workers is ignored with --ray: each device's actor "
            "exports on its own node, between its measurements"
        )
    with (
        Store(args.db) as store,
        progress(
            args.n * groups, f"{space.name} on {len(specs)} devices (Ray)", enabled=not args.json
        ) as bar,
    ):
        summary = run_campaign_ray(
            space,
            args.n,
            specs,
            store,
            seed=args.seed,
            settings=settings,
            campaign=args.campaign,
            address=ray_address(args.ray),
            check=args.check,
            exporter=args.exporter,
            retry_failed=args.retry_failed,
            discard_artifacts=args.discard_artifacts,
            interference=policy,
            canary=canary,
            repeat_n=repeat_n(args),
            log=log,
            progress=lambda n, status: bar.advance(n, status=status),
        )
    if args.json:
        print_json(summary.to_dict())
    else:
        for s in summary.devices.values():
            print_summary(s, args.db)
        t = table(
            "Ray workers",
            ["device", "stored as", "resource", "host", "measured", "lost", "alive"],
            [
                (
                    w["device"],
                    w["store_as"],
                    w["resource"],
                    w["host"],
                    w["processed"],
                    w["lost"],
                    "no" if w["dead"] else "yes",
                )
                for w in summary.workers
            ],
        )
        t.caption = (
            f"wall {summary.wall_s:.1f} s (actors started in {summary.startup_s:.1f} s), "
            f"{summary.requeued} requeued, Ray overhead {1e3 * summary.overhead_median_s:.1f} ms "
            "per architecture (median)"
        )
        console.print(t)
        for note in summary.notes:
            err_console.print(f"[yellow]note:[/] {note}")
    if summary.interrupted:
        err_console.print(
            "interrupted: everything measured so far is stored; run the same command again to continue"
        )
        return 130
    return 0 if summary.failed == 0 else 1
