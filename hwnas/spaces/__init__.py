"""Search spaces, one registry: ``get_space("nb201")``, ``list_spaces()``.

The registry lives in :mod:`hwnas.spaces.registry`; importing this package
registers every shipped space (``mnasnet``, ``nb201``, ``mobilenetv2-channels``,
``memnas-cells``).
"""

from __future__ import annotations

from hwnas.spaces.base import SearchSpace
from hwnas.spaces.registry import SPACES, get_space, list_spaces, load_builtin

load_builtin()

__all__ = ["SPACES", "SearchSpace", "get_space", "list_spaces"]
