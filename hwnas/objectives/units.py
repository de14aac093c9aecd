"""Units of targets: a latency or a memory size is always written with its unit.

Latency targets accept ``us``, ``ms`` and ``s`` (``20ms``, ``0.02s``); memory
targets ``B``, ``KB``/``MB``/``GB`` (powers of 1000) and ``KiB``/``MiB``/``GiB``
(powers of 1024). A bare number is refused: a latency of "20" is too easy to
mean in the wrong unit.
"""

from __future__ import annotations

import math
import re

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


def parse_latency_ms(text: str | float) -> float:
    """``"20ms"`` -> 20.0; ``"0.02s"`` -> 20.0; ``"500us"`` -> 0.5.

    Raises:
        ConfigError: no unit, an unknown unit, or a value that is not positive.
    """
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(_NUM + r"\s*([a-zA-Zµ]*)", text.strip())
        if not m:
            raise ConfigError(
                f"cannot read latency {text!r}; write it with a unit, e.g. 20ms or 0.02s"
            )
        unit = m.group(2).lower()
        if not unit:
            raise ConfigError(f"latency {text!r} has no unit; write {text}ms or {text}s")
        if unit not in _TIME_UNITS:
            raise ConfigError(
                f"unknown time unit {m.group(2)!r} in {text!r}; use one of: us, ms, s (e.g. 20ms)"
            )
        value = float(m.group(1)) * _TIME_UNITS[unit]
    if not value > 0 or not math.isfinite(value):
        raise ConfigError(f"a latency target must be a positive time, got {text!r}")
    return value


def parse_bytes(text: str | int) -> int:
    """``"2MB"`` -> 2_000_000; ``"2MiB"`` -> 2_097_152; ``"512KB"`` -> 512_000.

    Raises:
        ConfigError: no unit, an unknown unit, or a value that is not positive.
    """
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(_NUM + r"\s*([a-zA-Z]*)", text.strip())
        if not m:
            raise ConfigError(f"cannot read memory size {text!r}; write it with a unit, e.g. 2MB")
        unit = m.group(2).lower()
        if not unit:
            raise ConfigError(
                f"memory size {text!r} has no unit; write {text}B, {text}KB or {text}MB"
            )
        if unit not in _BYTE_UNITS:
            raise ConfigError(
                f"unknown size unit {m.group(2)!r} in {text!r}; use B, KB, MB, GB (x1000) "
                "or KiB, MiB, GiB (x1024)"
            )
        value = float(m.group(1)) * _BYTE_UNITS[unit]
    if not value > 0 or not math.isfinite(value):
        raise ConfigError(f"a memory target must be a positive size, got {text!r}")
    return int(round(value))
