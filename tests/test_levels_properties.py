"""Weak levels (rule 14) over generated timelines (hypothesis, derandomized).

An OLT with three PON ports as nodes (five ONUs each) and five ONUs directly below a second OLT;
groups of ONUs drift below or above -27 dBm and back, fail (with or without a cause) and recover,
ports and OLTs fail with everything below; at the end every level is good and everything answers.
Whatever happens: every scenario invariant holds (no customer is told of weak levels, none opens
listing a down endpoint), a weak-levels incident stands at the parent of every endpoint it lists and
there is at most one open per parent, every incident has ended once all is well for a while, and
the daemon's service restarted once (with incidents open or in their hold-down) gives exactly the
events of replay without a restart.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.correlate.degraded import weak_levels
from monitor.replay import replay
from tests.scenario_invariants import check_all
from tests.scenario_runner import from_raw, run_service

PORTS = ["pon-1", "pon-2", "pon-3"]
ONUS = [f"onu-{p}-{i:02d}" for p in (1, 2, 3) for i in range(1, 6)] + [f"onu-x-{i:02d}" for i in range(1, 6)]
NODES = ["olt-1", "olt-2", *PORTS]
DURATION = 5400
CALM = 3000  # levels good and everything back: 2,400 s left for confirmations and the 900 s hold-down

TOPOLOGY: dict[str, Any] = {
    "nodes": [{"id": "core"}, {"id": "olt-1", "parent": "core", "kind": "olt"},
              *({"id": p, "parent": "olt-1", "kind": "pon"} for p in PORTS),
              {"id": "olt-2", "parent": "core", "kind": "olt"}],
    "endpoints": [{"id": o, "parent": "olt-2" if o.startswith("onu-x") else f"pon-{o[4]}"} for o in ONUS],
}
PARENT = {e["id"]: e["parent"] for e in TOPOLOGY["endpoints"]}

times = st.integers(min_value=0, max_value=CALM // 10 - 60).map(lambda t: t * 10)
onus = st.sets(st.sampled_from(ONUS), min_size=1, max_size=10).map(sorted)
drift = st.builds(lambda at, ids, rx: {"at": at, "levels": ids, "metrics": {"onu_rx_dbm": rx}},
                  times, onus, st.sampled_from([-31.2, -28.5, -27.4, -26.9, -21.0]))
onu_fail = st.builds(lambda at, ids, cause: {"at": at, "fail": ids, **({"cause": cause} if cause else {})},
                     times, onus, st.sampled_from(["los", "dying_gasp", None]))
onu_recover = st.builds(lambda at, ids: {"at": at, "recover": ids}, times, onus)
node_step = st.builds(lambda at, node, fail: {"at": at, ("fail" if fail else "recover"): [node], "cascade": True},
                      times, st.sampled_from(NODES), st.booleans())


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.one_of(drift, drift, drift, onu_fail, onu_recover, node_step), min_size=1, max_size=8),
       extra=st.integers(min_value=0, max_value=60).map(lambda t: t * 10 + 5))
def test_weak_levels_whatever_the_timeline(steps: list[dict[str, Any]], extra: int) -> None:
    good = {"at": CALM, "levels": ONUS, "metrics": {"onu_rx_dbm": -20.0}}
    raw: dict[str, Any] = {
        "interval": 60, "topology": TOPOLOGY, "duration": DURATION,
        "timeline": [*sorted(steps, key=lambda s: s["at"]), good, {"at": CALM, "recover": ["core"], "cascade": True}],
    }
    sc = from_raw(raw, "generated_levels")
    events: list[dict[str, Any]] = [
        e.to_dict() for e in replay(sc.inventory, sc.settings, sc.lines, windows=sc.windows)]
    check_all(sc, events)
    weak = {e["incident"]: e["root"] for e in events if e["event"] == "opened" and weak_levels(e.get("detail", ""))}
    standing: dict[str, str] = {}  # parent -> its open weak-levels incident
    for e in events:
        inc = e["incident"]
        if inc not in weak:
            continue
        assert all(PARENT[t] == e["root"] for t in e["affected_endpoints"]), e
        if e["event"] == "opened":
            assert e["root"] not in standing, (e, standing)  # one per parent at a time
            standing[e["root"]] = inc
        elif e["event"] == "resolved":
            del standing[e["root"]]
    ended = {e["incident"] for e in events if e["event"] in ("resolved", "merged")}
    assert {e["incident"] for e in events if e["event"] == "opened"} <= ended
    # restart-safe: the daemon's service, restarted once, decides exactly as replay. Once every change has
    # been confirmed (5 intervals after the last step: a restart forgets streaks in progress, which
    # then take their polls again), while weak-levels incidents are open or in their hold-down
    restart = max(s["at"] for s in steps) + 300 + extra
    if restart >= CALM:
        restart = CALM + 300 + extra
    with tempfile.TemporaryDirectory() as tmp:
        restarted = from_raw({**raw, "timeline": [*raw["timeline"], {"at": restart, "restart": True}]},
                             "generated_levels")
        assert run_service(restarted, Path(tmp) / "monitor.db") == events
