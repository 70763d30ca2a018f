"""Hostile ack messages on ``<prefix>/ack/+`` against a real mosquitto: each is ignored or taken with
a sane name, the listener keeps running, a later genuine ack still counts, nothing logs a traceback."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from monitor.correlate.store import IncidentStore
from tests.delivery_support import Running
from tests.servers.common import until
from tests.servers.mosquitto import Mosquitto
from tests.test_notify_mqtt import with_opened

pytestmark = pytest.mark.servers

HOSTILE = [
    b'{"by": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # deeper than the JSON parser's recursion limit
    b"{" * 50_000,
    b'{"by": "\xff\xfe"}',
    b'{"by": "eve\\u0000\\u2028"}',
    b'{"by": null}',
    b"\x00\x01",
    b"x" * 200_000,  # a plain-text name far over any sane length
]


@contextlib.asynccontextmanager
async def running_with_an_open_incident(tmp_path: Path) -> AsyncIterator[tuple[Mosquitto, IncidentStore]]:
    """The delivery service on a real broker, INC-000001 open and announced; the store to check."""
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        svc, opened = with_opened(tmp_path, broker)
        async with Running(svc) as run:
            svc.enqueue([opened])
            await run.drained()
            store = IncidentStore(tmp_path / "monitor.db")
            try:
                yield broker, store
                assert run.task is not None and not run.task.done()  # the listener is still running
            finally:
                store.close()
    finally:
        broker.stop()


async def test_hostile_ack_payloads_do_not_stop_the_listener(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_with_an_open_incident(tmp_path) as (broker, store):
        async with aiomqtt.Client("127.0.0.1", broker.port) as eve:
            for payload in HOSTILE:
                await eve.publish("isp/ack/INC-999999", payload, qos=1)
            await eve.publish("isp/ack/INC-000001", json.dumps({"by": "juan"}), qos=1)
        await until(lambda: store.incident("INC-000001").acked_by == "juan", 30, "the genuine ack")
        assert [a[2] for a in store.actions("INC-000001")] == ["juan"]
    bad = [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]
    assert bad == [], [r.getMessage()[:200] for r in bad]


async def test_odd_names_in_an_ack_are_replaced(tmp_path: Path) -> None:
    async with running_with_an_open_incident(tmp_path) as (broker, store):
        async with aiomqtt.Client("127.0.0.1", broker.port) as tech:
            await tech.publish("isp/ack/INC-000001", b'{"by": "eve\\u0000\\u2028"}', qos=1)
        await until(lambda: store.incident("INC-000001").acked_by is not None, 30, "the ack")
        assert store.incident("INC-000001").acked_by == "mqtt"  # not a name with control characters
