"""The delivery service: the I/O shell around the pure planner, for the daemon.

``enqueue(events)`` is called in the daemon's process right after the correlation service persisted
a batch: it plans, renders the texts and writes every outbox row plus the planner's memory in ONE
transaction, then wakes the workers. It also records how far it got in the incident event log
(``cursor``), so events persisted by correlation but never enqueued (a crash in between) are
planned at the next start; idempotency keys make any overlap harmless.

``run()`` runs the channel workers with their keepers (the MQTT connection) and a one-second timer
(escalation, throttled desk comments, restoration estimates (ETA) set by staff, maintenance notices,
acks from the desk, metrics) until cancelled; ``close()`` releases connections. Which channels exist
and how each is built is :mod:`monitor.delivery.channels`' business, not this module's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any, Literal

from monitor import selfmetrics
from monitor.clock import Clock
from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.staff import Staff
from monitor.correlate.store import IncidentStore, MaintenanceRow, NotFound
from monitor.db import Where
from monitor.delivery import channels, metrics, planner, zones
from monitor.delivery.channels import Channel
from monitor.delivery.config import DeliveryConfig
from monitor.delivery.outbox import NewRow, Outbox
from monitor.delivery.planner import Context, GlobalMemory, IncidentMemory, Item, Plan
from monitor.delivery.retry import DeliveryError
from monitor.delivery.worker import Sender, Worker, outbox_trouble
from monitor.errors import MonitorError, StorageError
from monitor.inventory.model import Inventory
from monitor.logs import Episode, event
from monitor.notify.render import Renderer
from monitor.remote.silence import Sight

log = logging.getLogger("monitor.delivery")

ACK_POLL = 30.0  # seconds between checks whether staff took an incident's ticket
#: the retained municipality status (docs/delivery.md, MQTT topics): worst first
MunicipalityStatus = Literal["down", "power", "degraded", "ok"]


class DeliveryService:
    def __init__(self, inventory: Inventory, db_path: Where, config: DeliveryConfig, clock: Clock, *,
                 busy_timeout: float = 10.0) -> None:
        self.config = config
        self.clock = clock
        self.ctx = Context(inventory, config)
        self.renderer = Renderer(config.templates_dir or None)
        self.outbox = Outbox(db_path, busy_timeout)
        if self.outbox.recovered or self.outbox.assumed:
            # said once at start: "repeated" ones are checked or carry the same Message-ID / reference;
            # "assumed" ones were handed over whole (SMTP: up to the final ".") but their reply was not read
            event(log, logging.WARNING, "deliveries interrupted by the last stop", repeated=self.outbox.recovered,
                  assumed_delivered=self.outbox.assumed)
        self.store = IncidentStore(db_path, busy_timeout)  # the lifecycle log, read from the cursor
        self.staff = Staff(self.store)  # acks, estimates and windows: what staff did
        self._behind = False  # an enqueue failed (storage): the timer plans from the cursor again
        self._timer_trouble = Episode(log, "delivery timer failed, retrying every second",
                                      "delivery timer working again")
        #: the outbox refusing writes (the database away, a full disk, a lock): one episode of the timer
        #: and every worker, ``monitor_store_failing{component="delivery"}`` meanwhile
        self._store_trouble = outbox_trouble(selfmetrics.store_trouble("delivery"))
        self._zones_trouble = Episode(log, "cannot queue a blind zone's alert, retrying every second",
                                      "blind zone alerts queued again")
        self.glob = GlobalMemory.from_dict(json.loads(self.outbox.meta("planner", "{}")))
        if self.glob.staff_cursor is None:  # first start (or an upgrade): what staff did before is history
            self.glob.staff_cursor = self.staff.last_action_id()
        self.channels: dict[str, Channel] = {}
        self.workers: dict[str, Worker] = {}
        self.senders: dict[str, Sender] = {}
        self._next_ack_poll = 0.0
        #: True when the catch-up below planned every incident event persisted before this service
        #: was made, so the daemon's start need not hand its (persisted) events over again. False on
        #: delivery's first start (history is skipped: the start's events are new to it) and when
        #: the catch-up failed (the timer catches up, enqueue() waits for it).
        self.caught_up = False
        if not self.outbox.meta("cursor"):  # first start: history before delivery existed is not replayed
            self.outbox.add([], {}, {"cursor": str(self.store.last_event_id())}, clock.now())
        else:
            try:
                self.catch_up()
                self.caught_up = True
            except MonitorError as exc:  # e.g. the file is locked right now: the timer tries again
                self._behind = True
                event(log, logging.ERROR, "cannot plan missed incident events yet, will retry", error=exc)

    # ------------------------------------------------------------ daemon API

    def enqueue(self, events: Sequence[IncidentEvent]) -> None:
        """Plan and queue the side effects of a batch of (already persisted) lifecycle events."""
        if not events:
            return
        if self._behind:  # an earlier batch is not planned yet: catch_up() takes this one with it, in order
            return
        try:
            self._plan(events, cursor=self.store.last_event_id())
        except MonitorError as exc:
            # the events are in the incident log already: nothing is lost, they are planned from the
            # cursor when the outbox takes writes again (one line now, one then)
            self._behind = True
            event(log, logging.ERROR, "cannot queue deliveries, will plan them again from the incident log",
                  events=len(events), error=exc)

    def sync_zones(self, sight: Sight) -> None:
        """The technicians' alert for remote zones gone blind, and their recovery (:mod:`.zones`); the
        daemon calls it every second. Nothing is written unless a zone's alert state moved; a write the
        outbox refuses is planned again at the next call."""
        glob = _copy(self.glob)
        items = zones.plan(sight, glob, self.ctx, self.clock.now())
        if glob.zones == self.glob.zones:
            return
        try:
            self._commit(Plan(items=items), glob)
        except StorageError as exc:  # the outbox refuses writes: the one episode the workers and timer share
            self._store_trouble.failed("zones", error=exc)
            return
        except MonitorError as exc:
            self._zones_trouble.failed(error=exc)
            return
        self._store_trouble.ok("zones")
        self._zones_trouble.ok()

    def catch_up(self) -> None:
        """Plan events the correlation service persisted after the last ``enqueue`` (a crash, or an
        outbox that refused writes, in between)."""
        cursor = int(self.outbox.meta("cursor", "0") or 0)
        rows = self.store.lifecycle(after_id=cursor)
        if rows:
            events = [e for _, e in rows]
            event(log, logging.INFO, "planning incident events the outbox could not take before" if self._behind
                  else "planning incident events recorded while delivery was not running", events=len(events))
            self._plan(events, cursor=rows[-1][0])
        self._behind = False

    def _plan(self, events: Sequence[IncidentEvent], cursor: int) -> None:
        memories = {k: IncidentMemory.from_dict(v) for k, v in self.outbox.states(
            [e.incident for e in events] + [e.into for e in events if e.into]).items()}
        glob = _copy(self.glob)  # the planner's memory moves on only with a commit
        self._commit(planner.plan(events, memories, glob, self.ctx, self.clock.now(), self.store.down_among), glob,
                     cursor=cursor)

    def tick(self, now: float | None = None) -> None:
        """Timers: escalation, throttled desk comments, ETAs set by staff, maintenance notices."""
        now = self.clock.now() if now is None else now
        memories = [IncidentMemory.from_dict(v) for v in self.outbox.states().values()]
        acked = self.staff.acked_open()
        glob = _copy(self.glob)
        # customers whose case went on individually: "restored" from their (maybe resolved) incident
        let_go = set(glob.continuing.values()) - {m.incident for m in memories}
        gone = [IncidentMemory.from_dict(v) for v in self.outbox.states(sorted(let_go)).values()] if let_go else []
        plan = planner.tick([*memories, *gone], glob, self.ctx, now, acked, self.staff.etas(), self.store.down_among,
                            self.staff.eta_authors())
        extra = planner.plan_maintenance(self._windows(glob), memories, glob, self.ctx, now)
        plan.items += extra.items
        plan.items += self._staff_comments(glob, {**{m.incident: m for m in memories}, **plan.memories}).items
        if plan.items or plan.memories or glob != self.glob:
            self._commit(plan, glob)

    def _staff_comments(self, glob: GlobalMemory, memories: dict[str, IncidentMemory]) -> planner.Plan:
        """Desk comments naming who acked, noted or resolved (``planner.plan_staff``). An incident resolved
        since the action (a resolve is carried out at once) is no longer among the open memories: its
        memory is read by id."""
        actions = self.staff.actions_after(glob.staff_cursor or 0)
        if not actions:
            return planner.Plan()
        missing = sorted({a.incident for a in actions} - set(memories))
        if missing:
            memories.update({k: IncidentMemory.from_dict(v) for k, v in self.outbox.states(missing).items()})
        return planner.plan_staff(actions, memories, glob, self.ctx)

    def _windows(self, glob: GlobalMemory) -> list[MaintenanceRow]:
        """The maintenance windows to give notices for: the active ones, and those removed after their
        start notice went out — they ended when they were removed (customers told "maintenance
        started" hear that it ended), and their held customers still get the end notice."""
        out = []
        for w in self.staff.windows(include_removed=True):
            if w.removed_at is None:
                out.append(w)
            elif "start" in glob.maintenance.get(f"MW-{w.id}", ()):
                out.append(dataclasses.replace(w, end=min(w.end, w.removed_at)))
        return out

    async def run(self) -> None:
        await self._close_senders()  # a restart after a failure (supervised): the last run's connections go
        self._start_workers()
        async with asyncio.TaskGroup() as tg:
            for w in self.workers.values():
                tg.create_task(w.run())
            for ch in self.channels.values():
                if ch.keeper is not None:
                    tg.create_task(ch.keeper())
            tg.create_task(self._timer())

    async def close(self) -> None:
        await self._close_senders()
        self.outbox.close()
        self.store.close()

    # ------------------------------------------------------------ internals

    async def _close_senders(self) -> None:
        """Release every channel's connections; one that fails to close is said once and the others
        still close (senders handle the failures they expect; what reaches here is news)."""
        senders, self.senders, self.workers, self.channels = dict(self.senders), {}, {}, {}
        for name, sender in senders.items():
            try:
                await sender.close()
            except Exception as exc:  # stopping or restarting: say it, close the others
                event(log, logging.WARNING, "channel not closed cleanly", channel=name, error=exc)


    def _commit(self, plan: Plan, glob: GlobalMemory, cursor: int | None = None) -> None:
        """Rows, incident memories, the planner's memory and the cursor in one transaction; ``glob``
        becomes the service's memory only once that committed (a failed commit is planned again)."""
        rows = [self._row(item, plan) for item in plan.items]
        states: dict[str, tuple[str, dict[str, Any]]] = {k: (m.status, m.to_dict()) for k, m in plan.memories.items()}
        meta = {"planner": json.dumps(glob.to_dict())}
        if cursor is not None:
            meta["cursor"] = str(max(cursor, int(self.outbox.meta("cursor", "0") or 0)))
        added = self.outbox.add(rows, states, meta, self.clock.now())
        self.glob = glob
        if added:
            by_channel: dict[str, int] = {}
            for r in rows:
                by_channel[r.channel] = by_channel.get(r.channel, 0) + 1
            for ch, n in by_channel.items():
                metrics.QUEUED.labels(ch).inc(n)
                if ch in self.workers:
                    self.workers[ch].wake()

    def _row(self, item: Item, plan: Plan) -> NewRow:
        payload: dict[str, Any]
        if item.channel == "mqtt":
            payload = dict(item.data)
            if payload.get("payload") is None and "municipality" in payload:
                payload["payload"] = self._municipality(payload["municipality"], plan)
        else:
            text = channels.REGISTRY[item.channel].text
            kind = "ticket" if item.action.startswith("ticket_") else text or "email"
            subject, body = self.renderer.render(item.template, kind, item.language, item.data)
            payload = {"to": item.data.get("to", ""), "subject": subject, "body": body, "language": item.language}
            for key in ("op", "ticket_incident", "thread", "unsubscribe", "unsubscribe_post"):
                if key in item.data:
                    payload[key] = item.data[key]
        return NewRow(item.key, item.incident, item.action, item.recipient, item.channel, item.group, payload)

    def _municipality(self, muni: str, plan: Plan) -> dict[str, Any]:
        """Retained status of a municipality: its open incidents and how many customers they affect."""
        open_now = {k: IncidentMemory.from_dict(v) for k, v in self.outbox.states().items()}
        for k, m in plan.memories.items():
            open_now[k] = m
        incidents = []
        customers: set[str] = set()
        for m in sorted(open_now.values(), key=lambda m: m.incident):
            if m.status != "open" or m.kind == "blind" or self.ctx.place(m.root)["municipality"] != muni:
                continue
            incidents.append({"incident": m.incident, "kind": m.kind, "root": m.root, "customers": m.affected})
            customers.update(m.customers_now)
        return {"municipality": muni, "status": self._muni_status(incidents), "open_incidents": incidents,
                "affected_customers": len(customers)}

    def _muni_status(self, incidents: list[dict[str, Any]]) -> MunicipalityStatus:
        """The worst of its open incidents: an outage, an area's power cut (its customers are without
        service, but no crew can mend it), anything else (a lossy link, one customer's line or power)."""
        kinds = {i["kind"] for i in incidents}
        if kinds & {"outage", "suspected"}:
            return "down"
        inv = self.ctx.inv
        if any(i["kind"] == "power" and (t := inv.targets.get(i["root"])) is not None and t.role == "node"
               for i in incidents):
            return "power"
        return "degraded" if incidents else "ok"

    def _start_workers(self) -> None:
        cfg = self.config
        env = channels.Env(cfg, self.outbox, self.clock, channels.Hooks(ack=self._ack, ready=self._receiver_back))
        self.channels = channels.build(env)
        for name, ch in self.channels.items():
            self.senders[name] = ch.sender
            self.workers[name] = Worker(self.outbox, ch.sender, cfg.retry, self.clock, concurrency=ch.concurrency,
                                        rate=cfg.rate_limits.get(name), batch=ch.batch, trouble=self._store_trouble)

    def _receiver_back(self, channel: str) -> None:
        worker = self.workers.get(channel)
        if worker is not None:
            worker.retry_waiting()

    def _ack(self, incident: str, by: str) -> None:
        try:
            self.staff.acknowledged_elsewhere(incident, by, "acknowledged via MQTT", self.clock.now())
            event(log, logging.INFO, "incident acknowledged", incident=incident, by=by, via="mqtt")
        except (NotFound, MonitorError, ValueError):
            event(log, logging.WARNING, "ack for an unknown incident ignored", incident=incident[:40])

    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                if self._behind:
                    self.catch_up()
                self.tick()
                await self.poll_desk_acks()
                self.update_gauges()
            except StorageError as exc:  # the outbox refuses writes (the database away, full disk, a lock)
                self._store_trouble.failed("timer", error=exc)
                continue
            except MonitorError as exc:
                self._timer_trouble.failed(error=exc)
                continue
            self._store_trouble.ok("timer")
            self._timer_trouble.ok()

    async def poll_desk_acks(self, *, force: bool = False) -> None:
        """Tickets staff took in the desk acknowledge their incidents (every ACK_POLL seconds)."""
        now = self.clock.now()
        sources = [ch.acks for ch in self.channels.values() if ch.acks is not None]
        if not sources or (now < self._next_ack_poll and not force):
            return
        self._next_ack_poll = now + ACK_POLL
        for source in sources:
            await self._poll_acks(source, now)

    async def _poll_acks(self, desk: channels.AckSource, now: float) -> None:
        tickets = self.outbox.tickets()
        for row in self.staff.incidents(limit=1000):
            ticket = tickets.get(row.id)
            if row.acked_at is not None or ticket is None:
                continue
            try:
                if await desk.taken(ticket):
                    self.staff.acknowledged_elsewhere(row.id, desk.name, f"ticket {ticket} taken", now)
                    event(log, logging.INFO, "incident acknowledged", incident=row.id, via=desk.name)
            except DeliveryError:
                return  # the desk is down; the desk worker reports it

    def update_gauges(self) -> None:
        """Pending items and the age of the oldest, per channel (every second, by the timer)."""
        now = self.clock.now()
        pending = self.outbox.pending()
        for ch in channels.REGISTRY:
            n, oldest = pending.get(ch, (0, None))
            metrics.PENDING.labels(ch).set(n)
            metrics.OLDEST.labels(ch).set(now - oldest if oldest is not None else 0)


def _copy(glob: GlobalMemory) -> GlobalMemory:
    """A deep copy (through its JSON form, which is also what is stored) for the planner to change."""
    return GlobalMemory.from_dict(json.loads(json.dumps(glob.to_dict())))
