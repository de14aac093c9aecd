"""Units of targets: a latency or a memory size is always written with its unit.

Latency targets accept ``us``, ``ms`` and ``s`` (``20ms``, ``0.02s``); memory
targets ``B``, ``KB``/``MB``/``GB`` (powers of 1000) and ``KiB``/``MiB``/``GiB``
(powers of 1024). A bare number is refused: a latency of "20" is too easy to
mean in the wrong unit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from hwnas.errors import ConfigError

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_TIME_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}
_BYTE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


@dataclass(frozen=True)
class _Quantity:
    """How one kind of quantity is written and what to say when it is written wrong.

    The messages are ``str.format`` templates over ``text`` (the input) and
    ``unit`` (the unit as written), so each kind keeps its own advice.
    """

    units: dict[str, float]
    letters: str  # regex character class of the unit's letters
    unreadable: str
    no_unit: str
    unknown_unit: str
    not_positive: str

    def parse(self, text: str | float) -> float:
        """The value of ``text`` in the table's base unit; a bare number is refused."""
        if isinstance(text, int | float):
            value = float(text)
        else:
            m = re.fullmatch(_NUM + r"\s*(" + self.letters + "*)", text.strip())
            if not m:
                raise ConfigError(self.unreadable.format(text=text))
            unit = m.group(2).lower()
            if not unit:
                raise ConfigError(self.no_unit.format(text=text))
            if unit not in self.units:
                raise ConfigError(self.unknown_unit.format(text=text, unit=m.group(2)))
            value = float(m.group(1)) * self.units[unit]
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(self.not_positive.format(text=text))
        return value


_LATENCY = _Quantity(
    units=_TIME_UNITS,
    letters="[a-zA-Zµ]",
    unreadable="cannot read latency {text!r}; write it with a unit, e.g. 20ms or 0.02s",
    no_unit="latency {text!r} has no unit; write {text}ms or {text}s",
    unknown_unit="unknown time unit {unit!r} in {text!r}; use one of: us, ms, s (e.g. 20ms)",
    not_positive="a latency target must be a positive time, got {text!r}",
)
_MEMORY = _Quantity(
    units=_BYTE_UNITS,
    letters="[a-zA-Z]",
    unreadable="cannot read memory size {text!r}; write it with a unit, e.g. 2MB",
    no_unit="memory size {text!r} has no unit; write {text}B, {text}KB or {text}MB",
    unknown_unit="unknown size unit {unit!r} in {text!r}; use B, KB, MB, GB (x1000) "
    "or KiB, MiB, GiB (x1024)",
    not_positive="a memory target must be a positive size, got {text!r}",
)


def parse_latency_ms(text: str | float) -> float:
    """``"20ms"`` -> 20.0; ``"0.02s"`` -> 20.0; ``"500us"`` -> 0.5.

    Raises:
        ConfigError: no unit, an unknown unit, or a value that is not positive.
    """
    return _LATENCY.parse(text)


def parse_bytes(text: str | int) -> int:
    """``"2MB"`` -> 2_000_000; ``"2MiB"`` -> 2_097_152; ``"512KB"`` -> 512_000.

    Raises:
        ConfigError: no unit, an unknown unit, or a value that is not positive.
    """
    return int(round(_MEMORY.parse(text)))
