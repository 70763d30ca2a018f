"""Correlation settings: every threshold the engine uses, with defaults tied to the poll interval.

A NOC tunes these on last month's data with ``monitor replay --set key=value``; the same parser
serves the command line and the ``correlation:`` section of the config, so a typo fails the
same way everywhere: with the key, the value and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from monitor.durations import parse_duration
from monitor.errors import ConfigError


@dataclass(frozen=True, slots=True)
class CorrelationSettings:
    interval: float = 60.0  # the poll interval the defaults below are derived from
    settle: float = 60.0  # wait this long after a failure before side effects, so the root is known
    window: float = 120.0  # W: failures counted together for the mass-outage rule
    min_endpoints: int = 3  # K: at least this many endpoints below one node within W ...
    min_share: float = 50.0  # P: ... and at least this % of the endpoints below it
    hold_down: float = 300.0  # an incident resolves only after being clear this long (flapping)
    grace: float = 300.0  # endpoints still down this long after the root is back become singles
    blind_share: float = 0.5  # more than this share of all targets failing independently = blind
    blind_min: int = 10  # ... and at least this many of them (tiny networks are never "blind")
    blind_recovery: float = 120.0  # blindness ends after the cause has been clear this long
    update_interval: float = 60.0  # at most one "updated" event per incident this often
    # a node whose last answers showed loss must stay down this long before its degraded incident
    # becomes an outage (rain fade loses whole polls now and then; a link that stopped stays down)
    degraded_settle: float = 300.0
    # the hold-down of a ``degraded`` incident for weak levels (optical rx, signal, CCQ below the
    # thresholds: one per PON port or AP): levels hover around a threshold for hours, so its calm must
    # last longer than an outage's before it resolves, or every drift back and forth is a new incident
    levels_hold_down: float = 900.0
    # a burst: K or more failures below a node inside W whose odds as independent failures, at the
    # subtree's learned rate, are below this, is a mass incident whatever its share (0: off)
    burst_odds: float = 1e-9
    burst_prior: float = 0.2  # failures per endpoint and day assumed before anything is learned
    burst_history: float = 14 * 86400.0  # failure rates are learned over this much of the past
    vantage: tuple[str, ...] = ()  # the daemon's own uplink/gateway nodes
    down_after: int | None = None  # replay only: override every target's confirmation counts
    up_after: int | None = None

    @classmethod
    def for_interval(cls, interval: float) -> CorrelationSettings:
        """Defaults for a poll interval: settle one interval, W two, hold-down and grace five."""
        return cls(
            interval=interval,
            settle=interval,
            window=2 * interval,
            hold_down=5 * interval,
            grace=5 * interval,
            blind_recovery=2 * interval,
            update_interval=interval,
            degraded_settle=5 * interval,
            levels_hold_down=15 * interval,
        )

    def with_overrides(self, overrides: Mapping[str, str], source: str = "--set") -> CorrelationSettings:
        """Apply ``key=value`` strings; a new ``interval`` re-derives the defaults not set explicitly."""
        return self.apply(CorrelationOverrides.parse(overrides, source))

    def apply(self, overrides: CorrelationOverrides) -> CorrelationSettings:
        """Set the explicit values; a new ``interval`` re-derives the defaults not set explicitly."""
        parsed = dict(overrides.values)
        base = self
        if "interval" in parsed:
            base = CorrelationSettings.for_interval(float(parsed["interval"]))  # type: ignore[arg-type]
            base = replace(base, **{f: getattr(self, f) for f in _NOT_DERIVED})
        result = replace(base, **parsed)  # type: ignore[arg-type]
        result.check()
        return result

    def check(self) -> None:
        if problems := self._unbounded():
            raise ConfigError(problems)
        problems = []
        for name in ("interval", "settle", "window", "update_interval"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("hold_down", "grace", "blind_recovery", "degraded_settle", "levels_hold_down"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_endpoints < 1:
            problems.append(f"min_endpoints (K) must be >= 1, got {self.min_endpoints}")
        if not 0 < self.min_share <= 100:
            problems.append(f"min_share (P) must be a percentage in (0, 100], got {self.min_share}")
        if not 0 <= self.burst_odds < 1:
            problems.append(f"burst_odds must be a probability in [0, 1), got {self.burst_odds}")
        if not 0 < self.burst_prior <= 1000:
            problems.append(f"burst_prior must be failures per endpoint and day in (0, 1000], got {self.burst_prior}")
        if not 3600 <= self.burst_history <= 366 * 86400:
            problems.append(f"burst_history must be between 1h and 366d, got {self.burst_history}")
        if not 0 < self.blind_share <= 1:
            problems.append(f"blind_share must be a fraction in (0, 1], got {self.blind_share}")
        for name in ("down_after", "up_after"):
            v = getattr(self, name)
            if v is not None and v < 1:
                problems.append(f"{name} must be >= 1, got {v}")
        if problems:
            raise ConfigError(problems)

    def _unbounded(self) -> list[str]:
        """NaN or infinity anywhere, or beyond the upper bounds the checks in :meth:`check` do not give.

        Why first: NaN passes every ``<=`` comparison, so one settle of NaN never judged any failure.
        """
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in _RANGES or value is None:
                continue
            top, wanted = _RANGES[f.name]
            if isinstance(value, float) and not math.isfinite(value):
                out.append(f"{f.name} must be a finite number {wanted}, got {value}")
            elif value > top or (f.name == "blind_min" and value < 0):
                out.append(f"{f.name} must be {wanted}, got {value:g}")
        return out


#: A setting's parsed value: seconds or a number, a whole number, or node ids (``vantage``).
Value = float | int | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CorrelationOverrides:
    """The settings set explicitly (the config's ``correlation:`` section, ``--set``), parsed and typed.

    Why kept apart from :class:`CorrelationSettings`: the others derive from the poll interval, and a
    what-if ``--set interval=30`` must re-derive them while keeping what the config set.
    Parsed once, at load time; :func:`derive` is the one place that turns them into settings.
    """

    values: tuple[tuple[str, Value], ...] = ()  # (field name, value), sorted by name

    @classmethod
    def parse(cls, raw: Mapping[str, str], source: str = "--set") -> CorrelationOverrides:
        """``{"K": "5", "W": "3m"}`` -> typed values by field name; ConfigError naming every bad item."""
        problems: list[str] = []
        parsed: dict[str, Value] = {}
        for raw_key, text in raw.items():
            key = ALIASES.get(raw_key, raw_key)
            if key not in _FIELDS:
                known = ", ".join(sorted(set(_FIELDS) | set(ALIASES)))
                problems.append(f"{source} {raw_key}: unknown setting (known: {known})")
                continue
            try:
                parsed[key] = _parse(key, text)
            except ValueError as exc:
                problems.append(f"{source} {raw_key}={text}: {exc}")
        if problems:
            raise ConfigError(problems)
        return cls(tuple(sorted(parsed.items())))

    def __bool__(self) -> bool:
        return bool(self.values)

    def __or__(self, other: CorrelationOverrides) -> CorrelationOverrides:
        """Both sets of values, ``other``'s winning (``--set`` over the config)."""
        return CorrelationOverrides(tuple(sorted({**dict(self.values), **dict(other.values)}.items())))

    def get(self, name: str) -> Value | None:
        return dict(self.values).get(name)


def derive(interval: float, overrides: CorrelationOverrides) -> CorrelationSettings:
    """The settings the daemon and replay run with: defaults of the poll ``interval``, then ``overrides``."""
    base = CorrelationSettings.for_interval(interval)
    return base.apply(overrides) if overrides else base


ALIASES = {"K": "min_endpoints", "P": "min_share", "W": "window", "hold-down": "hold_down", "holddown": "hold_down"}
_FIELDS = {f.name: f for f in fields(CorrelationSettings)}
_DURATIONS = {
    "interval", "settle", "window", "hold_down", "grace", "blind_recovery", "update_interval", "degraded_settle",
    "burst_history", "levels_hold_down",
}
_INTS = {"min_endpoints", "blind_min", "down_after", "up_after"}
_RANGES: dict[str, tuple[float, str]] = {  # the upper bound (the lower ones are in check()) and the range
    # the others derive from the interval (up to 5x, see for_interval), so they may reach 7 days
    "interval": (86400.0, "greater than 0 and at most 1d"),
    **{name: (7 * 86400.0, "greater than 0 and at most 7d") for name in ("settle", "window", "update_interval")},
    **{name: (7 * 86400.0, "between 0 and 7d") for name in ("hold_down", "grace", "blind_recovery", "degraded_settle")},
    "levels_hold_down": (31 * 86400.0, "between 0 and 31d"),  # 15 x interval: up to 15 days
    # these five are bounded in check() already: only NaN/infinity is caught here
    "burst_history": (math.inf, "between 1h and 366d"),
    "min_share": (math.inf, "greater than 0 and at most 100"),
    "blind_share": (math.inf, "greater than 0 and at most 1"),
    "burst_odds": (math.inf, "from 0 to below 1"), "burst_prior": (math.inf, "greater than 0 and at most 1000"),
    "min_endpoints": (1_000_000, "between 1 and 1000000"), "blind_min": (1_000_000, "between 0 and 1000000"),
    "down_after": (100, "between 1 and 100"), "up_after": (100, "between 1 and 100"),
}
_NOT_DERIVED = (
    "min_endpoints", "min_share", "blind_share", "blind_min", "vantage", "down_after", "up_after",
    "burst_odds", "burst_prior", "burst_history",
)


def _parse(key: str, raw: str) -> Value:
    if key in _DURATIONS:
        return parse_duration(raw)
    if key in _INTS:
        try:
            return int(raw)
        except ValueError:
            raise ValueError("expected a whole number") from None
    if key == "vantage":
        return tuple(sorted(v.strip() for v in raw.split(",") if v.strip()))
    text = raw.strip().rstrip("%")
    try:
        return float(text)
    except ValueError:
        raise ValueError("expected a number") from None


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["K=5", "W=3m"]`` -> ``{"K": "5", "W": "3m"}``; a missing ``=`` is an error naming the item."""
    out: dict[str, str] = {}
    bad = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            bad.append(f"--set {item}: expected key=value")
            continue
        out[key.strip()] = value.strip()
    if bad:
        raise ConfigError(bad)
    return out
