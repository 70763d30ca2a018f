"""The scenario invariants catch what they are meant to: each fed events that break it."""

from __future__ import annotations

import pytest

from monitor.replay import replay
from tests.scenario_invariants import (
    Run,
    confirmed_changes,
    many_failing_together_are_not_singles,
    never_counted_twice,
    one_incident_per_cause,
)
from tests.scenario_runner import SCENARIOS, load


def _run(name: str) -> Run:
    sc = load(SCENARIOS / f"{name}.yaml")
    events = [e.to_dict() for e in replay(sc.inventory, sc.settings, sc.lines, windows=sc.windows)]
    return Run(sc, events, confirmed_changes(sc))


def test_a_suspected_incident_split_into_singles_is_caught():
    run = _run("partial_ap_suspected")
    many_failing_together_are_not_singles(run)  # as the engine decides: one suspected incident
    opened = run.events[0]
    assert (opened["event"], opened["kind"]) == ("opened", "suspected")
    run.events[:1] = [
        {**opened, "incident": f"INC-1{i}", "kind": "single", "root": t, "affected_endpoints": [t]}
        for i, t in enumerate(opened["affected_endpoints"])
    ]
    with pytest.raises(AssertionError, match="left as singles"):
        many_failing_together_are_not_singles(run)


def test_an_endpoint_held_by_two_incidents_is_caught():
    run = _run("tower_down")
    never_counted_twice(run)
    first = next(e for e in run.events if e["event"] == "opened")
    run.events.insert(1, {**first, "incident": "INC-999999", "kind": "single"})
    with pytest.raises(AssertionError, match="affected by both"):
        never_counted_twice(run)


def test_a_flicker_below_a_lossy_link_opened_as_its_own_incident_is_caught():
    run = _run("rain_fade_backhaul")
    one_incident_per_cause(run)  # as the engine decides: one degraded incident at the backhaul
    first = run.events[0]
    assert (first["event"], first["kind"], first["root"]) == ("opened", "degraded", "bh-norte")
    run.events.insert(1, {**first, "incident": "INC-999999", "kind": "outage", "root": "ap-n2"})
    with pytest.raises(AssertionError, match="one cause"):
        one_incident_per_cause(run)
