"""Searchers, one registry and one interface: ``create_searcher("evolution").run(space, objective, budget, seed)``.

Built in: ``random``, ``evolution`` (regularised evolution), ``mnasnet-rl``
(MnasNet's LSTM controller trained with PPO) and ``naswot`` (training-free
scoring). Adding a searcher is registering a :class:`Searcher` subclass with
a ``Settings`` dataclass::

    @SEARCHERS.register("my-search")
    class MySearch(Searcher):
        name = "my-search"
        Settings = MySettings
        def reset(self, space, seed, budget, objective): ...
        def propose(self, n): ...
        def update(self, records): ...

The CLI (``hwnas search my-search --set key=value``) and the tests pick it up
from the registry; third-party searchers come through the
``hwnas.searchers`` entry-point group.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from typing import Any

from hwnas.registry import Registry
from hwnas.searchers.base import Candidate, History, Record, Searcher, pareto_front
from hwnas.store.search_log import SearchLog

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


_BUILTIN = ("random", "evolution", "mnasnet_rl", "naswot")


def _load_builtin() -> None:
    # Importing a module registers its searcher. Modules other engineers add
    # (latency_darts, memnas, autoslim) are listed here when they land.
    for mod in _BUILTIN + ("latency_darts", "memnas", "autoslim"):
        if importlib.util.find_spec(f"hwnas.searchers.{mod}") is not None:
            importlib.import_module(f"hwnas.searchers.{mod}")


_load_builtin()

__all__ = [
    "SEARCHERS",
    "Candidate",
    "History",
    "Record",
    "SearchLog",
    "Searcher",
    "create_searcher",
    "list_searchers",
    "pareto_front",
    "searcher_class",
]
