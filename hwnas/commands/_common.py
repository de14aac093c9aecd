"""Pieces shared by the CLI commands: model resolution, tables, progress bars."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hwnas.arch import Arch
from hwnas.errors import ConfigError
from hwnas.export.artifact import Artifact, load_onnx, parse_shape
from hwnas.report.progress import err_console, progress  # noqa: F401  (re-exported for commands)

console = Console(width=None if sys.stdout.isatty() else 160)


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


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")


def open_store(path: str | Path, readonly: bool = False) -> Any:
    """Open an hwnas store and tell the user what opening it did (a migration's notes)."""
    from hwnas.store import Store

    store = Store(path, readonly=readonly)
    for note in store.notes:
        err_console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    return store


def add_measure_options(p) -> None:
    """The timing options shared by every command that measures."""
    p.add_argument(
        "--device", default="cpu-ort", help="device name (see `hwnas devices`); default cpu-ort"
    )
    p.add_argument("--threads", type=count, default=None, help="runtime threads (default 1)")
    p.add_argument(
        "--runs", type=count, default=None, help="exact number of timed runs (default: adaptive)"
    )
    p.add_argument(
        "--warmup", type=nonneg_int, default=None, help="warm-up runs (default: adaptive)"
    )
    add_seconds_option(p, help="seconds of timed runs per model (default 10)")
    p.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        help="seconds before a hung measurement is killed",
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
        "budget_s": getattr(args, "seconds", None),
        "timeout_s": getattr(args, "timeout", None),
    }
    return MeasureSettings(**{k: v for k, v in kw.items() if v is not None})


# ---- option types: every number is range-checked when it is parsed ------------------------
#
# argparse turns an ArgumentTypeError into "hwnas CMD: error: argument --x: MESSAGE" and
# exit status 2, before any heavy module (torch) is imported and before anything is stored.

#: Largest input tensor accepted, in elements, when the machine's memory cannot be read.
_FALLBACK_MAX_ELEMENTS = 1 << 28


def _int(text: str, what: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None


def _bounded_int(lo: int, what: str, hi: int | None = None):
    def parse(text: str) -> int:
        v = _int(text, f"an integer ({what})")
        if v < lo or (hi is not None and v > hi):
            bound = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise argparse.ArgumentTypeError(f"must be {bound} ({what}), got {v}")
        return v

    parse.__name__ = "integer"  # what argparse names in "invalid integer value"
    return parse


#: A count of things (runs, threads, architectures, evaluations...): an integer >= 1.
count = _bounded_int(1, "a count")
#: Warm-up runs, retries, pairs to show: an integer >= 0.
nonneg_int = _bounded_int(0, "zero or more")
#: A random seed: numpy accepts 0 .. 2**32 - 1 for every generator we seed.
seed = _bounded_int(0, "a seed", 2**32 - 1)
#: Classifier outputs.
num_classes = _bounded_int(1, "classifier outputs", 1_000_000)


def seconds(text: str) -> float:
    """A duration in seconds: a finite number > 0."""
    try:
        v = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return v


def fraction(text: str) -> float:
    """A relative tolerance or share: a finite number >= 0."""
    try:
        v = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def probability(text: str) -> float:
    """A share or confidence level strictly between 0 and 1."""
    v = fraction(text)
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(
            f"must be a number between 0 and 1 (exclusive), got {text}"
        )
    return v


def finite_float(text: str) -> float:
    """Any finite number (weights of a reward may be negative)."""
    try:
        v = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


def available_memory_bytes() -> int | None:
    """Physical memory available now (Linux ``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_elements(elements: int, what: str) -> None:
    """Refuse an input whose float32 tensor alone would not fit in memory.

    A network's activations are many times its input, so an input larger than
    a tenth of the available memory cannot be built, exported or measured.
    """
    avail = available_memory_bytes()
    limit = avail // 40 if avail else _FALLBACK_MAX_ELEMENTS  # 4-byte floats, 1/10 of memory
    if elements > limit:
        gib = (avail or _FALLBACK_MAX_ELEMENTS * 40) / 2**30
        raise argparse.ArgumentTypeError(
            f"{what} needs {elements * 4 / 2**30:.1f} GiB for the input alone; more than this "
            f"machine's memory allows ({gib:.1f} GiB available): give a smaller size"
        )


def input_size(text: str) -> int:
    """An image side in pixels: >= 1, and a 3-channel image of it must fit in memory."""
    v = _int(text, "an integer (input side in pixels)")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an input side >= 1 pixel, got {v}")
    _check_elements(3 * v * v, f"input side {v}")
    return v


def input_shape(text: str) -> str:
    """``1,3,224,224``: positive integers whose product fits in memory (kept as text)."""
    from hwnas.export.artifact import parse_shape

    try:
        shape = parse_shape(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    _check_elements(math.prod(shape), f"input shape {text}")
    return text


def add_seconds_option(p, help: str, dest: str = "seconds", old: str = "--budget") -> None:
    """``--seconds`` (a time budget), with the old spelling ``--budget`` as a deprecated alias.

    ``--budget`` means a number of evaluations in ``hwnas search``; the time
    budget of the measuring commands is ``--seconds``. Old scripts keep working
    and are told once on stderr.
    """
    p.add_argument("--seconds", dest=dest, type=seconds, default=None, help=help)
    p.add_argument(
        old,
        dest=dest,
        type=seconds,
        action=_DeprecatedAlias,
        new="--seconds",
        default=None,
        help=argparse.SUPPRESS,
    )


class _DeprecatedAlias(argparse.Action):
    """Store the value and print one line naming the new option."""

    def __init__(self, option_strings, dest, new: str, **kw):
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"hwnas: note: {option_string} is deprecated here; use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def out_file(text: str) -> str:
    """A file to write: not a directory; its folder must exist and be writable.

    Checked at parse time so that a long run does not fail at its very end.
    """
    if not text or not str(text).strip():
        raise argparse.ArgumentTypeError("is empty; give a file name")
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name inside it")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise argparse.ArgumentTypeError(
            f"folder {parent} does not exist; create it first or give another path"
        )
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{parent} is not a directory; give another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {parent}; give a writable path")
    if p.exists() and not os.access(p, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text} is not writable; give another file")
    return text


def out_dir(text: str) -> str:
    """A folder to write into: not a file, and creatable/writable."""
    if not text or not str(text).strip():
        raise argparse.ArgumentTypeError("is empty; give a folder name")
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is not a directory; give another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {existing}; give a writable folder")
    return text


def in_file(text: str) -> str:
    """A file to read: exists and is not a directory."""
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file")
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    if not os.access(p, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text} is not readable")
    return text


def check_settings(factory: Any, values: dict[str, Any], what: str) -> None:
    """Type- and range-check ``--set`` values against the defaults of ``factory``'s keywords.

    A setting whose default is a positive integer (epochs, ensemble, hidden width,
    trees) must be an integer >= 1; a non-negative default allows 0; a number must
    be finite, and >= 0 when its default is (rates, decays); a flag must be
    true/false. Keys the signature does not name are left to the factory.

    Raises:
        ConfigError: naming the setting, what it takes and what was given.
    """
    import inspect

    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return
    for key, value in values.items():
        param = params.get(key)
        if param is None or param.default is inspect.Parameter.empty or param.default is None:
            continue
        default = param.default
        where = f"--set {key}={value!r} ({what})"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: takes true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}: takes an integer")
            low = 1 if default >= 1 else 0
            if default >= 0 and value < low:
                raise ConfigError(f"{where}: must be >= {low}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{where}: takes a number")
            if not math.isfinite(value):
                raise ConfigError(f"{where}: must be a finite number")
            if default >= 0 and value < 0:
                raise ConfigError(f"{where}: must be >= 0")
        elif isinstance(default, list | tuple):
            items = value if isinstance(value, list | tuple) else [value]
            if all(isinstance(d, int) and not isinstance(d, bool) for d in default) and not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items
            ):
                raise ConfigError(f"{where}: takes integers >= 1 (e.g. [128,128])")
