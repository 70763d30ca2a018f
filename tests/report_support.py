"""A small hand-made network for report tests, with times named in minutes of October 2026 (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.db import Where
from monitor.inventory.model import Customer, Inventory, Municipality, ServiceClass, Site, Target
from monitor.report.model import Period

OCT = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
NOV = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
SEP = datetime(2026, 9, 1, tzinfo=UTC).timestamp()
MONTH_MIN = 31 * 24 * 60  # minutes in October: 44,640
OCTOBER = Period(OCT, NOV, "2026-10")
SEPTEMBER = Period(SEP, OCT, "2026-09")


def at(day: int, hour: float = 0, minute: float = 0) -> float:
    """October ``day`` at ``hour:minute`` UTC (day 0 = 30 September)."""
    return OCT + (day - 1) * 86400 + hour * 3600 + minute * 60


def inventory() -> Inventory:
    """core → ap1 → cpe1 (C1, corporativo), cpe2 (C2, residencial), cpe3 (C1, a second link); twr2 in Tame."""
    targets = [
        Target("core", "router", "node", "127.0.0.1", site="s1", municipality="arauca"),
        Target("ap1", "ap", "node", "127.0.0.2", parents=("core",), site="s1", municipality="arauca"),
        Target("cpe1", "cpe", "endpoint", "127.0.1.1", parents=("ap1",), site="s1", municipality="arauca",
               customer="C1", service_class="corporativo"),
        Target("cpe2", "cpe", "endpoint", "127.0.1.2", parents=("ap1",), site="s1", municipality="arauca",
               customer="C2", service_class="residencial"),
        Target("cpe3", "cpe", "endpoint", "127.0.1.3", parents=("ap1",), site="s1", municipality="arauca",
               customer="C1", service_class="corporativo"),
        Target("twr2", "tower", "node", "127.0.0.3", parents=("core",), site="s2", municipality="tame"),
    ]
    return Inventory(
        source="test",
        municipalities={"arauca": Municipality("arauca", "Arauca"), "tame": Municipality("tame", "Tame")},
        sites={"s1": Site("s1", "arauca", "Torre Centro", 7.08, -70.76), "s2": Site("s2", "tame", "Torre Tame")},
        service_classes={"corporativo": ServiceClass("corporativo", 12, 99.5),
                         "residencial": ServiceClass("residencial", 24, 98.0)},
        credentials={},
        targets={t.id: t for t in targets},
        customers={"C1": Customer("C1", "Ferretería El Llano", "corporativo", endpoints=("cpe1", "cpe3")),
                   "C2": Customer("C2", "Casa Pérez", "residencial", endpoints=("cpe2",))},
    )


def up_all_month(*ids: str) -> dict[str, list[tuple[float, str]]]:
    """Each target UP since before October (the state the month starts in)."""
    return {i: [(OCT - 86400, "up")] for i in ids}


def october_store(db: Where, inv: Inventory, *, vantage_outage: bool = False,
                  blind_resolved_by_staff: bool = False) -> dict[str, float]:
    """A real store for the example network's October: the daemon's EventStore and the correlation service.

    Everything is UP from 30 September. ap-centro-1 and the 4 endpoints below it are down on the 10th
    08:00-09:00 (one outage incident, acknowledged after 30 min); ap-brisas-1 is down on the 12th
    02:30-03:30 inside a maintenance window 02:00-04:00 (a planned incident, excluded).
    With ``vantage_outage``, core-arauca is also the monitor's vantage node and is down on the 20th
    10:00-11:00: the correlation service declares the monitor blind for that hour. With
    ``blind_resolved_by_staff`` as well, staff resolve the blind alert at 10:10 and the daemon restarts
    at 10:20, both while the vantage node is still down.
    Returns the times tests refer to.
    """
    from monitor.clock import ManualClock
    from monitor.correlate.service import CorrelationService
    from monitor.correlate.settings import CorrelationSettings
    from monitor.correlate.store import IncidentStore
    from monitor.state import State, StateChange
    from monitor.store import EventStore

    log = EventStore(db)
    start = OCT - 86400
    clock = ManualClock(start)
    overrides = {"settle": "10", "blind_share": "1"}
    if vantage_outage:
        overrides["vantage"] = "core-arauca"
    settings = CorrelationSettings.for_interval(60).with_overrides(overrides)
    svc = CorrelationService(inv, db, settings, clock)

    def feed(ts: float, changes: list[StateChange]) -> None:
        clock.set(ts)
        log.append(changes)
        svc.on_state_changes(changes)

    feed(start, [StateChange(t, State.UNKNOWN, State.UP, start, "first reply") for t in inv.targets])
    store = IncidentStore(db)
    store.add_window("ap-brisas-1", at(12, 2), at(12, 4), "cambio de radio", "noc", [], now=at(11))
    store.close()
    below = [t.id for t in inv.targets.values() if "ap-centro-1" in t.parents]
    down_at, up_at = at(10, 8), at(10, 9)
    feed(down_at, [StateChange("ap-centro-1", State.UP, State.DOWN, down_at, "3 consecutive failed polls")])
    why = "3 consecutive failed polls"
    feed(down_at + 30, [StateChange(t, State.UP, State.DOWN, down_at + 30, why) for t in below])
    for s in range(1, 30):
        svc.tick(down_at + 30 + s * 10)
    incident = next(r.id for r in IncidentStore(db).incidents(status="open"))
    ack = IncidentStore(db)
    ack.add_action(incident, "ack", "noc", "técnico en camino", now=down_at + 1800)
    ack.close()
    feed(up_at, [StateChange(t, State.DOWN, State.UP, up_at, "2 consecutive replies") for t in ["ap-centro-1", *below]])
    for s in range(1, 60):
        svc.tick(up_at + s * 10)
    m_down, m_up = at(12, 2, 30), at(12, 3, 30)
    feed(m_down, [StateChange("ap-brisas-1", State.UP, State.DOWN, m_down, "3 consecutive failed polls")])
    for s in range(1, 30):
        svc.tick(m_down + s * 10)
    feed(m_up, [StateChange("ap-brisas-1", State.DOWN, State.UP, m_up, "2 consecutive replies")])
    for s in range(1, 60):
        svc.tick(m_up + s * 10)
    if vantage_outage:
        b_down, b_up = at(20, 10), at(20, 11)
        feed(b_down, [StateChange("core-arauca", State.UP, State.DOWN, b_down, "3 consecutive failed polls")])
        for s in range(1, 30):
            svc.tick(b_down + s * 10)
        if blind_resolved_by_staff:
            blind = next(r.id for r in svc.store.incidents() if r.kind == "blind")
            clock.set(at(20, 10, 10))
            svc.store.add_action(blind, "resolve", "noc", "sabemos, no avisar más", now=clock.now())
            svc.tick()
            clock.set(at(20, 10, 20))  # the daemon restarts
            svc.close()
            svc = CorrelationService(inv, db, settings, clock)
            svc.tick()
        feed(b_up, [StateChange("core-arauca", State.DOWN, State.UP, b_up, "2 consecutive replies")])
        for s in range(1, 60):
            svc.tick(b_up + s * 10)
    svc.close()
    log.close()
    return {"down": down_at, "up": up_at, "below": float(len(below))}
