"""Several vantage points per zone (issue 14): the pure combiner of pollers' views, monitor.remote.vantage.

A target is DOWN only when every live, non-blind poller that sees it sees it down; a poller whose own
uplink fails (everything it sees fails while another vantage point still sees the zone, or its
declared vantage node is down) is set aside; one effective change per real change, whatever the
order in which the pollers' reports arrive."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.remote.vantage import Vantages
from monitor.state import State, StateChange

UP, DOWN, DEG, UNK = State.UP, State.DOWN, State.DEGRADED, State.UNKNOWN
TOWN = ["gw", "twr", "ap", "cpe-1", "cpe-2"]
ZONES = {"town": ("p-town", "p-noc"), "solo": ("p-solo",)}
ZONE_OF = {**dict.fromkeys(TOWN, "town"), "s-1": "solo", "s-2": "solo", "core": "noc"}


def ch(target: str, old: State, new: State, ts: float, reason: str = "3 consecutive failed polls: timeout",
       cause: str | None = None) -> StateChange:
    return StateChange(target, old, new, ts, reason, cause)


def seen_up(v: Vantages, poller: str, targets: list[str], ts: float = 0.0) -> list[StateChange]:
    out = []
    for t in targets:
        out += v.report(poller, ch(t, UNK, UP, ts, "answers"))
    return out


def both_up(**kw: object) -> Vantages:
    v = Vantages(ZONES, ZONE_OF, **kw)  # type: ignore[arg-type]
    for p in ("p-town", "p-noc"):
        seen_up(v, p, TOWN)
    return v


def test_down_only_when_every_poller_sees_it_down_and_once() -> None:
    v = both_up()
    assert v.report("p-town", ch("twr", UP, DOWN, 100.0)) == []  # the NOC still sees it: no outage
    assert v.state("twr") is UP
    out = v.report("p-noc", ch("twr", UP, DOWN, 130.0))
    assert [(c.target, c.old, c.new, c.ts) for c in out] == [("twr", UP, DOWN, 130.0)]
    assert out[0].reason == "3 consecutive failed polls: timeout; down from every vantage point: p-town, p-noc"
    assert v.report("p-noc", ch("twr", UP, DOWN, 130.0)) == []  # a repeat (QoS 1): nothing
    assert [(c.new, c.ts) for c in v.report("p-town", ch("twr", DOWN, UP, 400.0, "answers"))] == [(UP, 400.0)]
    assert v.report("p-noc", ch("twr", DOWN, UP, 410.0, "answers")) == []  # up already: once


def test_a_late_report_of_an_earlier_failure_dates_the_outage_when_both_saw_it() -> None:
    v = both_up()
    v.report("p-noc", ch("twr", UP, DOWN, 130.0))
    out = v.report("p-town", ch("twr", UP, DOWN, 100.0))  # the town's message was delayed
    assert [(c.new, c.ts) for c in out] == [(DOWN, 130.0)]  # down from both since 130, not 100


def test_a_town_pollers_uplink_failing_makes_it_blind_and_the_noc_rules() -> None:
    """Everything the town poller sees fails together while the NOC still sees the town: no outage.
    A target only the town poller sees (the NOC never confirmed it) is unknown while it is blind."""
    v = Vantages(ZONES, ZONE_OF)
    seen_up(v, "p-town", TOWN)
    seen_up(v, "p-noc", ["gw", "twr", "ap", "cpe-1"])  # cpe-2 is behind NAT: only the town sees it
    out = []
    for i, t in enumerate(reversed(TOWN)):  # cpe-2 first: down on the town's word alone, until it is blind
        out += v.report("p-town", ch(t, UP, DOWN, 100.0 + i))
    assert v.blind["town"] == {"p-town": "blind: all 5 targets it sees are down"}
    assert [(c.target, c.new, c.ts) for c in out] == [("cpe-2", DOWN, 100.0), ("cpe-2", UNK, 104.0)]
    assert out[1].reason == "no poller can see it; set aside: p-town (blind: all 5 targets it sees are down)"
    assert all(v.state(t) is UP for t in TOWN[:4])
    back = v.report("p-town", ch("gw", DOWN, UP, 500.0, "answers"))  # the uplink is back: its view counts again
    assert [(c.target, c.old, c.new) for c in back] == [("cpe-2", UNK, DOWN)]
    assert v.blind["town"] == {}


def test_every_vantage_point_seeing_nothing_is_the_zone_down() -> None:
    """Both pollers see everything down: they agree, so neither is blind and the targets are down
    (correlation then judges the zone's root, as in single-daemon mode)."""
    v = both_up()
    for t in TOWN:
        v.report("p-town", ch(t, UP, DOWN, 100.0))
    out = [c for t in TOWN for c in v.report("p-noc", ch(t, UP, DOWN, 110.0))]
    assert v.blind["town"] == {}
    assert {c.target for c in out if c.new is DOWN} == set(TOWN)
    assert all(v.state(t) is DOWN for t in TOWN)


def test_a_declared_vantage_node_down_in_its_own_view_blinds_a_poller() -> None:
    v = Vantages(ZONES, ZONE_OF, vantage={"p-town": "gw", "p-noc": "core"})
    seen_up(v, "p-town", TOWN)
    seen_up(v, "p-noc", ["twr", "ap"])  # the NOC sees only the towers
    out = v.report("p-town", ch("gw", UP, DOWN, 100.0))
    assert v.blind["town"] == {"p-town": "blind: its vantage node gw is down"}
    assert [(c.target, c.new) for c in out] == [("cpe-1", UNK), ("cpe-2", UNK), ("gw", UNK)]


def test_a_vantage_node_the_core_polls_blinds_the_poller_that_sees_through_it() -> None:
    v = Vantages(ZONES, ZONE_OF, vantage={"p-noc": "core"})
    seen_up(v, "p-town", ["gw"])
    seen_up(v, "p-noc", TOWN)
    v.report("p-noc", ch("twr", UP, DOWN, 50.0))
    v.report("p-town", ch("gw", UP, DOWN, 60.0))  # the town poller alone... the NOC sees gw up
    assert v.state("gw") is UP
    out = v.node_state("core", DOWN, 100.0)  # the NOC's own router: the NOC poller sees nothing now
    assert v.blind["town"] == {"p-noc": "blind: its vantage node core is down"}
    assert [(c.target, c.old, c.new, c.ts) for c in out] == [
        ("ap", UP, UNK, 100.0), ("cpe-1", UP, UNK, 100.0), ("cpe-2", UP, UNK, 100.0), ("gw", UP, DOWN, 100.0),
        ("twr", DOWN, UNK, 100.0)]
    assert v.node_state("core", DOWN, 101.0) == []
    assert [(c.target, c.new) for c in v.node_state("core", UP, 200.0)][-1] == ("twr", DOWN)


def test_a_silent_poller_is_set_aside_while_another_is_live_and_all_silent_changes_nothing() -> None:
    v = both_up()
    v.report("p-noc", ch("twr", UP, DOWN, 100.0))  # the town still sees it: up
    out = v.set_silent({"p-town"}, 200.0)
    assert [(c.target, c.new, c.ts) for c in out] == [("twr", DOWN, 200.0)]
    assert v.set_silent({"p-town", "p-noc"}, 300.0) == []  # the zone is blind: nothing moves here
    assert v.state("twr") is DOWN
    assert [(c.target, c.new) for c in v.set_silent(set(), 400.0)] == [("twr", UP)]


def test_a_tower_cut_behind_which_the_town_poller_falls_silent_is_down_by_the_noc_poller_alone() -> None:
    """The tower's backhaul fails: the NOC poller sees everything of the zone down, the town poller (behind
    that backhaul) still sees it up until it falls silent. While both are heard they disagree and the NOC
    poller is blind; once the town poller is silent the NOC poller is the only view left, nothing to
    compare with (as in a zone of one poller): its all-down view counts, one change per target, as the
    single daemon's would (the namespace lab: tests/test_lab_zones.py)."""
    v = both_up()
    out = [c for t in TOWN for c in v.report("p-noc", ch(t, UP, DOWN, 100.0 + TOWN.index(t)))]
    assert out == [] and v.blind["town"] == {"p-noc": "blind: all 5 targets it sees are down"}
    out = v.set_silent({"p-town"}, 110.0)
    assert v.blind["town"] == {}
    assert [(c.target, c.old, c.new, c.ts) for c in out] == [(t, UP, DOWN, 110.0) for t in sorted(TOWN)]
    assert out[0].reason == "down from every vantage point: p-noc; set aside: p-town (silent)"
    assert v.set_silent(set(), 200.0) == []  # the town poller back: catching up, the NOC still rules
    assert [(c.target, c.new) for c in v.report("p-noc", ch("twr", DOWN, UP, 210.0, "answers"))] == [("twr", UP)]
    assert v.caught_up("p-town", 220.0) != [] and all(v.state(t) is UP for t in TOWN)


def test_a_poller_back_from_silence_counts_again_once_caught_up_not_with_its_stale_view() -> None:
    """The town poller was cut from the broker while the tower failed: the NOC's view ruled (down). Heard
    again, its old view (up) would undo that until its spool brought the failure: it catches up first."""
    v = both_up()
    v.set_silent({"p-town"}, 100.0)
    assert [(c.target, c.new) for c in v.report("p-noc", ch("twr", UP, DOWN, 130.0))] == [("twr", DOWN)]
    assert v.set_silent(set(), 200.0) == []  # heard again: catching up
    assert v.aside("town") == {"p-town": "catching up after its silence"}
    assert v.report("p-town", ch("ap", UP, DOWN, 125.0)) == []  # its backlog, still set aside
    assert v.report("p-town", ch("twr", UP, DOWN, 128.0)) == []
    assert v.caught_up("p-town", 210.0) == [] and v.aside("town") == {}  # both see the tower down: no change
    assert v.state("twr") is DOWN and v.state("ap") is UP
    assert v.caught_up("p-town", 220.0) == []


def test_a_poller_back_with_no_one_current_counts_at_once_and_replays_its_backlog() -> None:
    v = both_up()
    v.set_silent({"p-town", "p-noc"}, 100.0)  # the zone is blind: nothing changes here
    out = v.report("p-town", ch("twr", UP, DOWN, 90.0))  # its spool, first: it counts at once
    assert [(c.target, c.new, c.ts) for c in out] == [("twr", DOWN, 90.0)]
    assert v.aside("town") == {"p-noc": "silent"}
    v.set_silent(set(), 300.0)  # the NOC poller heard again while the town poller is current: catching up
    assert v.aside("town") == {"p-noc": "catching up after its silence"}
    v.set_silent({"p-town"}, 400.0)  # and now the town poller is silent: no one current, the NOC counts
    assert v.aside("town") == {"p-town": "silent"} and v.state("twr") is UP


def test_one_poller_is_passed_through_unchanged_and_never_blind_by_failures_alone() -> None:
    v = Vantages(ZONES, ZONE_OF)
    changes = [ch("s-1", UNK, UP, 1.0, "answers"), ch("s-2", UNK, UP, 1.0, "answers"),
               ch("s-1", UP, DOWN, 10.0, "last down cause dying_gasp", "dying_gasp"), ch("s-2", UP, DOWN, 11.0),
               ch("s-1", DOWN, DEG, 20.0, "rtt 300.0ms > 200ms")]
    out = [c for x in changes for c in v.report("p-solo", x)]
    assert out == changes
    assert v.report("p-town", ch("s-1", DEG, UP, 30.0)) == []  # not its zone (the feed refuses it first)


def test_a_restart_seeds_every_view_with_what_the_core_concluded() -> None:
    v = Vantages(ZONES, ZONE_OF, seed={"twr": (UP, 5.0), "ap": (DOWN, 6.0), "s-1": (UNK, 1.0)})
    assert v.state("twr") is UP and v.state("ap") is DOWN and v.state("s-1") is UNK
    assert v.report("p-noc", ch("twr", UP, DOWN, 100.0)) == []  # the town is assumed to see it still up
    assert v.report("p-noc", ch("ap", UP, DOWN, 100.0)) == []  # a repeat from before the restart


# -- properties --------------------------------------------------------------------------------

POLLERS = ("p-town", "p-noc")
STATES = (UP, DOWN, DEG, UNK)


def streams(data: st.DataObject) -> dict[str, list[StateChange]]:
    """Each poller's own stream of changes, consistent (old is its previous view), times increasing."""
    draw = data.draw
    out: dict[str, list[StateChange]] = {}
    for p in POLLERS:
        view: dict[str, State] = {}
        ts = 0.0
        seq = []
        for _ in range(draw(st.integers(0, 25))):
            t = draw(st.sampled_from(TOWN))
            new = draw(st.sampled_from([s for s in STATES if s is not view.get(t, UNK)]))
            ts += draw(st.sampled_from([0.0, 1.0, 7.5]))
            seq.append(ch(t, view.get(t, UNK), new, ts, "seen"))
            view[t] = new
        out[p] = seq
    return out


def interleave(s: dict[str, list[StateChange]], seed: int) -> list[tuple[str, StateChange]]:
    rng = random.Random(seed)
    left = {p: list(cs) for p, cs in s.items()}
    out = []
    while any(left.values()):
        p = rng.choice([p for p, cs in left.items() if cs])
        out.append((p, left[p].pop(0)))
    return out


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data(), st.integers(0, 2**16), st.integers(0, 2**16), st.booleans())
def test_order_of_arrival_does_not_change_the_final_state(data: st.DataObject, a: int, b: int, declared: bool) -> None:
    s = streams(data)
    finals = []
    for seed in (a, b):
        v = Vantages(ZONES, ZONE_OF, vantage={"p-town": "gw"} if declared else None)
        for p, c in interleave(s, seed):
            v.report(p, c)
        finals.append({t: v.state(t) for t in TOWN})
    assert finals[0] == finals[1]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data(), st.integers(0, 2**16), st.lists(st.sets(st.sampled_from(POLLERS)), max_size=4))
def test_the_stream_of_effective_changes_is_consistent_and_never_contradicts_a_voter(
        data: st.DataObject, seed: int, silences: list[set[str]]) -> None:
    """Incremental = from scratch at every step; each change moves the state (old is the previous new,
    no old == new); a DOWN is never in force while a live, non-blind poller sees the target answer."""
    s = streams(data)
    v = Vantages(ZONES, ZONE_OF)
    last: dict[str, State] = {}
    steps = interleave(s, seed)
    cuts = sorted(random.Random(seed).sample(range(len(steps) + 1), min(len(silences), len(steps) + 1)))
    todo = dict(zip(cuts, silences, strict=False))
    for i, (p, c) in enumerate([*steps, ("", None)]):
        out = v.set_silent(todo[i], 1000.0 + i) if i in todo else []
        if i % 3 == 0:
            out += v.caught_up(POLLERS[i % 2], 1000.0 + i)
        if c is not None:
            out += v.report(p, c)
        for e in out:
            assert e.old is last.get(e.target, UNK) and e.old is not e.new
            last[e.target] = e.new
        for t in TOWN:
            if v.frozen("town"):
                break  # every poller silent: the zone is blind and its states stay as they were
            fresh = v.verdict(t).state
            assert v.state(t) is (fresh if fresh is not None else last.get(t, UNK))
            aside = v.aside("town")
            if v.state(t) is DOWN:
                assert all(v.views[q].get(t, (UNK, 0))[0] in (DOWN, UNK) for q in POLLERS if q not in aside)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.data())
def test_a_zone_of_one_poller_passes_its_stream_through_exactly(data: st.DataObject) -> None:
    """The fast path for one poller without a vantage node: what it confirmed is what the core gets,
    change for change, and no view is kept beside the effective state (nothing to save)."""
    view: dict[str, State] = {}
    stream = []
    for i in range(data.draw(st.integers(0, 30))):
        t = data.draw(st.sampled_from(["s-1", "s-2"]))
        new = data.draw(st.sampled_from([s for s in STATES if s is not view.get(t, UNK)]))
        stream.append(ch(t, view.get(t, UNK), new, float(i), "seen", "los" if new is DOWN else None))
        view[t] = new
    v = Vantages(ZONES, ZONE_OF)
    assert [c for x in stream for c in v.report("p-solo", x)] == stream
    assert v.views["p-solo"] == {} and v.differences() == {}


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(["p-solo", "p-town", "p-noc"]), st.sampled_from(["s-1", "s-2", *TOWN]),
                          st.sampled_from(STATES), st.sampled_from(STATES), st.sampled_from([0.0, 1.0, 5.0, 9.0])),
                max_size=30),
       st.lists(st.integers(1, 8), max_size=6), st.booleans())
def test_a_message_taken_whole_is_the_same_as_change_by_change(
        steps: list[tuple[str, str, State, State, float]], cuts: list[int], seeded: bool) -> None:
    """report_many (the core takes a message's changes in one call) = report of each in order: the
    same effective changes, beliefs and silences, whatever the messages (repeats, stale old states,
    times going back, targets of another zone, a poller back from a silence)."""
    seed = {"s-1": (DOWN, 3.0), "twr": (UP, 2.0)} if seeded else None
    one, many = Vantages(ZONES, ZONE_OF, seed=seed), Vantages(ZONES, ZONE_OF, seed=seed)
    for v in (one, many):
        v.set_silent({"p-solo", "p-noc"}, 0.5)
    changes = [(p, ch(t, old, new, ts, "seen")) for p, t, old, new, ts in steps if old is not new]
    got_one: list[StateChange] = []
    got_many: list[StateChange] = []
    i = 0
    for size in [*cuts, len(changes)]:
        part, i = changes[i:i + size], i + size
        for p in {p for p, _c in part}:
            mine = [c for q, c in part if q == p]
            got_one += [e for c in mine for e in one.report(p, c)]
            got_many += many.report_many(p, mine)
    assert got_many == got_one
    assert (many.effective, many.silent, many.views) == (one.effective, one.silent, one.views)
