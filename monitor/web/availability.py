"""Daily availability bars per municipality: the figures of ``monitor report``, not a second formula.

The store is read with :func:`monitor.report.source.load_input` and each municipality's days come
from :func:`monitor.report.compute.compute` over that municipality's targets, so maintenance, blind
time and periods without a running monitor are excluded exactly as in the monthly report, and a
day with nothing measured is unknown (never 100 %).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from monitor.db import Where
from monitor.inventory.model import Inventory
from monitor.report.compute import compute
from monitor.report.model import DayPoint, Period, ReportInput
from monitor.report.source import load_input

COMPANY = ""  # the key of the whole network's bars


@dataclass(frozen=True, slots=True)
class Bars:
    days: tuple[DayPoint, ...]  # oldest first; availability None = unknown
    availability: float | None  # over the whole span


def period_for(now: float, tz: str, days: int) -> Period:
    """The ``days`` local days ending with today (today counted up to ``now``)."""
    zone = ZoneInfo(tz)
    today = datetime.fromtimestamp(now, zone).date()
    first = today.fromordinal(today.toordinal() - days + 1)
    nxt = today.fromordinal(today.toordinal() + 1)
    start = datetime(first.year, first.month, first.day, tzinfo=zone).timestamp()
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).timestamp()
    return Period(start, end, f"{first.isoformat()} – {today.isoformat()}", tz)


def bars_from_input(inp: ReportInput) -> dict[str, Bars]:
    """Bars for the company (key ``COMPANY``) and for every municipality of the inventory."""
    out = {COMPANY: _bars(inp)}
    inv = inp.inventory
    for mid in inv.municipalities:
        targets = {tid: t for tid, t in inv.targets.items() if t.municipality == mid}
        sub = dataclasses.replace(
            inp, inventory=dataclasses.replace(inv, targets=targets),
            history={t: h for t, h in inp.history.items() if t in targets},
            maintenance={t: m for t, m in inp.maintenance.items() if t in targets},
            incidents=[],  # counts are not shown; the bars need only the states and the exclusions
        )
        out[mid] = _bars(sub)
    return out


def read_bars(db_path: Where, inv: Inventory, now: float, tz: str, days: int) -> dict[str, Bars]:
    """Read the store and compute every page's bars (seconds on a large network: run it in a thread)."""
    inp = load_input(db_path, inv, period_for(now, tz, days), until=now)
    return bars_from_input(inp)


def _bars(inp: ReportInput) -> Bars:
    report = compute(inp, "municipality")
    return Bars(tuple(report.days), report.totals.availability)
