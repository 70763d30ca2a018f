"""The confirmed-state machine: transitions, hysteresis and reasons, on injected time."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_

from monitor.state import Confirmation, Observation, State, StateChange, TargetState, restored, step, step_general

OK = Observation(reachable=True)
FAIL = Observation(reachable=False, detail="timeout")
SLOW = Observation(reachable=True, degraded_reasons=("rtt 300.0ms > 150ms",))
RULES = Confirmation(down_after=3, up_after=2, degraded_after=3)


def run(observations: Iterable[Observation], start: TargetState | None = None,
        rules: Confirmation = RULES) -> tuple[TargetState, list[StateChange]]:
    st = start or TargetState()
    changes: list[StateChange] = []
    for i, obs in enumerate(observations):
        st, ch = step(st, obs, 1000.0 + 60 * i, rules, "t1")
        if ch:
            changes.append(ch)
    return st, changes


def test_first_reply_confirms_up() -> None:
    st, changes = run([OK])
    assert st.state == State.UP
    assert [(c.old, c.new, c.reason) for c in changes] == [(State.UNKNOWN, State.UP, "first reply")]


def test_down_confirmed_only_after_down_after_consecutive_failures() -> None:
    st, changes = run([OK, FAIL, FAIL])
    assert st.state == State.UP and len(changes) == 1
    st, changes = run([OK, FAIL, FAIL, FAIL])
    assert st.state == State.DOWN
    down = changes[-1]
    assert (down.old, down.new) == (State.UP, State.DOWN)
    assert down.reason == "3 consecutive failed polls: timeout"
    assert down.ts == 1000.0 + 60 * 3


def test_a_good_poll_resets_the_failure_streak() -> None:
    st, changes = run([OK, FAIL, FAIL, OK, FAIL, FAIL, OK])
    assert st.state == State.UP and len(changes) == 1


def test_unknown_goes_down_without_ever_being_up() -> None:
    st, changes = run([FAIL, FAIL, FAIL])
    assert st.state == State.DOWN
    assert [(c.old, c.new) for c in changes] == [(State.UNKNOWN, State.DOWN)]


def test_recovery_needs_up_after_replies() -> None:
    down, _ = run([OK, FAIL, FAIL, FAIL])
    st, changes = run([OK], start=down)
    assert st.state == State.DOWN
    assert not changes
    st, changes = run([OK, OK], start=down)
    assert st.state == State.UP
    assert changes[0].reason == "2 consecutive replies"


def test_flapping_target_does_not_recover_on_alternating_polls() -> None:
    down, _ = run([OK, FAIL, FAIL, FAIL])
    st, changes = run([OK, FAIL, OK, FAIL, OK, FAIL], start=down)
    assert st.state == State.DOWN and not changes


def test_degraded_after_n_polls_beyond_threshold_and_back() -> None:
    st, _ = run([OK, SLOW, SLOW])
    assert st.state == State.UP
    st, changes = run([OK, SLOW, SLOW, SLOW])
    assert st.state == State.DEGRADED
    assert changes[-1].reason == "rtt 300.0ms > 150ms"
    st, changes = run([OK], start=st)
    assert st.state == State.DEGRADED
    st, changes = run([OK, OK], start=st)
    assert st.state == State.UP and changes[-1].old == State.DEGRADED


def test_degraded_target_that_stops_answering_goes_down() -> None:
    degraded, _ = run([OK, SLOW, SLOW, SLOW])
    st, changes = run([FAIL, FAIL, FAIL], start=degraded)
    assert st.state == State.DOWN
    assert [(c.old, c.new) for c in changes] == [(State.DEGRADED, State.DOWN)]


def test_down_target_answering_badly_recovers_to_degraded() -> None:
    down, _ = run([OK, FAIL, FAIL, FAIL])
    st, changes = run([SLOW, SLOW], start=down)
    assert st.state == State.DEGRADED
    assert changes[0].reason.startswith("answering again but rtt")


@pytest.mark.parametrize("state", [State.UP, State.DOWN, State.DEGRADED])
@pytest.mark.parametrize("obs", [OK, FAIL, SLOW], ids=["ok", "fail", "slow"])
def test_restart_resumes_without_spurious_events(state: State, obs: Observation) -> None:
    """Right after a restart a single poll, whatever it shows, never confirms a transition."""
    resumed = restored(state, since=500.0)
    st, change = step(resumed, obs, 2000.0, RULES, "t1")
    assert change is None
    assert (st.state, st.since) == (state, 500.0)


def test_down_after_one_is_immediate() -> None:
    st, changes = run([OK, FAIL], rules=Confirmation(down_after=1, up_after=1, degraded_after=1))
    assert st.state == State.DOWN and len(changes) == 2


_STATES = st_.builds(
    TargetState, st_.sampled_from(list(State)), st_.floats(0, 1e9), *(st_.integers(0, 6) for _ in range(4))
)
_OBSERVATIONS = st_.builds(
    Observation, st_.booleans(), st_.sampled_from([(), ("rtt 300.0ms > 150ms",)]), st_.sampled_from(["", "timeout"])
)
_RULES = st_.builds(Confirmation, *(st_.integers(1, 5) for _ in range(3)))


@settings(max_examples=500, deadline=None)
@given(_STATES, _OBSERVATIONS, _RULES)
def test_the_shortcut_for_healthy_up_polls_changes_nothing(
        prev: TargetState, obs: Observation, rules: Confirmation) -> None:
    """step() keeps an UP target that answers well UP with counters only; the general path agrees."""
    assert step(prev, obs, 2000.0, rules, "t1") == step_general(prev, obs, 2000.0, rules, "t1")


def test_confirmation_counts_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Confirmation(down_after=0)
