"""The search-space registry, apart from the package ``__init__``.

A space module registers itself with ``@SPACES.register("name")`` and imports
``SPACES`` from here, so registering never depends on how far the package's
``__init__`` has run; :func:`load_builtin` imports every space hwnas ships
(the package ``__init__`` calls it), so which spaces exist never depends on
what else happened to be imported first.
"""

from __future__ import annotations

from hwnas.registry import Registry
from hwnas.spaces.base import SearchSpace

SPACES: Registry[SearchSpace] = Registry("space")

#: The modules of ``hwnas.spaces`` that register the shipped spaces.
BUILTIN_MODULES = ("mnasnet", "mobilenetv2_channels", "nb201", "memnas_cells")


def list_spaces() -> list[str]:
    return SPACES.names()


def get_space(name: str, **kwargs) -> SearchSpace:
    """Instantiate the space ``name``; ``None`` kwargs keep the space's defaults."""
    return SPACES.create(name, **kwargs)


def load_builtin() -> None:
    """Import (hence register) every shipped space. Each is small; torch is loaded anyway."""
    import importlib

    for mod in BUILTIN_MODULES:
        importlib.import_module(f"hwnas.spaces.{mod}")
