"""The rollup is the report, hour by hour: for any history, maintenance and blind time, each target's
``up_s``/``down_s`` summed over an hour-aligned period equal the report's up and down seconds for it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.report.compute import compute
from monitor.report.model import Interval, Period, ReportInput
from monitor.report.source import expand_maintenance
from monitor.tsdb.rollup import AVAILABILITY, availability_points
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
    return ReportInput(Period(START, START + HOURS * H, "p"), inv, history,
                       maintenance=expand_maintenance(windows, inv), blind=blind, until=until)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(inputs())
def test_hourly_sums_are_the_reports_seconds(inp: ReportInput) -> None:
    report = {r.key: r.figures for r in compute(inp, "node").rows}
    sums: dict[str, list[float]] = {}
    for p in availability_points(inp):
        assert p.measurement == AVAILABILITY and p.time_ns % (3600 * 10**9) == 0
        fields = dict(p.fields)
        assert set(fields) == {"up_s", "down_s"} and 0 <= fields["up_s"] + fields["down_s"] <= H + 1e-6
        if inp.period.start <= p.time_ns / 1e9 < inp.period.end:
            acc = sums.setdefault(dict(p.tags)["node"], [0.0, 0.0])
            acc[0] += float(fields["up_s"])
            acc[1] += float(fields["down_s"])
    for tid, fig in report.items():
        up, down = sums.get(tid, [0.0, 0.0])
        assert abs(up - fig.up_s) < 1e-3 and abs(down - fig.down_s) < 1e-3, tid
