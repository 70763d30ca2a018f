"""Availability figures as a pure function of a :class:`ReportInput` (no I/O, no clock).

How time is counted, per target, inside the period and the target's lifetime only:

* the lifetime starts at the target's first recorded state and ends at the period end, at its
  removal (the pseudo-state ``removed``) or at ``until`` (the report's "now": the rest of a
  current month has no data yet); time outside it does not exist for the report (not 100 %, not 0 %);
* monitor-blind time, then maintenance of the target (or of any node above it), then its
  customer's own power cut (a ``power`` incident rooted at the endpoint: one ONU's dying gasp) are
  taken out first, whatever the state was: they count neither as up nor as down, nor as incidents.
  A power cut in an area (rooted at a node) stays counted: its customers had no service;
* what is left is up (UP or DEGRADED), down, or unknown (no confirmed state); availability is
  up / (up + down) and is *None* — shown as unknown — when nothing was measured;
* a DOWN episode crossing a period bound is split: each period gets its own part and counts it as
  one failure (MTTR = down time / failures, MTBF = up time / failures); incidents likewise.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from monitor.inventory.model import Inventory, Target
from monitor.report.model import (
    DayPoint,
    DegradedNode,
    Figures,
    IncidentLine,
    IncidentRecord,
    Interval,
    Report,
    ReportInput,
    ResponseRow,
    Row,
    SlaRow,
)

GROUPINGS = ("municipality", "site", "node", "service-class", "customer")
EXCLUDED_KINDS = ("planned", "blind")  # not failures: excluded from counts and availability
UP_STATES = ("up", "degraded")
NONE_KEY = "-"
REMOVED = "removed"  # pseudo-state: the target left the inventory (outside its lifetime until it returns)

Excl = tuple[float, float, str]  # (start, end, "blind" | "maintenance" | "power"), sorted and disjoint
Progress = Callable[[str], None]


def compute(inp: ReportInput, by: str = "municipality", *, generated_at: float = 0.0,
            progress: Progress | None = None) -> Report:
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}; expected one of {', '.join(GROUPINGS)}")
    period, inv = inp.period, inp.inventory
    days = _day_bounds(period.start, period.end, period.tz)
    known_end = period.end if inp.until is None else max(period.start, min(period.end, inp.until))
    day_up = [0.0] * (len(days) - 1)
    day_down = [0.0] * (len(days) - 1)
    blind = _merge((i.start, i.end) for i in inp.blind)
    blind_excl: list[Excl] = [(s, e, "blind") for s, e in blind]

    ids = list(inv.targets) + sorted(t for t in inp.history if t not in inv.targets)
    own_power = _own_power(inp, known_end)
    per_target: dict[str, Figures] = {}
    downs: dict[str, list[tuple[float, float]]] = {}
    step = max(1, len(ids) // 10)
    last_note = -math.inf
    for n, tid in enumerate(ids, 1):
        excl = _target_exclusions(inp, tid, blind, blind_excl, own_power)
        segs = _segments(inp.history.get(tid, []), period.start, known_end)
        fig, down = _account(segs, excl, days, day_up, day_down)
        if not segs and tid in inv.targets:
            fig.targets, fig.no_data = 1, 1  # in the inventory, never seen: unknown, never up
        per_target[tid] = fig
        if down:
            downs[tid] = down
        if progress is not None and (n == len(ids) or (n % step == 0 and time.monotonic() - last_note >= 1.0)):
            last_note = time.monotonic()  # at most one line a second: feedback on long reports only
            progress(f"figures for {n}/{len(ids)} targets")

    _behind_parents(inv, per_target, downs)
    # weak levels (ONUs' optical power, stations' signal below the thresholds) are no failure: their
    # customers kept their service; they are time degraded per node (_degraded_nodes), not incidents here
    incidents = [i for i in inp.incidents if i.kind not in EXCLUDED_KINDS and not i.levels
                 and not _is_own_power(inv, i) and _overlaps(i, period.start, known_end)]
    for inc in incidents:
        for tid in {inc.root, *inc.targets}:
            if tid in per_target:
                per_target[tid].incidents += 1
    lines = [_incident_line(i, inp, known_end) for i in sorted(incidents, key=lambda i: (i.opened_at, i.id))]

    def rows_for(grouping: str) -> list[Row]:
        return _group(grouping, ids, inv, per_target, downs, incidents)

    totals = Figures()
    for f in per_target.values():
        totals.add(f)
    totals.incidents = len(incidents)
    totals.customer_minutes = _customer_minutes(((t, d) for t, d in downs.items() if _customer(inv, t)), inv)

    # the worst nodes are roots: a node only unreachable behind a failed parent did not fail itself
    node_rows = [Row(t, _target_name(inv, t), per_target[t]) for t in ids
                 if (t not in inv.targets or inv.targets[t].role == "node") and per_target[t].own_down_s > 0]
    site_rows = rows_for("site")
    rows = rows_for(by)
    return Report(
        period=period,
        by=by,
        generated_at=generated_at,
        totals=totals,
        rows=rows,
        municipalities=rows if by == "municipality" else rows_for("municipality"),
        worst_nodes=_worst(node_rows, own=True),
        worst_sites=_worst([r for r in site_rows if r.figures.down_s > 0]),
        sla=_sla(inv, ids, per_target),
        response=_response_rows(lines),
        incidents=lines,
        days=[DayPoint(days[i], day_down[i] / 60.0,
                       None if day_up[i] + day_down[i] <= 0 else 100.0 * day_up[i] / (day_up[i] + day_down[i]))
              for i in range(len(days) - 1)],
        weeks=_weeks(incidents, period.start, period.end, period.tz),
        data_until=known_end,
        degraded_nodes=_degraded_nodes(inp, known_end),
    )


def _degraded_nodes(inp: ReportInput, known_end: float) -> list[DegradedNode]:
    """Per root of ``degraded`` incidents: the time under weak levels and under a lossy link in the period
    (each the union of its incidents' spans: two at one node never count twice), most first."""
    start, inv = inp.period.start, inp.inventory
    spans: dict[str, tuple[list[tuple[float, float]], list[tuple[float, float]]]] = {}
    counts: dict[str, int] = defaultdict(int)
    customers: dict[str, set[str]] = defaultdict(set)
    for inc in inp.incidents:
        if inc.kind != "degraded" or not _overlaps(inc, start, known_end):
            continue
        end = known_end if inc.restored_at is None else min(inc.restored_at, known_end)
        levels, lossy = spans.setdefault(inc.root, ([], []))
        (levels if inc.levels else lossy).append((max(inc.opened_at, start), end))
        counts[inc.root] += 1
        customers[inc.root].update(inc.customers)
    out = [
        DegradedNode(node, _target_name(inv, node), sum(e - s for s, e in _merge(levels)),
                     sum(e - s for s, e in _merge(lossy)), counts[node], len(customers[node]))
        for node, (levels, lossy) in spans.items()
    ]
    return sorted(out, key=lambda d: (-d.degraded_s, d.node))


# ---------------------------------------------------------------- one target


def _segments(hist: list[tuple[float, str]], start: float, end: float) -> list[tuple[float, float, str]]:
    """The target's states as (start, end, state) inside the period and its lifetime."""
    if not hist:
        return []
    life_end = end
    first = bisect.bisect_right(hist, start, key=lambda h: h[0]) - 1
    out = []
    for i in range(max(first, 0), len(hist)):
        ts, state = hist[i]
        if ts >= life_end:
            break
        nxt = hist[i + 1][0] if i + 1 < len(hist) else math.inf
        s, e = max(ts, start), min(nxt, life_end)
        if e > s and state != REMOVED:
            out.append((s, e, state))
    return out


def _account(segs: list[tuple[float, float, str]], excl: list[Excl], days: list[float],
             day_up: list[float], day_down: list[float]) -> tuple[Figures, list[tuple[float, float]]]:
    """Split each state segment around the exclusions and add every piece to its bucket."""
    fig = Figures(targets=1 if segs else 0)
    downs: list[tuple[float, float]] = []
    j = 0
    for s, e, state in segs:
        while j < len(excl) and excl[j][1] <= s:
            j += 1
        free: list[tuple[float, float]] = []
        cur, k = s, j
        while cur < e:
            if k < len(excl) and excl[k][0] < e:
                xs, xe, cat = excl[k]
                if xs > cur:
                    free.append((cur, xs))
                    cur = xs
                stop = min(xe, e)
                if cat == "blind":
                    fig.blind_s += stop - cur
                elif cat == "power":
                    fig.customer_power_s += stop - cur
                else:
                    fig.maintenance_s += stop - cur
                cur = stop
                if xe <= e:
                    k += 1
            else:
                free.append((cur, e))
                cur = e
        length = sum(b - a for a, b in free)
        if state in UP_STATES:
            fig.up_s += length
            if state == "degraded":
                fig.degraded_s += length
            _bucket(free, days, day_up)
        elif state == "down":
            fig.down_s += length
            if length > 0:
                fig.failures += 1
                downs.extend(free)
            _bucket(free, days, day_down)
        else:
            fig.unknown_s += length
    if segs and fig.monitored_s <= 0:
        fig.no_data = 1
    return fig, downs


def _behind_parents(inv: Inventory, per_target: dict[str, Figures],
                    downs: dict[str, list[tuple[float, float]]]) -> None:
    """Set each target's ``unreachable_s``: its DOWN time while every parent was DOWN as well.

    The daemon records DOWN for whatever does not answer, so a CPE behind a dead AP is DOWN too;
    the time it shares with its parents' downtime is theirs, not its own (with several parents —
    redundant paths — only while all of them are down). The pieces are outside exclusions already;
    a parent's maintenance covers its children too, so the parents' pieces compare like for like.
    """
    for tid, own in downs.items():
        t = inv.targets.get(tid)
        if t is None or not t.parents:
            continue
        shared = own
        for p in t.parents:
            shared = _intersect(shared, downs.get(p, []))
            if not shared:
                break
        per_target[tid].unreachable_s = sum(b - a for a, b in shared)


def _intersect(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlap of two sorted lists of disjoint intervals (one linear pass)."""
    out: list[tuple[float, float]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if e > s:
            out.append((s, e))
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _target_exclusions(inp: ReportInput, tid: str, blind: list[tuple[float, float]], blind_excl: list[Excl],
                       own_power: dict[str, list[Interval]]) -> list[Excl]:
    """What is taken out of one target's time (the report's and the hourly rollup's alike)."""
    maint, power = inp.maintenance.get(tid), own_power.get(tid)
    return _exclusions(blind, maint or [], power or []) if maint or power else blind_excl


def _exclusions(blind: list[tuple[float, float]], maint: list[Interval], power: list[Interval]) -> list[Excl]:
    """Blind time, maintenance and the customer's own power cut as disjoint labelled intervals (the
    first wins where several apply)."""
    out: list[Excl] = [(s, e, "blind") for s, e in blind]
    taken = list(blind)
    for label, spans in (("maintenance", maint), ("power", power)):
        added = []
        for s, e in _merge((m.start, m.end) for m in spans):
            pieces = [(s, e)]
            for bs, be in taken:
                pieces = [p for a, b in pieces for p in ((a, min(b, bs)), (max(a, be), b)) if p[1] > p[0]]
            out.extend((a, b, label) for a, b in pieces)
            added.extend(pieces)
        taken = _merge([*taken, *added])
    out.sort()
    return out


def _is_own_power(inv: Inventory, inc: IncidentRecord) -> bool:
    """A ``power`` incident rooted at an endpoint: its customer's own power, not the ISP's failure."""
    t = inv.targets.get(inc.root)
    return inc.kind == "power" and t is not None and t.role == "endpoint"


def _own_power(inp: ReportInput, known_end: float) -> dict[str, list[Interval]]:
    """Per endpoint, the times its customer's own power was off (the incident open until restored)."""
    out: dict[str, list[Interval]] = defaultdict(list)
    for inc in inp.incidents:
        if _is_own_power(inp.inventory, inc):
            end = inc.restored_at if inc.restored_at is not None else known_end
            out[inc.root].append(Interval(inc.opened_at, end))
    return out


def _merge(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(i for i in intervals if i[1] > i[0]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _bucket(pieces: list[tuple[float, float]], days: list[float], acc: list[float]) -> None:
    for a, b in pieces:
        i = bisect.bisect_right(days, a) - 1
        while a < b and 0 <= i < len(acc):
            e = min(b, days[i + 1])
            acc[i] += e - a
            a, i = e, i + 1


def _day_bounds(start: float, end: float, tz: str) -> list[float]:
    """Local midnights between start and end (start and end included): day buckets for the timeline."""
    zone = ZoneInfo(tz)
    d = datetime.fromtimestamp(start, zone).date()
    out = [start]
    while True:
        d = d.fromordinal(d.toordinal() + 1)
        t = datetime(d.year, d.month, d.day, tzinfo=zone).timestamp()
        if t >= end:
            break
        out.append(t)
    out.append(end)
    return out


# ---------------------------------------------------------------- groups


def group_key(t: Target | None, by: str, tid: str) -> str | None:
    """The group a target belongs to; None leaves it out of the rows (still in the totals)."""
    if t is None:  # in the log, no longer in the inventory
        return tid if by == "node" else None if by in ("service-class", "customer") else NONE_KEY
    match by:
        case "municipality":
            return t.municipality or NONE_KEY
        case "site":
            return t.site or NONE_KEY
        case "node":
            return t.id
        case "service-class":
            return t.service_class
        case _:
            return t.customer


def _group_name(inv: Inventory, by: str, key: str) -> str:
    if by == "municipality" and key in inv.municipalities:
        return inv.municipalities[key].name
    if by == "site" and key in inv.sites:
        return inv.sites[key].name
    if by == "customer" and key in inv.customers:
        return inv.customers[key].name
    if by == "node":
        return _target_name(inv, key)
    return key


def _target_name(inv: Inventory, tid: str) -> str:
    t = inv.targets.get(tid)
    return (t.name or t.id) if t is not None else tid


def _customer(inv: Inventory, tid: str) -> str | None:
    t = inv.targets.get(tid)
    return t.customer if t is not None else None


def _group(by: str, ids: list[str], inv: Inventory, per_target: dict[str, Figures],
           downs: dict[str, list[tuple[float, float]]], incidents: list[IncidentRecord]) -> list[Row]:
    figs: dict[str, Figures] = {}
    members: dict[str, list[str]] = defaultdict(list)
    for tid in ids:
        key = group_key(inv.targets.get(tid), by, tid)
        if key is None:
            continue
        figs.setdefault(key, Figures()).add(per_target[tid])
        members[key].append(tid)
    for key, tids in members.items():
        figs[key].customer_minutes = _customer_minutes(((t, downs[t]) for t in tids if t in downs
                                                        and _customer(inv, t) is not None), inv)
    for inc in incidents:
        keys = {group_key(inv.targets.get(t), by, t) for t in (inc.root, *inc.targets)}
        for key in keys:
            if key is not None and key in figs:
                figs[key].incidents += 1
    return [Row(k, _group_name(inv, by, k), figs[k]) for k in sorted(figs)]


def _customer_minutes(downs: Iterable[tuple[str, list[tuple[float, float]]]], inv: Inventory) -> float:
    """Minutes each customer had an endpoint down, summed over customers (a customer's endpoints merged)."""
    per_customer: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for tid, pieces in downs:
        per_customer[_customer(inv, tid) or tid].extend(pieces)
    return sum(b - a for pieces in per_customer.values() for a, b in _merge(pieces)) / 60.0


def _worst(rows: list[Row], n: int = 10, *, own: bool = False) -> list[Row]:
    """Lowest availability first; with ``own``, most downtime of the node's own first (root causes)."""
    def key(r: Row) -> tuple[float, float, str]:
        if own:
            return (-r.figures.own_down_s, -r.figures.down_s, r.key)
        a = r.figures.availability
        return (a if a is not None else 101.0, -r.figures.down_s, r.key)

    return sorted(rows, key=key)[:n]


# ---------------------------------------------------------------- SLA and response


def _sla(inv: Inventory, ids: list[str], per_target: dict[str, Figures]) -> list[SlaRow]:
    out = []
    for cid, sc in inv.service_classes.items():
        cls = Figures()
        by_customer: dict[str, Figures] = {}
        for tid in ids:
            t = inv.targets.get(tid)
            if t is None or t.service_class != cid:
                continue
            cls.add(per_target[tid])
            by_customer.setdefault(t.customer or tid, Figures()).add(per_target[tid])
        avail = cls.availability
        known = [f.availability for f in by_customer.values() if f.availability is not None]
        out.append(SlaRow(
            service_class=cid, target_pct=sc.availability_target, response_hours=sc.response_hours,
            availability=avail, compliant=None if avail is None else avail >= sc.availability_target,
            customers=len(by_customer), customers_meeting=sum(1 for a in known if a >= sc.availability_target),
            customers_no_data=len(by_customer) - len(known),
        ))
    return out


def _required(inc: IncidentRecord, inv: Inventory) -> tuple[str, float] | None:
    """The strictest response time among the affected customers' service classes."""
    best: tuple[str, float] | None = None
    for c in inc.customers:
        cust = inv.customers.get(c)
        sc = inv.service_classes.get(cust.service_class) if cust else None
        if sc is not None and (best is None or sc.response_hours < best[1]):
            best = (sc.id, sc.response_hours)
    return best


def _incident_line(inc: IncidentRecord, inp: ReportInput, known_end: float) -> IncidentLine:
    p = inp.period
    end = inc.restored_at if inc.restored_at is not None else known_end
    in_period = max(0.0, min(end, known_end) - max(inc.opened_at, p.start))
    # a person's acknowledgement (CLI, API, board, MQTT, desk "taken"), never the daemon's own ticket: the
    # SLA is about people responding, and the ticket is opened within seconds of every incident
    response_s = inc.acked_at - inc.opened_at if inc.acked_at is not None else None
    req = _required(inc, inp.inventory)
    verdict = "n/a"
    if req is not None:
        deadline = inc.opened_at + req[1] * 3600.0
        if response_s is not None and inc.opened_at + response_s <= deadline:
            verdict = "met"
        elif response_s is not None:
            verdict = "missed"
        elif inc.restored_at is not None and inc.restored_at <= deadline:
            verdict = "not_needed"
        elif deadline <= known_end:
            verdict = "not_acked"  # nobody acknowledged it before its deadline (nor after)
        else:
            verdict = "pending"
    return IncidentLine(
        id=inc.id, kind=inc.kind, root=inc.root, opened_at=inc.opened_at, restored_at=inc.restored_at,
        in_period_s=in_period, customers=len(inc.customers), customer_minutes=in_period / 60.0 * len(inc.customers),
        response_s=response_s, response_hours=req[1] if req else None, response=verdict,
    )


def _response_rows(lines: list[IncidentLine]) -> list[ResponseRow]:
    counts: dict[float, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in lines:
        if line.response_hours is not None:
            counts[line.response_hours][line.response] += 1
    return [ResponseRow(service_class=f"{h:g} h", hours=h, met=c["met"], missed=c["missed"], pending=c["pending"],
                        not_needed=c["not_needed"], not_acked=c["not_acked"]) for h, c in sorted(counts.items())]


# ---------------------------------------------------------------- incidents over time


def _overlaps(inc: IncidentRecord, start: float, end: float) -> bool:
    return inc.opened_at < end and (inc.restored_at is None or inc.restored_at > start)


def _weeks(incidents: list[IncidentRecord], start: float, end: float, tz: str) -> list[tuple[str, int]]:
    """Incidents per ISO week (an incident carried in from before the period counts in the first week)."""
    zone = ZoneInfo(tz)

    def label(ts: float) -> str:
        y, w, _ = datetime.fromtimestamp(ts, zone).isocalendar()
        return f"{y}-W{w:02d}"

    weeks: dict[str, int] = {}
    for d in _day_bounds(start, end, tz)[:-1]:
        weeks.setdefault(label(d), 0)
    for inc in incidents:
        weeks[label(max(inc.opened_at, start))] += 1
    return list(weeks.items())
