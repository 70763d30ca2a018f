"""The burst rule's arithmetic: Poisson tails, time observed per hour of day, rates learned from history."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.correlate.burst import DAY, FailureRates, hours_observed, poisson_tail
from monitor.correlate.settings import CorrelationSettings
from monitor.correlate.store import IncidentStore
from monitor.errors import ConfigError
from tests.scenario_runner import SCENARIOS, load, run_service

ANCESTORS = {f"cpe-{a}-{i}": (f"ap-{a}", "twr") for a in range(2) for i in range(50)}
BELOW = {"ap-0": 50, "ap-1": 50, "twr": 100}


def _direct_tail(k: int, mu: float) -> float:
    """The upper terms summed one by one in logs (slow, fine for small k and mu)."""
    return sum(math.exp(j * math.log(mu) - mu - math.lgamma(j + 1)) for j in range(k, k + 400))


@pytest.mark.parametrize(("k", "mu"), [(1, 0.5), (3, 0.01), (5, 5.0), (24, 0.001), (40, 14.0), (3, 1000.0)])
def test_poisson_tail_matches_the_sum(k: int, mu: float) -> None:
    if k <= mu:
        want = 1.0 - sum(math.exp(j * math.log(mu) - mu - math.lgamma(j + 1)) for j in range(k))
    else:
        want = _direct_tail(k, mu)
    assert poisson_tail(k, mu) == pytest.approx(want, rel=1e-9)


def test_poisson_tail_edges() -> None:
    assert poisson_tail(0, 3.0) == 1.0 and poisson_tail(2, 0.0) == 0.0
    assert 0 < poisson_tail(2000, 1000.0) < 1e-150  # a far tail: no overflow, no zero


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 40 * DAY), st.floats(0, 40 * DAY))
def test_hours_observed_covers_the_span_once(start: float, span: float) -> None:
    hours = hours_observed(start, start + span)
    assert sum(hours) == pytest.approx(span, abs=1e-3)
    assert all(0 <= h <= span // DAY * 3600 + 3600 + 1e-6 for h in hours)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 20 * DAY), st.sampled_from(sorted(ANCESTORS))), max_size=60),
       st.floats(0, 25 * DAY))
def test_rates_learned_one_by_one_equal_rates_from_the_history(failures: list[tuple[float, str]], now: float) -> None:
    """What the engine learns as singles resolve (in any order) is what a restart rebuilds from the store."""
    incremental = FailureRates(ANCESTORS, BELOW, history=14 * DAY, prior=0.2, start=0.0)
    for ts, ep in failures:
        incremental.add(ts, ep)
    rebuilt = FailureRates.from_history(ANCESTORS, BELOW, failures, history=14 * DAY, prior=0.2, start=0.0)
    for node in ("ap-0", "twr"):
        assert incremental.rate(node, now) == rebuilt.rate(node, now)


def test_learned_rates_follow_the_hour_of_day() -> None:
    """Ten nights of churn at 02h UTC raise the night rate of that AP, not its afternoon, nor its sibling."""
    failures = [(d * DAY + 2 * 3600 + 60 * i, f"cpe-0-{i}") for d in range(10) for i in range(5)]
    rates = FailureRates.from_history(ANCESTORS, BELOW, failures, history=14 * DAY, prior=0.2, start=0.0)
    night, overall, hour = rates.rate("ap-0", 10 * DAY + 2 * 3600 + 1800)
    afternoon, _, _ = rates.rate("ap-0", 10 * DAY + 15 * 3600)
    sibling, _, _ = rates.rate("ap-1", 10 * DAY + 2 * 3600 + 1800)
    assert hour == 2 and night > 10 * afternoon and night > 10 * sibling
    assert afternoon < overall < night
    # a burst of 5 in 2 minutes is churn at night there, and a burst in the afternoon or next door
    assert rates.judge("ap-0", 5, 120, 10 * DAY + 2 * 3600 + 1800).odds > 1e-9
    assert rates.judge("ap-0", 5, 120, 10 * DAY + 15 * 3600).odds < 1e-9
    assert rates.judge("ap-1", 5, 120, 10 * DAY + 2 * 3600 + 1800).odds < 1e-9


def test_history_older_than_the_window_is_forgotten() -> None:
    old = [(i * 60.0, "cpe-0-1") for i in range(50)]
    rates = FailureRates.from_history(ANCESTORS, BELOW, old, history=DAY, prior=0.2, start=0.0)
    fresh = FailureRates(ANCESTORS, BELOW, history=DAY, prior=0.2, start=0.0)
    assert rates.rate("ap-0", 3 * DAY) == fresh.rate("ap-0", 3 * DAY)


@pytest.mark.parametrize("bad", [{"burst_odds": "nan"}, {"burst_odds": "1"}, {"burst_prior": "inf"},
                                 {"burst_prior": "0"}, {"burst_history": "10s"}])
def test_burst_settings_are_checked(bad: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        CorrelationSettings().with_overrides(bad)


def test_burst_settings_survive_a_new_interval() -> None:
    s = CorrelationSettings().with_overrides({"burst_odds": "1e-6", "burst_history": "3d"})
    s = s.with_overrides({"interval": "30"})
    assert s.burst_odds == 1e-6 and s.burst_history == 3 * DAY and s.window == 60


def test_the_burst_incident_carries_its_odds_as_a_note(tmp_path: Path) -> None:
    """The daemon's path: the opened event's detail is a note on the incident (`monitor incidents show`)."""
    sc = load(SCENARIOS / "wind_sector_burst.yaml")
    events = run_service(sc, tmp_path / "monitor.db")
    burst = next(e for e in events if e["event"] == "opened" and e["kind"] == "suspected")
    assert burst["root"] == "ap-sector" and len(burst["affected_endpoints"]) == 24
    assert burst["detail"].startswith("burst: 24 of 60 endpoints below ap-sector within 120s; learned rate ")
    store = IncidentStore(tmp_path / "monitor.db")
    try:
        notes = [(author, text) for _, action, author, text, _ in store.actions(burst["incident"]) if action == "note"]
    finally:
        store.close()
    assert notes == [("correlation", burst["detail"])]


def test_without_the_burst_rule_the_wind_is_24_singles() -> None:
    """The scenario fails on the share rule alone (burst_odds 0 turns the burst rule off)."""
    from monitor.replay import replay

    sc = load(SCENARIOS / "wind_sector_burst.yaml")
    off = CorrelationSettings.for_interval(60).with_overrides({"burst_odds": "0"})
    kinds = [e.kind for e in replay(sc.inventory, off, sc.lines) if e.event == "opened"]
    assert kinds.count("single") == 26 and "suspected" not in kinds
