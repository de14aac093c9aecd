"""The accuracy-evaluator interface and typed settings given as ``key=value`` pairs.

An evaluator turns architectures into one number each that is *higher for
better networks*: a tabulated test accuracy (percent), a training-free score
(NASWOT's log-determinant) or the validation accuracy after a short training.
Evaluators take a batch of architectures so that a caller fanning work out
(a process pool, Ray) can hand each worker a slice without changing the API.

Settings of evaluators and searchers are frozen dataclasses. The CLI passes
them as ``--set key=value`` strings; :func:`settings_from_pairs` converts each
value to the field's declared type and refuses unknown keys, naming the valid
ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from hwnas.errors import ConfigError

if TYPE_CHECKING:
    from hwnas.arch import Arch
    from hwnas.spaces.base import SearchSpace


class AccuracyEvaluator(ABC):
    """Base class of accuracy evaluators.

    Attributes:
        name: registry name (``table``, ``naswot``, ``proxy``).
        unit: what the numbers are (``%`` or ``score``), for tables and plots.
        cost: ``cheap`` or ``expensive``. Whatever it costs, an accuracy evaluation
            is what ``--budget`` counts; the cost says what it is worth skipping
            (a hard target is always checked on the cheap terms before it).
    """

    name: str = ""
    unit: str = "%"
    cost: str = "expensive"

    @abstractmethod
    def evaluate(self, space: SearchSpace, archs: Sequence[Arch]) -> list[float]:
        """One value per architecture, higher is better."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything that changes the values (JSON-able): part of a search run's identity."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config()}>"


# ---- typed settings from key=value strings ------------------------------------------


def _convert(value: str, annotation: Any, key: str) -> Any:
    """Convert ``value`` to ``annotation`` (int, float, bool, str, optional of those, tuples)."""
    if isinstance(annotation, str):  # postponed annotations not resolved: keep the text
        raise ConfigError(f"setting {key}: unresolved type {annotation!r}")
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value.lower() in ("none", "null", ""):
            return None
        errors = []
        for a in args:
            try:
                return _convert(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        inner = typing.get_args(annotation)
        item = inner[0] if inner else str
        parts = [p for p in value.split(",") if p.strip()]
        return tuple(_convert(p.strip(), item, key) for p in parts)
    if annotation is bool:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"setting {key} takes true/false, got {value!r}")
    if annotation in (int, float):
        try:
            number = annotation(value)
        except ValueError:
            raise ConfigError(
                f"setting {key} takes {'an integer' if annotation is int else 'a number'}, got {value!r}"
            ) from None
        if not math.isfinite(number):  # nan/inf pass float() and poison every update
            raise ConfigError(f"setting {key} takes a finite number, got {value!r}")
        return number
    if annotation is str or annotation is Any:
        return value
    raise ConfigError(f"setting {key} has type {annotation}, which cannot be given as text")


def settings_fields(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, type text) of each field of a settings dataclass, for help output."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        t = hints.get(f.name, f.type)
        out.append((f.name, default, getattr(t, "__name__", str(t)).replace("typing.", "")))
    return out


def settings_from_pairs(
    cls: type, pairs: Iterable[str] | None = None, base: Any = None, what: str = "settings"
) -> Any:
    """Build a settings dataclass from ``key=value`` strings on top of ``base`` (or defaults).

    Raises:
        ConfigError: a pair without ``=``, an unknown key (the valid ones are
            listed), or a value that does not convert to the field's type.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    updates: dict[str, Any] = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ConfigError(
                f"{what}: expected key=value, got {pair!r}; valid keys: {', '.join(names)}"
            )
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in names:
            import difflib

            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{what}: unknown key '{key}'.{hint} Valid keys: {', '.join(names)}")
        updates[key] = _convert(value.strip(), hints[key], key)
    obj = base if base is not None else cls()
    try:
        return dataclasses.replace(obj, **updates)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{what}: {exc}") from exc


def settings_to_dict(settings: Any) -> dict[str, Any]:
    """JSON-able dict of a settings dataclass (tuples become lists)."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()
    }
