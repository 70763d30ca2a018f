"""The one duration grammar: seconds as a number, or a number with a unit (``ms``, ``s``, ``m``, ``h``, ``d``).

Why one module: the config's sections (``polling.interval``, ``api.link_ttl`` ...), its
``correlation:`` settings, ``monitor replay --set`` and the staff CLI's ``--duration`` all read
durations. With one grammar ``1d`` or ``500ms`` means the same in every place a NOC can write it.
"""

from __future__ import annotations

import math
import re

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def to_seconds(value: object) -> float | None:
    """Seconds from a number or a string like ``30s``, ``500ms``, ``2m``, ``1h``, ``1d``; None if invalid.

    A boolean is not a number here (YAML's ``yes``); an integer too large for a float is infinite,
    so every range check refuses it.
    """
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str) and (m := _DURATION_RE.match(value)):
            return float(m.group(1)) * _UNITS[m.group(2)]
    except OverflowError:  # an integer of hundreds of digits: out of every range
        return math.inf
    return None


def parse_duration(text: str) -> float:
    """Seconds from command-line or ``key=value`` text; ValueError (with the expected form) if invalid."""
    value = to_seconds(text) if isinstance(text, str) else None
    if value is None:
        raise ValueError("expected a duration like 90, 90s, 5m, 2h")
    return value


def fmt_seconds(value: float) -> str:
    """A duration as the config would write it: ``1d``, ``2h``, ``5m``, ``30s``, ``0.5s``."""
    if value == 0:
        return "0"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value // size:g}{unit}"
    return f"{value:g}s"
