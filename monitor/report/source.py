"""Read a :class:`ReportInput` from the daemon's store (``<state_dir>/monitor.db``, or PostgreSQL), read-only.

Tables: ``state_changes`` (the append-only log, ``monitor.store``), ``monitor_runs`` (events
migration 2), ``zone_blind`` (events migration 4: remote zones the core could not see), the
outbox's ticket times (``monitor.delivery.schema``); incidents and maintenance windows through
:mod:`monitor.correlate.history`, which owns their SQL.
The file is opened read-only so that a report can never interfere with the running daemon beyond
SQLite's shared WAL reads; on PostgreSQL the session is read-only (``default_transaction_read_only``).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

from monitor.correlate.history import incidents_overlapping, windows_overlapping
from monitor.correlate.topology import children_of, descendants
from monitor.db import ERRORS, StoreConnection, Where, open_readonly
from monitor.errors import StorageError
from monitor.inventory.model import Inventory
from monitor.report.compute import REMOVED, Progress
from monitor.report.model import IncidentRecord, Interval, Period, ReportInput

REMOVED_REASON = "removed"  # a change to unknown with this reason prefix: the target left the inventory
CRASH_GRACE = 60.0  # a run without a stop record is taken as alive this long after its last heartbeat


def load_input(db_path: Where, inv: Inventory, period: Period, progress: Progress | None = None,
               until: float | None = None) -> ReportInput:
    """``until``: the store's "now"; the part of the period after it has no data yet."""
    db, versions = open_readonly(db_path)
    where = db_path if isinstance(db_path, Path) else db_path.describe()
    try:
        history = _history(db, period)
        if progress is not None:
            progress(f"read the state history of {len(history)} targets")
        incidents = _incidents(db, period, versions) if versions.get("correlation", 0) >= 1 else []
        windows = _maintenance(db, period) if versions.get("correlation", 0) >= 1 else []
        open_end = period.end if until is None else min(period.end, until)
        offline = _offline(db, period, open_end) if versions.get("events", 0) >= 2 else []
        zones_blind = _zones_blind(db, period, open_end) if versions.get("events", 0) >= 4 else {}
    except ERRORS as exc:
        raise StorageError(f"cannot read the store {where}: {exc}") from exc
    finally:
        db.close()
    if progress is not None:
        progress(f"read {len(incidents)} incidents and {len(windows)} maintenance windows")
    if zones_blind and inv.pollers is not None:
        zone_of = inv.pollers.zone_of
        for zone, gaps in sorted(zones_blind.items()):
            _mark_offline({t: h for t, h in history.items() if zone_of.get(t) == zone}, gaps)
        if progress is not None:
            progress(f"{sum(map(len, zones_blind.values()))} periods of blind remote zones count as unknown there")
    if offline:
        _mark_offline(history, offline)
        if progress is not None:
            progress(f"{len(offline)} periods without a running monitor count as unknown")
    blind = [Interval(i.opened_at, i.restored_at if i.restored_at is not None else open_end)
             for i in incidents if i.kind == "blind"]
    return ReportInput(period=period, inventory=inv, history=history,
                       maintenance=expand_maintenance(windows, inv), blind=blind, incidents=incidents, until=until)


#: the state each target was in when the period began: SQLite returns the row of MAX(id) for a bare
#: column (its fastest form); other engines join on it
_BEFORE_SQLITE = "SELECT target, ts, new, reason, MAX(id) FROM state_changes WHERE ts < ? GROUP BY target"
_BEFORE = ("SELECT s.target, s.ts, s.new, s.reason, s.id FROM state_changes s JOIN (SELECT MAX(id) AS id"
           " FROM state_changes WHERE ts < ? GROUP BY target) m ON s.id = m.id")


def _history(db: StoreConnection, period: Period) -> dict[str, list[tuple[float, str]]]:
    history: dict[str, list[tuple[float, str]]] = defaultdict(list)
    before = db.execute(_BEFORE_SQLITE if isinstance(db, sqlite3.Connection) else _BEFORE, (period.start,))
    for target, ts, new, reason, _ in before:
        history[target].append((ts, _state(new, reason)))
    rows = db.execute(
        "SELECT target, ts, new, reason FROM state_changes WHERE ts >= ? AND ts < ? ORDER BY ts, id",
        (period.start, period.end),
    )
    for target, ts, new, reason in rows:
        history[target].append((ts, _state(new, reason)))
    return dict(history)


def _offline(db: StoreConnection, period: Period, open_end: float) -> list[Interval]:
    """When no daemon was running (between runs, after the last one stopped or stopped heartbeating).

    A store without any recorded run (older than migration 3) makes no claim: nothing is marked.
    """
    rows = db.execute("SELECT started, last_seen, stopped FROM monitor_runs ORDER BY started, id").fetchall()
    gaps: list[tuple[float, float]] = []
    for (_, seen, stopped), (nxt, _, _) in pairwise(rows):
        end = stopped if stopped is not None else seen
        if nxt > end:
            gaps.append((end, nxt))
    if rows:
        _, seen, stopped = rows[-1]
        end = stopped if stopped is not None else seen + CRASH_GRACE
        if end < open_end:
            gaps.append((end, open_end))
    clipped = [(max(a, period.start), min(b, open_end)) for a, b in gaps]
    return [Interval(a, b) for a, b in clipped if b > a]


def _zones_blind(db: StoreConnection, period: Period, open_end: float) -> dict[str, list[Interval]]:
    """Per remote zone, when it was blind (every poller of it silent) within the period; an episode
    still going on lasts until ``open_end``."""
    rows = db.execute("SELECT zone, started, ended FROM zone_blind WHERE started < ? AND (ended IS NULL OR ended > ?)"
                      " ORDER BY started, id", (open_end, period.start)).fetchall()
    out: dict[str, list[Interval]] = defaultdict(list)
    for zone, a, b in rows:
        a, b = max(a, period.start), min(open_end if b is None else b, open_end)
        if b > a:
            out[zone].append(Interval(a, b))
    return dict(out)


def _mark_offline(history: dict[str, list[tuple[float, str]]], gaps: list[Interval]) -> None:
    """No monitor, no data: each living target is unknown during the gap, then as it was before it.

    A change recorded inside the gap (a remote poller's, handed over late with its real time) counts
    from that time: only what nobody saw is unknown."""
    for changes in history.values():
        extra: list[tuple[float, str]] = []
        for gap in gaps:
            before = [state for ts, state in changes if ts <= gap.start]
            if not before or before[-1] == REMOVED:
                continue  # not alive yet, or gone: outside its lifetime anyway
            extra.append((gap.start, "unknown"))
            if not any(gap.start < ts < gap.end for ts, _ in changes):
                extra.append((gap.end, before[-1]))  # (else the last change inside goes on: one failure)
        if extra:
            changes.extend(extra)
            changes.sort(key=lambda c: c[0])  # stable: a recorded change at a gap's edge stays after it


def _state(new: str, reason: str) -> str:
    return REMOVED if new == "unknown" and reason.startswith(REMOVED_REASON) else new


def _incidents(db: StoreConnection, period: Period, versions: dict[str, int]) -> list[IncidentRecord]:
    """Incidents overlapping the period (correlation's query), with when the desk took their tickets.

    A store where delivery never ran has no outbox table: no ticket times, acknowledgements only.
    """
    past = incidents_overlapping(db, period.start, period.end)
    ticketed = _ticket_times(db) if past and versions.get("delivery", 0) >= 1 else {}
    return [
        IncidentRecord(id=i.id, kind=i.kind, root=i.root, opened_at=i.opened_at, restored_at=i.restored_at,
                       targets=i.targets, customers=i.customers, acked_at=i.acked_at, ticketed_at=ticketed.get(i.id),
                       levels=i.levels)
        for i in past
    ]


def _ticket_times(db: StoreConnection) -> dict[str, float]:
    """When the desk accepted each incident's ticket (the delivery outbox), for response compliance."""
    rows = db.execute(
        "SELECT incident, MIN(done_at) FROM outbox WHERE action = 'ticket_open' AND status = 'delivered'"
        " AND done_at IS NOT NULL GROUP BY incident"
    )
    return {inc: float(ts) for inc, ts in rows}


def _maintenance(db: StoreConnection, period: Period) -> list[tuple[str, Interval]]:
    return [(node, Interval(s, e)) for node, s, e in windows_overlapping(db, period.start, period.end)]


def expand_maintenance(windows: list[tuple[str, Interval]], inv: Inventory) -> dict[str, list[Interval]]:
    """A window on a node covers the node and everything below it (as the correlation engine does)."""
    children = children_of(inv.targets.values())
    out: dict[str, list[Interval]] = defaultdict(list)
    for node, interval in windows:
        for cur in (node, *descendants(children, node)):
            out[cur].append(interval)
    return dict(out)
