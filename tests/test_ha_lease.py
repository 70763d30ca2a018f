"""The lease decisions in virtual time (issue 13): renew, retry, stand down before the lease can
expire, and the keeper's threads driven by an injected clock and a lease that answers as told."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.errors import ConfigError
from monitor.ha.lease import Do, Outcome, Term, Timing, after_renewal, next_step, stand_down_at

T = Timing(ttl=9.0, renew=2.0, margin=3.0, retry=1.0)  # round numbers to reason with


def test_defaults_leave_time_for_the_start_within_fifteen_seconds() -> None:
    d = Timing()
    # a standby sees the lease expired at most ttl + retry after the active daemon's last renewal
    assert d.ttl + d.retry <= 9
    # the leader tries three more times after a failed renewal before it stands down
    failed = after_renewal(Term(1, 0.0, 100.0), 101.5, Outcome.FAILED)
    assert failed is not None
    tries = [101.5]
    now = 101.5
    while (step := next_step(d, failed, tries[-1], now)).do is not Do.STAND_DOWN:
        if step.do is Do.RENEW:
            tries.append(now)
        now = step.at
    assert tries == [101.5, 102.5, 103.5, 104.5] and now == 105.5
    assert stand_down_at(T, Term(1, 0.0, 100.0)) == 106.0


def test_a_fresh_term_waits_until_its_renewal_is_due() -> None:
    term = Term(1, 0.0, 100.0)
    assert next_step(T, term, None, 100.0) == next_step(T, term, None, 101.9)
    assert next_step(T, term, None, 100.5).do is Do.WAIT
    assert next_step(T, term, None, 100.5).at == 102.0
    assert next_step(T, term, None, 102.0).do is Do.RENEW


def test_a_renewal_confirms_from_when_it_was_sent_not_when_it_returned() -> None:
    term = Term(1, 0.0, 100.0)
    renewed = after_renewal(term, 102.0, Outcome.RENEWED)
    assert renewed == Term(1, 0.0, 102.0)  # (the answer came at 104.5: irrelevant)
    assert stand_down_at(T, renewed) == 108.0


def test_a_failed_renewal_is_retried_after_retry_and_the_deadline_stays() -> None:
    term = Term(1, 0.0, 100.0)
    failed = after_renewal(term, 102.0, Outcome.FAILED)
    assert failed == term
    step = next_step(T, failed, 102.0, 102.5)
    assert (step.do, step.at) == (Do.WAIT, 103.0)
    assert next_step(T, failed, 102.0, 103.0).do is Do.RENEW
    assert next_step(T, failed, 105.0, 105.5).at == 106.0  # (retry at 106 would be the deadline: capped)
    assert next_step(T, failed, 105.0, 106.0).do is Do.STAND_DOWN


def test_a_lost_lease_ends_the_term_at_once() -> None:
    assert after_renewal(Term(4, 0.0, 100.0), 102.0, Outcome.LOST) is None


def test_an_old_renewal_returning_late_does_not_move_the_deadline_back() -> None:
    term = Term(1, 0.0, 104.0)
    assert after_renewal(term, 102.0, Outcome.RENEWED) == term


@pytest.mark.parametrize("timing", [dict(ttl=5, margin=5), dict(renew=6), dict(retry=0), dict(margin=-1)])
def test_unsafe_timings_are_refused(timing: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Timing(**timing)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.floats(0.0, 4.0), st.floats(0.0, 4.0), st.sampled_from([Outcome.RENEWED, Outcome.FAILED])),
                max_size=40))
def test_the_deadline_is_never_later_than_margin_before_the_real_expiry(
    attempts: list[tuple[float, float, Outcome]],
) -> None:
    """Whatever the network delays (there: until the database runs a renewal; back: until its answer
    arrives) and failures, the holder's stand-down deadline (kept by the watchdog, whatever the renewer
    waits on) is never later than ``margin`` before the lease's real expiry in the database."""
    term: Term | None = Term(1, 0.0, 0.0)
    expiry = T.ttl  # the database's: the acquisition ran at 0
    now, last_try = 0.0, None
    for there, back, outcome in attempts:
        assert term is not None
        step = next_step(T, term, last_try, now)
        if step.do is Do.STAND_DOWN:
            return
        if step.do is Do.WAIT:
            now = step.at
            continue
        last_try = now
        if outcome is Outcome.RENEWED:
            if now + there >= expiry:  # the database refuses an expired lease's renewal
                outcome = Outcome.LOST
            else:
                expiry = now + there + T.ttl
        term = after_renewal(term, now, outcome)
        if term is None:
            return
        assert stand_down_at(T, term) <= expiry - T.margin + 1e-9
        now += there + back
