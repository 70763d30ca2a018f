"""Pure planning: incident lifecycle events (+ inventory, config, memory, clock) → outbox items.

No I/O here, so every rule is a unit test with an injected time: one ticket per incident (reopened
when the same root fails again soon), technician alerts from the on-call rota with escalation when
nobody acknowledges, customer notices at most one opened/restored pair per customer and incident,
nothing to customers while the monitor is blind, none for single failures unless configured, opt-out
respected, "restored" only to a customer whose every endpoint answers (one still down is told once
that their case goes on individually, and "restored" when it really is), desk comments and customer
updates only on meaningful change and throttled (a new, changed or withdrawn restoration estimate,
ETA, set by staff counts as one).

The memory (:class:`IncidentMemory` per incident, :class:`GlobalMemory`) is returned with the items
and stored by the service in the same transaction as the outbox rows, so a crash never leaves a
decision half-recorded; every item also carries an idempotency key, so planning twice is harmless.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypedDict
from urllib.parse import quote
from zoneinfo import ZoneInfo

from monitor.api.links import AckLinks
from monitor.correlate.degraded import weak_levels
from monitor.correlate.incidents import IncidentEvent, Kind
from monitor.correlate.topology import children_of, descendants
from monitor.delivery.config import DeliveryConfig, OnCall
from monitor.inventory.model import PON_PORT_KIND, Customer, Inventory

#: customer-facing incident kinds that mean "your service is down"
SERVICE_KINDS = ("outage", "suspected", "single")
#: customer-facing kinds: those, ``degraded`` (a lossy link above: "degraded service" notices) and
#: ``power`` (ONUs' dying gasp: "power cut in your area"), only when the config's ``customers.kinds`` lists it
NOTICE_KINDS = (*SERVICE_KINDS, "degraded", "power")

#: which of the given endpoints are confirmed DOWN now (the daemon asks the state-change log's current
#: states; None: every endpoint counts as answering)
DownOf = Callable[[Sequence[str]], Collection[str]]


#: Where delivery is with an incident: ``pending`` is one a merge named before its own "opened" came.
MemoryStatus = Literal["open", "pending", "resolved", "merged"]


class Place(TypedDict):
    """Where a node is: names for messages, ids for routing (on-call, MQTT topics, status pages)."""

    node: str
    node_name: str
    node_kind: str
    site: str
    site_name: str
    municipality: str
    municipality_name: str


@dataclass(frozen=True, slots=True)
class Item:
    """One side effect to deliver. ``template`` "" means ``data`` is sent as is (MQTT JSON)."""

    incident: str
    action: str
    recipient: str
    version: int | str  # a count (1, tier, update number), or the event's reference (MQTT, see _event_ref)
    channel: str  # a name in delivery/channels.py REGISTRY: email | mqtt | desk | webhook | apprise
    template: str
    language: str
    data: dict[str, Any]
    group: str = ""  # items of one group are delivered strictly in order

    @property
    def key(self) -> str:
        return f"{self.incident}/{self.action}/{self.recipient}/{self.version}"


@dataclass(slots=True)
class IncidentMemory:
    """What delivery already decided for one incident (JSON in ``delivery_state``)."""

    incident: str
    kind: Kind
    root: str
    opened_at: float
    status: MemoryStatus = "open"
    notified: list[str] = field(default_factory=list)  # customers who got "opened"
    restored: list[str] = field(default_factory=list)  # customers who got "restored"
    # customers told their case goes on individually (their endpoint still down when this incident let
    # them go): "restored" comes when it answers (GlobalMemory.continuing)
    continuing: list[str] = field(default_factory=list)
    desk_customers: list[str] = field(default_factory=list)  # affected set last told to the desk
    ticket_incident: str = ""  # whose ticket this incident uses ("" = no ticket)
    comments: int = 0
    last_comment: float = 0.0
    comment_due: bool = False  # a meaningful change is waiting for the throttle
    tiers: list[str] = field(default_factory=list)  # on-call chain chosen at opening
    tier: int = -1  # highest tier alerted
    tier_at: list[float] = field(default_factory=list)  # when each tier was alerted
    phoned: list[int] = field(default_factory=list)  # tiers whose phone/chat message went out
    acked: bool = False
    updates: int = 0  # customer update notices sent
    last_update: float = 0.0
    affected: int = 0  # customers affected now
    nodes: list[str] = field(default_factory=list)
    customers_now: list[str] = field(default_factory=list)
    eta: float = 0.0  # restoration estimate last acted on (0 = none, or withdrawn)
    eta_due: bool = False  # customers still to be told the ETA or its withdrawal (waiting for the throttle)
    eta_told: list[str] = field(default_factory=list)  # customers whose last update gave them an ETA
    eta_by: str = ""  # who set or withdrew it (staff name: the desk's comment says so)
    #: a ``degraded`` incident for weak levels (optical rx, signal, CCQ below the thresholds, one per PON
    #: port or AP): technicians only, as information (one ticket, the first on call, no escalation);
    #: never a customer notice, whatever ``customers.kinds`` says of a lossy link's degraded service
    levels: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IncidentMemory:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(slots=True)
class GlobalMemory:
    blind: list[str] = field(default_factory=list)  # open blind incidents
    recent: dict[str, tuple[str, float]] = field(default_factory=dict)  # root → (ticket incident, resolved)
    maintenance: dict[str, list[str]] = field(default_factory=dict)  # window id → phases sent
    held: dict[str, list[str]] = field(default_factory=dict)  # window id → customers its end notice waits for
    continuing: dict[str, str] = field(default_factory=dict)  # customer → incident whose "restored" they wait for
    #: the last staff action (``incident_actions`` id) the desk was told of; None: not known yet (the
    #: service starts it at the newest, so an upgrade does not comment an incident's whole history)
    staff_cursor: int | None = None
    #: remote zones whose blindness technicians were alerted of -> when it began (monitor.delivery.zones)
    zones: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"blind": self.blind, "recent": {k: list(v) for k, v in self.recent.items()},
                "maintenance": self.maintenance, "held": self.held, "continuing": self.continuing,
                "staff_cursor": self.staff_cursor, "zones": self.zones}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GlobalMemory:
        """Also reads a memory stored before a key existed (it starts empty), or with one that is gone
        (``seq``, the counter MQTT keys were once made from)."""
        return cls(list(d.get("blind", [])), {k: (v[0], v[1]) for k, v in d.get("recent", {}).items()},
                   dict(d.get("maintenance", {})),
                   {k: list(v) for k, v in d.get("held", {}).items()}, dict(d.get("continuing", {})),
                   d.get("staff_cursor"), {str(k): float(v) for k, v in d.get("zones", {}).items()})


class Window(Protocol):
    """A maintenance window as delivery reads it (``monitor.correlate.store.MaintenanceRow``)."""

    @property
    def id(self) -> int: ...
    @property
    def node(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def reason(self) -> str: ...
    @property
    def customers(self) -> tuple[str, ...]: ...  # empty = every customer below the node


@dataclass(slots=True)
class Plan:
    items: list[Item] = field(default_factory=list)
    memories: dict[str, IncidentMemory] = field(default_factory=dict)  # changed ones
    acks: list[str] = field(default_factory=list)  # incidents to record as acknowledged


class Context:
    """Inventory and config lookups the rules need, built once per (re)load."""

    def __init__(self, inventory: Inventory, config: DeliveryConfig) -> None:
        self.inv = inventory
        self.cfg = config
        self.tz = ZoneInfo(config.timezone)
        self.endpoint_customer = {t.id: t.customer for t in inventory.targets.values() if t.customer}
        self._children: dict[str, tuple[str, ...]] | None = None
        #: signs the one-click ack link of each technician alert email (``api:`` with public_url and link_key)
        self.links = AckLinks.from_settings(inventory.api) if inventory.api is not None and inventory.api.links \
            else None

    def customer(self, cid: str) -> Customer | None:
        return self.inv.customers.get(cid)

    def place(self, node: str) -> Place:
        """Where a node is: names for messages and ids for routing."""
        t = self.inv.targets.get(node)
        site = self.inv.sites.get(t.site) if t and t.site else None
        muni_id = (t.municipality if t else None) or (site.municipality if site else "") or ""
        muni = self.inv.municipalities.get(muni_id)
        return {
            "node": node, "node_name": (t.name if t and t.name else node), "node_kind": t.kind if t else "",
            "site": site.id if site else "", "site_name": site.name if site else "",
            "municipality": muni_id, "municipality_name": muni.name if muni else muni_id,
        }

    def location(self, node: str) -> dict[str, str]:
        """The node's site coordinates and a map link to them ("" when the site has none)."""
        t = self.inv.targets.get(node)
        site = self.inv.sites.get(t.site) if t and t.site else None
        if site is None or site.lat is None or site.lon is None:
            return {"coordinates": "", "map_url": ""}
        lat, lon = f"{site.lat:.6f}", f"{site.lon:.6f}"
        return {"coordinates": f"{lat}, {lon}",
                "map_url": f"https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=16/{lat}/{lon}"}

    def node_line(self, node: str) -> dict[str, str]:
        """A node below an incident's root as a technician's list shows it."""
        place = self.place(node)
        return {"id": node, "name": place["node_name"], "kind": place["node_kind"], "site_name": place["site_name"]}

    def local(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.tz).strftime("%Y-%m-%d %H:%M")

    def response_hours(self, cid: str) -> float:
        c = self.customer(cid)
        sc = self.inv.service_classes.get(c.service_class) if c else None
        return sc.response_hours if sc else 24.0

    def below(self, node: str) -> list[str]:
        """Customers with an endpoint anywhere below ``node`` (maintenance notices)."""
        if self._children is None:
            self._children = children_of(self.inv.targets.values())
        return sorted({c for t in (node, *descendants(self._children, node)) if (c := self.endpoint_customer.get(t))})

    def oncall(self, root: str, now: float) -> tuple[str, ...]:
        """The technician chain (tier 0 first) on call now for the root's municipality and kind."""
        place = self.place(root)
        local = datetime.fromtimestamp(now, self.tz)
        day, minute = local.weekday(), local.hour * 60 + local.minute

        def rank(r: OnCall) -> tuple[int, int]:
            return (0 if r.municipality == place["municipality"] else 1, 0 if r.kinds else 1)

        # a PON port node (added by the loader, not written in the config) is routed as its OLT is
        kinds = {place["node_kind"], "olt"} if place["node_kind"] == PON_PORT_KIND else {place["node_kind"]}
        rules = [r for r in self.cfg.oncall
                 if r.municipality in (place["municipality"], "*") and (not r.kinds or kinds & set(r.kinds))]
        for rule in sorted(rules, key=rank):
            for s in rule.shifts:
                if _covers(s.days, s.start, s.end, day, minute):
                    return s.tiers
        return ()


def _covers(days: tuple[int, ...], start: int, end: int, day: int, minute: int) -> bool:
    if start < end:
        return day in days and start <= minute < end
    # overnight shift: from start on a listed day until end on the next day
    return (day in days and minute >= start) or ((day - 1) % 7 in days and minute < end)


# ---------------------------------------------------------------------------------------------- events


def plan(
    events: Sequence[IncidentEvent], memories: dict[str, IncidentMemory], glob: GlobalMemory, ctx: Context,
    now: float, down: DownOf | None = None,
) -> Plan:
    """Items for a batch of lifecycle events. ``memories`` holds what is known of their incidents;
    ``down`` tells which endpoints are down now (no "restored" to a customer with one of them).

    Merges are applied first: a parent opened in the same batch must not notify the customers its
    merged child already told.
    """
    out = Plan()
    mem = dict(memories)
    for e in events:
        if e.event == "merged" and e.into:
            child = mem.get(e.incident)
            if child is not None:
                parent = mem.setdefault(e.into, IncidentMemory(e.into, e.kind, e.root, e.ts, status="pending"))
                # those still following the child follow the parent now, also one the parent had let go
                # before ("restored", or "continues": the child told them later; issue 19)
                following = set(child.notified) - set(child.restored) - set(child.continuing)
                parent.notified = _union(parent.notified, child.notified)
                parent.restored = [c for c in _union(parent.restored, child.restored) if c not in following]
                parent.continuing = [c for c in _union(parent.continuing, child.continuing) if c not in following]
                out.memories[parent.incident] = parent
    for e in events:
        if e.event in ("updated", "resolved"):
            m = (_updated if e.event == "updated" else _resolved)(e, mem, glob, ctx, now, out, down)
        else:
            m = (_opened if e.event == "opened" else _merged)(e, mem, glob, ctx, now, out)
        if m is not None:
            mem[m.incident] = m
            out.memories[m.incident] = m
    return out


def _union(a: Iterable[str], b: Iterable[str]) -> list[str]:
    return sorted(set(a) | set(b))


def _opened(e: IncidentEvent, mem: dict[str, IncidentMemory], glob: GlobalMemory, ctx: Context, now: float,
            out: Plan) -> IncidentMemory:
    m = mem.get(e.incident)
    if m is None or m.status == "pending":
        base = m
        m = IncidentMemory(e.incident, e.kind, e.root, e.ts)
        if base is not None:
            m.notified, m.restored = base.notified, base.restored
    m.kind, m.nodes, m.customers_now, m.affected = e.kind, list(e.affected_nodes), list(e.affected_customers), len(
        e.affected_customers)
    m.levels = m.levels or (e.kind == "degraded" and weak_levels(e.detail))
    _status(e, ctx, out, "down")
    if e.kind == "blind":
        if e.incident not in glob.blind:
            glob.blind.append(e.incident)
        _alert_technicians(e, m, ctx, now, out, tier=0)
        return m
    if e.kind == "planned":
        return m
    if _wants_ticket(e, ctx):
        _open_ticket(e, m, glob, ctx, out)
        if m.levels or (e.kind == "power" and not _own_power(e, ctx)):
            _inform_technicians(e, m, ctx, out)
        elif e.kind != "power":
            _alert_technicians(e, m, ctx, now, out, tier=0)
    if not m.levels:
        _notify_opened(e, m, e.affected_customers, glob, ctx, out)
    return m


def _updated(e: IncidentEvent, mem: dict[str, IncidentMemory], glob: GlobalMemory, ctx: Context, now: float,
             out: Plan, down: DownOf | None) -> IncidentMemory | None:
    m = mem.get(e.incident)
    if m is None:  # opened before delivery existed: treat as opened
        return _opened(e, mem, glob, ctx, now, out)
    kind_changed = m.kind != e.kind
    old_customers = set(m.customers_now)
    m.kind, m.nodes, m.customers_now, m.affected = e.kind, list(e.affected_nodes), list(e.affected_customers), len(
        e.affected_customers)
    _status(e, ctx, out, "down")
    if e.kind in ("blind", "planned"):
        return m
    if not m.ticket_incident and _wants_ticket(e, ctx):  # e.g. planned → outage when the window ended
        _open_ticket(e, m, glob, ctx, out)
        if m.levels:
            _inform_technicians(e, m, ctx, out)
        elif e.kind != "power":
            _alert_technicians(e, m, ctx, now, out, tier=0)
    elif m.ticket_incident:
        if kind_changed and e.kind != "power" and m.tier < 0:
            _alert_technicians(e, m, ctx, now, out, tier=0)  # a power cut whose OLT went down: the crew now
        change = len(set(e.affected_customers) ^ set(m.desk_customers))
        if kind_changed or change >= ctx.cfg.desk.comment_min_change:
            m.comment_due = True
        if m.comment_due and (kind_changed or now >= m.last_comment + ctx.cfg.desk.comment_min_interval):
            _comment(e.incident, m, ctx, now, out, reason="kind" if kind_changed else "affected")
    if m.levels:
        return m  # weak levels: technicians only (the desk's comments above), never customers
    _notify_opened(e, m, e.affected_customers, glob, ctx, out)
    cn = ctx.cfg.customers
    if cn.restore_on_partial:
        gone = sorted(old_customers - set(e.affected_customers))
        _notify_restored(e, m, gone, glob, ctx, out, down)
    if kind_changed and m.notified and now >= m.last_update + cn.update_min_interval and _customer_kind(e.kind, ctx):
        m.updates += 1
        m.last_update = now
        m.eta_due = False  # the update carries the ETA too
        _notify_updated(e, m, _still_told(m), ctx, out)
    return m


def _merged(e: IncidentEvent, mem: dict[str, IncidentMemory], glob: GlobalMemory, ctx: Context, now: float,
            out: Plan) -> IncidentMemory | None:
    m = mem.get(e.incident)
    if m is None:
        return None
    m.status = "merged"
    _status(e, ctx, out, "merged")
    if m.ticket_incident:
        data = _ticket_data(e, m, ctx)
        data.update(into=e.into, reason="merged")
        out.items.append(_desk(m, "ticket_resolve", 1, "ticket_resolved", ctx, data))
    return m


def _resolved(e: IncidentEvent, mem: dict[str, IncidentMemory], glob: GlobalMemory, ctx: Context, now: float,
              out: Plan, down: DownOf | None) -> IncidentMemory | None:
    m = mem.get(e.incident)
    if m is None:
        return None
    m.status = "resolved"
    m.customers_now = []
    _status(e, ctx, out, "up")
    if e.incident in glob.blind:
        glob.blind.remove(e.incident)
    if m.ticket_incident:
        if m.comment_due:
            _comment(e.incident, m, ctx, now, out, reason="affected")
        data = _ticket_data(e, m, ctx)
        data.update(reason="restored", duration=_duration(e.ts - m.opened_at))
        out.items.append(_desk(m, "ticket_resolve", 1, "ticket_resolved", ctx, data))
        glob.recent[m.root] = (m.ticket_incident, e.ts)
    for t, tech in enumerate(m.tiers[: m.tier + 1]):  # "resolved" by phone to those who were phoned
        phone = t in m.phoned or ctx.cfg.escalation.phone_wait(t) <= 0
        _tech_message(e, m, tech, "tech_resolved", 1, "technician_resolved", ctx, out, phone=phone)
    _notify_restored(e, m, sorted(set(m.notified) - set(m.restored)), glob, ctx, out, down)
    return m


# ---------------------------------------------------------------------------------------------- timers


def tick(memories: Iterable[IncidentMemory], glob: GlobalMemory, ctx: Context, now: float,
         acked: set[str], etas: Mapping[str, float | None] | None = None, down: DownOf | None = None,
         eta_by: Mapping[str, str] | None = None) -> Plan:
    """Time-driven items: escalation of unacknowledged incidents, throttled desk comments, ETAs, and
    "restored" to customers whose case went on individually once their endpoints answer (``down``).

    ``etas`` holds the latest restoration estimate staff set per open incident (incident store);
    None = withdrawn. An incident missing from it is left as it is; ``eta_by``: who set each one.
    ``memories``: the open incidents' and those of the incidents in ``glob.continuing``.
    """
    out = Plan()
    esc = ctx.cfg.escalation
    memories = list(memories)
    if glob.continuing and down is not None:
        _restore_continuing(memories, glob, ctx, now, out, down)
    for m in memories:
        if m.status != "open":
            continue
        changed = False
        if m.incident in acked and not m.acked:
            m.acked, changed = True, True
        nxt = m.tier + 1
        if (m.tier >= 0 and not m.acked and nxt < len(m.tiers) and nxt <= esc.max_tier
                and now >= _alerted_at(m) + esc.after * nxt):
            fake = IncidentEvent(now, "updated", m.incident, m.kind, m.root, (), tuple(m.customers_now),
                                 tuple(m.nodes))
            _alert_technicians(fake, m, ctx, now, out, tier=nxt)
            changed = True
        if not m.acked and _phone_later(m, ctx, now, out):
            changed = True
        if etas and m.incident in etas and _new_eta(m, etas[m.incident], ctx, now, out,
                                                    (eta_by or {}).get(m.incident, "")):
            changed = True
        if m.eta_due and _tell_eta(m, glob, ctx, now, out):
            changed = True
        if m.ticket_incident and m.comment_due and now >= m.last_comment + ctx.cfg.desk.comment_min_interval:
            _comment(m.incident, m, ctx, now, out, reason="affected")
            changed = True
        if changed:
            out.memories[m.incident] = m
    return out


def _new_eta(m: IncidentMemory, eta: float | None, ctx: Context, now: float, out: Plan, by: str = "") -> bool:
    """Act on the estimate staff set (None: withdrawn): the desk hears at once, customers become due.

    Moves under ``eta_min_change`` are noise. A withdrawal is news only to those who were told an
    estimate: the desk (always told at once) and the customers in ``eta_told``; an update with the
    old estimate still waiting for the throttle is dropped instead.
    """
    if eta is None:
        if not m.eta:
            return False
        m.eta, m.eta_due, reason = 0.0, bool(set(m.eta_told) - set(m.restored)), "eta_withdrawn"
    elif not m.eta or abs(eta - m.eta) >= ctx.cfg.eta_min_change:
        m.eta, m.eta_due, reason = eta, True, "eta"
    else:
        return False
    m.eta_by = by
    if m.ticket_incident:
        _comment(m.incident, m, ctx, now, out, reason=reason)
    return True


def _tell_eta(m: IncidentMemory, glob: GlobalMemory, ctx: Context, now: float, out: Plan) -> bool:
    """An update notice with the ETA to every customer told of the incident and not yet restored, or
    (ETA withdrawn) one saying there is no estimate now to those who were given one.

    At most one update per ``update_min_interval`` (a newer ETA in between replaces the waiting one);
    held while the monitor is blind. False when it has to wait.
    """
    cn = ctx.cfg.customers
    if glob.blind or now < m.last_update + cn.update_min_interval:
        return False
    m.eta_due = False
    todo = sorted(set(m.notified if m.eta else m.eta_told) - set(m.restored) - set(m.continuing))
    if todo and cn.enabled and _customer_kind(m.kind, ctx):
        m.updates += 1
        m.last_update = now
        fake = IncidentEvent(now, "updated", m.incident, m.kind, m.root, (), tuple(m.customers_now),
                             tuple(m.nodes))
        _notify_updated(fake, m, todo, ctx, out)
    return True


def plan_maintenance(windows: Sequence[Window], open_incidents: Iterable[IncidentMemory], glob: GlobalMemory,
                     ctx: Context, now: float) -> Plan:
    """Advance, start and end notices for maintenance windows (each phase once per customer).

    ``windows`` are all the windows known (ended ones too); ``open_incidents`` the memories of the
    open incidents. The end notice says "service should be back": a customer still affected by an
    open incident when the window ends is held (``glob.held``) instead. A held customer gets it once
    no open incident affects them any more (the planned one resolved), unless the outage path told
    them first (a ``customer_opened`` notice, see :func:`_notify_opened`): then opened/restored is
    all they hear. A customer already told of an open incident at the end is never held.
    """
    out = Plan()
    cn = ctx.cfg.customers
    affected: dict[str, bool] = {}  # customer → told of an open incident affecting them
    for m in open_incidents:
        if m.status == "open":
            told = set(m.notified)
            for cid in m.customers_now:
                affected[cid] = affected.get(cid, False) or cid in told
    for w in windows:
        wid = f"MW-{w.id}"
        done = glob.maintenance.setdefault(wid, [])
        phases = []
        if now < w.start and now >= w.start - cn.maintenance_lead and "advance" not in done:
            phases.append("advance")
        if w.start <= now < w.end and "start" not in done:
            phases.append("start")
        if now >= w.end and "start" in done and "end" not in done:
            phases.append("end")
        for phase in phases:
            done.append(phase)
            todo = list(w.customers or ctx.below(w.node))
            if phase == "end":
                held = [c for c in todo if affected.get(c) is False]
                if held:
                    glob.held[wid] = held
                todo = [c for c in todo if c not in affected]
            _maintenance_notices(w, wid, phase, todo, ctx, out)
        waiting = glob.held.get(wid)
        if waiting and "end" not in phases:
            back = [c for c in waiting if c not in affected]
            if back:
                _maintenance_notices(w, wid, "end", back, ctx, out)
                _release(glob, back, wid)
    return out


class StaffAction(Protocol):
    """One row of ``incident_actions`` (see ``IncidentStore.staff_actions``)."""

    @property
    def id(self) -> int: ...
    @property
    def incident(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def action(self) -> str: ...
    @property
    def author(self) -> str: ...
    @property
    def text(self) -> str: ...


#: actions the desk hears of with their author's name (an estimate has its own comment, see _new_eta)
TOLD_ACTIONS = ("ack", "note", "resolve")
#: authors that are not people: the correlation engine's notes on why an incident opened
MACHINE_AUTHORS = ("correlation",)


def plan_staff(actions: Sequence[StaffAction], memories: Mapping[str, IncidentMemory], glob: GlobalMemory,
               ctx: Context) -> Plan:
    """A comment on the incident's ticket for each ack, note and resolve staff made (board, CLI, API,
    MQTT), naming who: the desk's audit trail. ``actions`` are those after ``glob.staff_cursor``, oldest
    first; the cursor moves past them all. Not told: machine notes, acks the desk itself made (a taken
    ticket), incidents without a ticket. One item per action, keyed by the action's row id, so a
    restart or a replanning never comments twice.
    """
    out = Plan()
    for a in actions:
        glob.staff_cursor = max(glob.staff_cursor or 0, a.id)
        m = memories.get(a.incident)
        if (m is None or not m.ticket_incident or ctx.cfg.desk.kind == "none" or a.action not in TOLD_ACTIONS
                or a.author in MACHINE_AUTHORS or (a.action == "ack" and a.author == ctx.cfg.desk.kind)):
            continue
        by = " ".join(a.author.split())[:80]  # a name is one line: it goes into the ticket's subject
        data = {"incident": a.incident, "staff_action": a.action, "by": by, "text": a.text,
                "ts": ctx.local(a.ts), "timezone": ctx.cfg.timezone}
        out.items.append(_desk(m, "ticket_staff", a.id, "ticket_staff", ctx, data, op="comment"))
    return out


def _maintenance_notices(w: Window, wid: str, phase: str, customers: Iterable[str], ctx: Context,
                         out: Plan) -> None:
    cn = ctx.cfg.customers
    place = ctx.place(w.node)
    for cid in customers:
        c = ctx.customer(cid)
        if c is None or not c.notify or not cn.enabled:
            continue
        data = {**place, "start": ctx.local(w.start), "end": ctx.local(w.end), "reason": w.reason,
                "customer": cid, "customer_name": c.name, "company": cn.company, "phone": cn.support_phone,
                "incident": wid, "timezone": ctx.cfg.timezone}
        _to_customer(out, wid, f"maintenance_{phase}", c, 1, f"maintenance_{phase}", data, ctx)


def _release(glob: GlobalMemory, customers: Iterable[str], wid: str | None = None) -> None:
    """Held customers who need no end notice any more (given it, or told by the outage path)."""
    gone = set(customers)
    for key in [wid] if wid is not None else list(glob.held):
        rest = [c for c in glob.held.get(key, ()) if c not in gone]
        if rest:
            glob.held[key] = rest
        else:
            glob.held.pop(key, None)


# ---------------------------------------------------------------------------------------------- rules


def _wants_ticket(e: IncidentEvent, ctx: Context) -> bool:
    if ctx.cfg.desk.kind == "none" and not ctx.cfg.oncall:
        return False
    if e.kind in ("outage", "suspected", "degraded"):
        # degraded: the lossy link's technicians are told once, not per flickering endpoint; weak levels
        # below a PON port or AP: one informational ticket for them
        return True
    if e.kind == "power" and not _own_power(e, ctx):
        return True  # a power cut in an area: one informational ticket (no crew, see _inform_technicians)
    if e.kind in ("single", "power"):
        for cid in e.affected_customers:
            c = ctx.customer(cid)
            sc = ctx.inv.service_classes.get(c.service_class) if c else None
            if sc is not None and (sc.ticket_single if e.kind == "single" else sc.ticket_power):
                return True
    return False


def _own_power(e: IncidentEvent, ctx: Context) -> bool:
    """A ``power`` incident rooted at an endpoint: one ONU's dying gasp, its customer's own power."""
    return e.root in ctx.endpoint_customer


def _inform_technicians(e: IncidentEvent, m: IncidentMemory, ctx: Context, out: Plan) -> None:
    """A power cut in an area, or weak levels below a PON port or AP: the first on call hears it once,
    as information (no crew for fibre, nothing down):
    no ack link, no phone, no escalation (``m.tier`` stays -1, so :func:`tick` never escalates)."""
    tiers = ctx.oncall(e.root, e.ts)
    m.tiers = list(tiers)
    if tiers:
        _tech_message(e, m, tiers[0], "tech_info", 1, "technician_alert", ctx, out, phone=False)


def _customer_kind(kind: str, ctx: Context) -> bool:
    return kind in NOTICE_KINDS and kind in ctx.cfg.customers.kinds


def _open_ticket(e: IncidentEvent, m: IncidentMemory, glob: GlobalMemory, ctx: Context, out: Plan) -> None:
    m.desk_customers = list(e.affected_customers)
    if ctx.cfg.desk.kind == "none":
        return
    data = _ticket_data(e, m, ctx)
    prev = glob.recent.get(e.root)
    if prev is not None and e.ts - prev[1] <= ctx.cfg.desk.reopen_within:
        m.ticket_incident = prev[0]
        del glob.recent[e.root]
        data["reopened_by"] = e.incident
        out.items.append(_desk(m, "ticket_reopen", 1, "ticket_reopened", ctx, data))
        return
    m.ticket_incident = e.incident
    out.items.append(_desk(m, "ticket_open", 1, "ticket_opened", ctx, data))


def _comment(incident: str, m: IncidentMemory, ctx: Context, now: float, out: Plan, reason: str) -> None:
    if ctx.cfg.desk.kind == "none":
        m.comment_due = False
        return
    fake = IncidentEvent(now, "updated", incident, m.kind, m.root, (), tuple(m.customers_now),
                         tuple(m.nodes))
    data = _ticket_data(fake, m, ctx)
    added = sorted(set(m.customers_now) - set(m.desk_customers))
    removed = sorted(set(m.desk_customers) - set(m.customers_now))
    data.update(reason=reason, added=added, removed=removed, eta=ctx.local(m.eta) if m.eta else "",
                eta_by=m.eta_by if reason in ("eta", "eta_withdrawn") else "")
    m.comments += 1
    m.last_comment = now
    m.comment_due = False
    m.desk_customers = list(m.customers_now)
    out.items.append(_desk(m, "ticket_comment", m.comments, "ticket_comment", ctx, data))


def _desk(m: IncidentMemory, action: str, version: int | str, template: str, ctx: Context, data: dict[str, Any],
          op: str = "") -> Item:
    desk = ctx.cfg.desk
    data["ticket_incident"] = m.ticket_incident
    data["op"] = op or action.removeprefix("ticket_")
    channel = "email" if desk.kind == "email" else "desk"
    recipient = desk.address if desk.kind == "email" else desk.kind
    if desk.kind == "email":
        data["to"] = desk.address
        data["thread"] = f"{m.ticket_incident}/ticket_open/{desk.address}/1"
    return Item(m.incident, action, recipient, version, channel, template, desk_language(ctx), data,
                group=f"desk:{m.ticket_incident}")


def desk_language(ctx: Context) -> str:
    return ctx.cfg.desk.language


def _ticket_data(e: IncidentEvent, m: IncidentMemory, ctx: Context) -> dict[str, Any]:
    """The ISP's PQR record: who, where, since when, what the SLA promises, where to look.

    A technician reads it on a phone on the way out: the nodes down below the root (not only the
    customers), the root site's coordinates with a map link, and the contact numbers of customers
    whose service class says so (``contacts_in_alerts``, corporate plans) come with it.
    """
    customers: list[dict[str, Any]] = []
    for cid in e.affected_customers:
        cust = ctx.customer(cid)
        sc = ctx.inv.service_classes.get(cust.service_class) if cust else None
        contact = [v for v in (cust.phone, cust.email) if v] if cust and sc and sc.contacts_in_alerts else []
        customers.append({"id": cid, "name": cust.name if cust else cid, "class": cust.service_class if cust else "",
                          "hours": ctx.response_hours(cid), "contact": ", ".join(contact)})
    customers.sort(key=lambda c: (c["hours"], c["id"]))  # corporate (shortest response) first
    deadlines: dict[str, str] = {}
    for c in customers:
        deadlines.setdefault(c["class"] or "-", ctx.local(m.opened_at + c["hours"] * 3600))
    grafana = ctx.cfg.desk.grafana_url.replace("{incident}", e.incident).replace("{root}", e.root)
    return {
        **ctx.place(e.root), "incident": e.incident, "kind": e.kind, "opened_at": ctx.local(m.opened_at),
        "ts": ctx.local(e.ts), "count": len(customers), "customers": customers, "deadlines": deadlines,
        "endpoints": len(e.affected_endpoints), "nodes": list(e.affected_nodes), "grafana": grafana,
        "timezone": ctx.cfg.timezone, "detail": e.detail, "levels": m.levels, **ctx.location(e.root),
        "down_nodes": [ctx.node_line(n) for n in e.affected_nodes if n != e.root],
    }


def _alert_technicians(e: IncidentEvent, m: IncidentMemory, ctx: Context, now: float, out: Plan, tier: int) -> None:
    if tier == 0:
        m.tiers = list(ctx.oncall(e.root, e.ts))  # the rota at the time of the failure
    if tier >= len(m.tiers):
        return
    m.tier = tier
    m.tier_at = [*m.tier_at[:tier], now]
    template = "technician_alert" if tier == 0 else "technician_escalation"
    phone = ctx.cfg.escalation.phone_wait(tier) <= 0
    if phone:
        m.phoned = sorted({*m.phoned, tier})
    _tech_message(e, m, m.tiers[tier], "tech_alert", tier + 1, template, ctx, out, link_at=now, phone=phone)


def _alerted_at(m: IncidentMemory) -> float:
    """When the first tier was alerted: escalation counts from there, not from ``opened_at``, which
    is the real start and may be long before the news arrived (a remote poller's late batch): each
    tier still gets its ``escalation.after`` to acknowledge."""
    return m.tier_at[0] if m.tier_at else m.opened_at


def _phone_later(m: IncidentMemory, ctx: Context, now: float, out: Plan) -> bool:
    """Phone/chat messages of tiers whose e-mail alert waited ``phone_after`` unacknowledged."""
    esc, sent = ctx.cfg.escalation, False
    for t in range(min(m.tier + 1, len(m.tiers))):
        wait = esc.phone_wait(t)
        alerted = m.tier_at[t] if t < len(m.tier_at) else _alerted_at(m) + esc.after * t
        if wait <= 0 or t in m.phoned or now < alerted + wait:
            continue
        fake = IncidentEvent(now, "updated", m.incident, m.kind, m.root, (), tuple(m.customers_now), tuple(m.nodes))
        template = "technician_alert" if t == 0 else "technician_escalation"
        _tech_message(fake, m, m.tiers[t], "tech_alert", t + 1, template, ctx, out, link_at=now, others=False)
        m.phoned = sorted({*m.phoned, t})
        sent = True
    return sent


def _tech_message(e: IncidentEvent, m: IncidentMemory, tech_id: str, action: str, version: int, template: str,
                  ctx: Context, out: Plan, link_at: float | None = None, *, phone: bool = True,
                  others: bool = True) -> None:
    """Email, Apprise (phone, chat) and MQTT to one technician; with ``link_at`` (alerts) the email and
    the short message carry a signed ack link valid for ``api.link_ttl`` from then, when links are
    configured. Apprise gets one row per URL, so a retry repeats only the destination that failed.
    ``phone``/``others``: whether the Apprise rows / the e-mail and MQTT ones are made this time."""
    tech = ctx.cfg.technicians.get(tech_id)
    if tech is None:
        return
    data = _ticket_data(e, m, ctx)
    data.update(technician=tech.id, technician_name=tech.name, tier=version - 1, event=template.split("_", 1)[1])
    link = ctx.links.link(m.incident, tech.id, link_at) if ctx.links and link_at is not None else ""
    if tech.email and ctx.cfg.email and others:
        out.items.append(Item(m.incident, action, tech.email, version, "email", template, tech.language,
                              {**data, "to": tech.email, "ack_url": link}))
    for i in range(len(tech.apprise) if phone else 0):
        dest = f"{tech.id}#{i + 1}"
        out.items.append(Item(m.incident, action + "_apprise", dest, version, "apprise", template, tech.language,
                              {**data, "to": dest, "ack_url": link}))
    if tech.mqtt and ctx.cfg.mqtt is not None and others:
        topic = f"{ctx.cfg.mqtt.prefix}/technicians/{data['municipality'] or 'unknown'}"
        payload = {k: data[k] for k in ("incident", "kind", "node", "site", "municipality", "count", "opened_at",
                                        "technician", "tier", "event")}
        out.items.append(Item(m.incident, action + "_mqtt", tech.id, version, "mqtt", "", tech.language,
                              {"topic": topic, "payload": payload, "retain": False}, group="mqtt"))


def _notify_opened(e: IncidentEvent, m: IncidentMemory, customers: Iterable[str], glob: GlobalMemory,
                   ctx: Context, out: Plan) -> None:
    if not _customer_kind(e.kind, ctx) or not ctx.cfg.customers.enabled or glob.blind:
        return
    if e.kind == "power" and _own_power(e, ctx):
        return  # their own power is off: they know, and "a power cut in your area" would be wrong
    done = set(m.notified)
    new = [c for c in customers if c not in done]
    for cid in new:
        _customer_notice(e, m, cid, "customer_opened", 1, ctx, out)
        glob.continuing.pop(cid, None)  # this incident tells them when it ends
    m.notified = _union(m.notified, new)
    if glob.held:  # told of the outage: "maintenance ended" would contradict it
        _release(glob, new)


def _notify_restored(e: IncidentEvent, m: IncidentMemory, customers: Sequence[str], glob: GlobalMemory,
                     ctx: Context, out: Plan, down: DownOf | None) -> None:
    """"Restored" to those of ``customers`` told of the incident whose every endpoint answers now.

    One with an endpoint still down was let go by the incident while down (after its grace the
    engine hands such a straggler to an incident of its own, usually a single; a surge-damaged CPE
    stays dead after the tower is back): they are told once that their case goes on individually
    (``customer_continues``) and get "restored" when it answers (:func:`tick`), unless another
    incident told them of it first (:func:`_notify_opened`) and tells them when it ends.
    """
    notified, restored, continuing = set(m.notified), set(m.restored), set(m.continuing)  # once: 10,000 customers
    todo = [c for c in customers if c in notified and c not in restored]
    still = _down_customers(todo, ctx, down)
    back, handed, done = [], [], []
    for cid in todo:
        if cid in still:
            if cid not in continuing:
                handed.append(cid)
        elif cid in continuing and cid not in glob.continuing:
            done.append(cid)  # told "restored" by tick already, or another incident took them over
        else:
            back.append(cid)
    for cid in back:
        _customer_notice(e, m, cid, "customer_restored", 1, ctx, out)
        glob.continuing.pop(cid, None)
    m.restored = _union(m.restored, back + done)
    for cid in handed:
        if not glob.blind:  # while blind nobody is told anything; "restored" still waits for the endpoint
            _customer_notice(e, m, cid, "customer_continues", 1, ctx, out)
        glob.continuing[cid] = m.incident
    m.continuing = _union(m.continuing, handed)


def _restore_continuing(memories: list[IncidentMemory], glob: GlobalMemory, ctx: Context, now: float, out: Plan,
                        down: DownOf) -> None:
    """Customers whose case went on individually: "restored" (from the incident that let them go)
    once every endpoint of theirs answers."""
    waiting = sorted(glob.continuing)
    still = _down_customers(waiting, ctx, down)
    by_id = {m.incident: m for m in memories}
    for cid in waiting:
        if cid in still:
            continue
        m = by_id.get(glob.continuing.pop(cid))
        if m is None or cid in m.restored:
            continue
        e = IncidentEvent(now, "resolved", m.incident, m.kind, m.root, (), (cid,), tuple(m.nodes))
        _customer_notice(e, m, cid, "customer_restored", 1, ctx, out)
        m.restored = _union(m.restored, [cid])
        out.memories[m.incident] = m


def _down_customers(customers: Sequence[str], ctx: Context, down: DownOf | None) -> set[str]:
    """Those of ``customers`` with an endpoint confirmed down now (one question for all of them)."""
    if down is None or not customers:
        return set()
    eps = [ep for cid in customers if (c := ctx.customer(cid)) is not None for ep in c.endpoints]
    hit = down(eps) if eps else ()
    return {ctx.endpoint_customer[ep] for ep in hit if ep in ctx.endpoint_customer}


def _still_told(m: IncidentMemory) -> list[str]:
    """Customers told of the incident who still follow it (not restored, not gone on individually)."""
    return sorted(set(m.notified) - set(m.restored) - set(m.continuing))


def _customer_notice(e: IncidentEvent, m: IncidentMemory, cid: str, action: str, version: int, ctx: Context,
                     out: Plan, *, eta_withdrawn: bool = False) -> None:
    c = ctx.customer(cid)
    if c is None or not c.notify:
        return
    cn = ctx.cfg.customers
    data = {**ctx.place(m.root), "incident": m.incident, "kind": e.kind, "customer": cid, "customer_name": c.name,
            "opened_at": ctx.local(m.opened_at), "ts": ctx.local(e.ts), "hours": ctx.response_hours(cid),
            "service_class": c.service_class, "duration": _duration(e.ts - m.opened_at), "company": cn.company,
            "phone": cn.support_phone, "eta": ctx.local(m.eta) if m.eta else "", "timezone": ctx.cfg.timezone,
            "eta_withdrawn": eta_withdrawn}
    _to_customer(out, m.incident, action, c, version, action, data, ctx)


def _notify_updated(e: IncidentEvent, m: IncidentMemory, customers: Sequence[str], ctx: Context, out: Plan) -> None:
    """An update notice to each of ``customers``, and ``eta_told`` kept: with an ETA they have heard it;
    without one, those who had heard one are told it no longer holds (and leave the list).

    Sets built once per update, not per customer: 10,000 customers made the list version quadratic.
    """
    told = set(m.eta_told)
    for cid in customers:
        _customer_notice(e, m, cid, "customer_updated", m.updates, ctx, out,
                         eta_withdrawn=not m.eta and cid in told)
    m.eta_told = sorted(told | set(customers)) if m.eta else sorted(told - set(customers))


def _to_customer(out: Plan, incident: str, action: str, c: Customer, version: int, template: str,
                 data: dict[str, Any], ctx: Context) -> None:
    cn = ctx.cfg.customers
    if "email" in cn.channels and c.email and ctx.cfg.email:
        mail = {**data, "to": c.email}
        if cn.unsubscribe:  # the customer may opt out (notify: false): say where, as mail clients show it
            mail["unsubscribe"] = cn.unsubscribe.replace("{customer}", quote(c.id, safe=""))
            mail["unsubscribe_post"] = cn.unsubscribe_one_click
        out.items.append(Item(incident, action, c.email, version, "email", template, c.language, mail))
    if "sms" in cn.channels and c.phone and ctx.cfg.sms is not None:
        out.items.append(Item(incident, action, c.phone, version, "webhook", template, c.language,
                              {**data, "to": c.phone, "target": "sms"}))
    if "apprise" in cn.channels and c.phone and ctx.cfg.apprise.customers is not None:
        out.items.append(Item(incident, action + "_apprise", c.phone, version, "apprise", template, c.language,
                              {**data, "to": c.phone}))


def _event_ref(e: IncidentEvent) -> str:
    """What identifies one lifecycle event: its type, time (ms) and a digest of its content.

    The version of every MQTT item the event makes, so its outbox key — and the ``message_id``
    subscribers deduplicate by — derive from the event itself: an event planned twice (decided
    while resuming, then both caught up from the incident log and handed over by the start) makes
    the same keys, which the outbox ignores, and any repeat of a publish carries the same id. Two
    different events of one incident in the same millisecond still differ by the digest.
    """
    digest = hashlib.sha256(json.dumps([e.to_dict(), list(e.affected_nodes)], sort_keys=True).encode())
    return f"{e.event}-{round(e.ts * 1000)}-{digest.hexdigest()[:8]}"


def _status(e: IncidentEvent, ctx: Context, out: Plan, status: Literal["down", "merged", "up"]) -> None:
    """MQTT: the lifecycle event on the incident's topic, and retained status of the nodes involved."""
    if ctx.cfg.mqtt is None:
        return
    prefix = ctx.cfg.mqtt.prefix
    place = ctx.place(e.root)
    ref = _event_ref(e)
    body = {**e.to_dict(), "affected_nodes": list(e.affected_nodes), "municipality": place["municipality"],
            "site": place["site"]}
    out.items.append(Item(e.incident, f"mqtt_{e.event}", "incident", ref, "mqtt", "", "",
                          {"topic": f"{prefix}/incidents/{e.incident}", "payload": body, "retain": False},
                          group="mqtt"))
    nodes = dict.fromkeys([e.root, *e.affected_nodes]) if e.kind != "blind" else {}
    for node in nodes:
        state = {"node": node, "status": status if e.kind != "planned" or status == "up" else "maintenance",
                 "incident": e.incident if status != "up" else None, "kind": e.kind, "since": e.to_dict()["ts"]}
        out.items.append(Item(e.incident, "mqtt_status", node, ref, "mqtt", "", "",
                              {"topic": f"{prefix}/status/node/{node}", "payload": state, "retain": True},
                              group="mqtt"))
    muni = place["municipality"]
    if muni and e.kind != "blind":
        out.items.append(Item(e.incident, "mqtt_muni", muni, ref, "mqtt", "", "",
                              {"topic": f"{prefix}/status/municipality/{muni}", "municipality": muni,
                               "retain": True, "payload": None}, group="mqtt"))


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    return f"{h} h {rest // 60:02d} min" if h else f"{rest // 60} min"
