"""Scheduling: stable spread offsets, slot grid, no overlapping polls, bounded concurrency."""

from __future__ import annotations

import asyncio
import statistics

from monitor.inventory.model import PollingSettings, Target
from monitor.scheduler import Scheduler, next_slot, slot_offset


def test_offsets_are_deterministic_and_spread_evenly():
    ids = [f"cpe-{i:05d}" for i in range(10_000)]
    offsets = [slot_offset(i, 60.0) for i in ids]
    assert offsets == [slot_offset(i, 60.0) for i in ids]
    assert all(0 <= o < 60 for o in offsets)
    per_second = [0] * 60
    for o in offsets:
        per_second[int(o)] += 1
    # 10,000 targets over 60 s: each second gets about 167; no second more than 40% above the mean
    assert max(per_second) < 1.4 * statistics.mean(per_second)


def test_next_slot_is_on_the_grid_and_not_in_the_past():
    assert next_slot(100.0, 60.0, 7.0) == 127.0
    assert next_slot(127.0, 60.0, 7.0) == 127.0
    assert next_slot(127.5, 60.0, 7.0) == 187.0


def target(i: int, interval: float) -> Target:
    return Target(id=f"t{i}", kind="cpe", role="endpoint", address=f"127.0.0.{i + 1}",
                  polling=PollingSettings(interval=interval))


async def test_concurrency_bound_and_no_overlap_per_target():
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

    async with asyncio.TaskGroup() as tg:
        sched = Scheduler(poll, tg.create_task, concurrency=4)
        sched.set_targets(target(i, 0.02) for i in range(10))
        runner = tg.create_task(sched.run())
        await asyncio.wait_for(done.wait(), 20)
        sched.stop()
        await runner
        await sched.drain()
    assert peak == 4
    assert overlaps == 0


async def test_reload_keeps_unchanged_targets_and_drops_removed():
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
