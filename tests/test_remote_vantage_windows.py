"""A single poller blind by its vantage node, and back (issue 14, namespace lab Z2): no DOWN at either end.

``p-ap1`` sees its zone (ap-1 and three CPEs) through ap-1, its declared vantage node. Its uplink is
cut: the core hears nothing (the zone is blind) and its spool keeps what it confirmed, in poll order:
a CPE or two DOWN before ap-1, the rest after. Then ap-1 answers again and the CPEs one by one.
Without the windows of :func:`monitor.remote.vantage.windows` each CPE confirmed before ap-1 was
DOWN until ap-1's DOWN made the poller blind, and DOWN again between ap-1's return and its own (the
lab measured up to 0.56 s per CPE in the event log)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.remote.vantage import Vantages
from monitor.state import State, StateChange

UP, DOWN, UNK = State.UP, State.DOWN, State.UNKNOWN
ZONE = ["ap-1", "cpe-1", "cpe-2", "cpe-3"]
ZONES = {"ap1": ("p-ap1",)}
ZONE_OF = dict.fromkeys(ZONE, "ap1")
HOLD, RECOVER = 2.0, 3.0  # one poll round of the AP at most / re-confirming the zone at most
WINDOWS = {"p-ap1": (HOLD, RECOVER)}


def ch(target: str, old: State, new: State, ts: float) -> StateChange:
    return StateChange(target, old, new, ts, "answers" if new is UP else "3 consecutive failed polls: timeout")


def fresh(windows: dict[str, tuple[float, float]] | None = WINDOWS) -> Vantages:
    v = Vantages(ZONES, ZONE_OF, {"p-ap1": "ap-1"}, windows=windows)
    for t in ZONE:
        v.report("p-ap1", ch(t, UNK, UP, 0.0))
    return v


def cut_and_back(v: Vantages) -> list[StateChange]:
    """The uplink cut at 10: silent at the core from 15; the spool hands everything over at 100."""
    out = v.set_silent({"p-ap1"}, 15.0)
    spool = [ch("cpe-1", UP, DOWN, 10.0), ch("cpe-2", UP, DOWN, 10.1), ch("ap-1", UP, DOWN, 10.3),
             ch("cpe-3", UP, DOWN, 10.4),  # confirmed during the cut, in poll order
             ch("ap-1", DOWN, UP, 50.0), ch("cpe-2", DOWN, UP, 50.25), ch("cpe-1", DOWN, UP, 50.5)]
    out += v.set_silent(set(), 100.0)  # heard again (its heartbeat)
    out += v.report_many("p-ap1", spool)
    out += v.report("p-ap1", ch("cpe-3", DOWN, UP, 50.75))  # the last, in a message of its own
    out += v.caught_up("p-ap1", 101.0)
    return out


def downs(out: list[StateChange]) -> list[tuple[str, float]]:
    return [(c.target, c.ts) for c in out if c.new is DOWN]


def test_a_single_poller_blind_by_its_vantage_node_and_back_shows_no_down() -> None:
    v = fresh()
    out = cut_and_back(v)
    assert downs(out) == []
    # unknown from ap-1's DOWN (the poller blind), each CPE up again when the poller confirmed it
    assert [(c.target, c.new, c.ts) for c in out] == [
        ("ap-1", UNK, 10.3), ("cpe-1", UNK, 10.3), ("cpe-2", UNK, 10.3), ("cpe-3", UNK, 10.3),
        ("ap-1", UP, 50.0), ("cpe-2", UP, 50.25), ("cpe-1", UP, 50.5), ("cpe-3", UP, 50.75)]
    assert all(v.state(t) is UP for t in ZONE)
    assert not v.recovering and not v.held and not v.draining


def test_heartbeats_that_waited_in_the_connection_with_the_spool_do_not_end_the_hold() -> None:
    """The cut kept the poller's TCP connection: after the restore its old heartbeats arrive in the
    stream between its changes, each current when taken (the core has what it had published then).
    They say how far its news has come, not that it is fresh: the CPEs' DOWNs stay held until
    ap-1's DOWN makes it blind (namespace lab Z2, seen in one run of three)."""
    v = fresh()
    out = v.set_silent({"p-ap1"}, 15.0)
    out += v.caught_up("p-ap1", 100.0, 0.5)  # sent before the cut
    out += v.report("p-ap1", ch("cpe-1", UP, DOWN, 10.0))
    out += v.caught_up("p-ap1", 100.0, 10.05)
    out += v.report("p-ap1", ch("cpe-2", UP, DOWN, 10.1))
    out += v.caught_up("p-ap1", 100.0, 10.2)
    out += v.report("p-ap1", ch("ap-1", UP, DOWN, 10.3))
    out += v.report("p-ap1", ch("cpe-3", UP, DOWN, 10.4))
    out += v.caught_up("p-ap1", 100.0, 99.9)  # a fresh one: the hold ends
    out += v.report_many("p-ap1", [ch("ap-1", DOWN, UP, 100.5), ch("cpe-1", DOWN, UP, 100.7),
                                   ch("cpe-2", DOWN, UP, 100.8), ch("cpe-3", DOWN, UP, 100.9)])
    assert downs(out) == []
    assert all(v.state(t) is UP for t in ZONE)


def test_an_old_heartbeat_is_old_even_when_the_cut_was_shorter_than_the_hold() -> None:
    """Production's settings: a hold of minutes (3 polls of 60 s), a silence of one minute. A cut of
    100 s: the heartbeat that waited in the connection is 100 s old, within the hold but not fresh:
    the DOWNs the spool brings stay held until ap-1's DOWN makes the poller blind."""
    v = Vantages(ZONES, ZONE_OF, {"p-ap1": "ap-1"}, windows={"p-ap1": (183.0, 183.0)}, fresh=30.0)
    for t in ZONE:
        v.report("p-ap1", ch(t, UNK, UP, 0.0))
    out = v.set_silent({"p-ap1"}, 1060.0)
    out += v.caught_up("p-ap1", 1100.0, 1000.0)  # sent at the cut
    out += v.report("p-ap1", ch("cpe-1", UP, DOWN, 1020.0))
    out += v.caught_up("p-ap1", 1100.0, 1001.0)
    out += v.report_many("p-ap1", [ch("cpe-2", UP, DOWN, 1030.0), ch("ap-1", UP, DOWN, 1050.0),
                                   ch("cpe-3", UP, DOWN, 1060.0)])
    assert downs(out) == []


def test_without_the_windows_the_cpes_flicker_down_at_both_ends() -> None:
    """What the windows prevent (the rule before them): cpe-1 and cpe-2 DOWN before ap-1's DOWN,
    and every CPE DOWN again from ap-1's return until it is confirmed itself."""
    out = cut_and_back(fresh(None))
    assert downs(out) == [("cpe-1", 10.0), ("cpe-2", 10.1), ("cpe-1", 50.0), ("cpe-2", 50.0), ("cpe-3", 50.0)]


def test_a_cpe_still_down_after_its_vantage_node_returned_is_down_once_the_zone_is_confirmed_again() -> None:
    """cpe-3 really is dead: not confirmed again, it stays unknown until the poller's news has come
    ``recover`` past ap-1's return, then its view counts again: DOWN (at that time)."""
    v = fresh()
    v.set_silent({"p-ap1"}, 15.0)
    v.set_silent(set(), 100.0)
    out = v.report_many("p-ap1", [ch("cpe-3", UP, DOWN, 10.0), ch("ap-1", UP, DOWN, 10.3),
                                  ch("cpe-1", UP, DOWN, 10.4), ch("cpe-2", UP, DOWN, 10.4),
                                  ch("ap-1", DOWN, UP, 50.0), ch("cpe-1", DOWN, UP, 50.5), ch("cpe-2", DOWN, UP, 50.6)])
    assert downs(out) == [] and v.state("cpe-3") is UNK and "p-ap1" in v.recovering
    assert v.caught_up("p-ap1", 50.0 + RECOVER - 0.1) == []  # not yet: it may still answer
    out = v.caught_up("p-ap1", 50.0 + RECOVER)
    assert [(c.target, c.old, c.new, c.ts) for c in out] == [("cpe-3", UNK, DOWN, 50.0 + RECOVER)]


def test_a_held_down_without_a_blindness_counts_at_its_own_time() -> None:
    """A CPE that failed during the cut while ap-1 still answered: held while the spool drains, then
    DOWN at its confirmed time once the poller's news has come ``hold`` past it."""
    v = fresh()
    v.set_silent({"p-ap1"}, 15.0)
    v.set_silent(set(), 100.0)
    assert v.report("p-ap1", ch("cpe-1", UP, DOWN, 20.0)) == []  # held
    assert v.report("p-ap1", ch("cpe-2", UP, DOWN, 20.0 + HOLD - 0.5)) == []  # held too
    out = v.report("p-ap1", ch("cpe-3", UP, DOWN, 20.0 + HOLD))  # cpe-1's window has passed
    assert [(c.target, c.new, c.ts) for c in out] == [("cpe-1", DOWN, 20.0)]
    out = v.caught_up("p-ap1", 101.0)  # the backlog is in: the rest counts
    assert [(c.target, c.new, c.ts) for c in out] == [("cpe-2", DOWN, 20.0 + HOLD - 0.5), ("cpe-3", DOWN, 20.0 + HOLD)]


def test_what_is_held_counts_once_a_fresh_heartbeat_shows_the_backlog_in() -> None:
    """Production's hold is minutes: a tower's DOWN the spool brought a minute after it was confirmed
    does not wait for the poller's news to go the whole hold past it; a fresh heartbeat, current
    (the backlog is in, ap-1's DOWN is not in it), lets it count at once, at its own time."""
    v = Vantages(ZONES, ZONE_OF, {"p-ap1": "ap-1"}, windows={"p-ap1": (183.0, 183.0)}, fresh=30.0)
    for t in ZONE:
        v.report("p-ap1", ch(t, UNK, UP, 0.0))
    v.set_silent({"p-ap1"}, 1060.0)
    assert v.report("p-ap1", ch("cpe-1", UP, DOWN, 1040.0)) == []
    out = v.caught_up("p-ap1", 1100.0, 1099.5)
    assert [(c.target, c.new, c.ts) for c in out] == [("cpe-1", DOWN, 1040.0)]


def test_a_held_down_and_its_up_are_both_kept() -> None:
    """A CPE down and up again within the hold, ap-1 answering all along: a short real failure."""
    v = fresh()
    v.set_silent({"p-ap1"}, 15.0)
    v.set_silent(set(), 100.0)
    out = v.report_many("p-ap1", [ch("cpe-1", UP, DOWN, 20.0), ch("cpe-1", DOWN, UP, 21.0)])
    assert [(c.target, c.new, c.ts) for c in out] == [("cpe-1", DOWN, 20.0), ("cpe-1", UP, 21.0)]


def test_news_on_time_is_not_held() -> None:
    """A poller heard all along: its DOWNs count at once (holding them would delay every real failure)."""
    v = fresh()
    out = v.report("p-ap1", ch("cpe-1", UP, DOWN, 20.0))
    assert [(c.target, c.new, c.ts) for c in out] == [("cpe-1", DOWN, 20.0)]


@settings(max_examples=80, deadline=None, derandomize=True)
@given(cut_at=st.floats(1.0, 100.0), phases=st.lists(st.floats(0.0, 0.99), min_size=4, max_size=4),
       back_after=st.floats(5.0, 200.0), split=st.integers(0, 8))
def test_whatever_the_poll_order_a_blindness_by_the_vantage_node_shows_no_down(
        cut_at: float, phases: list[float], back_after: float, split: int) -> None:
    """Any phases of the four targets within one poll round (``HOLD`` covers it), any time back, the
    spool in two messages split anywhere, the last ones live: never a DOWN, and every target up at the end."""
    v = fresh()
    v.set_silent({"p-ap1"}, cut_at + 5)
    by_time = sorted(zip([cut_at + 3 + p for p in phases], ZONE, strict=True))
    back = cut_at + back_after
    ups = sorted(zip([back + p if t == "ap-1" else back + 1 + p for p, t in zip(phases, ZONE, strict=True)],
                     ZONE, strict=True))
    changes = [ch(t, UP, DOWN, ts) for ts, t in by_time] + [ch(t, DOWN, UP, ts) for ts, t in ups]
    out = v.set_silent(set(), back + 10)
    out += v.report_many("p-ap1", changes[:split])
    out += v.report_many("p-ap1", changes[split:])
    out += v.caught_up("p-ap1", back + 10)
    assert downs(out) == []
    assert all(v.state(t) is UP for t in ZONE)


def test_a_down_held_is_kept_across_a_core_restart_as_the_pollers_view() -> None:
    """The core dies while a DOWN is held (its message acknowledged, nothing stored): the view is in
    what a restart restores (``differences``, remote-views.json), so the failure is not lost."""
    v = fresh()
    v.set_silent({"p-ap1"}, 15.0)
    v.set_silent(set(), 100.0)
    assert v.report("p-ap1", ch("cpe-1", UP, DOWN, 20.0)) == [] and v.changed
    assert v.differences() == {"p-ap1": {"cpe-1": (DOWN, 20.0)}}
    after = Vantages(ZONES, ZONE_OF, {"p-ap1": "ap-1"}, {t: (UP, 0.0) for t in ZONE}, WINDOWS)
    after.restore(v.differences())
    assert after.views["p-ap1"]["cpe-1"] == (DOWN, 20.0)
