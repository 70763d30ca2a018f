"""Every correlation rule, as data: tests/scenarios/*.yaml through the replay pipeline.

Each scenario's outcomes go through the real state machine and the engine; the events must match
the expectation exactly (sequence, ids, kinds, roots, times and affected sets where given).
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from monitor.replay import replay, write_events
from tests.scenario_invariants import check_all
from tests.scenario_runner import SCENARIOS, check, load, run_service

PATHS = sorted(SCENARIOS.glob("*.yaml"))


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_scenario_through_replay(path: Path) -> None:
    sc = load(path)  # restarts are the service's: the expected events are those of a run without them
    if sc.resolves:
        pytest.skip("staff actions need the service: covered by test_scenario_through_service")
    events = [e.to_dict() for e in replay(sc.inventory, sc.settings, sc.lines, windows=sc.windows)]
    check(sc, events)
    check_all(sc, events)  # the invariants of every scenario (tests/scenario_invariants.py)


@pytest.mark.parametrize("name", ["tower_down", "sibling_merge", "churn"])
def test_replay_is_byte_identical(name: str) -> None:
    sc = load(SCENARIOS / f"{name}.yaml")
    outs = []
    for _ in range(2):
        buf = io.StringIO()
        write_events(replay(sc.inventory, sc.settings, sc.lines, windows=sc.windows), buf)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    assert outs[0]


def test_every_rule_has_a_scenario() -> None:
    names = {p.stem for p in PATHS}
    assert {
        "tower_down", "ap_children_first", "redundant_olt", "partial_ap_suspected", "churn", "flapping",
        "sibling_merge", "partial_recovery", "blind_vantage", "blind_share", "maintenance",
        "tower_slow_recovery", "surge_stragglers",
    } <= names


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_scenario_through_service(path: Path, tmp_path: Path) -> None:
    """The daemon's path (EventStore + CorrelationService) gives the same events as replay.

    Restarts included: a restart (even ``kill -9``) must not change what the engine decides, so
    a scenario that restarts the service yields exactly the events of the run without restarts
    (with staff actions, which replay does not take, that of the service without restarts).
    """
    sc = load(path)
    events = run_service(sc, tmp_path / "monitor.db")
    check(sc, events)
    if sc.resolves:
        without = run_service(dataclasses.replace(sc, restarts=[]), tmp_path / "no-restart.db")
    else:
        without = [e.to_dict() for e in replay(sc.inventory, sc.settings, sc.lines, windows=sc.windows)]
    assert events == without
