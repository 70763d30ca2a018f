"""The rollup is the report, hour by hour: for any history, maintenance, blind time and customers' own
power cuts, each target's ``up_s``/``down_s`` summed over an hour-aligned period equal the report's up
and down seconds for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.report.compute import compute
from monitor.report.model import IncidentRecord, Interval, Period, ReportInput
from monitor.report.source import expand_maintenance
from monitor.tsdb.rollup import AVAILABILITY, availability_points, hour_bounds
from tests.report_support import inventory

H = 3600.0
START = 1_790_000_000.0 // H * H  # an hour bound
HOURS = 12
STATES = ("up", "down", "degraded", "unknown", "removed")
TIDS = sorted(inventory().targets)

offsets = st.floats(min_value=-3 * H, max_value=(HOURS + 2) * H, allow_nan=False, allow_infinity=False)
interval = st.tuples(offsets, offsets).map(lambda p: (min(p), max(p)))


@st.composite
def inputs(draw: st.DrawFn) -> ReportInput:
    inv = inventory()
    history = {}
    for tid in draw(st.lists(st.sampled_from(TIDS), unique=True, max_size=len(TIDS))):
        changes = draw(st.lists(st.tuples(offsets, st.sampled_from(STATES)), min_size=1, max_size=8))
        history[tid] = sorted(((START + o, s) for o, s in changes), key=lambda c: c[0])
    windows = [(node, Interval(START + a, START + b)) for node, (a, b) in
               draw(st.lists(st.tuples(st.sampled_from(TIDS), interval), max_size=3))]
    blind = [Interval(START + a, START + b) for a, b in draw(st.lists(interval, max_size=2))]
    until = draw(st.none() | offsets.map(lambda o: START + o))
    # power incidents: at an endpoint, its customer's own power (out of both); at a node, an area's (counted)
    power = [IncidentRecord(f"INC-{n}", "power", root, START + a, None if still else START + b, (root,))
             for n, (root, (a, b), still) in enumerate(draw(st.lists(
                 st.tuples(st.sampled_from(TIDS), interval, st.booleans()), max_size=3)))]
    return ReportInput(Period(START, START + HOURS * H, "p"), inv, history,
                       maintenance=expand_maintenance(windows, inv), blind=blind, incidents=power, until=until)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(inputs())
def test_hourly_sums_are_the_reports_seconds(inp: ReportInput) -> None:
    _assert_sums_are_the_reports(inp, lambda ts: ts % 3600 == 0)


def _assert_sums_are_the_reports(inp: ReportInput, on_hour: Callable[[float], bool]) -> None:
    """Each point is on the bucket grid; the points inside the period sum to the report's seconds."""
    report = {r.key: r.figures for r in compute(inp, "node").rows}
    sums: dict[str, list[float]] = {}
    for p in availability_points(inp):
        assert p.measurement == AVAILABILITY and on_hour(p.time_ns / 1e9)
        fields = dict(p.fields)
        assert set(fields) == {"up_s", "down_s"} and 0 <= fields["up_s"] + fields["down_s"] <= H + 1e-6
        if inp.period.start <= p.time_ns / 1e9 < inp.period.end:
            acc = sums.setdefault(dict(p.tags)["node"], [0.0, 0.0])
            acc[0] += float(fields["up_s"])
            acc[1] += float(fields["down_s"])
    for tid, fig in report.items():
        up, down = sums.get(tid, [0.0, 0.0])
        assert abs(up - fig.up_s) < 1e-3 and abs(down - fig.down_s) < 1e-3, tid


# Zones whose offset is not whole hours, with and without clock changes (Lord Howe's is 30 minutes).
ZONES = ("UTC", "America/Bogota", "Asia/Kolkata", "America/St_Johns", "Asia/Kathmandu", "Australia/Lord_Howe",
         "Europe/Madrid")
Y2026 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
CHANGES = [datetime(2026, m, d, h, tzinfo=ZoneInfo(z)).timestamp() for z, m, d, h in (
    ("America/St_Johns", 3, 8, 1), ("America/St_Johns", 11, 1, 0), ("Australia/Lord_Howe", 10, 4, 1),
    ("Australia/Lord_Howe", 4, 5, 1), ("Europe/Madrid", 3, 29, 1), ("Europe/Madrid", 10, 25, 1))]


def _on_hour(ts: float, zone: ZoneInfo) -> bool:
    local = datetime.fromtimestamp(ts, zone)
    return local.minute == 0 and local.second == 0


@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.sampled_from(ZONES), st.sampled_from(CHANGES) | st.floats(Y2026, Y2026 + 365 * 86400),
       st.floats(-3 * H, 3 * H), st.floats(0, 8 * H))
def test_buckets_are_the_hours_of_the_local_clock(tz: str, around: float, shift: float, length: float) -> None:
    """Issue 18: a bucket starts whenever the configured zone's clock reads a whole hour, and only
    then; in Asia/Kolkata that is :30 UTC, around St John's and Lord Howe's clock changes too."""
    start = around + shift
    bounds = hour_bounds(start, start + length, tz)
    zone = ZoneInfo(tz)
    assert bounds[0] <= start and bounds[-1] >= start + length and len(bounds) >= 2
    assert all(b.is_integer() and _on_hour(b, zone) for b in bounds)
    assert all(1800 <= b - a <= 5400 for a, b in pairwise(bounds))
    minutes = range(int(bounds[0]), int(bounds[-1]) + 1, 60)  # every local-hour start between is a bound
    assert [float(m) for m in minutes if _on_hour(m, zone)] == bounds


@settings(max_examples=60, deadline=None, derandomize=True)
@given(inputs(), st.sampled_from(("Asia/Kolkata", "America/St_Johns", "Asia/Kathmandu")))
def test_a_half_hour_zones_day_is_whole_buckets_and_the_reports_seconds(inp: ReportInput, tz: str) -> None:
    """Issue 18: in a zone whose offset is not whole hours, the points stamped inside a local period sum
    to the report's seconds for it; with epoch-hour buckets the first and last borrowed a partial hour."""
    day = datetime.fromtimestamp(START, ZoneInfo(tz)).replace(hour=0, minute=0, second=0).timestamp()
    shift = day + 86400 - inp.period.start  # the local day after START's, its history moved with it
    moved = {t: [(ts + shift, s) for ts, s in h] for t, h in inp.history.items()}
    inp = replace(inp, period=Period(day + 86400, day + 2 * 86400, "d", tz), history=moved,
                  maintenance={t: [Interval(i.start + shift, i.end + shift) for i in w]
                               for t, w in inp.maintenance.items()},
                  blind=[Interval(i.start + shift, i.end + shift) for i in inp.blind],
                  until=None if inp.until is None else inp.until + shift)
    zone = ZoneInfo(tz)
    _assert_sums_are_the_reports(inp, lambda ts: _on_hour(ts, zone))
