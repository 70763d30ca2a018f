"""Cause-aware correlation (rule 13) on the inventory's own topology: ONUs below PON port nodes (the
loader makes an OLT's ports nodes from the ONU index) and ONUs directly below an OLT.

The scenario files (power_cut_area, fibre_cut_port, single_onu_power, power_and_fibre_mixed) run the
rules through replay and the daemon's service; these check the same rules on the parents the
loader gives, and the one case the scenarios cannot show: two causes choosing one node.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monitor.correlate.engine import Engine
from monitor.correlate.settings import CorrelationSettings
from monitor.correlate.topology import Topology
from monitor.state import State, StateChange
from tests.scenario_runner import from_raw
from tests.test_pon_ports import fibre, load, roots


@pytest.fixture(autouse=True)
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the PON-port tests: their ``load`` writes and reads sites.yaml here, with the community set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(os.environ, "SNMP_COMMUNITY", "sup3rs3cret")


def failed(tids: list[str], ts: float, cause: str | None) -> list[StateChange]:
    return [StateChange(t, State.UP, State.DOWN, ts, "offline in olt-1's table", cause=cause) for t in tids]


def test_dying_gasp_on_two_ports_is_a_power_cut_at_the_olt_and_on_one_port_at_that_port() -> None:
    inv = load(fibre(3, 4))
    both = [f"onu-{p}-{o}" for p in (0, 1) for o in range(4)]
    assert roots(inv, failed(both, 100.0, "dying_gasp"), 400.0) == [("opened", "power", "olt-1", 8)]
    one = [f"onu-2-{o}" for o in range(4)]
    assert roots(inv, failed(one, 100.0, "dying_gasp"), 400.0) == [("opened", "power", "olt-1:pon-0-0-2", 4)]


def test_a_cause_the_rules_do_not_know_is_judged_as_before() -> None:
    inv = load(fibre(3, 4))
    one = [f"onu-2-{o}" for o in range(4)]
    for cause in ("other", "unknown", None):
        assert roots(inv, failed(one, 100.0, cause), 400.0) == [("opened", "suspected", "olt-1:pon-0-0-2", 4)]


def test_power_and_fibre_on_ports_are_two_incidents() -> None:
    inv = load(fibre(4, 4))
    power = failed([f"onu-{p}-{o}" for p in (0, 1) for o in range(4)], 100.0, "dying_gasp")
    cut = failed([f"onu-3-{o}" for o in range(4)], 110.0, "los")
    assert roots(inv, power + cut, 400.0) == [
        ("opened", "power", "olt-1", 8), ("opened", "outage", "olt-1:pon-0-0-3", 4)]


def test_two_causes_at_one_node_are_one_outage() -> None:
    """ONUs hang off the OLT itself (a profile without ports): a power cut and a fibre cut both choose
    the OLT; the incident there becomes an outage (the fibre needs the crew), same id."""
    inv = from_raw({"topology": {"nodes": [{"id": "core"}, {"id": "olt-1", "parent": "core", "kind": "olt"}],
                                 "endpoints": [{"prefix": "onu-", "count": 8, "parent": "olt-1"}]},
                    "duration": 60}, "two_causes").inventory
    power = failed([f"onu-{o:02d}" for o in range(1, 5)], 100.0, "dying_gasp")
    cut = failed([f"onu-{o:02d}" for o in range(5, 9)], 200.0, "los")
    engine = Engine(Topology.from_inventory(inv), CorrelationSettings.for_interval(60))
    first = engine.on_state_changes(power) + engine.tick(200.0)
    assert [(e.event, e.kind, e.root, len(e.affected_endpoints)) for e in first] == [("opened", "power", "olt-1", 4)]
    later = engine.on_state_changes(cut) + engine.tick(500.0)
    assert [(e.event, e.incident, e.kind, e.root, len(e.affected_endpoints)) for e in later] == [
        ("updated", "INC-000001", "outage", "olt-1", 8)]
