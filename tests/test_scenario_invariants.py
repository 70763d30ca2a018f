"""The scenario invariants catch what they are meant to: each fed events that break it."""

from __future__ import annotations

import pytest

from monitor.delivery import planner
from monitor.replay import replay
from tests.scenario_invariants import (
    Run,
    confirmed_changes,
    customer_notices,
    many_failing_together_are_not_singles,
    never_counted_twice,
    not_blind_while_a_node_above_answers,
    one_incident_per_cause,
    restored_only_while_every_endpoint_answers,
)
from tests.scenario_runner import SCENARIOS, load


def _run(name: str) -> Run:
    sc = load(SCENARIOS / f"{name}.yaml")
    events = [e.to_dict() for e in replay(sc.inventory, sc.settings, sc.lines, windows=sc.windows)]
    return Run(sc, events, confirmed_changes(sc))


def test_a_suspected_incident_split_into_singles_is_caught() -> None:
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


def test_an_endpoint_held_by_two_incidents_is_caught() -> None:
    run = _run("tower_down")
    never_counted_twice(run)
    first = next(e for e in run.events if e["event"] == "opened")
    run.events.insert(1, {**first, "incident": "INC-999999", "kind": "single"})
    with pytest.raises(AssertionError, match="affected by both"):
        never_counted_twice(run)


def test_a_flicker_below_a_lossy_link_opened_as_its_own_incident_is_caught() -> None:
    run = _run("rain_fade_backhaul")
    one_incident_per_cause(run)  # as the engine decides: one degraded incident at the backhaul
    first = run.events[0]
    assert (first["event"], first["kind"], first["root"]) == ("opened", "degraded", "bh-norte")
    run.events.insert(1, {**first, "incident": "INC-999999", "kind": "outage", "root": "ap-n2"})
    with pytest.raises(AssertionError, match="one cause"):
        one_incident_per_cause(run)


def test_blindness_declared_while_the_nodes_above_answer_is_caught() -> None:
    """Every CPE fails while every node answers (scenario blind_share): a suspected incident, never
    blindness; a blind incident opened then is what issue 19 found (the monitor declared itself blind)."""
    run = _run("blind_share")
    not_blind_while_a_node_above_answers(run)
    first = run.events[0]
    assert (first["event"], first["kind"]) == ("opened", "suspected")
    run.events.insert(0, {**first, "incident": "INC-999999", "kind": "blind", "root": "core"})
    with pytest.raises(AssertionError, match=r"blind \(INC-999999\) while cpe-\S+ is down below \["):
        not_blind_while_a_node_above_answers(run)


def test_surge_stragglers_are_told_their_case_goes_on_and_restored_only_when_they_answer() -> None:
    run = _run("surge_stragglers")
    restored_only_while_every_endpoint_answers(run)
    told: dict[str, list[tuple[str, str]]] = {}
    for _, inc, action, cid in customer_notices(run).notices:
        told.setdefault(cid, []).append((inc, action.removeprefix("customer_")))
    assert told["C-cpe-1-03"] == [("INC-000001", "opened"), ("INC-000001", "continues"), ("INC-000001", "restored")]
    assert told["C-cpe-2-07"] == told["C-clinica"] == [("INC-000001", "opened"), ("INC-000001", "continues")]
    assert told["C-cpe-1-01"] == [("INC-000001", "opened"), ("INC-000001", "restored")]
    assert len(told) == 20


def test_restored_while_still_down_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A planner that tells every notified customer "restored" at resolve, as before issue 19."""
    run = _run("surge_stragglers")
    monkeypatch.setattr(planner, "_down_customers", lambda customers, ctx, down: set())
    with pytest.raises(AssertionError, match=r"at 1145.000: C-clinica told restored \(INC-000001\) while"):
        restored_only_while_every_endpoint_answers(run)
