"""MQTT after a restart: an incident event decided while resuming reaches the broker once.

The daemon's real pipeline (correlation + delivery on one SQLite file) against a real mosquitto.
Run one opens an outage and publishes it; then the targets answer again and the daemon stops during
the hold-down. At the next start, after the hold-down, resuming decides "resolved": that
event is persisted, planned by delivery's catch-up (it is after the cursor) AND handed to delivery
again as one of the start's events. MQTT keys used to come from a counter, so the second plan
made new rows, and subscribers got two "resolved" (and two retained status) messages with
different ``message_id``s. Keys now derive from the event: the outbox holds each message once;
and the start no longer hands delivery the events its catch-up just planned.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from monitor.clock import ManualClock
from monitor.correlate.incidents import IncidentEvent
from monitor.delivery import planner
from monitor.inventory.model import Inventory
from monitor.pipeline import IncidentPipeline
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.delivery_support import T0, delivery_with, load
from tests.servers.common import until
from tests.servers.mosquitto import Mosquitto
from tests.test_notify_mqtt import Watcher

pytestmark = pytest.mark.servers


async def running(inv: Inventory, db: Path, clock: ManualClock,
                  body: Callable[[IncidentPipeline], Awaitable[None]]) -> None:
    """One daemon run's incident pipeline: started, ``body``, stopped (the outbox keeps the rest)."""
    pipeline = IncidentPipeline(inv, db, clock, None, [])
    try:
        async with asyncio.TaskGroup() as tg:
            pipeline.start(tg)
            await body(pipeline)
            await pipeline.stop()
    finally:
        await pipeline.close()


async def drained(pipeline: IncidentPipeline) -> None:
    def empty() -> bool:
        svc = pipeline.delivery
        return svc is not None and sum(n for n, _ in svc.outbox.pending().values()) == 0

    await until(empty, 30, "the outbox to drain")


async def barrier(broker: Mosquitto, live: Watcher) -> None:
    """Wait until ``live`` has everything the monitor published so far, without a sleep: those
    publishes were acknowledged (the outbox drained) before this one, so the broker queued them
    to the subscriber first."""
    n = len(live.topic("isp/test/barrier"))
    async with aiomqtt.Client("127.0.0.1", broker.port) as probe:
        await probe.publish("isp/test/barrier", b"{}", qos=1)
    await until(lambda: len(live.topic("isp/test/barrier")) > n, 30, "the barrier message")


async def test_an_event_decided_while_resuming_is_published_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned: collections.Counter[tuple[str, str]] = collections.Counter()
    real_plan = planner.plan

    def counting_plan(events: Sequence[IncidentEvent], *args: Any, **kw: Any) -> planner.Plan:
        planned.update((e.incident, e.event) for e in events)  # a spy: the real planner does the work
        return real_plan(events, *args, **kw)

    monkeypatch.setattr(planner, "plan", counting_plan)
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        inv = load(tmp_path, 5, delivery_with(mqtt={"host": "127.0.0.1", "port": broker.port, "prefix": "isp"},
                                              smtp=None, desk=None))
        db = tmp_path / "monitor.db"
        clock = ManualClock(T0)
        below = [t for t in inv.targets if t in ("twr-1", "ap-1") or t.startswith("cpe-0")]
        log = EventStore(db)

        async def outage(pipeline: IncidentPipeline) -> None:
            changes = [StateChange(t, State.UP, State.DOWN, clock.now(), "3 consecutive failed polls") for t in below]
            log.append(changes)
            for change in changes:
                pipeline.note(change)
            pipeline.correlate_now()
            clock.advance(300)
            pipeline.correlate_now()  # opened
            await drained(pipeline)
            # the targets answer again: the hold-down starts, and the daemon stops during it
            clock.advance(60)
            back = [StateChange(t, State.DOWN, State.UP, clock.now(), "answering") for t in below]
            log.append(back)
            for change in back:
                pipeline.note(change)
            pipeline.correlate_now()
            await drained(pipeline)

        async def resume(pipeline: IncidentPipeline) -> None:
            await drained(pipeline)

        async with Watcher(broker, "archiver") as live:
            await running(inv, db, clock, outage)
            log.close()
            await barrier(broker, live)
            assert [e["event"] for e in live.topic("isp/incidents/INC-000001")] == ["opened"]
            clock.advance(600)  # the next start, after the hold-down ended: resuming resolves the incident
            await running(inv, db, clock, resume)
            await barrier(broker, live)

        events = live.topic("isp/incidents/INC-000001")
        assert [e["event"] for e in events] == ["opened", "resolved"]
        ids = [e["message_id"] for e in events]
        assert len(set(ids)) == 2
        outbox = sqlite3.connect(db)
        rows = collections.Counter(a for (a,) in outbox.execute("SELECT action FROM outbox WHERE channel = 'mqtt'"))
        outbox.close()
        assert rows["mqtt_resolved"] == rows["mqtt_opened"] == 1  # the outbox holds each event once
        assert planned == {("INC-000001", "opened"): 1, ("INC-000001", "resolved"): 1}  # and planned it once
        by_topic = collections.Counter(t for t, _, _ in live.got)
        # one retained status per node per event: opened (down) and resolved (up), not a third
        assert by_topic["isp/status/node/twr-1"] == 2
        assert by_topic["isp/status/municipality/arauca"] == 2
    finally:
        broker.stop()
