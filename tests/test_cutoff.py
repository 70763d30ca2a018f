"""A failed poll below a node confirmed DOWN confirms DOWN at once (monitor/cutoff.py, issue 12).

The rule itself (pure), then the daemon's polling stage applying it with the real event store.
The scenario tower_cut_network_polled_faster runs it through replay and the correlation service.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.clock import ManualClock
from monitor.cutoff import CutOff
from monitor.inventory.loader import load_inventory
from monitor.polling.stage import PollingStage
from monitor.probes.base import IcmpResult
from monitor.state import State, StateChange

PARENTS = {
    "core": (), "twr": ("core",), "ap": ("twr",), "cpe": ("ap",),
    "ap-b": ("twr", "twr-2"), "twr-2": ("core",), "cpe-b": ("ap-b",),
    "gw": ("core",), "twr-g": ("gw",), "cpe-g": ("twr-g",),
}
LEAD = dict.fromkeys(PARENTS, 4.0)  # 3 polls every 2 s: the confirming polls began 4 s before DOWN


def cut(down: dict[str, float], tid: str, answered: float = 0.0, vantage: tuple[str, ...] = ()) -> str | None:
    return CutOff(PARENTS, LEAD, vantage).cut_by(tid, down.get, answered)


def test_below_a_node_down_the_first_uplink_down_is_named() -> None:
    assert cut({"twr": 10.0}, "cpe") == "twr"
    assert cut({"twr": 10.0, "ap": 11.0}, "cpe") == "ap"
    assert cut({}, "cpe") is None


def test_every_redundant_uplink_must_be_cut() -> None:
    assert cut({"twr": 10.0}, "cpe-b") is None
    assert cut({"twr": 10.0, "twr-2": 12.0}, "cpe-b") == "twr"


def test_a_top_level_or_vantage_node_down_is_blindness_not_a_cut() -> None:
    assert cut({"core": 10.0}, "cpe") is None
    assert cut({"core": 10.0, "twr": 10.0}, "cpe") is None  # the tower's DOWN is the core's
    assert cut({"gw": 10.0}, "cpe-g", vantage=("gw",)) is None
    assert cut({"gw": 10.0, "twr-g": 10.0}, "cpe-g", vantage=("gw",)) is None
    assert cut({"twr-g": 10.0}, "cpe-g", vantage=("gw",)) == "twr-g"


def test_a_target_that_answered_while_the_node_failed_is_not_cut_off() -> None:
    """The node began to fail 4 s before its DOWN at 10: an answer at 6 or later means it is no cut
    (a lossy link losing whole polls, or the node's own address), one before 6 is consistent."""
    assert cut({"twr": 10.0}, "cpe", answered=5.9) == "twr"
    assert cut({"twr": 10.0}, "cpe", answered=6.0) is None
    assert cut({"twr": 10.0}, "cpe", answered=9.0) is None


CONFIG = """
municipalities: [{id: m1, name: Municipio Uno}]
sites: [{id: s1, municipality: m1, name: Torre Uno}]
service_classes:
  residencial: {response_hours: 24, availability_target: 98.0}
polling: {interval: 10, icmp_count: 1, icmp_timeout: 1, down_after: 3, up_after: 2}
polling_by_kind: {router: {interval: 2}, tower: {interval: 2}}
daemon: {state_dir: var, metrics_listen: ""}
nodes:
  - {id: core, kind: router, address: 127.0.0.1, site: s1}
  - {id: twr, kind: tower, address: 127.0.0.2, parent: core, site: s1}
customers:
  - {id: C1, name: Cliente Uno, service_class: residencial,
     endpoints: [{id: cpe-1, kind: cpe, address: 127.0.0.3, parent: twr}]}
  - {id: C2, name: Cliente Dos, service_class: residencial,
     endpoints: [{id: cpe-2, kind: cpe, address: 127.0.0.4, parent: twr}]}
  - {id: C3, name: Cliente Tres, service_class: residencial,
     endpoints: [{id: cpe-3, kind: cpe, address: 127.0.0.5, parent: twr}]}
"""


def test_the_daemons_stage_confirms_a_cut_off_cpe_at_its_first_failed_poll(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tower fails 3 polls of 2 s and is DOWN at 104; cpe-1's first failed poll after that
    confirms it DOWN, cpe-2 answers and stays UP (never told anything), cpe-3 answered at 102,
    after the tower began to fail, so its one failed poll proves nothing (3 polls, as before)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sites.yaml").write_text(CONFIG)
    inv = load_inventory(tmp_path / "sites.yaml")
    stage = PollingStage(ManualClock(100.0))
    changes: list[StateChange] = []
    stage.sinks.append(changes.append)
    stage.open(inv)
    try:
        t = inv.targets

        def poll(tid: str, now: float, ok: bool) -> None:
            a = t[tid].address
            r = IcmpResult(tid, a, 1, 1, 1.0, 1.0, 1.0, 0.0) if ok else IcmpResult(tid, a, 1, 0, error="timeout")
            stage.record(t[tid], r, None, now)

        for tid in t:
            poll(tid, 90.0, True)  # every target UP
        poll("cpe-3", 102.0, True)
        for now in (100.0, 102.0, 104.0):
            poll("twr", now, False)
        assert stage.states["twr"].state is State.DOWN
        poll("cpe-1", 105.0, False)
        poll("cpe-2", 105.0, True)
        poll("cpe-3", 112.0, False)
        assert stage.states["cpe-1"].state is State.DOWN
        assert stage.states["cpe-2"].state is State.UP
        assert stage.states["cpe-3"].state.value == "up"
        downs = [(c.target, c.ts, c.reason) for c in changes if c.new is State.DOWN]
        assert downs == [
            ("twr", 104.0, "3 consecutive failed polls: timeout"),
            ("cpe-1", 105.0, "1 failed poll, cut off below twr (down): timeout"),
        ]
        for now in (122.0, 132.0):
            poll("cpe-3", now, False)
        assert stage.states["cpe-3"].state.value == "down"  # its own three polls
    finally:
        if stage.store is not None:
            stage.store.close()
