"""The config's ``maintenance:`` windows reach the correlation at once, not at its next store poll."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from monitor.clock import ManualClock
from monitor.inventory.model import MaintenanceSpec
from monitor.pipeline import IncidentPipeline
from monitor.state import State, StateChange
from tests.correlate_helpers import tree_inventory

T0 = 1_793_491_200.0


def test_a_config_window_active_at_start_makes_an_early_failure_planned(tmp_path: Path) -> None:
    """Short intervals (``monitor demo --speed 4``) open an incident within the store's 5 s poll period."""
    inv = tree_inventory(1, 2, 4, interval=0.25)
    inv = dataclasses.replace(inv, maintenance=(MaintenanceSpec("ap-000-01", T0 - 10, T0 + 3600, "radio"),))
    clock = ManualClock(T0)
    pipeline = IncidentPipeline(inv, tmp_path / "monitor.db", clock, None, [])
    svc = pipeline.correlation
    try:
        clock.set(T0 + 1)
        below = [t for t in inv.targets if t == "ap-000-01" or inv.targets[t].parents == ("ap-000-01",)]
        svc.on_state_changes([StateChange(t, State.UP, State.DOWN, clock.now(), "x") for t in below])
        clock.set(T0 + 2)
        events = svc.tick()
        assert [(e.event, e.kind, e.root) for e in events] == [("opened", "planned", "ap-000-01")]
    finally:
        svc.close()
