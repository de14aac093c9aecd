"""Progress bars and the stderr console, shared by the CLI and library loops that report progress.

Kept in the library (not in ``hwnas.commands``) so that a long library step, such as
counting a space's FLOPs, can show a bar without importing the CLI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

err_console = Console(stderr=True)


@contextlib.contextmanager
def progress(total: int, description: str, enabled: bool = True) -> Iterator[Any]:
    """A progress bar with rate and ETA (shown when more than one item runs)."""
    if not enabled or total <= 1:

        class _Null:
            def advance(self, *_: Any, **__: Any) -> None: ...

            def update(self, *_: Any, **__: Any) -> None: ...

        yield _Null()
        return
    cols = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*cols, console=err_console, transient=False) as p:
        task = p.add_task(description, total=total, rate="", status="")

        class _Bar:
            def advance(self, n: int = 1, status: str = "") -> None:
                p.advance(task, n)
                t = p.tasks[0]
                per_min = t.completed / t.elapsed * 60 if t.elapsed else 0.0
                p.update(task, rate=f"{per_min:.1f}/min", status=status)

            def update(self, **kw: Any) -> None:
                p.update(task, **kw)

        yield _Bar()
