"""Library helpers behind the ``--ray [ADDRESS]`` option of ``hwnas sample`` and ``hwnas search``.

Nothing here imports :mod:`hwnas.commands`: the library never reaches into
the CLI. The CLI side of ``hwnas sample --ray`` (parsing ``--device`` lists,
tables, progress bars) is :mod:`hwnas.commands._ray`.
"""

from __future__ import annotations

import warnings
from typing import Any


def ray_address(value: str | None) -> str | None:
    """``--ray`` alone (``""``) means a local cluster; ``--ray HOST:PORT`` / ``auto`` an existing one."""
    return value or None


def search_on_ray(
    searcher: Any,
    space: Any,
    objective: Any,
    budget: int,
    seed: int,
    *,
    address: str | None,
    log: Any = None,
    progress: Any = None,
) -> Any:
    """``hwnas search ... --ray [ADDRESS]``: :func:`~hwnas.distributed.run_search_ray`,
    with a warning when nothing could run in parallel."""
    from hwnas.distributed.search import fanout_note, run_search_ray

    history = run_search_ray(
        searcher,
        space,
        objective,
        budget,
        seed,
        log=log,
        progress=progress,
        address=ray_address(address),
    )
    note = fanout_note(history)
    if note:
        warnings.warn(note, stacklevel=2)
    return history
