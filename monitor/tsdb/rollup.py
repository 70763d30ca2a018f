"""Hourly availability per target for the boards: the same figure as ``monitor report``, in InfluxDB.

Why not ``mean("available")`` over the per-poll ``state`` points: that mean is weighted by poll count
(a router polled every 15 s weighs 4x a CPE polled every 60 s) and counts maintenance and
monitor-blind time as down. Here each target gets, per hour, the seconds it was up and down after the
report's own exclusions, computed by the report's own code from the same store; a board's figure is
then ``100 * sum(up_s) / (sum(up_s) + sum(down_s))`` over any time range and any grouping, which is
exactly the report's up / (up + down).

Buckets are whole hours of epoch time, each point stamped with its hour's start, so running the
rollup again over an overlapping range overwrites the same points (idempotent): a maintenance window
added later, or the rest of a partial hour, replaces the old figures instead of adding to them. Both
fields are always written (0.0 included): InfluxQL's ``sum`` of a missing field is null and would
blank the whole ratio. A month in a zone whose offset is whole hours (America/Bogota) is a whole
number of buckets, so a board's month and the report's month agree exactly.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator

from monitor.report.compute import _account, _exclusions, _merge, _segments  # the report's own arithmetic
from monitor.report.model import ReportInput
from monitor.tsdb.point import Point, make_point, seconds_to_ns
from monitor.tsdb.schema import target_tags

AVAILABILITY = "availability"
STEP_S = 3600


def hour_bounds(start: float, end: float, step: int = STEP_S) -> list[float]:
    """Bucket bounds covering [start, end), widened outwards to whole steps of epoch time."""
    first = math.floor(start / step) * step
    last = math.ceil(end / step) * step
    return [float(t) for t in range(first, max(last, first + step) + 1, step)]


def availability_points(inp: ReportInput, step: int = STEP_S) -> Iterator[Point]:
    """One ``availability`` point per target and bucket it lived in: fields ``up_s`` and ``down_s``.

    The range is the report's period widened to whole buckets (so a rerun over another range writes
    the same points) and cut at ``inp.until`` (the store's "now"); targets only in the history
    (removed from the inventory) are tagged by their id alone, as the report still counts them in its totals.
    A generator: a month of 50,000 targets is 37 million points, written in batches as they come.
    """
    bounds = hour_bounds(inp.period.start, inp.period.end, step)
    cut = bounds[-1] if inp.until is None else max(bounds[0], min(bounds[-1], inp.until))
    blind = _merge((i.start, i.end) for i in inp.blind)
    blind_excl = [(s, e, "blind") for s, e in blind]
    ids = list(inp.inventory.targets) + sorted(t for t in inp.history if t not in inp.inventory.targets)
    for tid in ids:
        segs = _segments(inp.history.get(tid, []), bounds[0], cut)
        if not segs:
            continue
        maint = inp.maintenance.get(tid)
        excl = _exclusions(blind, maint) if maint else blind_excl
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
