"""Searchers, one registry and one interface: ``create_searcher("evolution").run(space, objective, budget, seed)``.

Built in: ``random``, ``evolution`` (regularised evolution), ``mnasnet-rl``
(MnasNet's LSTM controller trained with PPO), ``npenas`` (evolution whose
children a predictor picks) and ``naswot`` (training-free scoring). Adding a searcher is registering a :class:`Searcher` subclass with
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

from hwnas.searchers.base import (
    Candidate,
    History,
    Record,
    Searcher,
    pareto_front,
)
from hwnas.searchers.registry import (
    SEARCHERS,
    create_searcher,
    list_searchers,
    load_builtin,
    searcher_class,
)
from hwnas.store.search_log import SearchLog

load_builtin()

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
