"""What the public may see, as a pure function of the store's rows and the inventory (clock injected).

The public view is built here and only here, from an allow-list: incident kind, the municipalities
and site names of the area, times, estimate, counts. Customer names, ids, e-mails, phones, endpoint
ids and addresses never enter a :class:`PublicIncident` or :class:`PublicWindow`, so no template can
leak them. Which customers an incident or window touches is kept beside them (``by_customer``) for
the lookup only. Staff notes are not published (free text, may name a customer); the updates are
the lifecycle in plain words plus the restoration estimate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.correlate.incidents import parse_ts
from monitor.correlate.store import ETA_WITHDRAWN, IncidentRow, MaintenanceRow
from monitor.correlate.topology import children_of, descendants
from monitor.inventory.model import Inventory

#: incident kinds the public sees; ``single`` (one customer's line) and ``blind`` (the monitor's own
#: view) are for staff: the first would point at one customer, the second says nothing about service.
#: ``power`` is public only as a power cut in an area (rooted at a node): one ONU's dying gasp is its
#: customer's own power and would point at that customer, as a ``single`` would (:func:`public`)
PUBLIC_KINDS = ("outage", "suspected", "degraded", "planned", "power")
RECENT = 86_400.0  # resolved incidents stay on the page this long


@dataclass(frozen=True, slots=True)
class Update:
    ts: float
    what: str  # opened | confirmed | grew | shrank | eta | eta_withdrawn | restored
    customers: int = 0
    eta: float | None = None


@dataclass(frozen=True, slots=True)
class PublicIncident:
    ref: str  # the incident's number (INC-000042): what a caller can name on the phone
    kind: str
    municipalities: tuple[str, ...]  # municipality ids, inventory order
    sites: tuple[str, ...]  # site names
    since: float
    eta: float | None
    customers: int  # how many customers are affected (a count, never who)
    updates: tuple[Update, ...]  # newest first
    restored_at: float | None = None


@dataclass(frozen=True, slots=True)
class PublicWindow:
    ref: str  # MW-7
    start: float
    end: float
    municipalities: tuple[str, ...]
    sites: tuple[str, ...]
    reason: str  # the staff's reason: the same text the customers' advance notice carries
    customers: int


@dataclass(frozen=True, slots=True)
class StoreRows:
    """The store's rows one snapshot is built from (read by :mod:`monitor.web.source`)."""

    open: Sequence[IncidentRow]
    resolved: Sequence[IncidentRow]
    events: dict[str, list[dict[str, Any]]]  # per incident, oldest first
    actions: dict[str, list[tuple[float, str, str, str, float | None]]]
    windows: Sequence[MaintenanceRow]


@dataclass(frozen=True, slots=True)
class Snapshot:
    built_at: float
    incidents: tuple[PublicIncident, ...]  # open, newest first
    resolved: tuple[PublicIncident, ...]  # resolved within RECENT, newest first
    in_progress: tuple[PublicWindow, ...]
    upcoming: tuple[PublicWindow, ...]
    #: customer id -> what touches them (lookup only; never rendered on a public page)
    by_customer: dict[str, tuple[PublicIncident | PublicWindow, ...]] = field(default_factory=dict)

    def for_municipality(self, mid: str | None) -> Snapshot:
        """The part of the snapshot about one municipality (None: everything)."""
        if mid is None:
            return self

        def keep(items: Iterable[Any]) -> tuple[Any, ...]:
            return tuple(i for i in items if mid in i.municipalities)

        return Snapshot(self.built_at, keep(self.incidents), keep(self.resolved), keep(self.in_progress),
                        keep(self.upcoming))


def public(inv: Inventory, row: IncidentRow) -> bool:
    """Whether the public sees the incident: its kind is public, and a power incident is an area's.

    A ``degraded`` incident for weak levels (ONUs' optical power, stations' signal or CCQ below the
    thresholds: ``row.levels``) is for technicians: its customers still have service, and "slow or
    intermittent service" in the area would tell their neighbours something that is not so (issue 17).
    """
    if row.kind not in PUBLIC_KINDS or row.levels:
        return False
    root = inv.targets.get(row.root)
    return row.kind != "power" or (root is not None and root.role == "node")


def build(inv: Inventory, rows: StoreRows, now: float) -> Snapshot:
    area = _Area(inv)
    by_customer: dict[str, list[PublicIncident | PublicWindow]] = defaultdict(list)
    open_: list[PublicIncident] = []
    for row in rows.open:
        if not public(inv, row):
            continue
        inc, customers = _incident(row, rows, area, restored=None)
        open_.append(inc)
        for c in customers:
            by_customer[c].append(inc)
    resolved = []
    for row in rows.resolved:
        done = row.cleared_at if row.cleared_at is not None else row.closed_at
        if public(inv, row) and done is not None and now - done <= RECENT:
            resolved.append(_incident(row, rows, area, restored=done)[0])
    in_progress: list[PublicWindow] = []
    upcoming: list[PublicWindow] = []
    for w in rows.windows:
        if w.removed_at is not None or w.end <= now:
            continue
        munis, sites = area.of(area.below(w.node))
        pw = PublicWindow(f"MW-{w.id}", w.start, w.end, munis, sites, w.reason, len(w.customers))
        (in_progress if w.start <= now else upcoming).append(pw)
        for c in w.customers:
            by_customer[c].append(pw)
    return Snapshot(
        built_at=now,
        incidents=tuple(sorted(open_, key=lambda i: -i.since)),
        resolved=tuple(sorted(resolved, key=lambda i: -(i.restored_at or 0.0))),
        in_progress=tuple(in_progress),
        upcoming=tuple(sorted(upcoming, key=lambda w: w.start)),
        by_customer={c: tuple(v) for c, v in by_customer.items()},
    )


def _incident(row: IncidentRow, rows: StoreRows, area: _Area,
              restored: float | None) -> tuple[PublicIncident, set[str]]:
    events = rows.events.get(row.id, [])
    updates: list[Update] = []
    targets: set[str] = {row.root}
    customers: set[str] = set()
    prev_kind, prev_n = None, 0
    for e in events:
        if e["event"] in ("opened", "updated"):
            targets = {row.root, *e["affected_endpoints"], *e["affected_nodes"]}
            customers = set(e["affected_customers"])
            n = len(customers)
            if e["event"] == "opened":
                updates.append(Update(e["ts"], "opened", n))
            elif prev_kind is not None and e["kind"] != prev_kind and e["kind"] == "outage":
                updates.append(Update(e["ts"], "confirmed", n))
            elif n != prev_n:
                updates.append(Update(e["ts"], "grew" if n > prev_n else "shrank", n))
            prev_kind, prev_n = e["kind"], n
        elif e["event"] == "resolved":
            updates.append(Update(e["ts"], "restored", prev_n))
    eta: float | None = None
    for ts, action, _by, text, _done in rows.actions.get(row.id, []):
        if action != "eta":
            continue
        if text == ETA_WITHDRAWN:
            eta = None
            updates.append(Update(ts, "eta_withdrawn"))
            continue
        try:
            eta = parse_ts(text)
        except ValueError:
            continue
        updates.append(Update(ts, "eta", eta=eta))
    munis, sites = area.of(targets)
    updates.sort(key=lambda u: -u.ts)
    inc = PublicIncident(row.id, row.kind, munis, sites, row.opened_at, eta if restored is None else None,
                         len(customers), tuple(updates), restored)
    return inc, customers


class _Area:
    """Names the part of the network a set of targets is in: municipalities and sites, never targets."""

    def __init__(self, inv: Inventory) -> None:
        self.inv = inv
        self.order = {m: i for i, m in enumerate(inv.municipalities)}
        self.children = children_of(inv.targets.values())

    def of(self, targets: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        munis: set[str] = set()
        sites: set[str] = set()
        for tid in targets:
            t = self.inv.targets.get(tid)
            if t is None:
                continue
            if t.municipality in self.order:
                munis.add(t.municipality)
            if t.site is not None and t.site in self.inv.sites:
                sites.add(self.inv.sites[t.site].name)
        return tuple(sorted(munis, key=self.order.__getitem__)), tuple(sorted(sites))

    def below(self, node: str) -> set[str]:
        """The node and everything below it."""
        return {node, *descendants(self.children, node)}
