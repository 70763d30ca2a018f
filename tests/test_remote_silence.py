"""Zone blindness at the core (issue 14), with injected times: a zone is blind once every poller covering it
has been silent longer than the timeout, and returns as soon as one is heard; the core's live view shows
its targets as unknown meanwhile and tells correlation nothing."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor import selfmetrics
from monitor.inventory.loader import load_inventory
from monitor.remote.core import BlindZones
from monitor.remote.silence import ZoneNews, ZoneWatch
from monitor.state import State, StateChange, TargetState
from monitor.store import EventStore

T0 = 1_796_550_000.0
ZONES = {"saravena": ("p-s1", "p-s2"), "tame": ("p-t",), "noc": ()}


def test_a_zone_is_blind_only_when_all_its_pollers_are_silent() -> None:
    w = ZoneWatch(ZONES, timeout=30.0, start=T0)
    assert w.step(T0 + 30) == []  # at the start each poller gets the timeout to show up
    w.heard("p-s1", T0 + 20)
    news = w.step(T0 + 31)
    assert news == [ZoneNews("tame", True, T0 + 31, T0, ("p-t",))]  # saravena: p-s1 was heard
    assert w.step(T0 + 40) == [] and set(w.blind) == {"tame"}
    assert [(n.zone, n.blind, n.last_heard) for n in w.step(T0 + 51)] == [("saravena", True, T0 + 20)]
    w.heard("p-s2", T0 + 60)  # one vantage point is enough to see the zone
    assert [(n.zone, n.blind) for n in w.step(T0 + 60)] == [("saravena", False)]
    assert set(w.blind) == {"tame"}


def test_a_last_will_is_noted_but_the_alert_waits_for_the_timeout() -> None:
    """A poller that systemd restarts within the timeout pages nobody."""
    w = ZoneWatch(ZONES, timeout=30.0, start=T0)
    w.heard("p-t", T0 + 10)
    w.gone("p-t")
    assert w.offline == {"p-t"} and [n.zone for n in w.step(T0 + 39)] == ["saravena"]
    w.heard("p-t", T0 + 41)  # back before the timeout ran out
    assert w.offline == set() and w.step(T0 + 60) == []


def test_an_old_retained_heartbeat_counts_from_when_it_was_sent() -> None:
    """A core starting while a poller is long dead: the broker's retained heartbeat is a day old."""
    w = ZoneWatch(ZONES, timeout=30.0, start=T0)
    w.heard("p-t", T0 - 86_400)
    assert [n.zone for n in w.step(T0 + 1)] == ["tame"]
    w.heard("p-t", T0 - 100)  # an older message arriving late never moves the last time back
    w.heard("p-t", T0 + 2)
    w.heard("p-t", T0 - 50)
    assert w.last_heard("p-t") == T0 + 2 and [n.blind for n in w.step(T0 + 3)] == [False]


def test_a_zone_gone_from_the_config_returns() -> None:
    w = ZoneWatch(ZONES, timeout=30.0, start=T0)
    assert {n.zone for n in w.step(T0 + 31)} == {"saravena", "tame"}
    news = w.configure({"saravena": ("p-s1", "p-s2"), "tame": ()}, 30.0, T0 + 40)
    assert [(n.zone, n.blind, n.at) for n in news] == [("tame", False, T0 + 40)]
    assert set(w.blind) == {"saravena"}


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(["p-s1", "p-s2", "p-t", "p-x", None]), st.floats(0, 50)), max_size=40))
def test_blindness_follows_the_rule_at_every_step(script: list[tuple[str | None, float]]) -> None:
    """Any order of heartbeats and steps: blind exactly when every poller's last word is older than the
    timeout, news only on a change, alternating per zone; unknown pollers change nothing."""
    w = ZoneWatch(ZONES, timeout=10.0, start=T0)
    heard: dict[str, float] = {}
    now = T0
    told: dict[str, list[bool]] = {}
    for poller, dt in script:
        now += dt
        if poller is None:
            for n in w.step(now):
                told.setdefault(n.zone, []).append(n.blind)
            for zone, ps in ZONES.items():
                if ps:
                    expect = all(now - heard.get(p, T0) > 10.0 for p in ps)
                    assert (zone in w.blind) == expect
        else:
            w.heard(poller, now - dt / 2)
            heard[poller] = now - dt / 2
    for flags in told.values():
        assert flags == [i % 2 == 0 for i in range(len(flags))]  # blind, back, blind, ...
    assert "noc" not in w.blind


def test_the_core_shows_a_blind_zone_as_unknown_and_its_stored_states_when_back(tmp_path: Path) -> None:
    (tmp_path / "sites.yaml").write_text("""
municipalities: [{id: arauca, name: Arauca}, {id: saravena, name: Saravena}]
sites: [{id: noc, municipality: arauca, name: NOC}, {id: twr, municipality: saravena, name: Torre}]
nodes:
  - {id: core, kind: router, address: 127.0.0.1, site: noc}
  - {id: ap-s, kind: ap, address: 127.0.0.2, parent: core, site: twr}
pollers:
  brokers: [{host: 127.0.0.1}]
  heartbeat: 1s
  silent_after: 3s
  zones: [{id: noc, municipalities: [arauca]}, {id: saravena, municipalities: [saravena], pollers: [p-s]}]
""")
    inv = load_inventory(tmp_path / "sites.yaml")
    store = EventStore(tmp_path / "monitor.db")
    store.append([StateChange("ap-s", State.UNKNOWN, State.UP, T0, "first contact")])
    states = {"core": TargetState(State.UP, T0), "ap-s": TargetState(State.UP, T0)}
    zones = BlindZones.watching(inv, store, states, T0)
    gauge = selfmetrics.ZONE_BLIND.labels("saravena")
    zones.watch.heard("p-s", T0 + 1)
    assert zones.step(T0 + 4) == [] and states["ap-s"].state is State.UP
    assert [n.blind for n in zones.step(T0 + 4.5)] == [True]
    assert states["ap-s"] == TargetState(State.UNKNOWN, T0 + 4.5) and states["core"].state is State.UP
    assert gauge._value.get() == 1
    # meanwhile the poller's spool brings a change with its real time (stored by the intake)
    store.append([StateChange("ap-s", State.UP, State.DOWN, T0 + 3, "2 consecutive failed polls: timeout")])
    zones.heard("p-s", T0 + 9)  # the feed hears it before it stores what the message carries: back at once
    assert zones.watch.blind == {} and zones.step(T0 + 9) == []
    assert states["ap-s"] == TargetState(State.DOWN, T0 + 3) and gauge._value.get() == 0
    store.close()
