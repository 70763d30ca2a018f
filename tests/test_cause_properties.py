"""Cause-aware correlation (rule 13) over generated timelines (hypothesis, derandomized).

Two OLTs, one with three PON ports as nodes (six ONUs each), one with six ONUs directly below it;
groups of ONUs fail with dying gasp, LOS or no cause, ports and OLTs fail with everything below,
then everything answers again. Whatever happens: every scenario invariant holds, a ``power``
incident opens only for ONUs that reported dying gasp, an ``outage`` at a node that answers only
for ONUs that reported LOS, and every incident has ended once all has answered for a while.

A wider search (400 examples) found the explicit example: an endpoint's own incident (a single or
its own power) in its hold-down when the endpoint failed again with its OLT stayed open for ever.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitor.replay import replay
from monitor.state import State
from tests.scenario_invariants import Run, check_all, confirmed_changes
from tests.scenario_runner import from_raw

PORTS = ["pon-1", "pon-2", "pon-3"]
ONUS = [f"onu-{p}-{i:02d}" for p in (1, 2, 3) for i in range(1, 7)] + [f"onu-x-{i:02d}" for i in range(1, 7)]
NODES = ["olt-1", "olt-2", *PORTS]
DURATION = 5400
CALM = 3000

TOPOLOGY: dict[str, Any] = {
    "nodes": [{"id": "core"}, {"id": "olt-1", "parent": "core", "kind": "olt"},
              *({"id": p, "parent": "olt-1", "kind": "pon"} for p in PORTS),
              {"id": "olt-2", "parent": "core", "kind": "olt"}],
    "endpoints": [{"id": o, "parent": "olt-2" if o.startswith("onu-x") else f"pon-{o[4]}"} for o in ONUS],
}

times = st.integers(min_value=0, max_value=CALM // 10 - 60).map(lambda t: t * 10)
onu_fail = st.builds(
    lambda at, onus, cause: {"at": at, "fail": sorted(onus), **({"cause": cause} if cause else {})},
    times, st.sets(st.sampled_from(ONUS), min_size=1, max_size=14), st.sampled_from(["dying_gasp", "los", None]),
)
onu_recover = st.builds(lambda at, onus: {"at": at, "recover": sorted(onus)},
                        times, st.sets(st.sampled_from(ONUS), min_size=1, max_size=14))
node_step = st.builds(
    lambda at, node, fail: {"at": at, ("fail" if fail else "recover"): [node], "cascade": True},
    times, st.sampled_from(NODES), st.booleans(),
)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.one_of(onu_fail, onu_fail, onu_recover, node_step), min_size=1, max_size=8))
@example(  # two ONUs' own power, back, then failing again with their OLT: their incidents never ended
    steps=[{"at": 0, "fail": ["onu-1-01", "onu-1-02"], "cause": "dying_gasp"},
           {"at": 2100, "recover": ["olt-1"], "cascade": True}, {"at": 2230, "fail": ["olt-1"], "cascade": True}],
)
def test_causes_decide_the_kind_whatever_the_timeline(steps: list[dict[str, Any]]) -> None:
    raw: dict[str, Any] = {
        "interval": 60, "topology": TOPOLOGY, "duration": DURATION,
        "timeline": [*sorted(steps, key=lambda s: s["at"]), {"at": CALM, "recover": ["core"], "cascade": True}],
    }
    sc = from_raw(raw, "generated_causes")
    events: list[dict[str, Any]] = [
        e.to_dict() for e in replay(sc.inventory, sc.settings, sc.lines, windows=sc.windows)]
    check_all(sc, events)
    run = Run(sc, events, confirmed_changes(sc))
    for e in events:
        if e["event"] != "opened":
            continue
        ts = datetime.fromisoformat(e["ts"]).timestamp()
        causes = {run.cause_at(t, ts) for t in e["affected_endpoints"]}
        if e["kind"] == "power":
            assert causes == {"dying_gasp"}, (e, causes)
        if e["kind"] == "outage" and run.state_at(e["root"], ts) is not State.DOWN:
            assert causes == {"los"}, (e, causes)  # an outage at a node that answers: a fibre cut
    ended = {e["incident"] for e in events if e["event"] in ("resolved", "merged")}
    assert {e["incident"] for e in events if e["event"] == "opened"} <= ended
