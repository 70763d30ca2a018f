"""The shared retry helper, the durable outbox (idempotency, ordering, what a crash leaves in flight) and
the per-channel worker (per-item recording, hand-over, rate limit, metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import monitor.store as store_module
from monitor.clock import ManualClock
from monitor.correlate.schema import SCHEMA as CORRELATION
from monitor.db import Schema, engine_for, open_store
from monitor.delivery.config import RetrySettings
from monitor.delivery.outbox import ASSUMED, CLAIMED, SENDING, HandedOver, NewRow, Outbox, Row
from monitor.delivery.retry import DeliveryPermanent, DeliveryRetryable, backoff, call_with_retry, decide
from monitor.delivery.schema import SCHEMA as DELIVERY
from monitor.delivery.worker import RateLimit, Worker
from monitor.store import EVENTS
from tests.delivery_support import sample
from tests.servers.common import until
from tests.store_engines import (  # noqa: F401  (fixtures)
    Where,
    child_code,
    connect,
    pg_server_fixture,
    where_fixture,
)

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


def test_idempotency_key_deduplicates_and_state_is_stored_with_rows(where: Where) -> None:
    ob = Outbox(where)
    assert ob.add([row("I-1/a/x/1"), row("I-1/a/y/1")], {"I-1": ("open", {"n": 1})}, {"cursor": "5"}, 1.0) == 2
    assert ob.add([row("I-1/a/x/1"), row("I-1/a/x/2")], {}, {}, 2.0) == 1
    assert [r["key"] for r in ob.rows()] == ["I-1/a/x/1", "I-1/a/y/1", "I-1/a/x/2"]
    assert ob.states(["I-1"]) == {"I-1": {"n": 1}} and ob.states() == {"I-1": {"n": 1}}
    assert ob.meta("cursor") == "5"


def test_groups_are_delivered_in_order_and_failures_block_only_their_group(where: Where) -> None:
    ob = Outbox(where)
    ob.add([row("A/open/d/1", "desk", "g:A"), row("A/comment/d/1", "desk", "g:A"),
            row("B/open/d/1", "desk", "g:B")], {}, {}, 1.0)
    first = ob.take("desk", 1.0, 10)
    assert [r.key for r in first] == ["A/open/d/1", "B/open/d/1"]
    assert ob.take("desk", 1.0, 10) == []  # in flight
    a, b = first
    ob.finish([(b.id, "7")], [(a.id, 5.0, "unreachable", "down")], [], 1.5)
    assert ob.take("desk", 2.0, 10) == []  # A's head waits for its retry time; its comment waits behind it
    assert [r.key for r in ob.take("desk", 5.0, 10)] == ["A/open/d/1"]


def test_one_commit_records_many_rows_each_with_its_own_result(where: Where) -> None:
    """A worker's commit marks rows sending and records rows delivered in one statement (more rows than a
    statement's chunk of 16 here, marks and records in the same chunk): every row gets its own result,
    the others are untouched; recording the same outcomes again (a commit whose answer was lost) changes
    nothing, not even the attempts; a commit with nothing to record changes nothing."""
    ob = Outbox(where)
    n = 20
    ob.add([row(f"I/a/r{i:02d}/1") for i in range(n)], {}, {}, 1.0)
    rows = ob.take("email", 1.0, n)
    ob.finish([], [], [], 1.5)
    ob.finish([], [], [], 1.5, sending=[r.id for r in rows[:n - 1]])
    assert ob.recover() == (n - 1, 0)  # (as after a crash: the ones marked sending come back uncertain)
    rows = ob.take("email", 2.0, n)
    ob.finish([], [], [], 2.5, sending=[r.id for r in rows[:n - 1]])
    results = [f"<m{i}@x>" if i != 3 else None for i in range(n - 1)]
    outcomes = [(r.id, res) for r, res in zip(rows[:n - 1], results, strict=True)]
    ob.finish(outcomes, [], [], 3.0, sending=[rows[n - 1].id])
    ob.finish(outcomes, [], [], 4.0)  # (again: nothing changes)
    got = {r["recipient"]: (r["status"], r["result"], r["attempts"]) for r in ob.rows()}
    assert got == {**{f"r{i:02d}": ("delivered", results[i], 1) for i in range(n - 1)},
                   f"r{n - 1}": ("pending", None, 0)}
    db = connect(where)
    assert db.execute("SELECT inflight, done_at FROM outbox WHERE recipient = 'r00'").fetchone() == (0, 3.0)
    assert db.execute("SELECT inflight, uncertain FROM outbox WHERE recipient = 'r19'").fetchone() == (SENDING, 0)
    db.close()
    ob.close()


def test_results_and_errors_from_outside_with_nul_are_kept_with_a_replacement_character(where: Where) -> None:
    """A receiver's answer is outside text: a NUL in it (a hostile mail server's reply, a desk's ticket
    id) is stored as U+FFFD. PostgreSQL text cannot hold NUL: its write failed, and failed again at
    every retry, so the channel stopped for good."""
    ob = Outbox(where)
    ob.add([row("I/a/x/1"), row("I/a/y/1"), row("I/a/z/1")], {}, {}, 1.0)
    x, y, z = ob.take("email", 1.0, 3)
    ob.finish([], [], [], 1.0, sending=[x.id, y.id, z.id])
    ob.finish([(x.id, "250 ok\x00queued")], [(y.id, 99.0, "smtp_451", "busy\x00")], [(z.id, "smtp_550", "no\x00such")],
              2.0)
    assert [(r["status"], r["result"]) for r in ob.rows()] == [
        ("delivered", "250 ok\ufffdqueued"), ("pending", None), ("failed", None)]
    con = connect(where)
    try:
        assert con.execute("SELECT error FROM outbox ORDER BY id").fetchall() == [(None,), ("busy\ufffd",),
                                                                                  ("no\ufffdsuch",)]
    finally:
        con.close()
    ob.close()


def test_the_claim_index_leaves_out_what_the_hot_path_updates(where: Where) -> None:
    """Delivery's migration 3, from a store at version 2 (the claim index on (channel, status, inflight,
    id)): the claim's index no longer holds ``inflight``, which the claim, the sending mark and the
    hand-over record change (on PostgreSQL those updates can then be HOT, no index entry written; its
    pages are filled to half by inserts, room for them: an option SQLite has no words for and skips)."""
    old = (Schema(EVENTS, store_module.MIGRATIONS), CORRELATION, Schema("delivery", DELIVERY.migrations[:2]))
    engine = engine_for(where)
    open_store(engine, old, what="the store", busy_timeout=5.0).close()
    ob = Outbox(where)
    ob.add([row("I/a/x/1")], {}, {}, 1.0)
    assert [r.key for r in ob.take("email", 1.0, 5)] == ["I/a/x/1"]
    ob.close()
    db = connect(where)
    if isinstance(where, Path):
        columns = [r[2] for r in db.execute("PRAGMA index_info(outbox_claim)").fetchall()]
        assert columns == ["channel", "status", "id"]
    else:
        assert "(channel, status, id)" in db.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'outbox_claim'").fetchone()[0]
        assert db.execute("SELECT reloptions FROM pg_class WHERE relname = 'outbox'").fetchone()[0] == [
            "fillfactor=50"]
    assert db.execute("SELECT version FROM schema_version WHERE component = 'delivery'").fetchone()[0] == len(
        DELIVERY.migrations)
    db.close()


def test_the_indexes_on_status_hold_only_rows_to_send(where: Where) -> None:
    """Delivery's migration 4, from a store at version 3: the claim's, the due time's and the groups' indexes
    hold only pending rows (a row recorded delivered changes ``status``: on PostgreSQL it wrote an entry
    in all six indexes, now in three), and the queries that walk them still can (their ``status =
    'pending'`` implies the indexes' condition): the claim goes through ``outbox_claim``, the next due
    time and the group's oldest row through one of the three."""
    old = (Schema(EVENTS, store_module.MIGRATIONS), CORRELATION, Schema("delivery", DELIVERY.migrations[:3]))
    open_store(engine_for(where), old, what="the store", busy_timeout=5.0).close()
    ob = Outbox(where)
    ob.add([row("I/a/x/1"), row("I/a/y/1"), row("I/b/x/1", group="g")], {}, {}, 1.0)
    taken = ob.take("email", 1.0, 5)
    assert sorted(r.key for r in taken) == ["I/a/x/1", "I/a/y/1", "I/b/x/1"]
    ob.finish([(taken[0].id, "ok")], [], [], 2.0)
    ob.close()
    claim = ("SELECT id FROM outbox o WHERE channel = 'email' AND status = 'pending' AND inflight = 0"
             " AND +next_at <= 5 ORDER BY id LIMIT 32")
    due = "SELECT MIN(next_at) FROM outbox WHERE channel = 'email' AND status = 'pending' AND inflight = 0"
    group = "SELECT MIN(id) FROM outbox p WHERE p.grp = 'g' AND p.status = 'pending'"
    db = connect(where)
    if isinstance(where, Path):
        for name in ("outbox_claim", "outbox_due", "outbox_grp"):
            sql = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
            assert sql.endswith("WHERE status = 'pending'"), sql

        def plan(sql: str) -> str:
            return " ".join(str(r[-1]) for r in db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall())
    else:
        for name in ("outbox_claim", "outbox_due", "outbox_grp"):
            sql = db.execute("SELECT indexdef FROM pg_indexes WHERE indexname = ?", (name,)).fetchone()[0]
            assert sql.endswith("WHERE (status = 'pending'::text)"), sql
        db.execute("SET enable_seqscan = off")  # (three rows: a sequential scan would be cheaper)

        def plan(sql: str) -> str:
            return " ".join(str(r[0]) for r in db.execute(f"EXPLAIN {sql}").fetchall())
    assert "outbox_claim" in plan(claim)
    for sql in (due, group):  # (which index of the three, a three-row table's statistics decide)
        assert any(name in plan(sql) for name in ("outbox_claim", "outbox_due", "outbox_grp")), plan(sql)
    assert db.execute("SELECT status, inflight FROM outbox WHERE id = ?", (taken[0].id,)).fetchone() == (
        "delivered", 0)
    db.close()


def test_only_rows_being_sent_at_a_crash_come_back_uncertain(where: Where) -> None:
    db = where
    ob = Outbox(db)
    ob.add([row("I/a/x/1"), row("I/a/y/1"), row("I/a/z/1")], {}, {}, 1.0)
    x, y, _ = ob.take("email", 1.0, 3)
    assert not x.uncertain
    ob.finish([], [], [], 1.0, sending=[x.id])
    ob.finish([(x.id, "sent")], [], [], 1.1, sending=[y.id])
    ob.close()  # the process dies here: y was on the wire, z only claimed
    again = Outbox(db)
    assert again.recovered == 1
    rows = again.take("email", 2.0, 10)
    assert [(r.key, r.uncertain) for r in rows] == [("I/a/y/1", True), ("I/a/z/1", False)]
    assert again.pending()["email"][0] == 2


class ScriptedSender:
    """An adapter whose sends the test releases one by one (the worker's logic, not a channel)."""

    channel = "email"

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.calls: list[str] = []
        self.fail: set[str] = set()

    def gate(self, key: str) -> asyncio.Event:
        return self.gates.setdefault(key, asyncio.Event())

    async def send(self, r: Row, handed_over: HandedOver | None = None) -> str | None:
        self.calls.append(r.key)
        await asyncio.sleep(0)  # on the wire: the other lanes run meanwhile
        await self.gate(r.key).wait()
        if r.key in self.fail:
            self.fail.discard(r.key)
            raise DeliveryRetryable("not connected", "unreachable")
        return "ok"

    async def close(self) -> None:
        return None


class CancelLosingSender(ScriptedSender):
    """A send that loses the cancellation it gets, as Python 3.11's ``asyncio.wait_for`` does when its
    inner future completes in the same turn as the cancel (aiosmtplib connecting to a mail server that
    accepts and never greets), then waits out the library's own timeout (``gate("timeout")``)."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = False

    async def send(self, r: Row, handed_over: HandedOver | None = None) -> str | None:
        self.calls.append(r.key)
        try:
            with contextlib.suppress(asyncio.CancelledError):  # lost below us
                await self.gate(r.key).wait()
            await self.gate("timeout").wait()
            raise DeliveryRetryable("timed out waiting for the greeting", "unreachable")
        finally:
            self.ended = True


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    """The worker's loop as a task for the body of the block, cancelled (a shutdown) after it."""
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def inflight(db: Where) -> dict[str, int]:
    con = connect(db)
    try:
        return dict(con.execute("SELECT key, inflight FROM outbox WHERE status = 'pending'").fetchall())
    finally:
        con.close()


async def test_each_outcome_is_committed_before_the_next_send(where: Where) -> None:
    db = where
    ob = Outbox(db)
    ob.add([row("I/a/x/1"), row("I/a/y/1"), row("I/a/z/1")], {}, {}, 1.0)
    sender = ScriptedSender()
    worker = Worker(ob, sender, POLICY, ManualClock(1.0), concurrency=1)
    async with running(worker):
        await until(lambda: sender.calls == ["I/a/x/1"], 30, "first send")
        assert inflight(db) == {"I/a/x/1": SENDING, "I/a/y/1": CLAIMED, "I/a/z/1": CLAIMED}
        sender.gate("I/a/x/1").set()
        await until(lambda: len(sender.calls) == 2, 30, "second send")
        # read by another connection, as a restarted process would: x is recorded, y is on the wire (on
        # PostgreSQL x's record goes on the side connection, sent before y's mark: it lands, not waited for)
        await until(lambda: inflight(db) == {"I/a/y/1": SENDING, "I/a/z/1": CLAIMED}, 30, "x recorded")
    # a shutdown mid-send: y may have arrived (uncertain), z was never tried
    assert inflight(db) == {"I/a/y/1": 0, "I/a/z/1": 0}
    assert [(r.key, r.uncertain) for r in ob.take("email", 2.0, 10)] == [("I/a/y/1", True), ("I/a/z/1", False)]


async def test_receiver_back_while_a_batch_fails_retries_at_once_not_after_the_backoff(where: Where) -> None:
    ob = Outbox(where)
    ob.add([row("I/a/x/1")], {}, {}, 1.0)
    sender = ScriptedSender()
    sender.fail.add("I/a/x/1")
    clock = ManualClock(1.0)  # never advanced: only an immediate retry can deliver
    worker = Worker(ob, sender, POLICY, clock)
    async with running(worker):
        await until(lambda: sender.calls == ["I/a/x/1"], 30, "first send")
        worker.retry_waiting()  # the broker connected while this attempt was failing
        sender.gate("I/a/x/1").set()
        await until(lambda: not ob.pending(), 30, "the row delivered without waiting for its back-off")
    assert sender.calls == ["I/a/x/1", "I/a/x/1"]


async def test_concurrent_lanes_send_each_row_once(where: Where) -> None:
    ob = Outbox(where)
    ob.add([row(f"I/a/{i}/1") for i in range(40)], {}, {}, 1.0)
    sender = ScriptedSender()
    for i in range(40):
        sender.gate(f"I/a/{i}/1").set()
    worker = Worker(ob, sender, POLICY, ManualClock(1.0), concurrency=3, batch=16)
    async with running(worker):
        await until(lambda: not ob.pending(), 30, "the outbox to drain")
    assert sorted(sender.calls) == sorted(f"I/a/{i}/1" for i in range(40))


def counting_commits(where: Where, rows: int) -> tuple[Outbox, list[list[int]]]:
    """An outbox with ``rows`` queued whose commits are recorded: the rows each marked as sending."""
    ob = Outbox(where)
    ob.add([row(f"I/a/{i}/1") for i in range(rows)], {}, {}, 1.0)
    commits: list[list[int]] = []
    finish = ob.finish

    def counted(delivered: Any, retries: Any, failed: Any, now: float, sending: Sequence[int] = ()) -> None:
        commits.append(list(sending))
        finish(delivered, retries, failed, now, sending)

    ob.finish = counted  # type: ignore[method-assign]
    return ob, commits


async def test_lanes_ready_together_share_one_commit_and_still_send_only_what_is_marked(where: Where) -> None:
    """Four lanes start together: one transaction marks their four rows as sending (on PostgreSQL one
    round trip instead of four), and no row reaches the adapter before its mark is committed (read by
    another connection, as a restarted process would); the outcomes that arrive together are again one
    commit with the next marks."""
    ob, commits = counting_commits(where, 8)
    sender = ScriptedSender()
    worker = Worker(ob, sender, POLICY, ManualClock(1.0), concurrency=4, batch=8)
    async with running(worker):
        await until(lambda: len(sender.calls) == 4, 30, "four sends")
        assert [len(c) for c in commits] == [4]
        assert sorted(inflight(where).values()) == [SENDING] * 4 + [CLAIMED] * 4
        for i in range(4):
            sender.gate(f"I/a/{i}/1").set()
        await until(lambda: len(sender.calls) == 8, 30, "the next four sends")
        assert [len(c) for c in commits] == [4, 4]
        for i in range(4, 8):
            sender.gate(f"I/a/{i}/1").set()
        await until(lambda: not ob.pending(), 30, "all delivered")
    assert sorted(sender.calls) == sorted(f"I/a/{i}/1" for i in range(8))
    assert len(commits) <= 4  # (the last outcomes: one commit, or one a lane at most)


class InstantSender:
    """A receiver that takes each notice at once (a relay on the LAN), passing its point of no return."""

    channel = "email"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def send(self, r: Row, handed_over: HandedOver | None = None) -> str | None:
        self.calls.append(r.key)
        if handed_over is not None:
            handed_over()
        return "ok"

    async def close(self) -> None:
        return None


async def test_lanes_whose_sends_end_at_once_still_share_each_commit(where: Where) -> None:
    """Sends that end at once come back to their lanes in different turns of the loop (the send's own
    task, the shield), so a lane asking for its commit lets the lanes on their way back from a send
    join it, not those still in one: four lanes mark four rows per commit. Before, most commits marked
    one row (0.7 commits a notice instead of 0.25; on PostgreSQL each is a round trip, issue 13)."""
    ob, commits = counting_commits(where, 32)
    sender = InstantSender()
    worker = Worker(ob, sender, POLICY, ManualClock(1.0), concurrency=4, batch=32)
    async with running(worker):
        await until(lambda: not ob.pending(), 30, "all delivered")
    assert sorted(sender.calls) == sorted(f"I/a/{i}/1" for i in range(32))
    assert [len(c) for c in commits if c] == [4] * 8


async def test_rate_limit_paces_after_a_one_second_burst_in_virtual_time() -> None:
    t = [100.0]
    slept: list[float] = []

    async def sleep(d: float) -> None:
        slept.append(d)
        t[0] += d

    limit = RateLimit(4.0, now=lambda: t[0], sleep=sleep)
    stamps = []
    for _ in range(12):
        await limit.acquire()
        stamps.append(t[0])
    assert stamps[:4] == [100.0] * 4  # one second's worth at once
    assert stamps[-1] == pytest.approx(102.0)  # then 4 per second: 8 more take 2 s
    assert all(b - a == pytest.approx(0.25) for a, b in itertools.pairwise(stamps[4:]))
    t[0] += 10.0  # idle: the bucket refills to one second's worth, not more
    for _ in range(5):
        await limit.acquire()
    assert t[0] == pytest.approx(112.25)


async def test_worker_counts_delivered_retried_and_failed_per_channel_and_reason(where: Where) -> None:
    ob = Outbox(where)
    ob.add([row("I/a/ok/1", "metrics-test"), row("I/a/later/1", "metrics-test"), row("I/a/bad/1", "metrics-test")],
           {}, {}, 1.0)

    class Mixed(ScriptedSender):
        async def send(self, r: Row, handed_over: HandedOver | None = None) -> str | None:
            self.calls.append(r.key)
            if r.recipient == "later":
                raise DeliveryRetryable("relay busy", "smtp_451")
            if r.recipient == "bad":
                raise DeliveryPermanent("no such mailbox", "smtp_550")
            return "ok"

    sender = Mixed()
    sender.channel = "metrics-test"
    counted = [("monitor_delivery_delivered_total", {}), ("monitor_delivery_retries_total", {"reason": "smtp_451"}),
               ("monitor_delivery_failed_total", {"reason": "smtp_550"})]
    before = [sample(n, channel="metrics-test", **labels) for n, labels in counted]  # (once per engine)
    worker = Worker(ob, sender, POLICY, ManualClock(1.0))
    async with running(worker):
        await until(lambda: len(sender.calls) == 3, 30, "three attempts")
        # (a take() finding nothing is no proof: a row still claimed is not taken either)
        await until(lambda: ob.pending() == {"metrics-test": (1, 1.0)} and inflight(where) == {"I/a/later/1": 0}, 30,
                    "every outcome recorded")
    after = [sample(n, channel="metrics-test", **labels) for n, labels in counted]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]


async def test_a_rate_limited_lane_records_its_outcome_before_waiting_for_the_next_token(where: Where) -> None:
    db = where
    ob = Outbox(db)
    ob.add([row("I/a/x/1"), row("I/a/y/1")], {}, {}, 1.0)
    sender = ScriptedSender()
    sender.gate("I/a/x/1").set()
    token = asyncio.Event()

    async def sleep(_: float) -> None:
        await token.wait()  # the next token comes when the test says so
        t[0] += 1.0

    t = [0.0]
    worker = Worker(ob, sender, POLICY, ManualClock(1.0), rate=RateLimit(1.0, now=lambda: t[0], sleep=sleep))
    async with running(worker):
        await until(lambda: "I/a/x/1" not in inflight(db), 30, "x recorded while the lane waits for a token")
        assert sender.calls == ["I/a/x/1"] and inflight(db) == {"I/a/y/1": CLAIMED}
        token.set()
        sender.gate("I/a/y/1").set()
        await until(lambda: not ob.pending(), 30, "y delivered")


def test_rows_handed_over_whole_count_as_delivered_after_a_crash_or_a_shutdown(where: Where) -> None:
    db = where
    ob = Outbox(db)
    ob.add([row("I/a/x/1"), row("I/a/y/1"), row("I/a/z/1")], {}, {}, 1.0)
    x, y, z = ob.take("email", 1.0, 3)
    ob.finish([], [], [], 1.0, sending=[x.id, y.id, z.id])
    ob.handed_over(x.id, 1.5)  # the final "." of x is in the kernel; y is mid-transaction
    ob.handed_over(z.id, 1.6)
    ob.release([], uncertain=[z.id])  # a shutdown cut z's reply off: delivered all the same
    ob.close()  # the process dies with x handed over and y mid-send
    again = Outbox(db)
    assert (again.recovered, again.assumed) == (1, 1)
    done = {r["key"]: (r["status"], r["result"]) for r in again.rows()}
    assert done == {"I/a/x/1": ("delivered", ASSUMED), "I/a/y/1": ("pending", None), "I/a/z/1": ("delivered", ASSUMED)}
    assert [(r.key, r.uncertain) for r in again.take("email", 2.0, 10)] == [("I/a/y/1", True)]


def killed_after(where: Where, body: str) -> None:
    """A child process opens the outbox as ``ob``, runs ``body`` and SIGKILLs itself; returns once the
    store has all the child sent before it died (PostgreSQL: the server read the dead client's last
    words and ended its sessions)."""
    code = child_code(where) + textwrap.dedent("""
        import os, signal
        from monitor.delivery.outbox import Outbox
        ob = Outbox(db)
        """) + textwrap.dedent(body) + "os.kill(os.getpid(), signal.SIGKILL)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    if not isinstance(where, Path):  # the server reads the dead client's last words, then ends its sessions
        look = connect(where)
        deadline = time.monotonic() + 60
        while look.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                           " AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchone()[0]:
            assert time.monotonic() < deadline, "the killed client's sessions never ended"
        look.close()


def test_a_hand_over_recorded_right_before_a_kill_9_counts_as_delivered(where: Where) -> None:
    """The hand-over record is the last thing a process does before SIGKILL (on PostgreSQL it is sent
    without waiting for the server): the next start finds it and counts the row as delivered, not
    repeated."""
    first = Outbox(where)
    first.add([row("I/a/x/1")], {}, {}, 1.0)
    first.close()
    killed_after(where, """
        [x] = ob.take("email", 2.0, 1)
        ob.finish([], [], [], 2.0, sending=[x.id])
        ob.handed_over(x.id, 2.5)
        """)
    again = Outbox(where)
    assert (again.recovered, again.assumed) == (0, 1)
    assert [(r["status"], r["result"]) for r in again.rows()] == [("delivered", ASSUMED)]
    again.close()


def test_a_delivered_row_recorded_right_before_a_kill_9_stays_delivered(where: Where) -> None:
    """The record of a delivered row (a channel without a point of no return: MQTT, the desks) goes out
    with the next row's mark, and then the process is killed (on PostgreSQL that record is sent on the
    side connection without waiting for the server): the next start finds the row delivered with its
    result, not to repeat, and only the row marked after it comes back uncertain."""
    first = Outbox(where)
    first.add([row("I/a/x/1", "mqtt"), row("I/a/y/1", "mqtt")], {}, {}, 1.0)
    first.close()
    killed_after(where, """
        x, y = ob.take("mqtt", 2.0, 2)
        ob.finish([], [], [], 2.0, sending=[x.id])
        ob.finish([(x.id, "puback 7")], [], [], 2.5, sending=[y.id])
        """)
    again = Outbox(where)
    assert (again.recovered, again.assumed) == (1, 0)
    assert [(r["key"], r["status"], r["result"], r["attempts"]) for r in again.rows()] == [
        ("I/a/x/1", "delivered", "puback 7", 1), ("I/a/y/1", "pending", None, 0)]
    assert [(r.key, r.uncertain) for r in again.take("mqtt", 3.0, 10)] == [("I/a/y/1", True)]
    again.close()


async def test_a_worker_restarted_in_the_same_process_settles_what_its_last_run_left_in_flight(where: Where) -> None:
    ob = Outbox(where)
    ob.add([row("I/a/x/1"), row("I/a/y/1"), row("I/a/z/1", "mqtt")], {}, {}, 1.0)
    x, y = ob.take("email", 1.0, 2)
    ob.finish([], [], [], 1.0, sending=[x.id, y.id])
    ob.handed_over(y.id, 1.2)  # then the delivery service failed (storage) and is restarted, same process
    [z] = ob.take("mqtt", 1.0, 1)
    sender = ScriptedSender()
    sender.gate("I/a/x/1").set()
    async with running(Worker(ob, sender, POLICY, ManualClock(2.0))):
        await until(lambda: "email" not in ob.pending(), 30, "x sent again, y settled")
    assert sender.calls == ["I/a/x/1"]  # y was handed over whole: counted, not repeated
    assert {r["key"]: r["result"] for r in ob.rows() if r["status"] == "delivered"} == {"I/a/x/1": "ok",
                                                                                         "I/a/y/1": ASSUMED}
    assert ob.take("mqtt", 2.0, 10) == []  # another channel's rows in flight are its own worker's
    assert z.key == "I/a/z/1"


async def test_a_stop_is_not_held_up_by_a_send_that_loses_its_cancellation(where: Where) -> None:
    """SIGTERM's drain cancels the worker: it stops at once although the library under the send lost
    the cancel (before, ``monitor run`` waited out one 30 s greeting timeout per queued notice on a
    silent mail server, ~1 stop in 10 with 300 notices queued); nothing else is sent."""
    ob = Outbox(where)
    ob.add([row(f"I/a/{c}/1") for c in "xyz"], {}, {}, 1.0)
    sender = CancelLosingSender()
    task = asyncio.create_task(Worker(ob, sender, POLICY, ManualClock(2.0), concurrency=1).run())
    await until(lambda: bool(sender.calls), 30, "a send under way")
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=30)
    assert task in done, "the worker is still waiting for the send that lost its cancellation"
    sender.gate("timeout").set()  # the library's timeout ends the send left behind
    await until(lambda: sender.ended, 30, "the send left behind ended")
    assert sender.calls == ["I/a/x/1"]
    assert {r["key"]: r["status"] for r in ob.rows()} == dict.fromkeys(["I/a/x/1", "I/a/y/1", "I/a/z/1"], "pending")
    ob.close()
