"""Property tests over generated slow recoveries and stragglers after a tower outage (issue 19).

A tower fails and comes back; each AP boots some time after it, each CPE re-associates some time
after its AP, or stays dead (surge damage) and maybe comes back much later, replaced. Whatever the
pattern, through ``monitor replay``'s pipeline and the delivery planner:

* a CPE is split off as a ``single`` only once its own parent has answered for ``grace``;
* a customer is told "restored" only while all their endpoints answer, and everyone told "opened"
  ends restored or handed to an individual case (the scenario invariants, every one of them).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.replay import replay
from monitor.state import State
from tests.scenario_invariants import CHECKS, Run, confirmed_changes
from tests.scenario_runner import EPOCH, from_raw

APS, CPES = 2, 4
TOWER_BACK = 700


@st.composite
def recoveries(draw: st.DrawFn) -> dict[str, Any]:
    """The scenario: AP boot delays 0-5 min; per CPE a re-association delay of 0-10 min, or dead until
    a replacement 20-40 min later, or dead for good."""
    timeline: list[dict[str, Any]] = [
        {"at": 100, "fail": ["twr"], "cascade": True}, {"at": TOWER_BACK, "recover": ["twr"]},
    ]
    for a in range(1, APS + 1):
        ap_back = TOWER_BACK + draw(st.integers(0, 300))
        timeline.append({"at": ap_back, "recover": [f"ap-{a}"]})
        for c in range(1, CPES + 1):
            fate = draw(st.sampled_from(["slow", "slow", "replaced", "dead"]))
            if fate == "slow":
                at = ap_back + draw(st.integers(0, 600))
            elif fate == "replaced":
                at = ap_back + draw(st.integers(1200, 2400))
            else:
                continue
            timeline.append({"at": at, "recover": [f"cpe-{a}-{c:02d}"]})
    timeline.sort(key=lambda s: s["at"])
    return {
        "interval": 60,
        "topology": {
            "nodes": [{"id": "core"}, {"id": "twr", "parent": "core"},
                      *({"id": f"ap-{a}", "parent": "twr"} for a in range(1, APS + 1))],
            "endpoints": [{"prefix": f"cpe-{a}-", "count": CPES, "parent": f"ap-{a}"} for a in range(1, APS + 1)],
        },
        "duration": 4800,
        "timeline": timeline,
    }


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(recoveries())
def test_slow_recoveries_and_stragglers_keep_every_invariant(raw: dict[str, Any]) -> None:
    sc = from_raw(raw, "generated_recovery")
    events: list[dict[str, Any]] = [e.to_dict() for e in replay(sc.inventory, sc.settings, sc.lines)]
    run = Run(sc, events, confirmed_changes(sc))
    for check in CHECKS:
        check(run)
    grace = sc.settings.grace
    for e in events:
        if e["event"] != "opened" or e["kind"] != "single":
            continue
        ts = _ts(e)
        (parent,) = sc.inventory.targets[e["root"]].parents
        hist = run.history[parent]
        back = max(since for since, state in hist if since <= ts and state is not State.DOWN)
        assert run.state_at(parent, ts) is not State.DOWN and ts - back >= grace, (
            f"{e['root']} split off as a single at {ts - EPOCH:.1f}, {ts - back:.1f} s after {parent} came back"
        )


def _ts(e: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(e["ts"]).timestamp()
