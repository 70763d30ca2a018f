"""The shared retry helper and the durable outbox (idempotency, ordering, in-flight after a crash)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from monitor.clock import ManualClock
from monitor.delivery.config import RetrySettings
from monitor.delivery.outbox import NewRow, Outbox
from monitor.delivery.retry import DeliveryPermanent, DeliveryRetryable, backoff, call_with_retry, decide

POLICY = RetrySettings(initial=1.0, maximum=60.0, factor=2.0, jitter=0.5, deadline=600.0)


def test_backoff_grows_exponentially_with_downward_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (30, 60.0)]:
        for _ in range(50):
            d = backoff(POLICY, attempt, rng)
            assert base * 0.5 <= d <= base
    assert backoff(RetrySettings(initial=1, jitter=0.0), 3) == 4.0


def test_decide_classifies_and_stops_at_the_deadline() -> None:
    d = decide(POLICY, DeliveryRetryable("x", "smtp_451"), 1, 0.0, 10.0)
    assert d.retry and 10.5 <= d.at <= 11.0 and d.reason == "smtp_451"
    p = decide(POLICY, DeliveryPermanent("x", "smtp_550"), 1, 0.0, 10.0)
    assert not p.retry and p.reason == "smtp_550"
    late = decide(POLICY, DeliveryRetryable("x", "unreachable"), 9, 0.0, 599.0)
    assert not late.retry and late.reason == "deadline"


async def test_call_with_retry_sleeps_the_backoff_then_succeeds_or_gives_up() -> None:
    clock = ManualClock(1000.0)
    slept: list[float] = []
    calls = 0

    async def sleep(s: float) -> None:
        slept.append(s)
        clock.advance(s)

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise DeliveryRetryable("down", "unreachable")
        return "ok"

    nojitter = RetrySettings(initial=1.0, maximum=60.0, jitter=0.0, deadline=600.0)
    assert await call_with_retry(flaky, nojitter, clock, sleep=sleep) == "ok"
    assert slept == [1.0, 2.0, 4.0]

    async def refused() -> str:
        raise DeliveryPermanent("no", "http_400")

    with pytest.raises(DeliveryPermanent):
        await call_with_retry(refused, nojitter, clock, sleep=sleep)

    async def down() -> str:
        raise DeliveryRetryable("down", "unreachable")

    with pytest.raises(DeliveryRetryable):
        await call_with_retry(down, nojitter, clock, sleep=sleep)
    assert clock.now() - 1007.0 <= 600.0


def row(key: str, channel: str = "email", group: str = "") -> NewRow:
    inc, action, rcpt, _ = key.split("/")
    return NewRow(key, inc, action, rcpt, channel, group, {"k": key})


def test_idempotency_key_deduplicates_and_state_is_stored_with_rows(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "m.db")
    assert ob.add([row("I-1/a/x/1"), row("I-1/a/y/1")], {"I-1": ("open", {"n": 1})}, {"cursor": "5"}, 1.0) == 2
    assert ob.add([row("I-1/a/x/1"), row("I-1/a/x/2")], {}, {}, 2.0) == 1
    assert [r["key"] for r in ob.rows()] == ["I-1/a/x/1", "I-1/a/y/1", "I-1/a/x/2"]
    assert ob.states(["I-1"]) == {"I-1": {"n": 1}} and ob.states() == {"I-1": {"n": 1}}
    assert ob.meta("cursor") == "5"


def test_groups_are_delivered_in_order_and_failures_block_only_their_group(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "m.db")
    ob.add([row("A/open/d/1", "desk", "g:A"), row("A/comment/d/1", "desk", "g:A"),
            row("B/open/d/1", "desk", "g:B")], {}, {}, 1.0)
    first = ob.take("desk", 1.0, 10)
    assert [r.key for r in first] == ["A/open/d/1", "B/open/d/1"]
    assert ob.take("desk", 1.0, 10) == []  # in flight
    a, b = first
    ob.finish([(b.id, "7")], [(a.id, 5.0, "unreachable", "down")], [], 1.5)
    assert ob.take("desk", 2.0, 10) == []  # A's head waits for its retry time; its comment waits behind it
    assert [r.key for r in ob.take("desk", 5.0, 10)] == ["A/open/d/1"]


def test_rows_in_flight_at_a_crash_come_back_uncertain(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    ob = Outbox(db)
    ob.add([row("I/a/x/1"), row("I/a/y/1")], {}, {}, 1.0)
    taken = ob.take("email", 1.0, 1)
    assert not taken[0].uncertain
    ob.close()  # the process dies here, between send and record
    again = Outbox(db)
    rows = again.take("email", 2.0, 10)
    assert [(r.key, r.uncertain) for r in rows] == [("I/a/x/1", True), ("I/a/y/1", False)]
    assert again.pending()["email"][0] == 2
