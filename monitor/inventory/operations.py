"""The ``correlation:`` and ``maintenance:`` sections: how incidents are inferred, and planned work.

``correlation`` is a mapping of the same settings ``monitor replay --set`` accepts (K, P, W,
hold_down, vantage, ...), parsed by the same parser so a typo fails the same way everywhere, and
kept typed (:class:`CorrelationOverrides`): nothing parses the section's text again.
``maintenance`` lists planned windows per node; the daemon keeps the store's config-made windows in
step with this list (windows added with ``monitor maintenance add`` are left alone).
"""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.correlate.incidents import printable
from monitor.correlate.settings import CorrelationOverrides, CorrelationSettings, derive
from monitor.errors import ConfigError
from monitor.inventory.fields import Problems, Section, type_name
from monitor.inventory.model import MaintenanceSpec
from monitor.inventory.yaml_lines import LList, LMap
from monitor.recurrence import RecurrenceError, occurrences

MAINTENANCE_KEYS = ("node", "start", "end", "reason", "every")


def correlation(top: Section, problems: Problems, file: str, interval: float) -> CorrelationOverrides:
    """The section's settings, parsed and typed now, so that a bad value fails at load time.

    Each key alone, for a message at its line; then all of them over the defaults of the polling
    ``interval``, exactly as the daemon will apply them, so a combination cannot fail only there.
    """
    value = top.data.get("correlation")
    if value is None:
        return CorrelationOverrides()
    if not isinstance(value, LMap):
        top.err("correlation", f"expected a mapping of correlation settings, got {type_name(value)}")
        return CorrelationOverrides()
    raw: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, LList):
            raw[str(key)] = ",".join(str(v) for v in item)
        elif isinstance(item, str | int | float) and not isinstance(item, bool):
            raw[str(key)] = str(item)
        else:
            problems.add(file, value.value_lines[key], f"correlation.{key}",
                         f"expected a number, a duration or a list of node ids, got {type_name(item)}")
    failed = False
    for key, text in raw.items():
        try:
            CorrelationSettings().with_overrides({key: text}, source="correlation")
        except ConfigError as exc:
            message = exc.problems[0].removeprefix(f"correlation {key}: ").removeprefix(f"correlation {key}={text}: ")
            problems.add(file, value.value_lines[key], f"correlation.{key}", message)
            failed = True
    if failed:
        return CorrelationOverrides()
    overrides = CorrelationOverrides.parse(raw, source="correlation")
    try:
        derive(interval, overrides)
    except ConfigError as exc:
        problems.add(file, value.line, "correlation", f"with polling.interval {interval:g} s: {exc.problems[0]}")
    return overrides


def maintenance(top: Section, problems: Problems, file: str, nodes: set[str],
                zone: str = "UTC") -> tuple[MaintenanceSpec, ...]:
    """The config's windows; one with ``every`` (an RRULE) becomes one window per occurrence (in ``zone``)."""
    out: list[MaintenanceSpec] = []
    for item, path, line in top.items("maintenance"):
        sec = Section.open(problems, file, item, path, line, MAINTENANCE_KEYS, ("node", "start", "end"))
        if sec is None:
            continue
        node = sec.text("node")
        if node is not None and node not in nodes:
            sec.err("node", f"unknown node {node!r} (expected the id of a node or endpoint)")
            node = None
        start = _timestamp(sec, "start")
        end = _timestamp(sec, "end")
        if start is not None and end is not None and end <= start:
            sec.err("end", "must be after start")
            continue
        every = sec.text("every") or ""
        spans = [(start, end)] if start is not None and end is not None else []
        if every and spans:
            try:
                spans = occurrences(every, spans[0][0], spans[0][1], zone)
            except RecurrenceError as exc:
                sec.err("every", str(exc))
                continue
        if node is not None:
            out += [MaintenanceSpec(node, s, e, sec.text("reason") or "") for s, e in spans]
    return tuple(out)


def _timestamp(sec: Section, key: str) -> float | None:
    value = sec.data.get(key)
    if isinstance(value, datetime):  # YAML parses unquoted ISO timestamps itself
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            sec.err(key, f"expected an ISO 8601 time like 2026-11-01T02:00:00-05:00, got {value!r}")
            return None
    else:
        sec.err(key, f"expected an ISO 8601 time like 2026-11-01T02:00:00-05:00, got {type_name(value)}")
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if not printable(dt.timestamp()):  # 9999-12-31T23:00-05:00 is in the year 10000 in UTC
        sec.err(key, "must be between the years 1 and 9999 (UTC)")
        return None
    return dt.timestamp()
