"""The lease decisions, pure: when to renew, when to retry, when to stand down (clock injected).

Times here are the leader's own monotonic clock. The lease's expiry lives in the database, in the
database's clock, set by each renewal to "now + ttl" *when the database runs it*. The leader knows
only when it *sent* the renewal, which is no later than that: so its copy of the expiry,
``sent + ttl``, is never later than the real one, whatever the network delay and however far the two
machines' wall clocks disagree (only their rates must agree, which they do to parts per million).
The leader stands down ``margin`` seconds before that copy expires; a standby takes over only once
the database says the lease has expired. Between the two lies at least ``margin``: the time a poll
or a hand-over in progress has to notice and stop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from monitor.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Timing:
    """How the lease is held. Defaults: a standby takes over at most ``ttl + retry`` (9 s) after the
    active daemon's last renewal, leaving 6 s of the 15 s promised for the daemon's start on a loaded
    machine; the active daemon stands down 5.5 s after its last successful renewal (three more
    attempts fail first: a PostgreSQL restart of a few seconds passes), 2.5 s before the lease can
    expire."""

    ttl: float = 8.0  # a renewal makes the lease valid this long (database clock)
    renew: float = 1.5  # the leader renews this often
    margin: float = 2.5  # and stands down this long before its lease could expire
    retry: float = 1.0  # a standby (or a failed renewal) tries again this often

    def __post_init__(self) -> None:
        if not (self.retry > 0 and self.renew > 0 and 0 < self.margin < self.ttl):
            raise ConfigError(f"lease timing: every period must be positive and margin < ttl ({self})")
        if self.renew >= self.ttl - self.margin:
            raise ConfigError(f"lease timing: renewing every {self.renew} s never renews within the"
                              f" {self.ttl - self.margin} s a renewal gives ({self})")


@dataclass(frozen=True, slots=True)
class Term:
    """A leadership term as its holder knows it."""

    epoch: int  # the lease's epoch: one more at every change of holder (fences the deposed one)
    since: float  # when it began, database wall clock (shown by /metrics and ``monitor status``)
    confirmed: float  # monotonic time the last successful renewal (or the acquisition) was sent


def stand_down_at(timing: Timing, term: Term) -> float:
    """The monotonic time by which the holder must have stopped polling and sending."""
    return term.confirmed + timing.ttl - timing.margin


class Do(enum.Enum):
    WAIT = "wait"
    RENEW = "renew"
    STAND_DOWN = "stand down"


@dataclass(frozen=True, slots=True)
class Step:
    do: Do
    at: float  # WAIT: until when (monotonic); otherwise now


def next_step(timing: Timing, term: Term, last_try: float | None, now: float) -> Step:
    """What the holder does at ``now``. ``last_try``: when the last renewal was sent (successful or
    not; None before the first). Standing down wins over everything; a renewal is due ``renew`` after
    the last confirmed one, and after a failure ``retry`` after the failed attempt."""
    deadline = stand_down_at(timing, term)
    if now >= deadline:
        return Step(Do.STAND_DOWN, now)
    due = term.confirmed + timing.renew
    if last_try is not None and last_try > term.confirmed:  # the last attempt failed
        due = max(due, last_try + timing.retry)
    if now >= due:
        return Step(Do.RENEW, now)
    return Step(Do.WAIT, min(due, deadline))


class Outcome(enum.Enum):
    RENEWED = "renewed"  # the database extended our lease
    LOST = "lost"  # the database answered: the lease is no longer ours (another epoch, or expired)
    FAILED = "failed"  # no answer (database away, connection cut): try again until the deadline


def after_renewal(term: Term, sent: float, outcome: Outcome) -> Term | None:
    """The term after a renewal sent at ``sent``: confirmed from then on, unchanged after a failure,
    None when lost (stand down at once: another daemon may be active already)."""
    if outcome is Outcome.LOST:
        return None
    if outcome is Outcome.RENEWED:
        return Term(term.epoch, term.since, max(term.confirmed, sent))
    return term
