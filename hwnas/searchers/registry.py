"""The searcher registry, apart from the package ``__init__``.

Searcher modules import ``SEARCHERS`` from here to register themselves;
:func:`load_builtin` imports every searcher hwnas ships (the package
``__init__`` calls it).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from typing import Any

from hwnas.registry import Registry
from hwnas.searchers.base import Searcher

SEARCHERS: Registry[Searcher] = Registry("searcher")


def list_searchers() -> list[str]:
    return SEARCHERS.names()


def searcher_class(name: str) -> type[Searcher]:
    """The registered class (raises ConfigError naming the valid searchers)."""
    return SEARCHERS.factory(name)  # type: ignore[return-value]


def create_searcher(name: str, settings: Iterable[str] | None = None, **overrides: Any) -> Searcher:
    """Build searcher ``name`` with ``key=value`` settings and/or keyword overrides."""
    cls = searcher_class(name)
    searcher = cls.from_pairs(settings) if hasattr(cls, "from_pairs") else cls()
    if overrides:
        import dataclasses

        searcher.settings = dataclasses.replace(searcher.settings, **overrides)
    return searcher


_BUILTIN = (
    "random",
    "evolution",
    "mnasnet_rl",
    "npenas",
    "naswot",
    "latency_darts",
    "memnas",
    "autoslim",
)


def load_builtin() -> None:
    """Import (hence register) every shipped searcher."""
    for mod in _BUILTIN:
        if importlib.util.find_spec(f"hwnas.searchers.{mod}") is not None:
            importlib.import_module(f"hwnas.searchers.{mod}")
