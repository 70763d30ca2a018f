"""CorrelationService: crash safety (kill -9 mid-burst), staff actions, maintenance from the store; on
SQLite and PostgreSQL (``where``, tests/store_engines.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.clock import ManualClock
from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.service import CorrelationService
from monitor.correlate.settings import CorrelationSettings
from monitor.correlate.store import IncidentStore
from monitor.inventory.model import Inventory
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.correlate_helpers import tree_inventory
from tests.store_engines import Where, child_code, connect, pg_server_fixture, where_fixture  # noqa: F401

T0 = 1_793_491_200.0
SETTINGS = CorrelationSettings.for_interval(60).with_overrides({"settle": "10", "blind_share": "1"})
ROOT = str(Path(__file__).resolve().parents[1])


def burst(inv: Inventory) -> list[StateChange]:
    """The core fails: every target confirmed down over one poll interval, in inventory order.

    The monitor's gateway ``gw`` (``tree_inventory(..., gateway=True)``) keeps answering: without
    it, everything failing at once would be the monitor going blind, not an outage of the core.
    """
    ids = [t for t in inv.targets if t != "gw"]
    return [StateChange(t, State.UP, State.DOWN, T0 + 60 * i / len(ids), "3 consecutive failed polls")
            for i, t in enumerate(ids)]


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from monitor.clock import ManualClock
    from monitor.correlate.service import CorrelationService
    from monitor.store import EventStore
    from tests.correlate_helpers import tree_inventory
    from tests.test_correlate_service import SETTINGS, T0, burst
    inv = tree_inventory(4, 5, 50, gateway=True)
    {where}
    log = EventStore(db)
    clock = ManualClock(T0 - 1)
    svc = CorrelationService(inv, db, SETTINGS, clock)
    print("ready", flush=True)
    for c in burst(inv):
        clock.set(c.ts)
        log.append([c])
        svc.on_state_changes([c])
    print("done", flush=True)
    import time
    time.sleep(60)
""")


@pytest.mark.parametrize("kill_after_rows", [1, 300, 800])
def test_kill_minus_nine_mid_burst_resumes_one_incident(where: Where, kill_after_rows: int) -> None:
    db = where
    IncidentStore(db).close()
    code = CHILD.format(root=ROOT, where=child_code(db))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        watch = connect(db)
        while watch.execute("SELECT count(*) FROM incident_targets").fetchone()[0] < kill_after_rows:
            assert proc.poll() is None, "the child ended before it was killed"  # (else this would spin forever)
        proc.kill()
        proc.wait()
        killed = watch.execute("SELECT count(*) FROM incident_targets").fetchone()[0]
        watch.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    inv = tree_inventory(4, 5, 50, gateway=True)
    assert killed < len(inv.targets) - 1, "the child finished before it was killed; the test proves nothing"

    # restart like the daemon: the event log says who is down; the rest of the burst still arrives
    log = EventStore(db)
    already = log.load_states()
    clock = ManualClock(T0 + 61)
    svc = CorrelationService(inv, db, SETTINGS, clock)
    for c in burst(inv):
        if c.target not in already:
            c = StateChange(c.target, c.old, c.new, clock.now(), c.reason)
            log.append([c])
            svc.on_state_changes([c])
    for step in range(1, 40):
        clock.set(T0 + 61 + step * 10)
        svc.tick()
    store = svc.store
    opened = [e for e in store.events() if e["event"] == "opened"]
    assert [(e["kind"], e["root"]) for e in opened] == [("outage", "core")]
    rows = store.incidents(status=None)
    assert [(r.id, r.status, r.root) for r in rows] == [(opened[0]["incident"], "open", "core")]
    members = store.db.execute(
        "SELECT count(*) FROM incident_targets WHERE incident = ? AND down = 1", (rows[0].id,)
    ).fetchone()[0]
    assert members == len(inv.targets) - 1  # all but the gateway
    last = [e for e in store.events() if e["event"] in ("opened", "updated")][-1]
    assert len(last["affected_endpoints"]) == len(inv.endpoints())
    svc.close()
    log.close()


Outage = tuple[Inventory, Where, ManualClock, CorrelationService]


@pytest.fixture
def outage(where: Where) -> Iterator[Outage]:
    inv = tree_inventory(2, 2, 5, gateway=True)
    db = where
    clock = ManualClock(T0 - 1)
    svc = CorrelationService(inv, db, SETTINGS, clock, poll_every=0)
    log = EventStore(db)
    for c in burst(inv):
        clock.set(c.ts)
        log.append([c])
        svc.on_state_changes([c])
    clock.set(T0 + 120)
    svc.tick()
    yield inv, db, clock, svc
    svc.close()
    log.close()


def test_ack_and_resolve_by_staff(outage: Outage) -> None:
    _inv, db, clock, svc = outage
    cli = IncidentStore(db)  # what `monitor incidents` uses, on its own connection
    [row] = cli.incidents()
    cli.add_action(row.id, "ack", "ana", "on it", clock.now())
    assert cli.incident(row.id).acked_by == "ana"
    cli.add_action(row.id, "resolve", "ana", "power restored, polls lag", clock.now())
    assert cli.incident(row.id).status == "open"  # the daemon does the resolving
    clock.advance(1)
    events = svc.tick()
    assert [(e.event, e.incident) for e in events] == [("resolved", row.id)]
    assert cli.incident(row.id).status == "resolved"
    assert cli.pending_resolves() == []
    assert [a[1] for a in cli.actions(row.id)] == ["ack", "resolve"]
    clock.advance(600)
    assert svc.tick() == []  # its targets are still down but left alone until they change
    cli.close()


def test_maintenance_added_while_running_makes_failures_planned(where: Where) -> None:
    inv = tree_inventory(1, 2, 4)
    db = where
    clock = ManualClock(T0)
    svc = CorrelationService(inv, db, SETTINGS, clock, poll_every=0)
    cli = IncidentStore(db)
    wid = cli.add_window("ap-000-01", T0 + 100, T0 + 3600, "swap radio", "ana",
                         svc.engine.topo.customers_below("ap-000-01"), T0)
    assert cli.maintenance()[0].customers == ("C-000005", "C-000006", "C-000007", "C-000008")
    clock.set(T0 + 200)
    svc.tick()
    kids = [t for t in inv.targets if t == "ap-000-01" or inv.targets[t].parents == ("ap-000-01",)]
    for t in kids:
        svc.on_state_changes([StateChange(t, State.UP, State.DOWN, clock.now(), "x")])
    clock.set(T0 + 300)
    events = svc.tick()
    assert [(e.event, e.kind, e.root) for e in events] == [("opened", "planned", "ap-000-01")]
    started = cli.db.execute("SELECT window_id, event FROM maintenance_events").fetchall()
    assert started == [(wid, "started")]
    cli.remove_window(wid, clock.now())
    clock.advance(1)
    events = svc.tick()
    assert [(e.event, e.kind) for e in events] == [("updated", "outage")]  # still down, window gone
    svc.close()
    cli.close()


def test_attached_target_rows_follow_bulk_attach_recovery_and_regrouping(where: Where) -> None:
    """incident_targets mirrors the engine (down = still attached; every row = everyone affected)
    through runs big enough for the one-statement bulk path: an AP outage taking 151 targets, 70
    of them recovering at once, then 80 still down after the AP is back, regrouped after grace."""
    inv = tree_inventory(1, 2, 150)
    clock = ManualClock(T0)
    svc = CorrelationService(inv, where, SETTINGS, clock)
    eng = svc.engine
    ap = "ap-000-00"
    cpes = [t for t in inv.targets if inv.targets[t].parents == (ap,)]

    def step(ids: list[str], new: State, at: float) -> tuple[list[IncidentEvent], dict[str, dict[str, int]]]:
        clock.set(T0 + at)
        old = State.UP if new is State.DOWN else State.DOWN
        events = svc.on_state_changes([StateChange(t, old, new, T0 + at, "x") for t in ids])
        clock.set(T0 + at + 400)  # past settle, update interval and grace
        events += svc.tick()
        rows: dict[str, dict[str, int]] = {}
        for inc, target, down in svc.store.db.execute("SELECT incident, target, down FROM incident_targets"):
            rows.setdefault(inc, {})[target] = down
        for inc_id, inc in eng.by_id.items():
            attached = {t for t, d in rows.get(inc_id, {}).items() if d}
            assert attached == inc.members, inc_id
            assert set(rows.get(inc_id, {})) == eng.ever[inc_id], inc_id
        return events, rows

    events, rows = step([ap, *cpes], State.DOWN, 0)
    assert [(e.event, e.kind, e.root, len(e.affected_endpoints)) for e in events] == [("opened", "outage", ap, 150)]
    outage = events[0].incident
    assert len(rows[outage]) == 151
    _, rows = step(cpes[:70], State.UP, 1000)
    assert sum(rows[outage].values()) == 81  # the AP and 80 CPEs still down
    events, rows = step([ap], State.UP, 2000)  # 80 still down after grace: judged again, on their own
    assert ("resolved", outage) not in [(e.event, e.incident) for e in events]
    assert sum(rows[outage].values()) == 0
    events, rows = step(cpes[70:], State.UP, 3000)  # they recover together
    assert ("resolved", outage) in [(e.event, e.incident) for e in events]
    svc.close()


def test_targets_left_down_by_a_staff_resolve_stay_alone_after_a_restart(outage: Outage) -> None:
    """Staff closed an outage whose targets are still down: a restart must not open it again."""
    inv, db, clock, svc = outage
    cli = IncidentStore(db)
    [row] = cli.incidents()
    cli.add_action(row.id, "resolve", "ana", "known, a truck is on its way", clock.now())
    cli.close()
    clock.advance(1)
    assert [e.event for e in svc.tick()] == ["resolved"]
    svc.close()
    svc = CorrelationService(inv, db, SETTINGS, clock, poll_every=0)
    clock.advance(600)
    assert svc.startup_events + svc.tick() == []
    # left alone only until it changes: a CPE that comes back and fails again is a new failure
    cpe = next(t for t in inv.targets if t.startswith("cpe-"))
    for new in (State.UP, State.DOWN):
        clock.advance(60)
        svc.on_state_changes([StateChange(cpe, State.DOWN if new is State.UP else State.UP, new, clock.now(), "x")])
    clock.advance(60)
    assert [e.event for e in svc.tick()] == ["opened"]  # (an outage at the still-down core: its root)
    svc.close()


def test_blind_period_for_reports_still_ends_when_the_blindness_ends(where: Where) -> None:
    """The blind row keeps when its cause cleared (``clear_since``, for a restart), but reports
    exclude the blind period up to its end (``cleared_at``), as before that was persisted."""
    from tests.scenario_runner import EPOCH, SCENARIOS, load, run_service

    db = where
    run_service(load(SCENARIOS / "restart_blind_recovery.yaml"), db)
    store = IncidentStore(db)
    [row] = store.incidents(status=None)
    assert (row.kind, row.cleared_at, row.closed_at) == ("blind", EPOCH + 1010, EPOCH + 1010)
    store.close()


def test_blind_alert_resolved_by_staff_keeps_the_real_end_of_the_blindness(where: Where) -> None:
    """Staff closed the blind alert at 402 while the gateway was down (``closed_at``); the blindness
    itself ended at 1010, after two restarts: that is the period reports exclude (``cleared_at``)."""
    from tests.scenario_runner import EPOCH, SCENARIOS, load, run_service

    db = where
    run_service(load(SCENARIOS / "restart_resolved_blind.yaml"), db)
    store = IncidentStore(db)
    blind = store.incident("INC-000001")
    assert (blind.kind, blind.status, blind.closed_at, blind.cleared_at) == ("blind", "resolved", EPOCH + 402,
                                                                             EPOCH + 1010)
    assert store.closed_blind() is None  # over: nothing for a restart to resume
    store.close()


def test_recorded_since_gives_the_persisted_lifecycle_from_a_time(where: Where) -> None:
    """What the pipeline annotates again at start: the events persisted since then, oldest first."""
    inv = tree_inventory(1, 2, 3, gateway=True)
    clock = ManualClock(T0 - 1)
    svc = CorrelationService(inv, where, SETTINGS, clock)
    try:
        emitted = []
        for c in burst(inv):
            clock.set(c.ts)
            emitted += svc.on_state_changes([c])
        clock.set(T0 + 200)
        emitted += svc.tick()
        assert [e.event for e in emitted] == ["opened", "updated"]
        assert svc.recorded_since(emitted[0].ts) == emitted
        assert svc.recorded_since(emitted[-1].ts) == emitted[-1:]
        assert svc.recorded_since(emitted[-1].ts + 0.001) == []
    finally:
        svc.close()


@pytest.mark.parametrize("name", ["power_cut_area", "power_and_fibre_mixed"])
def test_a_restart_keeps_each_failures_cause_on_both_engines(where: Where, name: str) -> None:
    """The DOWN's subscriber-table cause is stored with it (``state_changes.cause``) and read back at a
    restart (``IncidentStore.down_causes``): the restarted service still tells the power cut from the
    fibre cut, and the incidents keep their kinds, on SQLite and PostgreSQL (issue 17)."""
    from tests.scenario_runner import SCENARIOS, check, load, run_service

    sc = load(SCENARIOS / f"{name}.yaml")
    check(sc, run_service(sc, where))  # (run_service: the events equal those of the run without restarts)
    log = EventStore(where)
    downs = [c for c in log.changes() if c.new is State.DOWN]
    log.close()
    assert {c.cause for c in downs if c.target.startswith("onu-4-")} <= {"los"}
    assert {c.cause for c in downs if c.target.startswith(("onu-1-", "onu-2-"))} == {"dying_gasp"}
    store = IncidentStore(where)
    kinds = sorted((r.kind, r.root) for r in store.incidents(status=None))
    store.close()
    assert kinds == ([("outage", "pon-4"), ("power", "olt-1")] if name == "power_and_fibre_mixed"
                     else [("power", "olt-1")])
