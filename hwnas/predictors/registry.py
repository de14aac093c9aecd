"""The predictor registry, apart from the package ``__init__``.

Predictor modules import ``PREDICTORS`` from here to register themselves;
:func:`load_builtin` imports every predictor hwnas ships (the package
``__init__`` calls it).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from hwnas.predictors.base import Predictor
from hwnas.registry import Registry

PREDICTORS: Registry[Predictor] = Registry("predictor")


def list_predictors() -> list[str]:
    return PREDICTORS.names()


def is_predictor(name: str) -> bool:
    return PREDICTORS.is_registered(name)


def create_predictor(name: str, **hparams: Any) -> Predictor:
    """A fresh, untrained predictor; ``None`` hyper-parameters keep the predictor's defaults."""
    return PREDICTORS.create(name, **hparams)


def load_builtin() -> None:
    """Import (hence register) every shipped predictor."""
    from hwnas.predictors import baselines, mlp, transfer  # noqa: F401

    # The kernel predictor is developed separately; register it when it is present.
    if importlib.util.find_spec("hwnas.predictors.kernel") is not None:
        importlib.import_module("hwnas.predictors.kernel")
