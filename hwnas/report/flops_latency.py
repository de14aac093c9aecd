"""FLOPs against measured latency: the figure that shows why hwnas measures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hwnas.report.labels import place_labels


def plot_flops_vs_latency(
    labels: Sequence[str],
    flops: Sequence[float],
    latency_ms: Sequence[float],
    path: str | Path,
    title: str = "FLOPs vs measured latency",
    spread_ms: Sequence[float] | None = None,
    annotate: bool = True,
) -> Path:
    """Scatter of latency against FLOPs with a least-squares line.

    Args:
        spread_ms: optional IQR per point, drawn as vertical error bars.
        annotate: write each label next to its point (use for a few points).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(flops, dtype=float) / 1e9
    y = np.asarray(latency_ms, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    if spread_ms is not None:
        ax.errorbar(
            x, y, yerr=np.asarray(spread_ms) / 2, fmt="o", capsize=3, label="median (bar: IQR)"
        )
    else:
        ax.scatter(x, y, s=14, alpha=0.8, label="measured")
    if len(x) >= 2 and np.ptp(x) > 0:
        a, b = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 50)
        r = np.corrcoef(x, y)[0, 1]
        ax.plot(xs, a * xs + b, "--", color="gray", label=f"least squares (r = {r:.2f})")
    ax.set_xlabel("GFLOPs (1 MAC = 2 FLOPs)")
    ax.set_ylabel("latency, median (ms)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if len(x):
        # Room for labels: margins first, then labels placed where they overlap nothing.
        ax.margins(x=0.18, y=0.15)
    fig.tight_layout()
    if annotate:
        place_labels(ax, list(labels), x, y)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
