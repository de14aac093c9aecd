"""The architecture value every stage passes along.

An :class:`Arch` is a frozen, hashable pair (search-space name, choices). The
choices are a tuple of plain JSON values (ints for categorical decisions, in
the order the space defines its decisions). Its :attr:`id` is a hash of a
canonical JSON form, so the same architecture gets the same id in every
process, on every machine, in every database.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from hwnas.errors import SpaceError


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    # numpy scalars
    if hasattr(value, "item"):
        return _freeze(value.item())
    raise SpaceError(
        f"architecture choices must be ints, floats, strings or tuples of them, got {type(value).__name__}"
    )


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Arch:
    """An architecture of a search space.

    Attributes:
        space: registry name of the search space (``"nb201"``, ``"mnasnet"``...).
        choices: one entry per decision of the space, as the space defines them.
    """

    space: str
    choices: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", _freeze(self.choices))

    def canonical_json(self) -> str:
        """Compact, key-sorted JSON: the form the id is computed from."""
        return json.dumps(
            {"space": self.space, "choices": _thaw(self.choices)},
            sort_keys=True,
            separators=(",", ":"),
        )

    @functools.cached_property
    def id(self) -> str:
        """Stable 16-hex-digit id: sha256 of :meth:`canonical_json` (computed once: searches
        ask for it at every step)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return self.canonical_json()

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            data = json.loads(text)
            return cls(space=str(data["space"]), choices=tuple(data["choices"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise SpaceError(
                f'not an architecture JSON ({exc}); expected {{"space": NAME, "choices": [...]}}'
            ) from exc

    def __str__(self) -> str:
        return f"{self.space}:{self.id}"
