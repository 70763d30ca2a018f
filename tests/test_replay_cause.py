"""Replay input carries a failed poll's cause (from a subscriber table) onto the DOWN state change."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from monitor.correlate.engine import Engine
from monitor.correlate.topology import Topology
from monitor.inventory.loader import load_inventory
from monitor.replay import replay, settings_for
from monitor.replay_input import ReplayError
from monitor.state import State, StateChange

CONFIG = Path(__file__).resolve().parents[1] / "config" / "sites.yaml"


class Recording(Engine):
    """The real engine; it also keeps the state changes it is handed (to read the cause)."""

    seen: list[StateChange]

    def apply_many(self, changes: Iterable[StateChange], *, until_output: bool = False) -> int:
        batch = list(changes)
        done = super().apply_many(batch, until_output=until_output)
        self.seen.extend(batch[:done])
        return done


def _lines(records: list[dict[str, object]]) -> list[str]:
    return [json.dumps(r) + "\n" for r in records]


def test_cause_of_failed_polls_reaches_the_down_change() -> None:
    inv = load_inventory(CONFIG)
    settings = settings_for(inv)
    engine = Recording(Topology.from_inventory(inv), settings)
    engine.seen = []
    tid = next(t.id for t in inv.endpoints())
    recs: list[dict[str, object]] = [{"ts": f"2026-11-01T00:0{i}:00Z", "target": tid, "ok": True} for i in range(2)]
    recs += [{"ts": f"2026-11-01T00:0{i}:00Z", "target": tid, "ok": False, "cause": "dying_gasp"} for i in range(2, 8)]
    list(replay(inv, settings, _lines(recs), engine=engine))
    downs = [c for c in engine.seen if c.new == State.DOWN]
    assert [(c.target, c.cause) for c in downs] == [(tid, "dying_gasp")]
    assert downs[0].reason.endswith(": last down cause dying_gasp")


@pytest.mark.parametrize(("record", "message"), [
    ({"ok": True, "cause": "los"}, "<input>:1: cause is only for a failed poll (ok false)"),
    ({"ok": False, "cause": "fire"}, '<input>:1: cause must be one of dying_gasp, los, other, unknown, got "fire"'),
    ({"ok": False, "cause": 13}, "<input>:1: cause must be one of dying_gasp, los, other, unknown, got 13"),
])
def test_bad_causes_are_refused_with_the_line(record: dict[str, object], message: str) -> None:
    inv = load_inventory(CONFIG)
    tid = next(t.id for t in inv.endpoints())
    with pytest.raises(ReplayError) as exc:
        list(replay(inv, settings_for(inv), _lines([{"ts": "2026-11-01T00:00:00Z", "target": tid, **record}])))
    assert str(exc.value) == message


def test_an_answered_polls_metrics_are_judged_like_the_table_walk() -> None:
    """``metrics`` on an answered poll (issue 17): an ONU's optical rx below its threshold for
    ``degraded_after`` polls is DEGRADED with the daemon's words (table_watch.level_reasons), and a
    level back within it is UP again."""
    from tests.scenario_runner import from_raw

    sc = from_raw({
        "interval": 60, "duration": 900,
        "topology": {"nodes": [{"id": "core"}, {"id": "pon-1", "parent": "core"}],
                     "endpoints": [{"id": "onu-1", "parent": "pon-1"}]},
        "timeline": [{"at": 100, "levels": ["onu-1"], "metrics": {"onu_rx_dbm": -28.5}},
                     {"at": 500, "levels": ["onu-1"], "metrics": {"onu_rx_dbm": -20}}],
    }, "levels")
    engine = Recording(Topology.from_inventory(sc.inventory), sc.settings)
    engine.seen = []
    list(replay(sc.inventory, sc.settings, sc.lines, engine=engine))
    assert [(c.new, c.reason) for c in engine.seen if c.target == "onu-1"] == [
        (State.UP, "first reply"), (State.DEGRADED, "onu rx -28.5dBm < -27dBm"), (State.UP, "2 consecutive good polls"),
    ]


def test_replay_without_levels_does_not_load_the_polling_package() -> None:
    """``level_reasons`` is imported only when a line carries ``metrics`` (the replay's start-up cost)."""
    import subprocess
    import sys

    code = "import sys, monitor.replay; print(sorted(m for m in sys.modules if m.startswith('monitor.polling')))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]"
