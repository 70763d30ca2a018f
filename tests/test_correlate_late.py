"""A late batch (issue 14): changes a remote poller confirmed while cut from its broker reach the core
minutes later, with their real times. The incident they open carries the real start (its root's
confirmed DOWN), in the lifecycle event, the store and across a restart, and the batch is judged
as one picture (settle counted from its arrival, so no part of it is judged alone). On SQLite and
PostgreSQL (``where``, tests/store_engines.py)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.clock import ManualClock
from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.service import CorrelationService
from monitor.correlate.settings import CorrelationSettings
from monitor.remote.core import RemoteIntake
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.correlate_helpers import tree_inventory
from tests.store_engines import Where, pg_server_fixture, where_fixture  # noqa: F401

T0 = 1_793_491_200.0
SETTINGS = CorrelationSettings.for_interval(60).with_overrides({"settle": "10", "blind_share": "1"})
INV = tree_inventory(2, 2, 3, gateway=True)
TOWER = "twr-000"
ZONE = [t for t in INV.targets if t == TOWER or INV.targets[t].parents[:1] in (("ap-000-00",), ("ap-000-01",))
        or t.startswith("ap-000-")]


def tower_fails(at: float) -> list[StateChange]:
    """The tower and everything below it confirmed DOWN within one poll round, the CPEs a little
    before their APs and the tower (children are often confirmed first), in time order."""
    order = sorted(ZONE, key=lambda t: (0 if INV.targets[t].role == "endpoint" else 1 if t != TOWER else 2, t))
    return [StateChange(t, State.UP, State.DOWN, at - 3 + 0.25 * i, "3 consecutive failed polls")
            for i, t in enumerate(order)]


def back(at: float) -> list[StateChange]:
    return [StateChange(t, State.DOWN, State.UP, at, "answers") for t in ZONE]


def run(svc: CorrelationService, clock: ManualClock, log: EventStore, until: float,
        batches: dict[float, list[StateChange]]) -> list[IncidentEvent]:
    """The daemon's loop: a tick each second, each batch stored then correlated when it arrives."""
    out: list[IncidentEvent] = []
    t = clock.now()
    while t < until:
        t += 1.0
        clock.set(t)
        batch = batches.pop(t, None)
        if batch:
            log.append(batch)
            out += svc.on_state_changes(batch)
        else:
            out += svc.tick()
    return out


def test_a_late_batch_opens_its_incident_at_the_real_start_kept_in_the_store_and_across_a_restart(
        where: Where) -> None:
    db, clock = where, ManualClock(T0)
    log = EventStore(db)
    svc = CorrelationService(INV, db, SETTINGS, clock, poll_every=0)
    down = tower_fails(T0 + 60)
    tower_down = next(c.ts for c in down if c.target == TOWER)
    # cut from its broker for two minutes: the batch arrives at T0 + 180, with its real times
    events = run(svc, clock, log, T0 + 240, {T0 + 180: down})
    assert [(e.event, e.kind, e.root) for e in events] == [("opened", "outage", TOWER)], events
    assert events[0].ts == tower_down  # not T0 + 190 (arrival + settle)
    assert set(events[0].affected_endpoints) == {t for t in ZONE if INV.targets[t].role == "endpoint"}
    row = svc.store.incidents(status=None)[0]
    assert (row.id, row.opened_at) == (events[0].incident, tower_down)
    assert [e["ts"] for e in svc.store.events() if e["event"] == "opened"] == [tower_down]
    svc.close()

    clock.set(T0 + 300)  # the core restarts: the incident resumes as it was, nothing opens again
    svc = CorrelationService(INV, db, SETTINGS, clock, poll_every=0)
    assert svc.startup_events == []
    assert svc.engine.by_id[row.id].opened_at == tower_down
    events = run(svc, clock, log, T0 + 320 + SETTINGS.hold_down + 5, {T0 + 320: back(T0 + 320)})
    assert [(e.event, e.incident) for e in events][-1] == ("resolved", row.id)
    assert {e.incident for e in events} == {row.id} and "opened" not in {e.event for e in events}
    assert [(r.id, r.status, r.opened_at) for r in svc.store.incidents(status=None)] == [
        (row.id, "resolved", tower_down)]
    svc.close()
    log.close()


def test_changes_on_time_still_open_their_incident_when_judged(where: Where) -> None:
    """The real start is for late news only: on time, the incident opens when the settle period
    judged it, as it always did (replay and the scenario files rely on it)."""
    db, clock = where, ManualClock(T0)
    log = EventStore(db)
    svc = CorrelationService(INV, db, SETTINGS, clock, poll_every=0)
    down = tower_fails(T0 + 60)
    batches: dict[float, list[StateChange]] = {}
    for c in down:
        batches.setdefault(float(int(c.ts) + 1), []).append(c)  # each reaches the core within a second
    last = max(batches)
    events = run(svc, clock, log, T0 + 120, batches)
    assert [(e.event, e.root) for e in events] == [("opened", TOWER)]
    assert min(c.ts for c in down) + SETTINGS.settle <= events[0].ts <= last + SETTINGS.settle
    svc.close()
    log.close()


def test_a_late_batch_in_two_messages_children_first_is_one_outage_not_singles(where: Where) -> None:
    """The spool drains in several messages: the CPEs' and APs' DOWNs arrive a second before the
    tower's. Judged at their event times they would be due at once, alone; judged from their arrival
    they wait the settle period, by when the tower is in: one outage, no single, nothing merged."""
    db, clock = where, ManualClock(T0)
    log = EventStore(db)
    svc = CorrelationService(INV, db, SETTINGS, clock, poll_every=0)
    down = tower_fails(T0 + 60)
    first = [c for c in down if c.target != TOWER]
    events = run(svc, clock, log, T0 + 300, {T0 + 180: first, T0 + 181: [c for c in down if c.target == TOWER]})
    assert [(e.event, e.kind, e.root) for e in events] == [("opened", "outage", TOWER)], events
    assert events[0].ts == next(c.ts for c in down if c.target == TOWER)
    svc.close()
    log.close()


async def test_the_core_keeps_a_pollers_times_within_the_previous_state_and_its_own_clock(tmp_path: Path) -> None:
    """The intake bounds what a poller's clock says: a change dated before its target's previous state
    began is stored at that start (the log stays in order, an incident cannot reach back past it), one
    dated after the core's clock at the core's now; times in between are kept as they came."""
    from tests.test_remote_vantage_core import TOWN, inventory

    store = EventStore(tmp_path / "monitor.db")
    noted: list[StateChange] = []
    clock = ManualClock(T0 + 1000)
    intake = RemoteIntake(inventory(tmp_path), store, {}, noted.append, tmp_path, clock.now)
    for p in ("p-town", "p-noc"):
        await intake.on_changes(p, [StateChange(t, State.UNKNOWN, State.UP, T0 + 500, "answers") for t in TOWN])
    for p in ("p-town", "p-noc"):  # cpe-1 back before it was up (a clock stepped back); cpe-2 ahead of the core
        await intake.on_changes(p, [StateChange("cpe-1", State.UP, State.DOWN, T0 + 400, "timeout"),
                                    StateChange("cpe-2", State.UP, State.DOWN, T0 + 5000, "timeout"),
                                    StateChange("ap-s", State.UP, State.DOWN, T0 + 900, "timeout")])
    assert [(c.target, c.ts) for c in noted[len(TOWN):]] == [
        ("cpe-1", T0 + 500), ("cpe-2", T0 + 1000), ("ap-s", T0 + 900)]
    assert [(c.target, c.ts) for c in store.changes() if c.new is State.DOWN] == [
        ("cpe-1", T0 + 500), ("cpe-2", T0 + 1000), ("ap-s", T0 + 900)]
    assert intake.states["cpe-2"].since == T0 + 1000
    store.close()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(["twr-s", "ap-s", "cpe-1"]), st.booleans(),
                          st.floats(T0 - 1e6, T0 + 1e6, allow_nan=False)), max_size=20))
def test_whatever_a_poller_dates_its_changes_the_log_stays_in_order_and_never_ahead(
        tmp_path_factory: pytest.TempPathFactory, reports: list[tuple[str, bool, float]]) -> None:
    """Any times a poller's (hostile, or skewed) clock gives: every target's stored changes are in time
    order, none after the core's clock, and a time already within the bounds is kept as it came."""
    from tests.test_remote_vantage_core import inventory

    tmp = tmp_path_factory.mktemp("bounded")
    store = EventStore(tmp / "monitor.db")
    now = T0 + 1000
    intake = RemoteIntake(inventory(tmp), store, {}, lambda c: None, tmp, lambda: now)
    state = dict.fromkeys(("twr-s", "ap-s", "cpe-1"), State.UNKNOWN)
    sent: list[StateChange] = []
    for target, down, ts in reports:
        new = State.DOWN if down else State.UP
        if new is state[target]:
            continue
        c = StateChange(target, state[target], new, ts, "timeout" if down else "answers")
        state[target] = new
        sent.append(c)
        for p in ("p-town", "p-noc"):  # both pollers agree: each change is an effective one
            asyncio.run(intake.on_changes(p, [c]))
    stored = list(store.changes())
    store.close()
    assert [(c.target, c.new) for c in stored] == [(c.target, c.new) for c in sent]
    last: dict[str, float] = {}
    for c, s in zip(sent, stored, strict=True):
        assert s.ts <= now
        assert s.ts >= last.get(c.target, -math.inf)
        if last.get(c.target, -math.inf) <= c.ts <= now:
            assert s.ts == c.ts
        last[c.target] = s.ts


def test_a_reload_while_a_late_batch_settles_keeps_its_real_start(where: Where) -> None:
    """SIGHUP a second after the late batch arrived, before its settle period ended: the rebuilt engine
    still knows when the tower really went down."""
    db, clock = where, ManualClock(T0)
    log = EventStore(db)
    svc = CorrelationService(INV, db, SETTINGS, clock, poll_every=0)
    down = tower_fails(T0 + 60)
    events = run(svc, clock, log, T0 + 181, {T0 + 180: down})
    assert events == []
    events = svc.reload(INV) + run(svc, clock, log, T0 + 240, {})
    assert [(e.event, e.root, e.ts) for e in events] == [
        ("opened", TOWER, next(c.ts for c in down if c.target == TOWER))]
    svc.close()
    log.close()


@pytest.mark.parametrize("restart", [T0 + 183, T0 + 300], ids=["within-settle", "after-settle"])
def test_a_core_crash_while_a_late_batch_settles_still_opens_at_the_real_start(where: Where, restart: float) -> None:
    """The core dies a second after the late batch arrived (stored in the event log, not judged yet) and
    comes back within the settle period or long after it: the incident still opens at the tower's
    confirmed DOWN, not at the restart (the late DOWNs are kept in the store, ``late_downs``)."""
    db, clock = where, ManualClock(T0)
    log = EventStore(db)
    svc = CorrelationService(INV, db, SETTINGS, clock, poll_every=0)
    down = tower_fails(T0 + 60)
    tower_down = next(c.ts for c in down if c.target == TOWER)
    assert run(svc, clock, log, T0 + 181, {T0 + 180: down}) == []
    assert svc.store.late_downs()[TOWER][1] == tower_down
    svc.close()  # the process dies: nothing else is written

    clock.set(restart)
    svc = CorrelationService(INV, db, SETTINGS, clock, poll_every=0)
    events = svc.startup_events + run(svc, clock, log, restart + 60, {})
    assert [(e.event, e.kind, e.root, e.ts) for e in events] == [("opened", "outage", TOWER, tower_down)], events
    assert [(r.root, r.opened_at) for r in svc.store.incidents(status=None)] == [(TOWER, tower_down)]
    events = run(svc, clock, log, restart + 80 + SETTINGS.hold_down, {restart + 70: back(restart + 70)})
    assert [e.event for e in events][-1] == "resolved"
    assert svc.store.late_downs() == {}  # back up: nothing late is kept
    svc.close()
    log.close()
