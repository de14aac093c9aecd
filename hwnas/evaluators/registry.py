"""The accuracy-evaluator registry and the built-in evaluators' factories.

Kept apart from the package ``__init__`` (which re-exports it), so that an
evaluator module can register itself without importing the package.
"""

from __future__ import annotations

from collections.abc import Iterable

from hwnas.errors import ConfigError
from hwnas.evaluators.base import AccuracyEvaluator, settings_from_pairs
from hwnas.registry import Registry

EVALUATORS: Registry[AccuracyEvaluator] = Registry("evaluator")


@EVALUATORS.register("table")
def _table(target: str | None = None, settings: Iterable[str] | None = None) -> AccuracyEvaluator:
    """Accuracy looked up in a benchmark CSV: table:FILE[:COLUMN]."""
    from hwnas.evaluators.table import TableEvaluator, split_table_spec

    file, column = split_table_spec(target, "the table evaluator")
    key = "arch"
    for pair in settings or ():
        k, _, v = pair.partition("=")
        if k.strip() == "key" and v:
            key = v.strip()
        else:
            raise ConfigError(
                f"the table evaluator takes only key=COLUMN as a setting, got {pair!r}"
            )
    return TableEvaluator(file, column, key=key)


@EVALUATORS.register("naswot")
def _naswot(target: str | None = None, settings: Iterable[str] | None = None) -> AccuracyEvaluator:
    """NASWOT score at initialisation (Mellor et al. 2021), on digits or an image folder."""
    from hwnas.evaluators.naswot import NaswotEvaluator, NaswotSettings

    s = settings_from_pairs(NaswotSettings, settings, what="naswot settings")
    if target:
        s = settings_from_pairs(NaswotSettings, [f"data={target}"], base=s)
    return NaswotEvaluator(s)


@EVALUATORS.register("proxy")
def _proxy(target: str | None = None, settings: Iterable[str] | None = None) -> AccuracyEvaluator:
    """Accuracy after a short seeded training on digits or a folder of class subfolders."""
    from hwnas.evaluators.proxy import ProxyEvaluator, ProxySettings

    s = settings_from_pairs(ProxySettings, settings, what="proxy settings")
    if target:
        s = settings_from_pairs(ProxySettings, [f"data={target}"], base=s)
    return ProxyEvaluator(s)


def list_evaluators() -> list[str]:
    return EVALUATORS.names()


def create_evaluator(spec: str, settings: Iterable[str] | None = None) -> AccuracyEvaluator:
    """Build an evaluator from its spec (``table:FILE[:COLUMN]``, ``naswot[:DATA]``, ``proxy[:DATA]``).

    Args:
        settings: ``key=value`` strings checked against the evaluator's settings.
    """
    if not spec:
        raise ConfigError(
            f"give an accuracy evaluator: {', '.join(list_evaluators())} (e.g. table:bench.csv)"
        )
    return EVALUATORS.create(spec, settings=list(settings) if settings else None)
