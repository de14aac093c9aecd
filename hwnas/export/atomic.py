"""Atomic writes into the export cache, and clean-up of what a killed export left.

An exported file is written under a temporary name in the cache folder itself
(same file system, so the final rename is atomic), flushed to disk with
``fsync`` and renamed with :func:`os.replace`: a reader sees either no file or
the whole file, even after a power cut. A process killed mid-export (SIGKILL,
OOM) cannot remove its temporary file; the name carries the writer's pid, so the
next process that uses the cache deletes the ones whose writer is gone.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from hwnas.errors import ExportError

#: Prefix of temporary export files: ``.partial-PID-XXXX.onnx``.
PARTIAL_PREFIX = ".partial-"
#: Temporary files of hwnas versions before the pid prefix (``tmpXXXX.onnx``) are
#: removed once they are this old: no export takes that long.
_LEGACY_AGE_S = 6 * 3600.0
_cleaned: set[str] = set()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clean_partials(folder: str | Path) -> int:
    """Delete temporary files of dead writers in ``folder``; returns how many.

    Done once per folder per process (cheap: one directory listing).
    """
    folder = Path(folder)
    if str(folder) in _cleaned:
        return 0
    _cleaned.add(str(folder))
    removed = 0
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            name = entry.name
            stale = False
            if name.startswith(PARTIAL_PREFIX):
                pid_text = name[len(PARTIAL_PREFIX) :].split("-", 1)[0]
                stale = not pid_text.isdigit() or not _pid_alive(int(pid_text))
            elif name.startswith("tmp") and name.endswith((".onnx", ".tflite")):
                with contextlib.suppress(OSError):
                    stale = now - entry.stat().st_mtime > _LEGACY_AGE_S
            if stale:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def temp_path(folder: str | Path, suffix: str) -> str:
    """A new empty temporary file in ``folder`` named after this process."""
    clean_partials(folder)
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=f"{PARTIAL_PREFIX}{os.getpid()}-", dir=folder)
    os.close(fd)
    return tmp


def publish(tmp: str | Path, path: str | Path) -> None:
    """Make ``tmp`` durable and move it to ``path`` in one atomic step."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # persist the rename itself (not on every platform)
        dfd = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def written_atomically(
    folder: Path,
    suffix: str,
    path: Path,
    failure: str,
    advice: str,
    passthrough: tuple[type[BaseException], ...] = (ExportError,),
) -> Iterator[str]:
    """Yield a temporary file in ``folder`` to write; on success publish it as ``path``.

    Every exporter writes this way, so a crash mid-export never leaves a
    truncated file that a later run would take from the cache. An exception
    other than ``passthrough`` becomes an :class:`ExportError` that reads
    ``"{failure} (Type: first line of the message); {advice}"``.
    """
    tmp = temp_path(folder, suffix)
    try:
        yield tmp
        publish(tmp, path)
    except passthrough:
        raise
    except Exception as exc:
        raise ExportError(
            f"{failure} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            f"{advice}"
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def quiet(*logger_names: str) -> Iterator[None]:
    """Silence an exporter: these loggers above ERROR, warnings, and stdout.

    Exporters print progress lines and warnings a campaign does not want.
    """
    loggers = [logging.getLogger(n) for n in logger_names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)
