"""Helpers shared by the search-loop tests (tests/test_search_loop.py, tests/test_ray.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def write_synthetic_nb201(path: Path) -> Path:
    """Every NB201 cell with a made-up accuracy and latency (deterministic, no shared data).

    Columns ``arch``, ``acc`` (70-95) and ``lat`` (4-24 ms), from a hash of each
    architecture's id.
    """
    from hwnas.spaces import get_space

    space = get_space("nb201")
    lines = ["arch,acc,lat"]
    for a in space.all_archs():
        h = hashlib.sha256(a.id.encode()).digest()
        acc = 70 + int.from_bytes(h[:4]) % 2500 / 100
        lat = 4 + int.from_bytes(h[4:8]) % 2000 / 100
        lines.append(f"{space.format(a)},{acc:.2f},{lat:.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path
