"""A link's loops end when they are cancelled even if the MQTT library swallowed the cancellation.

aiomqtt awaits with Python 3.11's ``asyncio.wait_for``, which returns its inner result when that
completes in the same loop turn as the cancel. A PollerLink's children run in a TaskGroup, which cancels
them only once: a loop that lost that cancel published for ever and ``monitor poll`` (or a test's
teardown) never stopped (seen once in a full-suite run: "tasks would not stop: PollerLink.run()").
The client below loses every cancel the way wait_for can; no broker is needed for that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import aiomqtt

from monitor.remote.link import Broker, PollerLink
from monitor.remote.spool import PollerSpool
from monitor.state import State, StateChange


class LosesCancels:
    """Each publish waits until cancelled, then returns as if it had completed in that same turn."""

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, *_: Any, **__: Any) -> None:
        self.published += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return


class Run:
    def __init__(self, fn: Callable[[aiomqtt.Client], Coroutine[Any, Any, None]]) -> None:
        self.client = LosesCancels()
        self.fn = fn

    def __call__(self) -> Coroutine[Any, Any, None]:
        return self.fn(cast(aiomqtt.Client, self.client))


async def ends_after_one_cancel(run: Run) -> None:
    task = asyncio.create_task(run())
    async with asyncio.timeout(10):
        while not run.client.published:  # until it waits inside a publish
            await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=10)
    assert done, "the loop went on after its cancel was swallowed"
    assert task.cancelled()


def link(tmp_path: Path) -> PollerLink:
    spool = PollerSpool(tmp_path / "spool.db", "p-arauca", "arauca")
    spool.add([StateChange("cpe-1", State.UP, State.DOWN, 1_796_550_000.0, "timeout")])
    return PollerLink(spool, [Broker("127.0.0.1", 9)], heartbeat=0.05, resend_after=0.05)


async def test_publishing_loop_ends_when_its_cancel_was_swallowed(tmp_path: Path) -> None:
    """(asyncio.gather already re-raises a cancel its children swallowed: kept as a guard.)"""
    await ends_after_one_cancel(Run(link(tmp_path)._publish))


async def test_heartbeat_loop_ends_when_its_cancel_was_swallowed(tmp_path: Path) -> None:
    """Ran on for ever before the loops checked for a swallowed cancel."""
    await ends_after_one_cancel(Run(link(tmp_path)._heartbeats))
