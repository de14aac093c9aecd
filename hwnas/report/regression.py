"""The figure of ``hwnas compare --plot``: per model, the latency ratio new/base and its CI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

_COLORS = {"slower": "crimson", "faster": "seagreen", "same": "dimgray"}


def plot_comparisons(rows: Sequence[Any], path: str | Path, *, threshold: float) -> Path:
    """A forest plot: one line per model, the drift-corrected ratio as a dot and its CI as a bar.

    The band 1/(1+t) .. 1+t marks the tolerated change; a model is red (slower)
    when its CI lies above 1 and reaches past the band, green (faster) in the
    mirror case. Crosses mark the ratio before the reference's drift was taken out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.38 * n), dpi=120)
    ax.axvspan(1.0 / (1.0 + threshold), 1.0 + threshold, color="gold", alpha=0.15,
               label=f"within the threshold ({threshold:.1%})")  # fmt: skip
    ax.axvline(1.0, color="black", lw=0.8)
    for i, c in enumerate(rows):
        y = n - 1 - i
        e = c.estimate
        color = _COLORS.get(c.verdict, "dimgray")
        ax.plot([e.lo, e.hi], [y, y], color=color, lw=2.2, solid_capstyle="butt")
        ax.plot([e.ratio], [y], "o", color=color, ms=5)
        if e.drift is not None:
            ax.plot([e.model_ratio], [y], "x", color="gray", ms=5)
        ax.annotate(f"{e.ratio:.3f} {c.verdict}", (max(e.hi, e.model_ratio), y), xytext=(6, -3),
                    textcoords="offset points", fontsize=7.5, color=color)  # fmt: skip
    labels = [c.name if len(c.name) <= 48 else "..." + c.name[-45:] for c in rows]
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels[::-1], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    conf = rows[0].estimate.confidence if rows else 0.95
    ax.set_xlabel(f"median latency new / base, reference drift taken out ({conf:.0%} CI)")
    ax.plot([], [], "x", color="gray", label="before drift correction")
    ax.legend(fontsize=7.5, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    lo = min([c.estimate.lo for c in rows] + [1.0 / (1.0 + threshold)])
    hi = max([c.estimate.hi for c in rows] + [1.0 + threshold])
    pad = 0.15 * (hi - lo)
    ax.set_xlim(lo - pad, hi + 2.5 * pad)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
