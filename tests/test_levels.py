"""Weak levels (rule 14, monitor/correlate/levels.py) through the correlation service and its store:
the edges the scenario files do not reach (one step, loss, a reload that moves an endpoint)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from monitor.clock import ManualClock
from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.service import CorrelationService
from monitor.correlate.settings import CorrelationSettings
from monitor.inventory.model import Inventory
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.correlate_helpers import tree_inventory

T0 = 1_793_491_200.0
WEAK = "signal -84dBm < -80dBm"


class Run:
    """A service on a real store, the state-change log written first as the daemon does."""

    def __init__(self, folder: Path, inv: Inventory, **settings: str) -> None:
        self.db = folder / "monitor.db"
        self.inv = inv
        self.settings = CorrelationSettings.for_interval(60).with_overrides(settings)
        self.clock = ManualClock(T0)
        self.log = EventStore(self.db)
        self.svc = CorrelationService(inv, self.db, self.settings, self.clock)

    def change(self, ts: float, *changes: tuple[str, State, State, str]) -> list[IncidentEvent]:
        self.clock.set(ts)
        batch = [StateChange(t, old, new, ts, why) for t, old, new, why in changes]
        self.log.append(batch)
        return self.svc.on_state_changes(batch)

    def close(self) -> None:
        self.svc.close()
        self.log.close()


def test_an_incident_opened_and_resolved_in_one_step_is_stored_as_weak_levels(tmp_path: Path) -> None:
    """With ``levels_hold_down: 0`` a station weak and back within one step opens and resolves its
    incident at once; never open in the engine's step, it is still stored with basis ``levels``."""
    run = Run(tmp_path, tree_inventory(1, 1, 4), levels_hold_down="0")
    events = run.change(T0 + 10, ("cpe-000001", State.UP, State.DEGRADED, WEAK),
                        ("cpe-000001", State.DEGRADED, State.UP, "2 consecutive good polls"))
    assert [(e.event, e.kind, e.root) for e in events] == [
        ("opened", "degraded", "ap-000-00"), ("resolved", "degraded", "ap-000-00")]
    assert [(r.id, r.levels) for r in run.svc.store.incidents(status=None)] == [("INC-000001", True)]
    run.close()


def test_loss_on_an_endpoint_is_not_weak_levels(tmp_path: Path) -> None:
    """Loss and latency on an endpoint are rule 11's business (a lossy link above): no incident here."""
    run = Run(tmp_path, tree_inventory(1, 1, 4))
    assert run.change(T0 + 10, ("cpe-000001", State.UP, State.DEGRADED, "loss 60% > 20%"),
                      ("cpe-000002", State.UP, State.DEGRADED, "rtt 180.0ms > 150ms")) == []
    assert run.svc.tick(T0 + 4000) == []
    run.close()


def test_a_reload_that_moves_a_weak_endpoint_moves_it_to_its_new_parents_incident(tmp_path: Path) -> None:
    """cpe-000001 is re-patched from ap-000-00 to ap-000-01 (SIGHUP): it leaves the old AP's incident
    (which resolves after its hold-down) and its new AP gets one; nothing else changes."""
    inv = tree_inventory(1, 2, 2)
    run = Run(tmp_path, inv, levels_hold_down="300")
    opened = run.change(T0 + 10, ("cpe-000001", State.UP, State.DEGRADED, WEAK),
                        ("cpe-000002", State.UP, State.DEGRADED, WEAK))
    assert [(e.event, e.root, e.affected_endpoints) for e in opened] == [
        ("opened", "ap-000-00", ("cpe-000001", "cpe-000002"))]
    moved = dataclasses.replace(inv.targets["cpe-000001"], parents=("ap-000-01",))
    run.clock.set(T0 + 20)
    events = run.svc.reload(dataclasses.replace(inv, targets={**inv.targets, "cpe-000001": moved}))
    events += run.svc.tick(T0 + 200)
    assert [(e.event, e.incident, e.root, e.affected_endpoints) for e in events] == [
        ("opened", "INC-000002", "ap-000-01", ("cpe-000001",)),
        ("updated", "INC-000001", "ap-000-00", ("cpe-000002",))]
    assert events[1].detail == "weak levels below ap-000-00: cpe-000002 (C-000002) signal -84dBm < -80dBm"
    run.close()
