"""Per-channel workers: take due outbox rows, send them through one adapter, record the outcome.

One worker per channel (email, mqtt, desk, webhook) so a slow service desk never holds up customer
mail. Each has a concurrency bound (the SMTP pool size; 1 where order matters) and a token-bucket
rate limit (SMTP relays throttle). Each outcome is committed as soon as it is known, at the latest
with the lane's next "sending" mark (on PostgreSQL a delivered row's record goes out on the outbox's
side connection just before that commit, not waited for, see :meth:`Outbox.finish`); a crash between
a send and its record leaves that row marked as sending, and the next start hands it to the adapter
as ``uncertain`` (at most one row per lane).

The store going away (PostgreSQL restarting or out of reach, a full disk, a lock held) stops
nothing and repeats nothing: a worker keeps the outcomes it could not record in memory and tries
again every :data:`STORE_RETRY` seconds, sending nothing new meanwhile (no row is handed to an
adapter before it is recorded as sending), and goes on where it was once the store takes writes
again. One log line when the outbox stops taking writes, one when it takes them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from monitor.clock import Clock
from monitor.delivery import metrics
from monitor.delivery.config import RetrySettings
from monitor.delivery.outbox import HandedOver, Outbox, Row
from monitor.delivery.retry import DeliveryError, DeliveryRetryable, decide
from monitor.errors import StorageError
from monitor.ha.gate import GATE
from monitor.logs import Episode, event

log = logging.getLogger("monitor.delivery")

#: seconds between a worker's attempts to write to a store that refused its last write
STORE_RETRY = 1.0

T = TypeVar("T")


def outbox_trouble(changed: Callable[[bool], None] | None = None) -> Episode:
    """The outbox refusing writes, as one episode of all the parts that write it (workers, timer)."""
    return Episode(log, "outbox not writable, deliveries wait and are retried every second",
                   "outbox writable again, deliveries go on", changed)


class Sender(Protocol):
    """One channel's adapter. ``send`` raises DeliveryRetryable/DeliveryPermanent; returns a result.

    An adapter whose protocol has a point of no return (SMTP: the final "."; an HTTP push: the
    request's last byte) calls ``handed_over()`` on the event loop as it passes it; the outbox then
    counts the row as delivered if the process dies before the answer is recorded. The others
    ignore it.
    """

    channel: str

    async def send(self, row: Row, handed_over: HandedOver | None = None) -> str | None: ...

    async def close(self) -> None: ...


async def stoppable(send: Awaitable[T]) -> T:
    """``send`` awaited so that cancelling the caller (SIGTERM's drain) takes effect at once, even when
    the library below swallows the cancellation.

    Python 3.11's ``asyncio.wait_for`` returns its inner result when that completes in the same turn
    of the loop as the cancel, and the cancel is lost: aiosmtplib then waited out its 30 s greeting
    timeout on a silent mail server and the lane went on to its next row, so ``monitor run`` took a
    batch of such waits to stop (seen in ~1 of 10 stops with 300 notices queued). Here the send runs
    in a task of its own; the caller stops as soon as it is cancelled, and the send is cancelled
    again (whatever it left is the outbox's "sending" row, settled by the next start).
    """
    task = asyncio.ensure_future(send)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_forget)
        raise


def _forget(task: asyncio.Future[Any]) -> None:
    """A send left behind at a stop: its outcome is the next start's to settle, not an unhandled error."""
    if not task.cancelled():
        task.exception()


class RateLimit:
    """Token bucket: ``rate`` items per second, bursts up to one second's worth.

    Monotonic time and the sleep are injectable so the pacing is tested in virtual time.
    """

    def __init__(
        self, rate: float | None, *, now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.tokens = rate or 0.0
        self._now = now
        self._sleep = sleep
        self.stamp = now()

    async def acquire(self) -> None:
        if not self.rate:
            return
        while True:
            now = self._now()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await self._sleep((1 - self.tokens) / self.rate)


class Worker:
    def __init__(
        self, outbox: Outbox, sender: Sender, policy: RetrySettings, clock: Clock, *, concurrency: int = 1,
        rate: float | RateLimit | None = None, batch: int = 500, idle: float = 1.0,
        trouble: Episode | None = None,
    ) -> None:
        """``trouble``: the episode this worker's failed writes belong to (shared with the service's
        other writers of the outbox, so one fault is one pair of log lines)."""
        self.outbox = outbox
        self.sender = sender
        self.channel = sender.channel
        self.policy = policy
        self.clock = clock
        self.concurrency = max(1, concurrency)
        self.limit = rate if isinstance(rate, RateLimit) else RateLimit(rate)
        self.batch = batch
        self.idle = idle
        self._wake = asyncio.Event()
        self._rng = random.Random()
        self._down = False  # for one log line per outage, not one per failed item
        self._retry_waiting = False
        self.trouble = trouble if trouble is not None else outbox_trouble()
        self._group: _Group | None = None  # the lanes' commit being gathered (see _commit)
        self._lanes = 0  # lanes at work on the current batch
        self._sending = 0  # ... of which this many are in an adapter's send

    def wake(self) -> None:
        self._wake.set()

    def retry_waiting(self) -> None:
        """The receiver is back: rows waiting for their back-off are due now.

        Applied by the run loop between batches, not here: rows of a batch in progress get their
        back-off recorded when the batch ends, and would otherwise wait it out although the
        receiver is up (a broker that connects while the first rows fail with "not connected").
        """
        self._retry_waiting = True
        self._wake.set()

    async def run(self) -> None:
        # a restart after a failure (the service is supervised) finds the last run's rows in flight
        await self._stored(lambda: self.outbox.recover(self.channel))
        while True:
            self._wake.clear()
            rows = await self._stored(self._take)
            if rows:
                await self._deliver(rows)
                continue
            due = await self._stored(lambda: self.outbox.next_due(self.channel))
            wait = self.idle if due is None else min(self.idle, max(0.0, due - self.clock.now()))
            # asyncio.timeout, not wait_for: no inner task whose cancellation can hang a shutdown
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.01)):
                    await self._wake.wait()

    def _take(self) -> list[Row]:
        if self._retry_waiting:
            self.outbox.retry_now(self.channel, self.clock.now())
            self._retry_waiting = False
        return self.outbox.take(self.channel, self.clock.now(), self.batch)

    async def _stored(self, write: Callable[[], T]) -> T:
        """``write()``'s result once the store takes it: while it raises StorageError, tried again every
        STORE_RETRY seconds (the episode logs the first failure and the first success after it)."""
        while True:
            try:
                result = write()
            except StorageError as exc:
                self.trouble.failed(self.channel, channel=self.channel, error=exc)
                await asyncio.sleep(STORE_RETRY)
                continue
            self.trouble.ok(self.channel, channel=self.channel)
            return result

    async def _deliver(self, rows: list[Row]) -> None:
        """Send a batch through ``concurrency`` lanes, recording each outcome as soon as it is known.

        Each lane commits the outcomes gathered so far together with the "sending" mark of its next
        row before sending it, so a SIGKILL can only leave uncertain the rows on the wire. Lanes that
        ask in the same turn of the event loop share one commit (:meth:`_commit`): on PostgreSQL one
        round trip marks the rows of several lanes instead of one each.
        """
        pending = _Outcomes()
        self._lanes = self._sending = 0
        queue: asyncio.Queue[Row] = asyncio.Queue()
        for r in rows:
            queue.put_nowait(r)
        started: set[int] = set()

        async def lane() -> None:
            self._lanes += 1
            try:
                await work()
            finally:
                self._lanes -= 1

        async def work() -> None:
            while not queue.empty():
                row = queue.get_nowait()
                await self.limit.acquire()
                await self._commit(pending, row.id)
                started.add(row.id)
                try:
                    # the result first: ``pending`` may be flushed (replaced) while this lane awaits
                    result = await stoppable(self._send(row))
                    pending.delivered.append((row.id, result))
                except DeliveryError as exc:
                    self._failure(row, exc, pending)
                except Exception as exc:  # an adapter bug must not stop the channel: retry, and say so
                    log.exception("delivery adapter failed", extra={"kv": {"channel": self.channel, "key": row.key}})
                    self._failure(row, DeliveryRetryable(f"internal error: {type(exc).__name__}", "bug"), pending)
                if queue.empty() or self.limit.rate:  # no next send right away to carry the record
                    await self._commit(pending, None)

        def settle() -> None:
            # outcomes first, so a cancellation (shutdown) never repeats what was recorded as sent
            self._record(pending)
            self.outbox.release([r.id for r in rows if r.id not in started],
                                uncertain=sorted(started - pending.recorded))

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(self.concurrency, len(rows))):
                    tg.create_task(lane())
        except BaseException:  # (stopping): one attempt; what it cannot record, the next start settles
            try:
                settle()
            except StorageError as exc:
                event(log, logging.WARNING, "delivery outcomes not recorded at stop: the next start settles them",
                      channel=self.channel, rows=len(rows), error=exc)
            raise
        await self._stored(settle)

    async def _send(self, row: Row) -> str | None:
        """The adapter's send, counted while it runs (:meth:`_commit` does not wait for such lanes)."""
        self._sending += 1
        try:
            GATE.check(f"{self.channel} {row.key}")  # (the adapters check again before each call outside)
            return await self.sender.send(row, self._handed_over(row.id))
        finally:
            self._sending -= 1

    async def _commit(self, pending: _Outcomes, sending: int | None) -> None:
        """Record the outcomes gathered so far and mark ``sending``, in a commit shared with the other lanes
        that ask before this one's turn comes: the first to ask lets the loop run once (the lanes ready
        now join), then commits for all; the others wait for that commit. Returns once it is stored."""
        group = self._group
        if group is not None:
            group.joined += 1
            if sending is not None:
                group.ids.append(sending)
            await asyncio.shield(group.done)  # (a follower cancelled at a stop leaves the commit to its leader)
            return
        group = self._group = _Group([] if sending is None else [sending])
        try:
            # lanes between a send's end and their own ask (a few turns of the loop: the send's task, the
            # shield) join too, so that one commit serves them all; bounded, and a lane in a send is not
            # waited for
            for _ in range(4 * self.concurrency):
                await asyncio.sleep(0)
                if self._lanes - self._sending - 1 - group.joined <= 0:
                    break
            self._group = None
            await self._stored(functools.partial(self._record, pending, group.ids))
        except BaseException:
            self._group = None
            group.done.cancel()  # (its followers stop with it: nothing of theirs was marked)
            raise
        group.done.set_result(None)

    def _handed_over(self, row_id: int) -> HandedOver:
        def record() -> None:
            try:
                self.outbox.handed_over(row_id, self.clock.now())
            except StorageError as exc:
                # the adapter goes on (the receiver may have it all): the row stays recorded as being sent,
                # so only a crash before its outcome is recorded could repeat it (same Message-ID)
                self.trouble.failed(self.channel, channel=self.channel, error=exc)
        return record

    def _record(self, pending: _Outcomes, sending: Sequence[int] = ()) -> None:
        """Commit the outcomes gathered so far (and mark ``sending``); StorageError keeps them in ``pending``."""
        delivered = len(pending.delivered)
        self.outbox.finish(pending.delivered, pending.retries, pending.failed, self.clock.now(), sending=sending)
        pending.flush()
        if delivered:
            metrics.DELIVERED.labels(self.channel).inc(delivered)
            if self._down:
                self._down = False
                event(log, logging.INFO, "delivery recovered", channel=self.channel)

    def _failure(self, row: Row, exc: DeliveryError, pending: _Outcomes) -> None:
        now = self.clock.now()
        d = decide(self.policy, exc, row.attempts + 1, row.created_at, now, self._rng)
        text = str(exc)[:500]
        if d.retry:
            pending.retries.append((row.id, d.at, d.reason, text))
            metrics.RETRIES.labels(self.channel, d.reason).inc()
            if not self._down:
                self._down = True
                event(log, logging.WARNING, "delivery failing, will retry", channel=self.channel, reason=d.reason,
                      error=text)
        else:
            pending.failed.append((row.id, d.reason, text))
            metrics.FAILED.labels(self.channel, d.reason).inc()
            event(log, logging.ERROR, "delivery given up", channel=self.channel, key=row.key, reason=d.reason,
                  error=text)


class _Group:
    """Rows of several lanes to be marked as sending in one commit, and that commit's completion."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.joined = 0  # lanes that joined the leader's commit (the leader not counted)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Outcomes:
    """Outcomes known but not yet committed, and the ids committed so far in this batch."""

    def __init__(self) -> None:
        self.delivered: list[tuple[int, str | None]] = []
        self.retries: list[tuple[int, float, str, str]] = []
        self.failed: list[tuple[int, str, str]] = []
        self.recorded: set[int] = set()

    def flush(self) -> None:
        self.recorded.update(i for i, _ in self.delivered)
        self.recorded.update(r[0] for r in self.retries)
        self.recorded.update(f[0] for f in self.failed)
        self.delivered, self.retries, self.failed = [], [], []
