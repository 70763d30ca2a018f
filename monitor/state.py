"""The confirmed state of one target: a pure state machine over observations and injected time.

A single lost poll on a radio link is noise; a confirmed DOWN wakes people up. So a target changes
state only after ``down_after`` consecutive unreachable polls, ``up_after`` consecutive good polls,
or ``degraded_after`` consecutive polls beyond a quality threshold. Every transition is returned as a
:class:`StateChange`, which is what the event log, correlation and reports consume.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"
    DEGRADED = "degraded"


@dataclass(frozen=True, slots=True)
class Observation:
    """What one poll of a target showed, already judged against its thresholds."""

    reachable: bool
    degraded_reasons: tuple[str, ...] = ()
    detail: str = ""  # why it is unreachable ("timeout", "unreachable", ...), for the reason text
    cause: str | None = None  # what the parent's table says caused it (dying_gasp, los, other, unknown)


@dataclass(frozen=True, slots=True)
class Confirmation:
    down_after: int = 3
    up_after: int = 2
    degraded_after: int = 3

    def __post_init__(self) -> None:
        # At least one poll each (the config loader enforces 1-100): :func:`step` relies on it to
        # keep an UP target that answers well UP without asking the rules.
        if min(self.down_after, self.up_after, self.degraded_after) < 1:
            raise ValueError(f"confirmation counts must be at least 1: {self}")


@dataclass(frozen=True, slots=True)
class TargetState:
    state: State = State.UNKNOWN
    since: float = 0.0
    fail_streak: int = 0  # consecutive unreachable polls
    reach_streak: int = 0  # consecutive reachable polls (healthy or degraded)
    ok_streak: int = 0  # consecutive reachable polls within every threshold
    degraded_streak: int = 0  # consecutive reachable polls beyond a threshold


@dataclass(frozen=True, slots=True)
class StateChange:
    target: str
    old: State
    new: State
    ts: float
    reason: str
    #: for a DOWN from a subscriber table: the last down cause the parent reported (dying_gasp, los,
    #: other, unknown), so correlation can tell a power cut from a fibre cut; None otherwise
    cause: str | None = None


def step(
    prev: TargetState, obs: Observation, now: float, rules: Confirmation, target: str
) -> tuple[TargetState, StateChange | None]:
    """Fold one observation into the state; return the new state and the transition, if any."""
    # Built directly rather than with dataclasses.replace: this runs once per poll of every target.
    if prev.state is State.UP and obs.reachable and not obs.degraded_reasons:
        # Nearly every poll: an UP target answering within its thresholds stays UP whatever its
        # streaks (every rule needs at least one poll), so only the counters move.
        return TargetState(State.UP, prev.since, 0, prev.reach_streak + 1, prev.ok_streak + 1, 0), None
    return step_general(prev, obs, now, rules, target)


def step_general(
    prev: TargetState, obs: Observation, now: float, rules: Confirmation, target: str
) -> tuple[TargetState, StateChange | None]:
    """:func:`step` without its shortcut for the common poll (the property tests compare the two)."""
    if obs.reachable:
        healthy = not obs.degraded_reasons
        cur = TargetState(
            prev.state, prev.since, 0, prev.reach_streak + 1,
            prev.ok_streak + 1 if healthy else 0,
            0 if healthy else prev.degraded_streak + 1,
        )
    else:
        cur = TargetState(prev.state, prev.since, prev.fail_streak + 1, 0, 0, 0)

    new, reason = _decide(cur, obs, rules)
    if new is None or new == prev.state:
        return cur, None
    changed = TargetState(new, now, cur.fail_streak, cur.reach_streak, cur.ok_streak, cur.degraded_streak)
    return changed, StateChange(target, prev.state, new, now, reason, obs.cause if new == State.DOWN else None)


def _decide(cur: TargetState, obs: Observation, rules: Confirmation) -> tuple[State | None, str]:
    if cur.fail_streak >= rules.down_after and cur.state != State.DOWN:
        detail = f": {obs.detail}" if obs.detail else ""
        return State.DOWN, f"{cur.fail_streak} consecutive failed polls{detail}"
    if not obs.reachable:
        return None, ""
    degraded_now = bool(obs.degraded_reasons)
    why = ", ".join(obs.degraded_reasons)
    match cur.state:
        case State.UNKNOWN:
            if degraded_now and cur.degraded_streak >= rules.degraded_after:
                return State.DEGRADED, why
            return State.UP, "first reply"
        case State.UP:
            if cur.degraded_streak >= rules.degraded_after:
                return State.DEGRADED, why
        case State.DEGRADED:
            if cur.ok_streak >= rules.up_after:
                return State.UP, f"{cur.ok_streak} consecutive good polls"
        case State.DOWN:
            if cur.reach_streak >= rules.up_after:
                if degraded_now:
                    return State.DEGRADED, f"answering again but {why}"
                return State.UP, f"{cur.reach_streak} consecutive replies"
    return None, ""


def restored(state: State, since: float) -> TargetState:
    """The state a target resumes in after a restart: confirmed state kept, streaks start over.

    Starting the streaks at zero means a restart can neither confirm a failure nor a recovery by
    itself: both need fresh evidence, so a restart never produces spurious events.
    """
    return TargetState(state=state, since=since)
