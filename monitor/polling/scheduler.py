"""Poll scheduling: each target on its own interval, at a stable offset, never twice at once.

Offsets are derived from the target id (not random, not list position) so that load is spread
evenly across the interval and stays put across restarts and config reloads. A global semaphore
bounds polls in flight; when the machine cannot keep up, the scheduler reports lag and skips missed
slots instead of queueing work without bound.

Slots are timed on the monotonic clock, never on wall time: an NTP step or ``date -s`` moves wall
time but not the interval between two polls. (On wall time, stepping the clock back 120 s stopped
all polling for 120 s, silently; stepping it forward polled every target at once.) The slot grid is
pinned to wall time once, when the scheduler starts, so a target's polls fall at the same second of
the interval as before a restart; after a step they keep their pace, and the step is logged once,
with ``monitor_clock_steps_total``. Wall time is only for stamping results, which the callers do.

Batches: given ``poll_many``, the targets ``batchable`` admits are started together — every such
target due now or within ``batch_ahead`` seconds goes into one ``poll_many(targets)`` call (one ICMP
batch: one send loop and one wake-up for all of them instead of a task, a future and a wake-up per
poll). Starting a poll up to ``batch_ahead`` early moves no slot: the next one is still due an
interval after the slot. Each target in a batch holds its own place in the concurrency bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from monitor import selfmetrics
from monitor.clock import Clock, SystemClock
from monitor.inventory.model import Target
from monitor.logs import event

log = logging.getLogger("monitor.scheduler")
#: A change of (wall − monotonic) larger than this between two looks is a step, not NTP's slewing
#: (at most 0.5 ms per second).
STEP_THRESHOLD = 5.0

PollFn = Callable[[Target], Awaitable[None]]
#: At most this many polls that may not start early are looked past per tick for batchable ones behind
#: them (bounds a tick's work when most targets are not batchable).
SET_ASIDE = 32
Entry = tuple[float, int, str, int]  # (slot, sequence, target id, generation) in the heap
PollManyFn = Callable[[list[Target]], Awaitable[None]]


def slot_offset(target_id: str, interval: float) -> float:
    """A deterministic offset in [0, interval) from the target id (CRC32 spreads ids evenly)."""
    return (zlib.crc32(target_id.encode()) / 2**32) * interval


def next_slot(now: float, interval: float, offset: float) -> float:
    """The first slot time >= now on the grid ``offset + k * interval`` (seconds on the slot grid)."""
    k = math.ceil((now - offset) / interval)
    return offset + k * interval


class StepWatch:
    """Notices wall-clock steps from (wall, monotonic) readings: a pure decision, clocks injected.

    While the clock runs normally, wall − monotonic only drifts (NTP slews it by at most 0.5 ms/s);
    a step moves it at once. Each look compares with the previous one, so slow drift never adds up
    to a false step, and one step is reported once, however often the watch looks afterwards.
    """

    def __init__(self, wall: float, monotonic: float, threshold: float = STEP_THRESHOLD) -> None:
        self._offset = wall - monotonic
        self._threshold = threshold

    def look(self, wall: float, monotonic: float) -> float | None:
        """The step in seconds (negative: back) since the previous look, or None when there was none."""
        offset = wall - monotonic
        step = offset - self._offset
        self._offset = offset
        return step if abs(step) > self._threshold else None


class Scheduler:
    """Runs ``poll(target)`` for every target on its slots, within a concurrency bound."""

    def __init__(
        self,
        poll: PollFn,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        *,
        concurrency: int,
        clock: Clock | None = None,
        poll_many: PollManyFn | None = None,
        batchable: Callable[[Target], bool] | None = None,
        batch_ahead: float = 0.0,
    ) -> None:
        self._poll = poll
        self._poll_many = poll_many
        self._batchable = batchable if poll_many is not None else None
        self._ahead = batch_ahead
        self._spawn = spawn  # the daemon's TaskGroup.create_task, so the group owns every poll
        self._clock = clock = clock or SystemClock()
        wall, mono = clock.now(), clock.monotonic()
        # Slot times are monotonic readings plus this constant: they read as wall time at start (so
        # offsets stay put across restarts) and never jump with the wall clock.
        self._to_grid = wall - mono
        self._steps = StepWatch(wall, mono)
        self._sem = asyncio.Semaphore(concurrency)
        self._targets: dict[str, Target] = {}
        self._generation: dict[str, int] = {}
        self._heap: list[Entry] = []
        self._seq = 0
        self._running: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._wake = asyncio.Event()
        self._stopping = False

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Install a (new) target list. Unchanged targets keep their place in the schedule."""
        new = {t.id: t for t in targets}
        for tid in list(self._targets):
            if tid not in new:
                del self._targets[tid]
                self._generation.pop(tid, None)  # heap entries of removed targets go stale
        now = self._now()
        for tid, target in new.items():
            old = self._targets.get(tid)
            self._targets[tid] = target
            if old is not None and old.polling.interval == target.polling.interval:
                continue  # same slot grid: its pending heap entry stays valid
            self._generation[tid] = self._generation.get(tid, 0) + 1
            self._push(tid, next_slot(now, target.polling.interval, slot_offset(tid, target.polling.interval)))
        self._wake.set()

    def _now(self) -> float:
        """Now on the slot grid: the monotonic clock, shifted to read as wall time at start."""
        return self._clock.monotonic() + self._to_grid

    def _watch_wall_clock(self) -> None:
        """Log a wall-clock step once: polling is unaffected, but timestamps around it jump."""
        step = self._steps.look(self._clock.now(), self._clock.monotonic())
        if step is not None:
            selfmetrics.CLOCK_STEPS.inc()
            event(log, logging.WARNING, "wall clock stepped; polling keeps its pace on the monotonic clock",
                  step_s=round(step, 3), direction="back" if step < 0 else "forward")

    def _push(self, tid: str, due: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, tid, self._generation[tid]))

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def drain(self) -> None:
        """Wait until every poll in flight has finished (each is bounded by its own deadline)."""
        await self._idle.wait()

    async def run(self) -> None:
        while not self._stopping:
            self._watch_wall_clock()
            if not self._heap:
                await self._wait(None)
                continue
            due, _, tid, gen = self._heap[0]
            if self._generation.get(tid) != gen:
                heapq.heappop(self._heap)
                continue
            delay = due - self._now()
            if delay > 0:
                await self._wait(delay)
                continue
            await self._start_due()

    def _take(self, now: float, horizon: float, later: list[Entry]) -> tuple[Target, float] | None:
        """Pop the next entry due by ``now`` (by ``horizon`` when batchable), schedule its next slot and
        return its target and slot when it is to be polled now; None when there is nothing more.
        Entries within the horizon that may not start early are set aside in ``later``."""
        while self._heap:
            entry = self._heap[0]
            due, _, tid, gen = entry
            if self._generation.get(tid) != gen:
                heapq.heappop(self._heap)
                continue
            if due > now:
                batchable = self._batchable
                if due > horizon or batchable is None:
                    return None
                if not batchable(self._targets[tid]):
                    if len(later) >= SET_ASIDE:  # many unbatchable ones close together: this tick is done
                        return None
                    later.append(heapq.heappop(self._heap))  # its own slot, not early
                    continue
            heapq.heappop(self._heap)
            target = self._targets[tid]
            interval = target.polling.interval
            following = due + interval
            if following <= now:  # fell behind by a whole interval: skip the missed slots
                following = next_slot(now, interval, slot_offset(tid, interval))
            self._push(tid, following)
            if tid in self._running:
                selfmetrics.POLLS_SKIPPED.inc()
                continue
            return target, due
        return None

    async def _start_due(self) -> None:
        """Start every poll due now: batchable ones (and those due within ``batch_ahead``) as one batch."""
        now = self._now()
        horizon = now + self._ahead
        batch: list[Target] = []
        later: list[Entry] = []
        while not self._stopping:
            taken = self._take(now, horizon, later)
            if taken is None:
                break
            target, due = taken
            if self._sem.locked() and batch:  # start what is gathered before waiting for a place
                self._start_batch(batch)
                batch = []
            await self._sem.acquire()
            if self._stopping:
                self._sem.release()
                break
            selfmetrics.SCHEDULER_LAG.observe(max(0.0, self._now() - due))
            self._running.add(target.id)
            self._idle.clear()
            if self._batchable is not None and self._batchable(target):
                batch.append(target)
            else:
                self._spawn(self._run_one(target))
        for entry in later:
            heapq.heappush(self._heap, entry)
        if batch:
            self._start_batch(batch)

    def _start_batch(self, batch: list[Target]) -> None:
        if len(batch) == 1:
            self._spawn(self._run_one(batch[0]))
        else:
            self._spawn(self._run_many(batch))

    async def _wait(self, timeout: float | None) -> None:
        """Sleep until woken or timed out.

        ``asyncio.timeout`` rather than ``wait_for``: on Python 3.11, cancelling a ``wait_for`` of
        ``Event.wait()`` at shutdown was seen to hang the cancelled task (delivery workers).
        """
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _run_one(self, target: Target) -> None:
        try:
            await self._poll(target)
        except Exception:  # a bug in one poll must not take the daemon down
            log.exception("poll crashed", extra={"kv": {"target": target.id}})
        finally:
            self._sem.release()
            self._running.discard(target.id)
            if not self._running:
                self._idle.set()

    async def _run_many(self, targets: list[Target]) -> None:
        assert self._poll_many is not None
        try:
            await self._poll_many(targets)
        except Exception:  # a bug in one batch must not take the daemon down
            log.exception("poll crashed", extra={"kv": {"targets": len(targets), "first": targets[0].id}})
        finally:
            for target in targets:
                self._sem.release()
                self._running.discard(target.id)
            if not self._running:
                self._idle.set()
