"""Accuracy evaluators, one registry: ``create_evaluator("table:bench.csv:cifar10_acc")``.

Built in:

``table:FILE[:COLUMN]``
    accuracy looked up in a benchmark CSV by architecture string (:mod:`.table`).
``naswot``
    the training-free NASWOT score at initialisation (:mod:`.naswot`).
``proxy``
    validation accuracy after a short seeded training on the bundled digits
    or a folder of images (:mod:`.proxy`).

Third-party evaluators come through the ``hwnas.evaluators`` entry-point group.
"""

from __future__ import annotations

from hwnas.evaluators.base import AccuracyEvaluator, settings_from_pairs, settings_to_dict
from hwnas.evaluators.registry import EVALUATORS, create_evaluator, list_evaluators

__all__ = [
    "EVALUATORS",
    "AccuracyEvaluator",
    "create_evaluator",
    "list_evaluators",
    "settings_from_pairs",
    "settings_to_dict",
]
