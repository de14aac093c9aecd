"""Point labels that do not overlap each other or the points they name.

Zoo models close in FLOPs and latency used to print their names on top of one
another. :func:`place_labels` tries eight offsets around each point, in order,
and keeps the first whose text box overlaps no label already placed and no
other point; when none is free it moves the label further out with a leader
line. Greedy, so it stays instant for the few dozen labels a figure can carry.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.text import Text

# Offsets in points: right, upper right, above, upper left, left, lower ...
_OFFSETS = ((6, 4), (6, 10), (0, 10), (-6, 10), (-6, 4), (6, -10), (0, -14), (-6, -10))


def place_labels(
    ax, labels: Sequence[str], xs: Sequence[float], ys: Sequence[float], fontsize: int = 8
) -> list:
    """Annotate each point of ``ax`` with its label, avoiding overlaps; returns the texts."""
    fig = ax.figure
    fig.canvas.draw()  # a renderer, and final axis limits, to measure text boxes
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    points = [to_px((x, y)) for x, y in zip(xs, ys, strict=True)]
    placed: list = []
    texts = []
    for i, (lab, x, y) in enumerate(zip(labels, xs, ys, strict=True)):
        chosen = None
        for scale in (1.0, 2.2, 3.4):
            for dx, dy in _OFFSETS:
                off = (dx * scale, dy * scale)
                t = ax.annotate(
                    lab,
                    (x, y),
                    textcoords="offset points",
                    xytext=off,
                    fontsize=fontsize,
                    ha="left" if dx >= 0 else "right",
                    va="bottom" if dy >= 0 else "top",
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6}
                    if scale > 1
                    else None,
                )
                t.update_positions(renderer)
                # The text alone: an Annotation's own extent includes its leader line.
                box = Text.get_window_extent(t, renderer).expanded(1.05, 1.1)
                clash = any(box.overlaps(b) for b in placed) or any(
                    box.contains(*p) for j, p in enumerate(points) if j != i
                )
                inside = ax.bbox.contains(box.x0, box.y0) and ax.bbox.contains(box.x1, box.y1)
                if not clash and inside:
                    chosen = (t, box)
                    if scale > 1:  # a label moved away gets a leader line to its point
                        corner = (box.x0 if dx >= 0 else box.x1, box.y0 if dy >= 0 else box.y1)
                        cx, cy = ax.transData.inverted().transform(corner)
                        ax.plot([x, cx], [y, cy], lw=0.6, color="0.5", scalex=False, scaley=False)
                    break
                t.remove()
            if chosen:
                break
        if chosen is None:  # crowded: the first position, drawn anyway rather than dropped
            t = ax.annotate(
                lab, (x, y), textcoords="offset points", xytext=_OFFSETS[0], fontsize=fontsize
            )
            chosen = (t, t.get_window_extent(renderer))
        placed.append(chosen[1])
        texts.append(chosen[0])
    return texts
