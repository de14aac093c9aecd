"""The noise ceiling: how well a store's measurements agree with themselves.

A random subset of a device's rows is measured again, in a shuffled order
(so a slow stretch of the machine does not fall on the same neighbours
twice), and compared with the stored medians: the share within +-5% and
+-10%, and Spearman's rho. No predictor trained on these rows can agree with
a new measurement better than the measurements agree with each other, so
``hwnas eval-predictor`` prints this next to a predictor's figures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hwnas.errors import ConfigError
from hwnas.store import quality


def agreement(first: list[float], second: list[float]) -> dict[str, Any]:
    """Repeat-vs-repeat figures of two paired lists of medians (pure)."""
    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    if len(a) != len(b) or len(a) < 2:
        raise ConfigError("repeatability needs at least 2 paired measurements")
    rel = np.abs(b / a - 1.0)
    from scipy.stats import spearmanr

    rho = float(spearmanr(a, b).statistic) if np.ptp(a) > 0 and np.ptp(b) > 0 else float("nan")
    return {
        "n": int(len(a)),
        "within5": float(np.mean(rel <= 0.05)),
        "within10": float(np.mean(rel <= 0.10)),
        "spearman": rho,
        "median_rel_diff": float(np.median(rel)),
    }


def choose_rows(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    """``n`` random rows in a shuffled order (a different order from the campaign's)."""
    if n <= 0:
        raise ConfigError(f"-n must be > 0, got {n}")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(rows))[: min(n, len(rows))]
    return [rows[int(i)] for i in idx]


def repeat_rows(
    store: Any,
    rows: list[dict],
    remeasure: Callable[[str], Any],
    *,
    device_name: str,
    campaign: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure ``rows`` again with ``remeasure(arch_id)`` and store the agreement."""
    first, second, pairs = [], [], []
    for r in rows:
        m = remeasure(r["arch_id"])
        if m is None:
            continue
        first.append(float(r["median_ms"]))
        second.append(float(m.median))
        pairs.append([r["arch_id"], float(r["median_ms"]), float(m.median)])
    res = agreement(first, second)
    res["pairs"] = pairs
    quality.ensure(store.conn)
    shape = rows[0].get("input_shape") if rows else None
    quality.add_repeatability(
        store.conn, device=device_name, input_shape=shape, campaign=campaign, result=res
    )
    if log:
        log(
            f"noise ceiling ({res['n']} archs re-measured): +-5% {res['within5']:.1%}, "
            f"+-10% {res['within10']:.1%}, Spearman {res['spearman']:.3f}"
        )
    return res


def unflagged_rows(store: Any, device: str, campaign: str | None = None) -> list[dict]:
    """The device's measured (not imported) ok rows whose flag is not pending."""
    states = quality.flag_states(store.conn)
    rows = store.measurements(device=device, campaign=campaign)
    return [
        r for r in rows if r.get("source") == "measured" and states.get(int(r["id"])) != "pending"
    ]


def campaign_repeatability(
    store: Any,
    device: Any,
    space: Any,
    options: dict[str, Any],
    settings: Any,
    device_name: str,
    campaign: str,
    n: int,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """End of a campaign: re-measure ``n`` of its rows (fewer when it has fewer)."""
    from hwnas.campaigns.step import prepare_arch

    rows = unflagged_rows(store, device_name, campaign)
    if len(rows) < 2:
        return None

    def remeasure(arch_id: str) -> Any:
        prepared = prepare_arch(space, store.arch(arch_id), **{**options, "check": False})
        if prepared.artifact is None:
            return None
        return device.measure(prepared.artifact, settings)

    return repeat_rows(
        store,
        choose_rows(rows, n, seed + 1),
        remeasure,
        device_name=device_name,
        campaign=campaign,
        log=log,
    )
