"""Progress bars and the stderr console, shared by the CLI and library loops that report progress.

Kept in the library (not in ``hwnas.commands``) so that a long library step, such as
counting a space's FLOPs, can show a bar without importing the CLI.

Two levels:

- :func:`progress` is a command's own bar (``hwnas search``'s candidates, ``hwnas
  sample``'s architectures). ``enabled=False`` (``--quiet``, ``--json``) also silences
  every step inside it.
- :func:`step` is a long step *inside* a library call (proxy training epochs, a
  supernet's training, the cells Latency-DARTS measures for its latency module). It
  shows only inside an enabled command's bar (or an :func:`enable_steps` scope), so
  library users and tests stay silent. Inside a running bar it is one more line of
  the same display; when it ends it prints one line with what it did (``N/N``, time,
  rate), so a log file keeps it too.
"""

from __future__ import annotations

import contextlib
import sys
import time
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

# Redirected to a file (a log, a CI job), rich would assume 80 columns and cut the bar's
# counts ("7…" for "7/7"); 160, as the stdout console of the CLI.
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

# The running display (one per process: rich allows one live display per console,
# so nested bars become tasks of the outermost one) and the enabled/silenced scopes.
_LIVE: list[Progress] = []
_SCOPES: list[bool] = []


class _Null:
    """A bar that shows nothing (disabled, or a single item)."""

    def advance(self, *_: Any, **__: Any) -> None: ...

    def update(self, *_: Any, **__: Any) -> None: ...

    def finish(self) -> None: ...


def _rate(done: float, elapsed: float | None, unit: str = "") -> str:
    """``12.3/s`` when at least one per second, else ``4.5/min``: readable at both ends."""
    if not elapsed or done <= 0:
        return ""
    per_s = done / elapsed
    u = f" {unit}" if unit else ""
    return f"{per_s:.1f}{u}/s" if per_s >= 1.0 else f"{per_s * 60:.1f}{u}/min"


class _Bar:
    """One task of a rich Progress: ``advance`` moves it and refreshes its rate."""

    def __init__(self, p: Progress, task: Any, unit: str = ""):
        self.p, self.task, self.unit = p, task, unit

    def _t(self) -> Any:
        return next(t for t in self.p.tasks if t.id == self.task)

    def advance(self, n: int = 1, status: str = "") -> None:
        self.p.advance(self.task, n)
        t = self._t()
        kw: dict[str, Any] = {"rate": _rate(t.completed, t.elapsed, self.unit)}
        if status:
            kw["status"] = status
        self.p.update(self.task, **kw)

    def update(self, **kw: Any) -> None:
        self.p.update(self.task, **kw)

    def finish(self) -> None:
        """Mark the work done where it ended early (a searcher that proposes fewer
        candidates than ``--budget`` allows): the bar ends at ``N/N``, not ``1/5 20%``."""
        t = self._t()
        if t.total is None or t.completed < t.total:
            self.p.update(self.task, total=max(1, int(t.completed)), completed=t.completed)

    def done_line(self, description: str) -> str:
        t = self._t()
        took = time.strftime("%H:%M:%S", time.gmtime(t.elapsed or 0.0))
        rate = _rate(t.completed, t.elapsed, self.unit)
        total = int(t.total) if t.total is not None else int(t.completed)
        return f"{description}: {int(t.completed)}/{total} in {took}" + (
            f" ({rate})" if rate else ""
        )


def _columns() -> tuple[Any, ...]:
    return (
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


def steps_enabled() -> bool:
    """Whether a :func:`step` would show: inside an enabled command bar or scope."""
    return bool(_SCOPES) and _SCOPES[-1]


@contextlib.contextmanager
def enable_steps(enabled: bool = True) -> Iterator[None]:
    """Show (or silence) the :func:`step` bars of library calls made inside, without a bar of its own."""
    _SCOPES.append(bool(enabled))
    try:
        yield
    finally:
        _SCOPES.pop()


def announce(text: str) -> None:
    """One line saying what a long step is about to do and roughly how long, when steps show."""
    if steps_enabled():
        err_console.print(text)


@contextlib.contextmanager
def _task(total: int, description: str, unit: str, keep: bool, transient: bool) -> Iterator[Any]:
    if _LIVE:  # a bar is running: one more line of its display
        p = _LIVE[-1]
        task = p.add_task(description, total=total, rate="", status="")
        bar = _Bar(p, task, unit)
        try:
            yield bar
        finally:
            if keep:
                p.console.print(bar.done_line(description))
            p.remove_task(task)
        return
    with Progress(*_columns(), console=err_console, transient=transient) as p:
        _LIVE.append(p)
        try:
            task = p.add_task(description, total=total, rate="", status="")
            bar = _Bar(p, task, unit)
            yield bar
            if keep and transient:
                p.console.print(bar.done_line(description))
        finally:
            _LIVE.pop()


@contextlib.contextmanager
def progress(
    total: int, description: str, enabled: bool = True, *, unit: str = ""
) -> Iterator[Any]:
    """A command's progress bar with rate and ETA (shown when more than one item runs).

    ``enabled=False`` also silences the :func:`step` bars of everything called inside.
    """
    with enable_steps(enabled):
        if not enabled or total <= 1:
            yield _Null()
            return
        with _task(total, description, unit, keep=bool(_LIVE), transient=False) as bar:
            yield bar


@contextlib.contextmanager
def step(
    total: int,
    description: str,
    *,
    plan: str | None = None,
    unit: str = "",
    keep: bool = True,
) -> Iterator[Any]:
    """A bar for a long step inside a library call, shown only where steps are enabled.

    Args:
        total: items the step will do (epochs, batches, cells...).
        description: what the bar is labelled with.
        plan: printed first: what the step is about to do and roughly how long.
        unit: shown with the rate (``batches/s``).
        keep: print a one-line record (``N/N`` in time, rate) when it ends; off for
            steps repeated per candidate, whose count the command's bar already shows.
    """
    if not steps_enabled() or total < 1:
        yield _Null()
        return
    if plan:
        err_console.print(plan)
    with _task(total, description, unit, keep=keep, transient=True) as bar:
        yield bar
