"""Read a :class:`ReportInput` from the daemon's store (``<state_dir>/monitor.db``), read-only.

Tables (schema in ``monitor.store.MIGRATIONS``): ``state_changes`` (the append-only log, from
migration 1) and, from migration 2, ``incidents``/``incident_events`` (lifecycle history) and
``maintenance`` (planned windows). The file is opened read-only so that a report can never
interfere with the running daemon beyond SQLite's shared WAL reads.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path

from monitor.errors import StorageError
from monitor.inventory.model import Inventory
from monitor.report.compute import REMOVED, Progress
from monitor.report.model import IncidentRecord, Interval, Period, ReportInput

REMOVED_REASON = "removed"  # a change to unknown with this reason prefix: the target left the inventory


def load_input(db_path: Path, inv: Inventory, period: Period, progress: Progress | None = None,
               until: float | None = None) -> ReportInput:
    """``until``: the store's "now"; the part of the period after it has no data yet."""
    if not db_path.exists():
        raise StorageError(f"{db_path}: no store here (has the daemon run with this config?)")
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open the store {db_path}: {exc}") from exc
    try:
        db.execute("PRAGMA busy_timeout=5000")
        history = _history(db, period)
        if progress is not None:
            progress(f"read the state history of {len(history)} targets")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        incidents = _incidents(db, period) if version >= 2 else []
        windows = _maintenance(db, period) if version >= 2 else []
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read the store {db_path}: {exc}") from exc
    finally:
        db.close()
    if progress is not None:
        progress(f"read {len(incidents)} incidents and {len(windows)} maintenance windows")
    open_end = period.end if until is None else min(period.end, until)
    blind = [Interval(i.opened_at, i.restored_at if i.restored_at is not None else open_end)
             for i in incidents if i.kind == "blind"]
    return ReportInput(period=period, inventory=inv, history=history,
                       maintenance=expand_maintenance(windows, inv), blind=blind, incidents=incidents, until=until)


def _history(db: sqlite3.Connection, period: Period) -> dict[str, list[tuple[float, str]]]:
    history: dict[str, list[tuple[float, str]]] = defaultdict(list)
    # The state each target was in when the period began (SQLite returns the row of MAX(id)).
    before = db.execute(
        "SELECT target, ts, new, reason, MAX(id) FROM state_changes WHERE ts < ? GROUP BY target", (period.start,)
    )
    for target, ts, new, reason, _ in before:
        history[target].append((ts, _state(new, reason)))
    rows = db.execute(
        "SELECT target, ts, new, reason FROM state_changes WHERE ts >= ? AND ts < ? ORDER BY ts, id",
        (period.start, period.end),
    )
    for target, ts, new, reason in rows:
        history[target].append((ts, _state(new, reason)))
    return dict(history)


def _state(new: str, reason: str) -> str:
    return REMOVED if new == "unknown" and reason.startswith(REMOVED_REASON) else new


def _incidents(db: sqlite3.Connection, period: Period) -> list[IncidentRecord]:
    """Incidents overlapping the period; merged ones are left out (their targets live on in the parent)."""
    rows = db.execute(
        "SELECT id, kind, root, opened_at, COALESCE(cleared_at, closed_at), acked_at FROM incidents"
        " WHERE status != 'merged' AND opened_at < ? AND (COALESCE(cleared_at, closed_at) IS NULL"
        " OR COALESCE(cleared_at, closed_at) > ?) ORDER BY seq",
        (period.end, period.start),
    ).fetchall()
    if not rows:
        return []
    wanted = {r[0] for r in rows}
    targets: dict[str, set[str]] = defaultdict(set)
    customers: dict[str, set[str]] = defaultdict(set)
    events = db.execute(
        "SELECT incident, affected_endpoints, affected_customers, affected_nodes FROM incident_events"
        " WHERE ts < ? AND event IN ('opened', 'updated')", (period.end,)
    )
    for inc, eps, custs, nodes in events:
        if inc in wanted:
            targets[inc].update(json.loads(eps), json.loads(nodes))
            customers[inc].update(json.loads(custs))
    return [
        IncidentRecord(id=iid, kind=kind, root=root, opened_at=opened, restored_at=restored,
                       targets=tuple(sorted(targets[iid])), customers=tuple(sorted(customers[iid])), acked_at=acked)
        for iid, kind, root, opened, restored, acked in rows
    ]


def _maintenance(db: sqlite3.Connection, period: Period) -> list[tuple[str, Interval]]:
    rows = db.execute(
        "SELECT node, start, end FROM maintenance WHERE removed_at IS NULL AND start < ? AND end > ?",
        (period.end, period.start),
    )
    return [(node, Interval(s, e)) for node, s, e in rows]


def expand_maintenance(windows: list[tuple[str, Interval]], inv: Inventory) -> dict[str, list[Interval]]:
    """A window on a node covers the node and everything below it (as the correlation engine does)."""
    children: dict[str, list[str]] = defaultdict(list)
    for t in inv.targets.values():
        for p in t.parents:
            children[p].append(t.id)
    out: dict[str, list[Interval]] = defaultdict(list)
    for node, interval in windows:
        seen = {node}
        stack = [node]
        while stack:
            cur = stack.pop()
            out[cur].append(interval)
            for c in children.get(cur, ()):
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
    return dict(out)
