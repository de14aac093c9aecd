"""The ``hwnas`` command: a thin front for the library.

Every sub-command lives in a module of :mod:`hwnas.commands` that exposes
``register(subparsers)``; this file only discovers them, parses arguments and
is the one place where errors become messages. Nothing a user types may end in
a traceback (only ``--debug`` shows one):

* :class:`~hwnas.errors.HwnasError`, a bad option (argparse), an unreadable or
  unwritable file (``OSError``), a file that is not UTF-8 or not JSON, running
  out of memory: one line naming the file or option and the fix, exit 2;
* Ctrl-C: one line, exit 130 (measuring workers ignore SIGINT, so they print nothing);
* anything else is a bug of ours: one line pointing to ``--debug``, exit 1.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import io
import json
import os
import pkgutil
import re
import sqlite3
import sys
from types import TracebackType

from hwnas import __version__
from hwnas.errors import HwnasError


class _Parser(argparse.ArgumentParser):
    """argparse, with one-line errors: ``hwnas sample: error: --budget must be >= 1 (...)``.

    The usage block argparse prints before an error hides the one line that
    matters; ``--help`` still shows it.
    """

    def error(self, message: str):  # type: ignore[override]
        m = re.match(r"argument ([^:]+): (.*)$", message, re.S)
        if m and not m.group(2).startswith("invalid"):
            opt = m.group(1).split("/")[-1]
            text = m.group(2)
            message = (
                f"{opt} {text}" if re.match(r"(must|is|does|cannot) ", text) else f"{opt}: {text}"
            )
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    import hwnas.commands as commands

    parser = _Parser(
        prog="hwnas",
        description="Hardware-aware NAS: measure, predict and search for fast, small, accurate networks.",
    )
    parser.add_argument("--version", action="version", version=f"hwnas {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"hwnas.commands.{info.name}").register(sub)
    return parser


def _file_in_traceback(tb: TracebackType | None) -> str | None:
    """The innermost open file (or ``path`` variable) of the failing frames, to name it."""
    found = None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, io.IOBase | io.TextIOWrapper) and isinstance(
                getattr(value, "name", None), str
            ):
                found = value.name
        tb = tb.tb_next
    return found


_OS_FIX = {
    errno.ENOENT: "it (or its folder) does not exist; create the folder or give another path",
    errno.EACCES: "permission denied; give a path you may read/write",
    errno.EPERM: "operation not permitted; give a path you may read/write",
    errno.EROFS: "the file system is read-only; give a writable path",
    errno.EISDIR: "it is a directory; give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder; give another path",
    errno.ENOSPC: "the disk is full; free space or give a path on another disk",
    errno.ENAMETOOLONG: "the name is too long; give a shorter path",
}


def describe(exc: BaseException) -> tuple[str, int]:
    """One line and an exit status for an exception that reached the CLI's edge."""
    if isinstance(exc, HwnasError):
        return str(exc), exc.exit_code
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError)
        and re.search(r"can't allocate memory|out of memory|not enough memory", str(exc), re.I)
    ):
        return (
            "ran out of memory; give smaller sizes (--input-size, --input-shape, -n, batch) "
            "or free memory",
            2,
        )
    if isinstance(exc, UnicodeDecodeError):
        where = _file_in_traceback(exc.__traceback__) or "an input file"
        return (
            f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8",
            2,
        )
    if isinstance(exc, json.JSONDecodeError):
        where = _file_in_traceback(exc.__traceback__) or "a JSON value (file or store row)"
        return f"{where} is not valid JSON ({exc.msg}, line {exc.lineno}); fix or replace it", 2
    if isinstance(exc, OSError):
        name = exc.filename or _file_in_traceback(exc.__traceback__) or "a file"
        fix = _OS_FIX.get(exc.errno or -1, exc.strerror or str(exc))
        return f"cannot use {name}: {fix}", 2
    if isinstance(exc, sqlite3.DatabaseError):
        return f"the --db file could not be read or written ({exc}); check it or give another", 2
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return (
        f"internal error {type(exc).__name__}: {first} -- a bug in hwnas; run again with "
        "--debug for the traceback and report it",
        1,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HWNAS_DEBUG") == "1"
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, or a bad option (already printed)
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("hwnas: interrupted; everything recorded so far is kept", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        message, code = describe(exc)
        print(f"hwnas: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
