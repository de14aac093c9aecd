"""Options and helpers for trustworthy measurements, shared by `sample`, `profile`,
`export`, `compare-flops` and `repeatability` (interference policy, canary,
flagged rows, normalisation). Kept out of the commands so each of them adds
only a call or two.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from hwnas.commands import _common
from hwnas.errors import ConfigError


def add_interference_options(p: Any) -> None:
    """``--interference warn|wait|fail`` and ``--interference-wait S``.

    The defaults come from ``$HWNAS_INTERFERENCE`` (else ``wait``), so a test
    suite on a shared machine can say ``warn`` once for every subprocess.
    """
    p.add_argument(
        "--interference",
        default=os.environ.get("HWNAS_INTERFERENCE", "wait"),
        metavar="POLICY",
        help="what a busy machine (other processes on our cores, a run queue, CPU steal, a "
        "frequency drop) does to a measurement: warn (record and flag), wait (pause until "
        "quiet, then measure; after --interference-wait record and flag), fail (refuse); "
        "default wait",
    )
    p.add_argument(
        "--interference-wait",
        type=_common.fraction,
        default=60.0,
        metavar="S",
        help="longest pause of --interference wait before measuring anyway, flagged (default 60)",
    )


def policy_from_args(args: Any) -> Any:
    """The :class:`~hwnas.profilers.interference.Policy` of ``--interference``/``--interference-wait``."""
    from hwnas.profilers.interference import Policy, check_policy

    check_policy(args.interference)
    if args.interference_wait < 0:
        raise ConfigError(f"--interference-wait must be >= 0 seconds, got {args.interference_wait}")
    return Policy(args.interference, wait_limit_s=args.interference_wait)


def guard_device(args: Any, device: Any, device_name: str, threads: int, log: Any) -> Any:
    """``device`` wrapped in the interference guard the options ask for."""
    from hwnas.profilers import interference

    return interference.guard_device(
        device,
        policy_from_args(args),
        threads=threads,
        device_name=device_name,
        log=log,
        device_options={"threads": args.threads} if args.threads else None,
    )


#: The CLI's default canary; equal to ``hwnas.campaigns.canary.DEFAULT_CANARY`` (tested),
#: repeated here because importing hwnas.campaigns imports torch and `hwnas --help` must not.
DEFAULT_CANARY = "cifar_resnet20"


def add_canary_options(p: Any) -> None:
    p.add_argument(
        "--canary",
        default=os.environ.get("HWNAS_CANARY", DEFAULT_CANARY),
        metavar="MODEL",
        help=f"zoo model measured at the start and every --canary-every to see the machine "
        f"drift, or none (default {DEFAULT_CANARY})",
    )
    p.add_argument(
        "--canary-every",
        default="25,300s",
        metavar="K[,Ss]",
        help="measure the canary every K architectures or S seconds (default 25,300s)",
    )
    p.add_argument(
        "--canary-drift",
        type=_common.probability,
        default=0.05,
        metavar="F",
        help="relative canary drift that flags the rows since the last good canary and "
        "re-measures them, in (0, 1) (default 0.05)",
    )
    p.add_argument(
        "--repeatability",
        type=_common.nonneg_int,
        default=None,
        metavar="N",
        help="re-measure N random rows at the end, in a new order, and store the noise ceiling "
        "(default min(50, N/10); 0 = off)",
    )


def canary_from_args(args: Any) -> Any:
    """CanarySettings from the options (bad values: one-line ConfigError)."""
    from hwnas.campaigns.canary import CanarySettings, check_canary_model, parse_every

    every_archs, every_s = parse_every(args.canary_every)
    return CanarySettings(
        model=check_canary_model(args.canary),
        every_archs=every_archs,
        every_s=every_s,
        drift=args.canary_drift,
    )


def repeat_n(args: Any) -> int:
    if args.repeatability is None:
        return min(50, args.n // 10) if args.n >= 20 else 0
    if args.repeatability < 0:
        raise ConfigError(f"--repeatability must be >= 0, got {args.repeatability}")
    return args.repeatability


def add_quality_read_options(p: Any) -> None:
    """``--flagged keep|drop`` and ``--normalize none|canary`` for reading commands."""
    p.add_argument(
        "--flagged",
        default="keep",
        metavar="keep|drop",
        help="rows flagged for interference or canary drift and not yet re-measured: keep "
        "(default) or drop",
    )
    p.add_argument(
        "--normalize",
        default="none",
        metavar="none|canary",
        help="canary: scale each row by its campaign's canary baseline / the canary nearest "
        "before it (default none)",
    )


def check_quality_read(args: Any) -> None:
    if args.flagged not in ("keep", "drop"):
        raise ConfigError(f"unknown --flagged '{args.flagged}'; use keep or drop")
    if args.normalize not in ("none", "canary"):
        raise ConfigError(f"unknown --normalize '{args.normalize}'; use none or canary")


class QualityView:
    """A store whose :meth:`measurements` leaves out flagged rows and/or normalises by the
    canary (read-only: it never creates the quality tables). ``note`` says what it did."""

    def __init__(self, store: Any, flagged: str = "keep", normalize: str = "none"):
        self._store = store
        self.flagged = flagged
        self.normalize = normalize
        self.note = ""

    def measurements(self, *args: Any, **kwargs: Any) -> list[dict]:
        from hwnas.store import quality

        rows = self._store.measurements(*args, **kwargs)
        rows, self.note = quality.apply_quality(
            self._store.conn, rows, flagged=self.flagged, normalize=self.normalize
        )
        return rows

    def __getattr__(self, item: str) -> Any:
        return getattr(self._store, item)


def export_rows(view: QualityView, out: Path, fmt_: str, filters: dict[str, Any]) -> int:
    """The store's CSV/JSON export, through a :class:`QualityView`."""
    status = filters.pop("status", None)
    if fmt_ == "json":
        rows = view.measurements(status=status, with_samples=True, **filters)
        out.write_text(
            json.dumps({"devices": view.devices(), "measurements": rows}, indent=1, default=str)
        )
        return len(rows)
    rows = view.measurements(status=status, **filters)
    cols = view.EXPORT_COLUMNS
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([json.dumps(r[c]) if c == "choices" else r.get(c) for c in cols])
    return len(rows)
