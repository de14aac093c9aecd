"""Figures of a search: reward over time, and the accuracy-latency(-memory) front."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hwnas.searchers.base import History


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_LATENCY_KIND = {"table": "looked up", "predictor": "predicted", "device": "measured"}
MIB = float(1 << 20)


def term_labels(meta: dict) -> tuple[str, str]:
    """Axis labels of accuracy and latency, with units and where the values came from.

    Read from the objective's configuration recorded in the run's ``meta``; a
    term the configuration does not describe keeps a plain label.
    """
    obj = meta.get("objective") or {}
    acc = obj.get("accuracy") or {}
    kind = acc.get("evaluator") if isinstance(acc, dict) else None
    if kind == "naswot":
        acc_label = "NASWOT score (higher is better)"
    elif kind == "proxy":
        acc_label = "proxy-training accuracy"
    elif kind == "table" or (isinstance(acc, dict) and "column" in acc):
        acc_label = f"accuracy (%, table{': ' + acc['column'] if acc.get('column') else ''})"
    else:
        acc_label = "accuracy"
    lat = obj.get("latency") or {}
    how = _LATENCY_KIND.get(lat.get("latency", "") if isinstance(lat, dict) else "", "")
    return acc_label, f"latency (ms, {how})" if how else "latency (ms)"


def _values(history: History, name: str) -> np.ndarray:
    return np.array(
        [
            float(getattr(r.terms, name)) if getattr(r.terms, name) is not None else np.nan
            for r in history.records
        ],
        dtype=np.float64,
    )


def plot_reward_over_time(history: History, path: str | Path, title: str | None = None) -> Path:
    """Each candidate's reward by step (feasible / infeasible) and the best feasible so far.

    The lower panel shows the best feasible accuracy so far: the curve a
    regret is read from.
    """
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = np.arange(len(history))
    reward = _values(history, "reward")
    feas = np.array([r.feasible for r in history.records], dtype=bool)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7.0, 6.0), dpi=120, sharex=True)
    finite = np.isfinite(reward)
    ax1.scatter(steps[feas & finite], reward[feas & finite], s=8, c="tab:blue", label="feasible")
    ax1.scatter(
        steps[~feas & finite],
        reward[~feas & finite],
        s=8,
        c="tab:red",
        alpha=0.5,
        label="infeasible",
    )
    ax1.plot(steps, history.best_so_far("reward"), c="k", lw=1.5, label="best feasible so far")
    ax1.set_ylabel(f"reward ({(history.meta.get('objective') or {}).get('reward') or '?'})")
    ax1.legend(loc="lower right", fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.plot(steps, history.best_so_far("accuracy"), c="tab:green", lw=1.5)
    ax2.set_ylabel(f"best feasible {term_labels(history.meta)[0]}", fontsize=8)
    ax2.set_xlabel("candidate (step)")
    ax2.grid(alpha=0.3)
    meta = history.meta
    fig.suptitle(
        title
        or f"{meta.get('algorithm', '')} on {meta.get('space', '')} (seed {meta.get('seed', '')})"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_front(
    history: History,
    path: str | Path,
    latency_target_ms: float | None = None,
    memory_target_bytes: float | None = None,
    title: str | None = None,
) -> Path:
    """Accuracy against latency (and against memory when known), the Pareto front highlighted.

    Raises:
        ValueError: the history has neither latency nor memory terms to plot against.
    """
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    acc = _values(history, "accuracy")
    acc_label, lat_label = term_labels(history.meta)
    axes_terms = [
        (name, label, scale, target)
        for name, label, scale, target in (
            ("latency_ms", lat_label, 1.0, latency_target_ms),
            ("memory_bytes", "memory (MiB, lifetime estimate)", 1 / MIB, memory_target_bytes),
        )
        if np.isfinite(_values(history, name)).any()
    ]
    if not axes_terms:
        raise ValueError("the history has no latency or memory terms: there is no front to plot")
    front = history.pareto_front()
    feas = np.array([r.feasible for r in history.records], dtype=bool)
    fig, axes = plt.subplots(
        1, len(axes_terms), figsize=(6.0 * len(axes_terms), 4.6), dpi=120, squeeze=False
    )
    for ax, (name, label, scale, target) in zip(axes[0], axes_terms, strict=True):
        x = _values(history, name) * scale
        ok = np.isfinite(x) & np.isfinite(acc)
        ax.scatter(x[ok & feas], acc[ok & feas], s=10, c="tab:blue", alpha=0.6, label="feasible")
        ax.scatter(x[ok & ~feas], acc[ok & ~feas], s=10, c="tab:red", alpha=0.4, label="infeasible")
        fx = np.array([float(getattr(r.terms, name)) * scale for r in front])
        fy = np.array([float(r.terms.accuracy) for r in front])
        if len(front) and np.isfinite(fx).all():
            order = np.argsort(fx)
            ax.plot(fx[order], fy[order], "o-", c="k", ms=4, lw=1, label="Pareto front")
        if target is not None and math.isfinite(target):
            ax.axvline(target * scale, c="tab:orange", ls="--", lw=1, label="target")
        ax.set_xlabel(label)
        ax.set_ylabel(acc_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    meta = history.meta
    fig.suptitle(title or f"{meta.get('algorithm', '')} on {meta.get('space', '')}: accuracy front")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
