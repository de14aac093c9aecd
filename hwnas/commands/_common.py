"""Pieces shared by the CLI commands: model resolution, tables, progress bars."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
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
from rich.table import Table

from hwnas.arch import Arch
from hwnas.errors import ConfigError
from hwnas.export.artifact import Artifact, load_onnx, parse_shape

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


@dataclass
class ResolvedModel:
    """A zoo name or an .onnx path, turned into an artifact and an architecture id."""

    name: str
    arch: Arch
    artifact: Artifact


def resolve_model(name: str, input_shape: str | None = None) -> ResolvedModel:
    """``name`` is a zoo model or a path to an .onnx file.

    Raises:
        ConfigError / ProfilingError: neither a file nor a zoo name; bad file.
    """
    path = Path(name)
    if path.suffix.lower() == ".onnx" or path.exists() or "/" in name:
        shape = parse_shape(input_shape) if input_shape else None
        art = load_onnx(path, shape)
        return ResolvedModel(path.name, Arch("onnx", (art.sha256,)), art)
    from hwnas.export import to_onnx
    from hwnas.models import create_model, is_model, list_models, model_input_shape

    if not is_model(name):
        raise ConfigError(
            f"'{name}' is neither an existing file nor a zoo model; zoo models: "
            f"{', '.join(list_models())} (or give a path to a .onnx file)"
        )
    shape = parse_shape(input_shape) if input_shape else model_input_shape(name)
    import torch

    torch.manual_seed(0)
    model = create_model(name)
    from hwnas.source import ModelSource

    art = to_onnx(model, shape, label=name, source=ModelSource.zoo(name).to_dict())
    return ResolvedModel(name, Arch("zoo", (name,)), art)


def expand_models(names: Sequence[str]) -> list[str]:
    """``all`` stands for every zoo model, ``demo`` for the short set ``make demo`` profiles."""
    out: list[str] = []
    for n in names:
        if n in ("all", "demo"):
            from hwnas.models import list_models

            out.extend(list_models(demo=n == "demo"))
        else:
            out.append(n)
    return out


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title, header_style="bold")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    return t


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def human(n: float | None, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    if n is None:
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


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


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")


def add_measure_options(p) -> None:
    """The timing options shared by every command that measures."""
    p.add_argument(
        "--device", default="cpu-ort", help="device name (see `hwnas devices`); default cpu-ort"
    )
    p.add_argument("--threads", type=int, default=None, help="runtime threads (default 1)")
    p.add_argument(
        "--runs", type=int, default=None, help="exact number of timed runs (default: adaptive)"
    )
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs (default: adaptive)")
    p.add_argument(
        "--budget", type=float, default=None, help="seconds of timed runs per model (default 10)"
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds before a hung measurement is killed"
    )


def settings_from_args(args) -> Any:
    from hwnas.profilers.latency import MeasureSettings

    for opt in ("runs", "warmup", "threads"):
        v = getattr(args, opt, None)
        if v is not None and v < (0 if opt == "warmup" else 1):
            raise ConfigError(f"--{opt} must be {'>= 0' if opt == 'warmup' else '>= 1'}, got {v}")
    kw = {
        "runs": args.runs,
        "warmup": args.warmup,
        "budget_s": getattr(args, "budget", None),
        "timeout_s": getattr(args, "timeout", None),
    }
    return MeasureSettings(**{k: v for k, v in kw.items() if v is not None})
