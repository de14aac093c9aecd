"""The lifetime chart, in the manner of the MemNAS paper's figure 3.

One row per buffer with a bar from the step that allocates it to the step
after which it is freed; below, the live-bytes curve over the same steps with
the peak marked (and the planned arena, when given). A bar's colour is the
buffer's size (colorbar in MiB) and buffers alive at the peak are outlined, so
the chart answers "what makes the peak". Sizes are binary (MiB), as in
``hwnas memory``'s table.
"""

from __future__ import annotations

from pathlib import Path

from hwnas.profilers.memory.arena import ArenaPlan
from hwnas.profilers.memory.lifetime import MemoryReport

MIB = float(1 << 20)


def human_bytes(n: float) -> str:
    """Binary units (KiB, MiB, GiB): the one convention of memory tables and plots."""
    for div, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {suffix}"
    return f"{n:.0f} B"


def plot_lifetimes(
    report: MemoryReport,
    path: str | Path,
    *,
    plan: ArenaPlan | None = None,
    title: str | None = None,
    max_rows: int = 120,
) -> Path:
    """Draw the lifetime chart of ``report`` into ``path`` (PNG, SVG or PDF by suffix).

    Each buffer is a bar from birth to death whose colour gives its size (log
    scale, colorbar in MiB); buffers alive at the peak are outlined in red, graph
    inputs and outputs hatched. The curve below is the live bytes in MiB.

    Args:
        plan: draws the planned arena size as a line over the live-bytes curve.
        max_rows: beyond this many buffers only the largest are drawn (the curve
            always counts all of them); the title says how many were left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    kinds = {t.name: t.kind for t in report.tensors}
    buffers = [b for b in report.buffers if b.nbytes > 0]
    hidden = 0
    if len(buffers) > max_rows:
        keep = {b.name for b in sorted(buffers, key=lambda b: -b.nbytes)[:max_rows]}
        hidden = len(buffers) - max_rows
        buffers = [b for b in buffers if b.name in keep]
    buffers.sort(key=lambda b: (b.birth, b.death))
    peak_step = report.peak_step
    alive = set(report.alive_at_peak)
    n_steps = len(report.timeline)
    rows = len(buffers)
    labelled = rows <= 40
    bars_h = min(2.0 + (0.14 if labelled else 0.05) * rows, 7.0)
    fig, (ax_bars, ax_curve) = plt.subplots(
        2,
        1,
        figsize=(10.0 if labelled else 9.0, bars_h + 2.6),
        dpi=100,
        sharex=True,
        gridspec_kw={"height_ratios": [bars_h, 2.2]},
    )
    sizes = [b.nbytes / MIB for b in buffers] or [1.0]
    lo, hi = min(sizes), max(sizes)
    norm = LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 10)
    cmap = plt.get_cmap("viridis")
    for row, b in enumerate(buffers):
        strong = b.name in alive
        kind = kinds.get(b.name, "activation")
        ax_bars.barh(
            row,
            b.death - b.birth + 1,
            left=b.birth - 0.5,
            height=0.8,
            color=cmap(norm(b.nbytes / MIB)),
            edgecolor="#c44e52" if strong else "none",
            linewidth=1.2 if strong else 0,
            hatch="///" if kind in ("input", "output") else None,
        )
    if labelled:
        ax_bars.set_yticks(range(rows))
        labels = [f"{b.name[:28]} ({human_bytes(b.nbytes)})" for b in buffers]
        ax_bars.set_yticklabels(labels, fontsize=6)
    else:
        ax_bars.set_yticks([])
    ax_bars.set_ylabel(f"buffers ({rows}, by birth)")
    ax_bars.invert_yaxis()
    ax_bars.axvline(peak_step, color="#c44e52", lw=0.8, ls="--")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    # An inset colorbar leaves both panels their full, shared width.
    cbar = fig.colorbar(sm, cax=ax_bars.inset_axes((1.01, 0.0, 0.015, 1.0)))
    cbar.set_label("buffer size (MiB)", fontsize=8)
    cbar.ax.tick_params(labelsize=7, which="both")
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_bars.legend(
        handles=[
            Patch(facecolor="white", edgecolor="#c44e52", label="alive at the peak"),
            Patch(facecolor="white", edgecolor="#555555", hatch="///", label="graph input/output"),
            plt.Line2D([], [], color="#c44e52", ls="--", lw=0.8, label=f"peak step {peak_step}"),
        ],
        fontsize=7,
        loc="lower left" if labelled else "upper right",
    )
    head = title or f"tensor lifetimes: {Path(report.model).name or 'model'}"
    if hidden:
        head += f" ({hidden} smaller buffers not drawn)"
    ax_bars.set_title(head, fontsize=9)
    steps = list(range(n_steps))
    live = [v / MIB for v in report.timeline]
    ax_curve.step(steps, live, where="mid", color="#333333", lw=1.0, label="live activations")
    ax_curve.fill_between(steps, live, step="mid", alpha=0.15, color="#333333")
    ax_curve.plot(
        [peak_step],
        [report.peak_activation_bytes / MIB],
        "o",
        color="#c44e52",
        label=f"peak {human_bytes(report.peak_activation_bytes)} at step {peak_step}",
    )
    if plan is not None:
        ax_curve.axhline(
            plan.size / MIB,
            color="#4c72b0",
            ls=":",
            lw=1.0,
            label=f"planned arena {human_bytes(plan.size)}",
        )
    ax_curve.set_xlabel("execution step (node index in the order used)")
    ax_curve.set_ylabel("live (MiB)")
    ax_curve.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax_curve.legend(fontsize=7, loc="upper right")
    ax_curve.set_xlim(-0.5, max(n_steps - 0.5, 0.5))
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out
