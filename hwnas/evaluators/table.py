"""Tabular benchmarks: accuracy (and latency) looked up in a CSV by architecture string.

A tabular benchmark such as NAS-Bench-201 lists every architecture of a
space once, with its trained accuracy and, often, its latency on a few
devices. Searching against it costs microseconds per query, so searchers can
be compared over many seeds with the exact optimum known.

The table is keyed by a column of architecture strings (``arch`` by default)
in the space's own string form (``space.format``). Lookups first try the
formatted string as written; a table whose strings are spelled differently
(extra spaces, another edge order the parser accepts) is parsed once, row by
row, and keyed by architecture id. A miss names the architecture, the table
and how many rows it has, never a bare ``KeyError``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.errors import ConfigError, SpaceError
from hwnas.evaluators.base import AccuracyEvaluator

if TYPE_CHECKING:
    from hwnas.arch import Arch
    from hwnas.spaces.base import SearchSpace

DEFAULT_KEY = "arch"
ACCURACY_COLUMNS = ("accuracy", "acc", "cifar10_acc", "test_acc", "val_acc")

_TABLES: dict[tuple[str, float, str], BenchmarkTable] = {}


class BenchmarkTable:
    """A CSV of architectures, one row each, read once.

    Args:
        path: the CSV file (first line is the header).
        key: the column holding architecture strings.

    Raises:
        ConfigError: missing file, no such key column, empty table.
    """

    def __init__(self, path: str | Path, key: str = DEFAULT_KEY):
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(
                f"benchmark table {self.path} does not exist; give a CSV with a '{key}' column "
                "of architecture strings (e.g. nb201_benchmark.csv)"
            )
        with open(self.path, newline="") as f:
            reader = csv.reader(f)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ConfigError(f"benchmark table {self.path} is empty") from None
            rows = [r for r in reader if r]
        if key not in header:
            raise ConfigError(
                f"benchmark table {self.path} has no '{key}' column of architecture strings; "
                f"its columns are: {', '.join(header)}"
            )
        if not rows:
            raise ConfigError(f"benchmark table {self.path} has a header but no rows")
        self.key = key
        self.header = header
        self._raw = {
            name: [r[i] if i < len(r) else "" for r in rows] for i, name in enumerate(header)
        }
        self._by_text = {s.strip(): i for i, s in enumerate(self._raw[key])}
        self._by_id: dict[str, dict[str, int]] = {}  # space name -> arch id -> row
        self._floats: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._raw[self.key])

    @property
    def columns(self) -> list[str]:
        return list(self.header)

    def column(self, name: str) -> np.ndarray:
        """A numeric column as float64 (empty cells are NaN).

        Raises:
            ConfigError: no such column, or it holds text.
        """
        if name not in self._floats:
            if name not in self._raw:
                raise ConfigError(
                    f"benchmark table {self.path} has no column '{name}'; its columns are: "
                    f"{', '.join(self.header)}"
                )
            try:
                self._floats[name] = np.array(
                    [float(v) if v.strip() else math.nan for v in self._raw[name]], dtype=np.float64
                )
            except ValueError as exc:
                raise ConfigError(
                    f"column '{name}' of {self.path} is not numeric ({exc}); pick a numeric column"
                ) from exc
        return self._floats[name]

    def strings(self) -> list[str]:
        return list(self._raw[self.key])

    def _id_index(self, space: SearchSpace) -> dict[str, int]:
        if space.name not in self._by_id:
            index: dict[str, int] = {}
            for i, text in enumerate(self._raw[self.key]):
                try:
                    index.setdefault(space.parse(text).id, i)
                except SpaceError:
                    continue  # rows of another space, or malformed: they can never match
            self._by_id[space.name] = index
        return self._by_id[space.name]

    def row_of(self, space: SearchSpace, arch: Arch) -> int:
        """Row index of ``arch``.

        Raises:
            ConfigError: the architecture is not in the table.
        """
        text = space.format(arch)
        row = self._by_text.get(text)
        if row is not None:
            return row
        row = self._id_index(space).get(arch.id)
        if row is None:
            raise ConfigError(
                f"architecture {text} ({arch}) is not in benchmark table {self.path} "
                f"({len(self)} rows, none of '{space.name}' matches); use the table of this space, "
                "or an evaluator that does not need one (naswot, proxy)"
            )
        return row

    def value(self, space: SearchSpace, arch: Arch, column: str) -> float:
        return float(self.column(column)[self.row_of(space, arch)])

    def archs(self, space: SearchSpace) -> list[Arch]:
        """Every row's architecture (rows of other spaces are skipped)."""
        out = []
        for text in self._raw[self.key]:
            try:
                out.append(space.parse(text))
            except SpaceError:
                continue
        return out

    def default_accuracy_column(self) -> str:
        for c in ACCURACY_COLUMNS:
            if c in self.header:
                return c
        raise ConfigError(
            f"benchmark table {self.path} has none of the usual accuracy columns "
            f"({', '.join(ACCURACY_COLUMNS)}); name one: table:{self.path}:COLUMN "
            f"(columns: {', '.join(self.header)})"
        )


def load_table(path: str | Path, key: str = DEFAULT_KEY) -> BenchmarkTable:
    """A :class:`BenchmarkTable`, shared between the accuracy and latency terms of one run."""
    p = Path(path).resolve()
    mtime = p.stat().st_mtime if p.exists() else -1.0
    k = (str(p), mtime, key)
    if k not in _TABLES:
        _TABLES[k] = BenchmarkTable(p, key)
    return _TABLES[k]


def split_table_spec(target: str | None, what: str = "table") -> tuple[str, str | None]:
    """``FILE`` or ``FILE:COLUMN`` -> (file, column or None).

    A path that exists as written wins, so a file name holding a colon still works.
    """
    if not target:
        raise ConfigError(f"{what} needs a CSV file: table:FILE[:COLUMN]")
    if Path(target).exists() or ":" not in target:
        return target, None
    file, column = target.rsplit(":", 1)
    return file, (column or None)


class TableEvaluator(AccuracyEvaluator):
    """Accuracy read from a column of a benchmark CSV (``table:FILE[:COLUMN]``).

    Args:
        path: the CSV.
        column: accuracy column; default: the first of ``accuracy``, ``acc``,
            ``cifar10_acc``, ``test_acc``, ``val_acc`` the table has.
        key: column of architecture strings.
    """

    name = "table"
    cost = "cheap"  # a lookup

    def __init__(self, path: str | Path, column: str | None = None, key: str = DEFAULT_KEY):
        self.table = load_table(path, key)
        self.column_name = column or self.table.default_accuracy_column()
        self.table.column(self.column_name)  # unknown/non-numeric column: fail now
        self.unit = "%" if "acc" in self.column_name.lower() else "score"

    def evaluate(self, space: SearchSpace, archs: Sequence[Arch]) -> list[float]:
        return [self.table.value(space, a, self.column_name) for a in archs]

    def config(self) -> dict[str, Any]:
        return {
            "evaluator": "table",
            "path": str(self.table.path),
            "column": self.column_name,
            "key": self.table.key,
        }
