"""Points for board annotations and the map: incident lifecycle, state transitions, site coordinates.

The ``state`` measurement (``monitor.tsdb.schema``) is written on every poll, which is right for
availability but useless for marking *when* something changed. These measurements are written only
when something happens, so Grafana can draw them as annotations and list open incidents:

* ``incident`` — one point per lifecycle event (opened, updated, merged, resolved);
* ``state_change`` — one point per confirmed transition of a target;
* ``site`` — each site's coordinates, for the NOC map (written at start and on reload).

Fields are numbers only, like every other measurement (docs/timeseries.md): the words a board shows
(incident id, kind, event, root, old/new state) are tags, which are few per incident or change.
"""

from __future__ import annotations

from collections.abc import Iterable

from monitor.correlate.incidents import IncidentEvent
from monitor.inventory.model import Inventory, Target
from monitor.state import StateChange
from monitor.tsdb.point import Point, make_point, seconds_to_ns
from monitor.tsdb.schema import STATE_CODES, target_tags

INCIDENT = "incident"
STATE_CHANGE = "state_change"
SITE = "site"

KIND_CODES = {"outage": 0, "suspected": 1, "single": 2, "planned": 3, "blind": 4, "degraded": 5, "power": 6}
EVENT_CODES = {"opened": 1, "updated": 2, "merged": 3, "resolved": 4}


def incident_point(event: IncidentEvent, root: Target | None) -> Point:
    """``open`` is 1 while the incident is open, 0 on its last event: ``last("open") = 1`` lists open ones."""
    tags = {
        "incident": event.incident,
        "kind": event.kind,
        "event": event.event,
        "root": event.root,
        "site": root.site if root else None,
        "municipality": root.municipality if root else None,
    }
    fields = {
        "open": int(event.event not in ("merged", "resolved")),
        "affected_endpoints": len(event.affected_endpoints),
        "affected_customers": len(event.affected_customers),
        "affected_nodes": len(event.affected_nodes),
        "event_code": EVENT_CODES[event.event],
        "kind_code": KIND_CODES[event.kind],
    }
    return make_point(INCIDENT, tags, fields, seconds_to_ns(event.ts))


def incident_points(events: Iterable[IncidentEvent], inventory: Inventory) -> list[Point]:
    return [incident_point(e, inventory.targets.get(e.root)) for e in events]


def state_change_point(change: StateChange, target: Target) -> Point:
    """A transition with the target's usual tags plus ``old``/``new`` (state names) as tags."""
    tags: dict[str, str | None] = {**target_tags(target), "old": change.old.value, "new": change.new.value}
    fields = {"state": STATE_CODES[change.new.value.upper()], "old_state": STATE_CODES[change.old.value.upper()]}
    return make_point(STATE_CHANGE, tags, fields, seconds_to_ns(change.ts))


def state_change_points(changes: Iterable[StateChange], inventory: Inventory) -> list[Point]:
    """The daemon's hook: one point per transition of a target still in the inventory."""
    return [state_change_point(c, inventory.targets[c.target]) for c in changes if c.target in inventory.targets]


def site_points(inventory: Inventory, ts: float) -> list[Point]:
    """Coordinates of every site that has them (the geomap joins them to availability by ``site``)."""
    out = []
    for site in inventory.sites.values():
        if site.lat is None or site.lon is None:
            continue
        tags = {"site": site.id, "municipality": site.municipality, "name": site.name}
        out.append(make_point(SITE, tags, {"lat": float(site.lat), "lon": float(site.lon)}, seconds_to_ns(ts)))
    return out
