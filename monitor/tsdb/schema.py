"""The ONE place that maps poll results and states to points (documented in docs/timeseries.md).

Field types never change for a given field name (InfluxDB rejects a write whose field type differs
from what the shard already holds): counts and flags are integers, measurements are floats, and
SNMP metric values are always floats.
"""

from __future__ import annotations

from collections import defaultdict

from monitor.inventory.model import Target
from monitor.probes.base import IcmpResult, SnmpResult
from monitor.tsdb.point import FieldValue, Point, make_point, seconds_to_ns

# Numeric state codes. DOWN=0/UP=1 make "state" usable as an availability ratio on its own for
# the two common states; UNKNOWN is negative so a board can filter it out with `state >= 0`.
STATE_CODES: dict[str, int] = {"UNKNOWN": -1, "DOWN": 0, "UP": 1, "DEGRADED": 2}

ICMP = "icmp"
SNMP = "snmp"
SNMP_POLL = "snmp_poll"
STATE = "state"


def target_tags(target: Target) -> dict[str, str | None]:
    """Tags every point of a target carries, so boards can group by place, kind and customer."""
    return {
        "node": target.id,
        "kind": target.kind,
        "role": target.role,
        "site": target.site,
        "municipality": target.municipality,
        "customer": target.customer,
        "service_class": target.service_class,
    }


def icmp_points(target: Target, result: IcmpResult, ts: float) -> list[Point]:
    fields: dict[str, FieldValue | None] = {
        "sent": result.sent,
        "received": result.received,
        "ok": int(result.ok),
        "loss_pct": float(result.loss_pct),
        "rtt_min_ms": _float(result.rtt_min_ms),
        "rtt_avg_ms": _float(result.rtt_avg_ms),
        "rtt_max_ms": _float(result.rtt_max_ms),
        "jitter_ms": _float(result.jitter_ms),
    }
    return [make_point(ICMP, target_tags(target), fields, seconds_to_ns(ts))]


def snmp_points(target: Target, result: SnmpResult, ts: float) -> list[Point]:
    """One ``snmp_poll`` point for the poll itself, one ``snmp`` point per distinct label set.

    Metrics sharing labels (e.g. ``if_in_bps`` and ``if_out_bps`` of ``ifname=ether1``) become
    fields of the same point. Target tags win over a metric label of the same name.
    """
    time_ns = seconds_to_ns(ts)
    base = target_tags(target)
    poll_fields: dict[str, FieldValue | None] = {
        "ok": int(result.ok),
        "rebooted": int(result.rebooted),
        "uptime_s": _float(result.uptime_s),
        "duration_s": float(result.duration_s),
    }
    points = [make_point(SNMP_POLL, base, poll_fields, time_ns)]
    groups: dict[tuple[tuple[str, str], ...], dict[str, FieldValue | None]] = defaultdict(dict)
    for metric in result.metrics:
        groups[tuple(sorted(metric.labels))][metric.name] = float(metric.value)
    for labels, fields in groups.items():
        points.append(make_point(SNMP, [*labels, *base.items()], fields, time_ns))
    return points


def state_point(target: Target, state: str, ts: float, reason: str = "") -> Point:
    """The confirmed state as numbers: ``state`` (see :data:`STATE_CODES`) and ``available``.

    ``available`` is 1 for UP and DEGRADED (reachable), 0 for DOWN and absent for UNKNOWN, so
    ``mean(available)`` is the availability ratio. ``reason`` is free text and stays in the event
    log (the authoritative record of transitions): as a tag it would explode series cardinality and
    as a string field VictoriaMetrics would store 0.
    """
    del reason  # accepted for symmetry with StateChange; see docstring
    code = STATE_CODES.get(state.upper())
    if code is None:
        raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATE_CODES)}")
    available = None if code < 0 else int(code != STATE_CODES["DOWN"])
    fields: dict[str, FieldValue | None] = {"state": code, "available": available}
    return make_point(STATE, target_tags(target), fields, seconds_to_ns(ts))


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
