"""Engine edge cases not expressed as scenarios (staff actions on internal incidents)."""

from __future__ import annotations

from monitor.correlate.engine import Engine
from monitor.correlate.settings import CorrelationSettings
from monitor.correlate.topology import Topology
from monitor.state import State, StateChange
from tests.correlate_helpers import tree_inventory


def test_staff_resolving_the_blind_alert_does_not_end_blindness_nor_break_its_end() -> None:
    inv = tree_inventory(1, 1, 4)
    settings = CorrelationSettings.for_interval(60).with_overrides({"vantage": "twr-000"})
    engine = Engine(Topology.from_inventory(inv), settings)
    events = engine.on_state_changes([StateChange("twr-000", State.UP, State.DOWN, 10.0, "x")])
    assert [(e.event, e.kind) for e in events] == [("opened", "blind")]
    blind = events[0].incident
    assert engine.resolve(blind, 20.0)
    assert [(e.event, e.incident) for e in engine.tick(20.0)] == [("resolved", blind)]
    # still blind: a customer failure now opens nothing
    engine.on_state_changes([StateChange("cpe-000001", State.UP, State.DOWN, 30.0, "x")])
    assert engine.tick(200.0) == []
    # the vantage comes back: blindness ends after blind_recovery (no second "resolved"), and
    # what is still down is judged afresh
    engine.on_state_changes([StateChange("twr-000", State.DOWN, State.UP, 300.0, "x")])
    events = engine.tick(300.0 + settings.blind_recovery + 1)
    assert [(e.event, e.kind, e.root) for e in events] == [("opened", "single", "cpe-000001")]
