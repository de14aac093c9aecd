"""Latency predictors, one registry: ``create_predictor("mlp")``, ``load_predictor(path)``.

Built in: ``mlp`` (Latency-DARTS' regressor, with a differentiable form),
``flops-linear`` and ``gbdt`` (baselines), ``transfer`` (few-shot adaptation
of source-device predictors) and, when its module is present, ``kernel``
(nn-Meter-style sum of per-kernel predictions). Third-party predictors come
through the ``hwnas.predictors`` entry-point group.

Loading a file runs no code: the ``.npz`` is read with ``allow_pickle=False``,
its JSON config names a registered predictor, and only arrays are restored.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hwnas.errors import PredictorError
from hwnas.predictors.base import CONFORMAL_KEY, Predictor, read_predictor_file
from hwnas.registry import Registry

PREDICTORS: Registry[Predictor] = Registry("predictor")


def list_predictors() -> list[str]:
    return PREDICTORS.names()


def is_predictor(name: str) -> bool:
    return PREDICTORS.is_registered(name)


def create_predictor(name: str, **hparams: Any) -> Predictor:
    """A fresh, untrained predictor; ``None`` hyper-parameters keep the predictor's defaults."""
    return PREDICTORS.create(name, **hparams)


def load_predictor(
    path: str | Path,
    space: str | None = None,
    encoding: str | None = None,
    encoding_length: int | None = None,
) -> Predictor:
    """Rebuild a predictor saved by :meth:`Predictor.save`, executing no code from the file.

    Args:
        space, encoding, encoding_length: what the caller will feed it; a file
            trained for something else is refused.

    A calibrated file comes back calibrated (:meth:`Predictor.calibrate`).

    Raises:
        PredictorError: unreadable or foreign file, unknown predictor name,
            NaN/inf weights, arrays of the wrong type or shape, or a
            space/encoding mismatch.
    """
    cfg, arrays = read_predictor_file(path)
    name = cfg.get("predictor")
    if not isinstance(name, str) or not PREDICTORS.is_registered(name):
        raise PredictorError(
            f"{path} holds a '{name}' predictor, which this hwnas does not know; "
            f"known predictors: {', '.join(list_predictors())} (install the plug-in that provides it)"
        )
    hparams = cfg.get("hparams") or {}
    if not isinstance(hparams, dict):
        raise PredictorError(
            f"{path}: its hparams entry is not a JSON object; re-save the predictor"
        )
    try:
        pred = PREDICTORS.factory(name)(**hparams)
    except TypeError as exc:
        raise PredictorError(
            f"{path}: hyper-parameters {sorted(hparams)} do not fit the '{name}' predictor ({exc}); "
            "it was written by another hwnas version, retrain it"
        ) from exc
    pred.meta = dict(cfg.get("meta") or {})
    scores = arrays.pop(CONFORMAL_KEY, None)
    calibration = pred.meta.pop("calibration", None)
    try:
        pred.set_state(arrays)
    except KeyError as exc:
        raise PredictorError(
            f"{path} lacks the array {exc} a '{name}' predictor needs; the file is damaged or foreign"
        ) from exc
    except PredictorError as exc:
        raise PredictorError(f"{path}: {exc}") from exc
    except (ValueError, TypeError, IndexError) as exc:
        # Arrays of the wrong rank or type fail inside set_state with numpy's or
        # torch's own message; the user needs to know the file is at fault.
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PredictorError(
            f"{path}: its arrays do not fit a '{name}' predictor ({first}); the file is damaged, "
            "retrain it with `hwnas train-predictor`"
        ) from exc
    if scores is not None:
        pred.set_calibration(scores, calibration, source=str(path))
    pred.check_compatible(space=space, encoding=encoding, encoding_length=encoding_length)
    return pred


def _load_builtin() -> None:
    # Importing a module registers its predictors.
    from hwnas.predictors import baselines, mlp, transfer  # noqa: F401

    # The kernel predictor is developed separately; register it when it is present.
    if importlib.util.find_spec("hwnas.predictors.kernel") is not None:
        importlib.import_module("hwnas.predictors.kernel")


_load_builtin()

__all__ = [
    "PREDICTORS",
    "Predictor",
    "create_predictor",
    "is_predictor",
    "list_predictors",
    "load_predictor",
]
