"""The correlation service: the engine plus persistence, for the daemon (and the scenario tests).

The daemon calls :meth:`CorrelationService.on_state_changes` with every batch of confirmed
transitions (after the EventStore recorded them) and :meth:`tick` about once a second. Each call
runs the pure engine, then writes what it decided in one transaction and returns the lifecycle
events for delivery. On start it resumes open incidents from the store and reconciles them with the
current target states, so a restart (even after ``kill -9``) neither reopens nor duplicates.

A step whose transaction fails (disk full, store locked) has still moved the engine on: its
lifecycle events are kept and persisted and returned, in order, with the next step that succeeds, so
a storage outage delays incident events but never drops them (nor applies a change twice).

Staff actions arrive through the store (``monitor incidents resolve``, ``monitor maintenance add``
write rows); the service polls for them every ``poll_every`` seconds of its clock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from monitor.clock import Clock
from monitor.correlate.degraded import LEVELS_BASIS
from monitor.correlate.engine import Engine
from monitor.correlate.incidents import Basis, Incident, IncidentEvent, Kind, format_ts
from monitor.correlate.settings import CorrelationSettings
from monitor.correlate.staff import Staff
from monitor.correlate.store import IncidentStore
from monitor.correlate.topology import Topology
from monitor.db import Where
from monitor.inventory.model import Inventory, MaintenanceSpec
from monitor.logs import event
from monitor.state import StateChange

log = logging.getLogger("monitor.correlate")


class CorrelationService:
    def __init__(
        self,
        inventory: Inventory,
        db_path: Where,
        settings: CorrelationSettings,
        clock: Clock,
        *,
        poll_every: float = 5.0,
        busy_timeout: float = 5.0,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = IncidentStore(db_path, busy_timeout)
        self._unsaved: list[IncidentEvent] = []  # decided by the engine, not yet persisted
        self.poll_every = poll_every
        self._next_poll = 0.0
        self._maintenance_rev = ""
        self._done_actions: list[int] = []
        down = self.store.down_states()
        # a late batch still settling when the process stopped: its settle goes on from its arrival, and
        # its incident opens at its real start (only for a DOWN the log still holds as it came)
        late = {t: v for t, v in self.store.late_downs().items() if down.get(t) == v[1]}
        down.update((t, arrived) for t, (arrived, _) in late.items())
        self.engine = self._resumed(Topology.from_inventory(inventory), down, None, causes=self.store.down_causes())
        self.engine.late.update(late)
        self._poll_store(clock.now(), force=True)
        #: what resuming decided (e.g. incidents whose targets recovered while the daemon was down)
        self.startup_events = self.engine.tick(clock.now())
        self._persist(self.startup_events)

    def _resumed(
        self, topo: Topology, down: dict[str, float], back: dict[str, float] | None,
        lossy: dict[str, float] | None = None, degraded: set[str] | None = None, *, causes: dict[str, str],
    ) -> Engine:
        """An engine resuming the store's open incidents. ``back`` (node -> when it came back: the grace
        of what is still down below it counts from then) comes from the state-change log when None
        (a start; a reload hands over the engine's), read only while a grace period is running;
        ``lossy`` (nodes whose last answers showed loss) likewise, and ``degraded`` (targets confirmed
        DEGRADED: loss everywhere keeps a blindness going, see ``Engine._blind_cause``); ``causes``: the
        down targets' last down causes (a power cut or a fibre cut, ``Engine.cause``)."""
        now = self.clock.now()
        engine = Engine(topo, self.settings, start=now, next_seq=self.store.next_seq())
        engine.cause.update((t, why) for t, why in causes.items() if t in down and t in topo)
        engine.degraded.update(t for t in (self.store.degraded_states() if degraded is None else degraded) if t in topo)
        if lossy is None:
            engine.restore_loss(self.store.last_answers([t for t, kids in topo.children.items() if kids]))
        else:
            engine.lossy.update(lossy)
        engine.rates.start = self.store.observed_since(now)
        for ts, endpoint in self.store.single_history(now - self.settings.burst_history):
            engine.rates.add(ts, endpoint)  # the burst rule's learned rates, as before the restart
        open_incidents, weak_levels = _by_basis(self.store.load_open())
        closed_blind = self.store.closed_blind()
        # a blindness going on or ended within grace: what is still down when it ends waits for grace
        # after its parent's return (Engine._recovery_due), read from the log like a grace period's
        recent = now - self.settings.grace
        blind_ended = self.store.blind_ended_since(recent)
        if back is None:
            graces = [inc.grace_from for inc, _, _ in open_incidents if inc.grace_from is not None]
            if closed_blind is not None or blind_ended is not None or any(b == "blind" for _, b, _ in open_incidents):
                graces.append(recent)
            back = self.store.came_back(min(graces)) if graces else {}
        left_down = self.store.left_down()
        engine.restore(open_incidents, down, now, left_down, closed_blind, back, blind_ended)
        # weak levels: their incidents, and the endpoints DEGRADED now with the values they had (rule 14)
        engine.levels.restore(weak_levels, self.store.degraded_reasons(), left_down)
        if open_incidents or weak_levels:
            log.info("resumed %d open incidents", len(open_incidents) + len(weak_levels))
        return engine

    # ------------------------------------------------------------ daemon API

    def on_state_changes(self, changes: Sequence[StateChange]) -> list[IncidentEvent]:
        """Correlate confirmed transitions; persist and return the lifecycle events they produced."""
        self.engine.apply_many(changes)
        now = max([self.clock.now(), *(c.ts for c in changes)])
        return self._step(now)

    def tick(self, now: float | None = None) -> list[IncidentEvent]:
        """Call about every second: settle, grace, hold-down and maintenance timers; staff actions."""
        return self._step(self.clock.now() if now is None else now)

    def reload(self, inventory: Inventory) -> list[IncidentEvent]:
        """A new inventory (SIGHUP): rebuild the topology, keep open incidents and who is down.

        Returns the lifecycle events this produced (with any left unsaved by a failed step)."""
        self._unsaved += self.engine.tick(self.engine.now)
        self._save()
        down, late = dict(self.engine.down), self.engine.late
        self.engine = self._resumed(
            Topology.from_inventory(inventory), down, dict(self.engine.back), dict(self.engine.lossy),
            set(self.engine.degraded), causes=dict(self.engine.cause),
        )
        self.engine.late.update(late)  # a late batch still settling opens at its real start after a reload
        self._maintenance_rev = ""
        self._poll_store(self.clock.now(), force=True)
        self._unsaved += self.engine.tick(self.clock.now())
        return self._save()

    def recorded_since(self, since: float) -> list[IncidentEvent]:
        """Lifecycle events persisted at or after ``since``, oldest first (the board annotations a
        restart writes again), so callers need not know how the store keeps them."""
        return [e for _, e in self.store.lifecycle(since=since)]

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------ internals

    def _step(self, now: float) -> list[IncidentEvent]:
        self._poll_store(now)
        self._unsaved += self.engine.tick(now)  # includes what staff resolutions produced
        events = self._save()
        for e in events:
            detail = {"detail": e.detail} if e.detail else {}
            event(log, logging.INFO, f"incident {e.event}", incident=e.incident, kind=e.kind, root=e.root,
                  endpoints=len(e.affected_endpoints), customers=len(e.affected_customers), **detail)
        return events

    def _save(self) -> list[IncidentEvent]:
        """Persist the unsaved events with the engine's changes; on StorageError keep them for the next step."""
        self._persist(self._unsaved)
        events, self._unsaved = self._unsaved, []
        return events

    def sync_config_windows(self, specs: Iterable[MaintenanceSpec]) -> None:
        """Make the store's config-made windows equal the config's ``maintenance:`` list (start, reload).

        Windows added with ``monitor maintenance add`` are left alone; ``monitor replay`` plans the
        same list (``config_windows``), so a what-if counts planned work as the daemon does.
        """
        Staff(self.store).sync_config_windows(specs, self.engine.topo, self.clock.now())
        self.poll_store_now()

    def poll_store_now(self) -> None:
        """Pick up what was just written to the store (the config's windows at start and reload) at once.

        Why: otherwise a window synced right after start waits up to ``poll_every``, and an incident
        opening meanwhile (short intervals: ``monitor demo --speed 4``) is not seen as planned.
        """
        self._poll_store(self.clock.now(), force=True)

    def _poll_store(self, now: float, *, force: bool = False) -> None:
        """Pick up maintenance windows and resolve requests written by the CLI."""
        if not force and now < self._next_poll:
            return
        self._next_poll = now + self.poll_every
        rev = self.store.maintenance_rev()
        if rev != self._maintenance_rev:
            self._maintenance_rev = rev
            self.engine.set_windows(self.store.windows())
        pending = self.store.pending_resolves()
        if pending:
            for _, inc_id in pending:
                self.engine.resolve(inc_id, now)
            self._done_actions.extend(aid for aid, _ in pending)  # marked in the same transaction

    def _persist(self, events: list[IncidentEvent]) -> None:
        eng = self.engine
        levels = eng.levels.ids

        def basis(iid: str) -> Basis:
            return LEVELS_BASIS if iid in levels else eng.basis[iid]

        open_incidents: dict[str, tuple[Incident, Basis]] = {
            iid: (eng.by_id[iid], basis(iid)) for iid in eng.changed if iid in eng.by_id
        }
        for e in events:
            if e.event == "opened" and e.incident in eng.by_id:
                open_incidents[e.incident] = (eng.by_id[e.incident], basis(e.incident))
        blind = eng.blind
        if blind is not None and blind.id in eng.changed and blind.id not in eng.by_id:
            open_incidents[blind.id] = (blind, "blind")  # its alert is closed, the blindness goes on: keep its timer
        late = {t: v for t, v in eng.late.items() if eng.down.get(t) == v[0]} if eng.late_changed else None
        self.store.save(
            events, open_incidents, set(eng.changed), eng.member_log, eng.window_events, self._done_actions,
            self.clock.now(), eng.blind_ended, late,
        )
        eng.late_changed = False
        for inc_id, ts in eng.blind_ended:
            log.info("monitoring blindness %s ended at %s", inc_id, format_ts(ts))
        self._done_actions = []
        eng.changed.clear()
        eng.member_log.clear()
        eng.window_events.clear()
        eng.blind_ended.clear()


def _by_basis(
    rows: list[tuple[Incident, Basis, set[str]]],
) -> tuple[list[tuple[Incident, Kind, set[str]]], list[tuple[Incident, set[str]]]]:
    """Stored open incidents: the engine's (by the kind they are judged as), and the weak-levels ones."""
    judged: list[tuple[Incident, Kind, set[str]]] = []
    weak: list[tuple[Incident, set[str]]] = []
    for inc, basis, ever in rows:
        if basis == LEVELS_BASIS:
            weak.append((inc, ever))
        else:
            judged.append((inc, basis, ever))
    return judged, weak
