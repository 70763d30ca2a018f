"""Hourly availability per target for the boards: the same figure as ``monitor report``, in InfluxDB.

Why not ``mean("available")`` over the per-poll ``state`` points: that mean is weighted by poll count
(a router polled every 15 s weighs 4x a CPE polled every 60 s) and counts maintenance and
monitor-blind time as down. Here each target gets, per hour, the seconds it was up and down after the
report's own exclusions, computed by the report's own code from the same store; a board's figure is
then ``100 * sum(up_s) / (sum(up_s) + sum(down_s))`` over any time range and any grouping, which is
exactly the report's up / (up + down).

Buckets are the hours of the local clock in the ISP's zone (``delivery.timezone``): a bucket starts
whenever that clock reads a whole hour, and each point is stamped with its bucket's start. In a zone
whose offset is whole hours (America/Bogota) these are the hours of epoch time; in a half-hour zone
(Asia/Kolkata, America/St_Johns) they start at :30 UTC, so a local day or month is a whole number of
buckets there too and a board's month and the report's month agree exactly (with epoch hours the
month's first and last buckets each borrowed half an hour of the neighbouring month). Where a
clock change is not a whole hour (Australia/Lord_Howe's 30 minutes) the hour around it is 30 or 90
minutes long. The grid depends on the zone only, so running the rollup again over an overlapping
range overwrites the same points (idempotent): a maintenance window added later, or the rest of a
partial hour, replaces the old figures instead of adding to them. (Changing the configured zone to
one with another offset modulo an hour moves the grid: rewrite the past with ``monitor rollup``
after deleting the old ``availability`` points.) Both fields are always written (0.0 included):
InfluxQL's ``sum`` of a missing field is null and would blank the whole ratio.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

# the report's own arithmetic
from monitor.report.compute import _account, _merge, _own_power, _segments, _target_exclusions
from monitor.report.model import ReportInput
from monitor.tsdb.point import Point, make_point, seconds_to_ns
from monitor.tsdb.schema import target_tags

AVAILABILITY = "availability"
STEP_S = 3600


def hour_bounds(start: float, end: float, tz: str = "UTC") -> list[float]:
    """Starts of the local clock's hours in ``tz`` covering [start, end), widened outwards to whole buckets.

    A bound is an instant at which the local clock reads a whole hour. Between clock changes they
    are an hour apart; around a change the next one is searched minute by minute (offsets are whole
    minutes in every zone since 1972), which is a few dozen lookups twice a year.
    """
    zone = ZoneInfo(tz)
    first = _floor_hour(math.floor(start), zone)
    out = [first]
    stop = max(math.ceil(end), first + 1)
    while out[-1] < stop:
        out.append(_next_hour(out[-1], zone))
    return [float(b) for b in out]


def _offset(t: int, zone: ZoneInfo) -> int:
    off = datetime.fromtimestamp(t, zone).utcoffset()
    return 0 if off is None else int(off.total_seconds())


def _on_hour(t: int, zone: ZoneInfo) -> bool:
    return (t + _offset(t, zone)) % STEP_S == 0


def _floor_hour(t: int, zone: ZoneInfo) -> int:
    """The last local-hour start at or before ``t``."""
    c = t - (t + _offset(t, zone)) % STEP_S
    if _offset(c, zone) == _offset(t, zone):
        return c  # no clock change between: c is that hour's start (changes are months apart)
    for m in range(t - t % 60, t - 2 * STEP_S, -60):
        if _on_hour(m, zone):
            return m
    return c


def _next_hour(b: int, zone: ZoneInfo) -> int:
    """The first local-hour start after ``b`` (itself one)."""
    c = b + STEP_S
    if _offset(c, zone) == _offset(b, zone):
        return c
    for m in range(b + 60, b + 2 * STEP_S + 1, 60):
        if _on_hour(m, zone):
            return m
    return c


def availability_points(inp: ReportInput, tz: str | None = None) -> Iterator[Point]:
    """One ``availability`` point per target and bucket it lived in: fields ``up_s`` and ``down_s``.

    Buckets are the local hours of ``tz`` (the configured zone; default the period's), whatever zone
    the period was given in: the grid must not depend on how a run was asked for, or two runs would
    write overlapping buckets. The range is the report's period widened to whole buckets (so a rerun
    over another range writes the same points) and cut at ``inp.until`` (the store's "now"); targets only in the history
    (removed from the inventory) are tagged by their id alone, as the report still counts them in its totals.
    A generator: a month of 50,000 targets is 37 million points, written in batches as they come.
    """
    bounds = hour_bounds(inp.period.start, inp.period.end, tz or inp.period.tz)
    cut = bounds[-1] if inp.until is None else max(bounds[0], min(bounds[-1], inp.until))
    blind = _merge((i.start, i.end) for i in inp.blind)
    blind_excl = [(s, e, "blind") for s, e in blind]
    own_power = _own_power(inp, cut)  # a customer's own power is not the ISP's downtime (as in the report)
    ids = list(inp.inventory.targets) + sorted(t for t in inp.history if t not in inp.inventory.targets)
    for tid in ids:
        segs = _segments(inp.history.get(tid, []), bounds[0], cut)
        if not segs:
            continue
        excl = _target_exclusions(inp, tid, blind, blind_excl, own_power)
        up = [0.0] * (len(bounds) - 1)
        down = [0.0] * (len(bounds) - 1)
        _account(segs, excl, bounds, up, down)
        target = inp.inventory.targets.get(tid)
        # tags sorted and cleaned once per target, not once per hour (make_point's cost dominates otherwise)
        tags = make_point(AVAILABILITY, target_tags(target) if target is not None else {"node": tid}, {}, 0).tags
        for i in _alive(segs, bounds):
            yield Point(AVAILABILITY, tags, (("up_s", up[i]), ("down_s", down[i])), seconds_to_ns(bounds[i]))


def _alive(segs: list[tuple[float, float, str]], bounds: list[float]) -> list[int]:
    """Indexes of the buckets a target's lifetime touches (written even when all of it was excluded,
    so a rerun after a new maintenance window zeroes the bucket instead of keeping the old figure)."""
    alive: set[int] = set()
    for s, e, _ in segs:
        first = bisect.bisect_right(bounds, s) - 1
        last = bisect.bisect_left(bounds, e) - 1
        alive.update(range(max(first, 0), min(last, len(bounds) - 2) + 1))
    return sorted(alive)


__all__ = ["AVAILABILITY", "STEP_S", "availability_points", "hour_bounds"]
