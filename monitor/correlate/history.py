"""Correlation's history for readers outside the daemon: incidents and maintenance over a period.

The monthly report reads the store on its own read-only connection (a report must never get in the
daemon's way), so these are functions over a connection rather than :class:`IncidentStore`
methods. They live here, beside the tables' migrations (``monitor.correlate.schema``), so the
incident tables have one owner and a second engine (issue 13) changes their SQL in one package.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from monitor.correlate.degraded import LEVELS_BASIS
from monitor.db import StoreConnection

# When an incident's failure was over. A blindness is over only when it ended (cleared_at): staff may
# resolve its alert earlier (closed_at) while the monitor is still blind; NULL = still blind.
_RESTORED = "CASE WHEN kind = 'blind' THEN cleared_at ELSE COALESCE(cleared_at, closed_at) END"


@dataclass(frozen=True, slots=True)
class PastIncident:
    """One incident over its whole life: what it touched, and when service was back (None: not yet)."""

    id: str
    kind: str
    root: str
    opened_at: float
    restored_at: float | None
    acked_at: float | None
    targets: tuple[str, ...]  # every endpoint and node ever attached
    customers: tuple[str, ...]  # every customer ever affected
    #: a ``degraded`` incident for weak levels below a PON port or AP (basis ``levels``): its customers
    #: kept their service, so it is no failure (the report shows it as time degraded per node)
    levels: bool = False


def incidents_overlapping(db: StoreConnection, start: float, end: float) -> list[PastIncident]:
    """Incidents whose failure overlaps [start, end), oldest first; merged ones are left out (their
    targets live on in the incident they merged into)."""
    rows = db.execute(
        f"SELECT id, kind, root, opened_at, {_RESTORED}, acked_at, basis FROM incidents"
        f" WHERE status != 'merged' AND opened_at < ? AND ({_RESTORED} IS NULL OR {_RESTORED} > ?) ORDER BY seq",
        (end, start),
    ).fetchall()
    if not rows:
        return []
    wanted = {r[0] for r in rows}
    targets: dict[str, set[str]] = defaultdict(set)
    customers: dict[str, set[str]] = defaultdict(set)
    events = db.execute(
        "SELECT incident, affected_endpoints, affected_customers, affected_nodes FROM incident_events"
        " WHERE ts < ? AND event IN ('opened', 'updated')", (end,)
    )
    for inc, eps, custs, nodes in events:
        if inc in wanted:
            targets[inc].update(json.loads(eps), json.loads(nodes))
            customers[inc].update(json.loads(custs))
    return [
        PastIncident(id=iid, kind=kind, root=root, opened_at=opened, restored_at=restored, acked_at=acked,
                     targets=tuple(sorted(targets[iid])), customers=tuple(sorted(customers[iid])),
                     levels=basis == LEVELS_BASIS)
        for iid, kind, root, opened, restored, acked, basis in rows
    ]


def windows_overlapping(db: StoreConnection, start: float, end: float) -> list[tuple[str, float, float]]:
    """(node, start, end) of every maintenance window not removed that overlaps [start, end)."""
    rows = db.execute(
        'SELECT node, start, "end" FROM maintenance WHERE removed_at IS NULL AND start < ? AND "end" > ?', (end, start)
    )
    return [(node, s, e) for node, s, e in rows]
