"""Scheduling: stable spread offsets, slot grid, no overlapping polls, bounded concurrency."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from monitor import selfmetrics
from monitor.inventory.model import PollingSettings, Target
from monitor.polling.scheduler import Scheduler, StepWatch, next_slot, slot_offset
from tests.servers.common import until


def test_offsets_are_deterministic_and_spread_evenly() -> None:
    ids = [f"cpe-{i:05d}" for i in range(10_000)]
    offsets = [slot_offset(i, 60.0) for i in ids]
    assert offsets == [slot_offset(i, 60.0) for i in ids]
    assert all(0 <= o < 60 for o in offsets)
    per_second = [0] * 60
    for o in offsets:
        per_second[int(o)] += 1
    # 10,000 targets over 60 s: each second gets about 167; no second more than 40% above the mean
    assert max(per_second) < 1.4 * statistics.mean(per_second)


def test_next_slot_is_on_the_grid_and_not_in_the_past() -> None:
    assert next_slot(100.0, 60.0, 7.0) == 127.0
    assert next_slot(127.0, 60.0, 7.0) == 127.0
    assert next_slot(127.5, 60.0, 7.0) == 187.0


def target(i: int, interval: float) -> Target:
    return Target(id=f"t{i}", kind="cpe", role="endpoint", address=f"127.0.0.{i + 1}",
                  polling=PollingSettings(interval=interval))


async def run_until(done: asyncio.Event, poll: Callable[[Target], Awaitable[None]], targets: list[Target],
                    **options: Any) -> None:
    """Run a Scheduler over ``targets`` until ``done`` is set, then stop it and wait for its polls."""
    async with asyncio.TaskGroup() as tg:
        sched = Scheduler(poll, tg.create_task, **options)
        sched.set_targets(targets)
        runner = tg.create_task(sched.run())
        await asyncio.wait_for(done.wait(), 20)
        sched.stop()
        await runner
        await sched.drain()


async def test_concurrency_bound_and_no_overlap_per_target() -> None:
    in_flight = 0
    peak = 0
    per_target: dict[str, int] = {}
    overlaps = 0
    done = asyncio.Event()
    count = 0

    async def poll(t: Target) -> None:
        nonlocal in_flight, peak, overlaps, count
        in_flight += 1
        peak = max(peak, in_flight)
        per_target[t.id] = per_target.get(t.id, 0) + 1
        if per_target[t.id] > 1:
            overlaps += 1
        await asyncio.sleep(0.05)  # the poll's own work, longer than the interval on purpose
        per_target[t.id] -= 1
        in_flight -= 1
        count += 1
        if count >= 60:
            done.set()

    await run_until(done, poll, [target(i, 0.02) for i in range(10)], concurrency=4)
    assert peak == 4
    assert overlaps == 0


async def test_reload_keeps_unchanged_targets_and_drops_removed() -> None:
    seen: list[str] = []
    done = asyncio.Event()

    async def poll(t: Target) -> None:
        seen.append(t.id)
        if "t9" in seen:
            done.set()

    async with asyncio.TaskGroup() as tg:
        sched = Scheduler(poll, tg.create_task, concurrency=10)
        sched.set_targets([target(0, 0.05), target(1, 0.05)])
        runner = tg.create_task(sched.run())
        sched.set_targets([target(0, 0.05), target(9, 0.05)])
        await asyncio.wait_for(done.wait(), 10)
        seen.clear()
        # a few more rounds: t1 must never be polled again
        async with asyncio.timeout(10):
            while seen.count("t0") < 3:
                await asyncio.sleep(0.01)
        sched.stop()
        await runner
        await sched.drain()
    assert "t1" not in seen


def test_step_watch_reports_a_step_once_and_ignores_slewing() -> None:
    watch = StepWatch(wall=1_790_000_000.0, monotonic=100.0)
    # NTP slewing: 0.5 ms/s for an hour adds up to 1.8 s, in small moves: never a step
    for second in range(1, 3601):
        assert watch.look(1_790_000_000.0 + second * 1.0005, 100.0 + second) is None
    base = 1_790_000_000.0 + 3600 * 1.0005
    assert watch.look(base + 1 - 120, 3701.0) == pytest.approx(-120)  # `date -s` two minutes back
    assert watch.look(base + 2 - 120, 3702.0) is None  # the same step is not reported again
    assert watch.look(base + 3 + 3600, 3703.0) == pytest.approx(3720)  # and forward


class SteppedClock:
    """The real monotonic clock and a wall clock the test can step, as an NTP step or `date -s` does."""

    def __init__(self) -> None:
        self.shift = 0.0

    def now(self) -> float:
        return time.time() + self.shift

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.mark.parametrize("step", [-120.0, 120.0])
async def test_a_wall_clock_step_neither_delays_nor_bursts_polls(step: float, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 10: on wall-clock slots a step back of 120 s stopped all polling for 120 s, and a step
    forward polled every target at once. Polls must keep their pace, and the step is logged once."""
    interval, n = 0.2, 10
    polls: dict[str, list[float]] = {f"t{i}": [] for i in range(n)}

    async def poll(t: Target) -> None:
        polls[t.id].append(time.monotonic())

    clock = SteppedClock()
    steps_before = selfmetrics.REGISTRY.get_sample_value("monitor_clock_steps_total") or 0.0
    caplog.set_level(logging.WARNING, logger="monitor.scheduler")
    async with asyncio.TaskGroup() as tg:
        sched = Scheduler(poll, tg.create_task, concurrency=n, clock=clock)
        sched.set_targets(target(i, interval) for i in range(n))
        runner = tg.create_task(sched.run())
        await until(lambda: all(len(p) >= 2 for p in polls.values()), timeout=10, what="steady polling")
        clock.shift = step
        stepped = time.monotonic()
        await until(lambda: all(len([x for x in p if x > stepped]) >= 3 for p in polls.values()),
                    timeout=5, what="polls after the step")  # 3 slots take 0.6 s; 120 s on wall slots
        sched.stop()
        await runner
        await sched.drain()
    # A poll falls on the target's grid only: at most 2 of its slots fit in any 0.3 s (< 2 intervals),
    # so a third right after the step is a burst.
    burst = {tid: n for tid, p in polls.items() if (n := len([x for x in p if stepped < x < stepped + 0.3])) > 2}
    assert burst == {}
    lines = [r for r in caplog.records if r.getMessage().startswith("wall clock stepped")]
    assert len(lines) == 1
    assert lines[0].kv["direction"] == ("back" if step < 0 else "forward")  # type: ignore[attr-defined]
    assert selfmetrics.REGISTRY.get_sample_value("monitor_clock_steps_total") == steps_before + 1


async def test_due_batchable_targets_start_as_one_batch_within_the_concurrency_bound() -> None:
    """Targets the daemon may batch (ICMP alone) that fall due in the same tick (here: within
    ``batch_ahead``, the whole interval) go to ``poll_many`` together, even behind a target that may
    not start early; the others are polled one by one, and each target in a batch holds its own
    place under the concurrency bound."""
    singles: list[str] = []
    batches: list[list[str]] = []
    done = asyncio.Event()

    async def poll(t: Target) -> None:
        singles.append(t.id)

    async def poll_many(ts: list[Target]) -> None:
        batches.append([t.id for t in ts])
        if sum(map(len, batches)) >= 40:
            done.set()

    def batchable(t: Target) -> bool:
        return t.id != "t0"

    async def run(concurrency: int) -> None:
        singles.clear()
        batches.clear()
        done.clear()
        await run_until(done, poll, [target(i, 1.0) for i in range(21)], concurrency=concurrency,
                        poll_many=poll_many, batchable=batchable, batch_ahead=1.0)

    await run(concurrency=100)
    assert sorted(batches[0]) == sorted(f"t{i}" for i in range(1, 21))  # (t0's own ticks may split later ones)
    assert "t0" in singles and not any("t0" in b for b in batches)  # (a batch of one is a single poll)
    await run(concurrency=5)  # t0 may hold one of the 5 places
    assert all(len(b) <= 5 for b in batches) and sum(map(len, batches)) >= 40
