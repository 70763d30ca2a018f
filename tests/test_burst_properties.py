"""Property test over generated bursts (issue 19): a burst is one incident whatever its share.

An AP with 20 to 200 CPEs has had a few lone failures (the churn the burst rule learns from); then
8 or more of its CPEs, fewer than P = 50 % of them, drop in the same minute while it answers. Through
``monitor replay``'s pipeline that is ONE suspected incident at the AP holding every one of them,
with its odds in the detail, and every scenario invariant holds; the lone failures stay singles.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.replay import replay
from tests.scenario_invariants import CHECKS, Run, confirmed_changes
from tests.scenario_runner import from_raw


@st.composite
def bursts(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(20, 200))
    k = draw(st.integers(8, max(8, (n - 1) // 2)))
    ids = [f"cpe-{i + 1:02d}" for i in range(n)]
    hit = draw(st.lists(st.sampled_from(ids), min_size=k, max_size=k, unique=True))
    rest = [t for t in ids if t not in hit]
    timeline: list[dict[str, Any]] = []
    for t in draw(st.lists(st.sampled_from(rest), max_size=5, unique=True)):  # churn before the burst
        at = draw(st.integers(0, 2400))
        timeline += [{"at": at, "fail": [t]}, {"at": at + draw(st.integers(300, 1200)), "recover": [t]}]
    at = draw(st.integers(4800, 6000))
    timeline += [{"at": at, "fail": sorted(hit)}, {"at": at + 1200, "recover": sorted(hit)}]
    timeline.sort(key=lambda s: s["at"])
    return {
        "interval": 60,
        "topology": {
            "nodes": [{"id": "core"}, {"id": "twr", "parent": "core"}, {"id": "ap", "parent": "twr"},
                      {"id": "ap-2", "parent": "twr"}],
            "endpoints": [
                {"prefix": "cpe-", "count": n, "parent": "ap"}, {"prefix": "x-", "count": 10, "parent": "ap-2"},
            ],
        },
        "duration": 8400,
        "timeline": timeline,
        "hit": sorted(hit),
    }


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(bursts())
def test_a_burst_under_p_is_one_suspected_incident(raw: dict[str, Any]) -> None:
    sc = from_raw(raw, "generated_burst")
    events: list[dict[str, Any]] = [e.to_dict() for e in replay(sc.inventory, sc.settings, sc.lines)]
    run = Run(sc, events, confirmed_changes(sc))
    for check in CHECKS:
        check(run)
    opened = [e for e in events if e["event"] == "opened"]
    mass = [e for e in opened if e["kind"] != "single"]
    assert [(e["kind"], e["root"]) for e in mass] == [("suspected", "ap")], opened
    n = sum(1 for t in sc.inventory.targets.values() if t.parents == ("ap",))
    assert mass[0]["detail"].startswith("burst: ") and f" of {n} endpoints below ap within 120s" in mass[0]["detail"]
    held = {t for e in events if e["incident"] == mass[0]["incident"] for t in e["affected_endpoints"]}
    assert held == set(raw["hit"])
    assert all(e["root"] not in raw["hit"] for e in opened if e["kind"] == "single")
