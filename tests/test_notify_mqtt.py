"""MQTT against a real mosquitto: lifecycle events, retained status, technician alerts, acks, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from monitor.clock import Clock, ManualClock
from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.store import IncidentStore
from monitor.delivery.service import DeliveryService
from monitor.ha.gate import GATE
from tests.delivery_support import SECRETS, T0, ClockFrom, Running, delivery_with, ev, ids, load
from tests.leaks import connections_to
from tests.servers.certs import TestCA
from tests.servers.common import until
from tests.servers.mosquitto import PASSWORD, USER, Mosquitto

pytestmark = pytest.mark.servers


def make(tmp_path: Path, broker: Mosquitto, clock: Clock | None = None, **over: Any) -> DeliveryService:
    """The service publishing to ``broker``'s password listener (``over``: other ``mqtt:`` keys).

    Its clock starts at T0, when the tests' incidents open: on the machine's clock they would be
    weeks old and due for escalation at the first timer tick (a second alert on a loaded machine)."""
    mqtt = {"host": "127.0.0.1", "port": broker.auth_port, "prefix": "isp", "username": USER,
            "password": {"env": "MQTT_PASS"}, "client_id": "monitor-test", **over}
    inv = load(tmp_path, 5, delivery_with(mqtt=mqtt, smtp=None, desk=None))
    assert inv.delivery is not None and SECRETS["MQTT_PASS"] == PASSWORD
    return DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, clock or ClockFrom(T0))


def with_opened(tmp_path: Path, broker: Mosquitto) -> tuple[DeliveryService, IncidentEvent]:
    """The service on ``broker`` and INC-000001's opening as correlation recorded it (not yet enqueued)."""
    svc = make(tmp_path, broker)
    opened = ev("opened", T0, ids(5, 0))
    IncidentStore(tmp_path / "monitor.db").save([opened], {}, set(), [])
    return svc, opened


class Watcher:
    """A subscriber on ``isp/#`` collecting (topic, payload, retained) in order."""

    def __init__(self, broker: Mosquitto, ident: str = "watcher", clean: bool = True) -> None:
        self.client = aiomqtt.Client("127.0.0.1", broker.port, identifier=ident, clean_session=clean)
        self.got: list[tuple[str, dict[str, Any], bool]] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        await self.client.__aenter__()
        await self.client.subscribe("isp/#", qos=1)
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for m in self.client.messages:
                self.got.append((str(m.topic), json.loads(m.payload) if m.payload else {}, bool(m.retain)))
        except aiomqtt.MqttError:
            pass

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    def topic(self, topic: str) -> list[dict[str, Any]]:
        return [p for t, p, _ in self.got if t == topic]


async def test_events_retained_status_alerts_and_ack(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        svc = make(tmp_path, broker)
        opened = ev("opened", T0, ids(5, 0))
        IncidentStore(tmp_path / "monitor.db").save([opened], {}, set(), [])  # what correlation recorded
        async with Running(svc) as run, Watcher(broker) as live:
            svc.enqueue([opened])
            await run.drained()
            await until(lambda: len(live.topic("isp/status/municipality/arauca")) == 1, 30, "municipality status")
            # a dashboard that connects later sees the current status at once (retained)
            async with Watcher(broker, "late") as late:
                # both retained messages: the broker sends them one after the other, in no promised order
                await until(lambda: len(late.topic("isp/status/node/twr-1")) == 1
                            and len(late.topic("isp/status/municipality/arauca")) == 1, 10, "retained statuses")
                assert late.topic("isp/status/node/twr-1")[0]["status"] == "down"
                muni = late.topic("isp/status/municipality/arauca")[0]
                assert muni["status"] == "down" and muni["affected_customers"] == 5
                assert muni["open_incidents"][0]["incident"] == "INC-000001"
                assert late.topic("isp/incidents/INC-000001") == []  # events are not retained
            (event,) = live.topic("isp/incidents/INC-000001")
            assert event["event"] == "opened" and event["affected_customers"] == ids(5, 0)
            (alert,) = live.topic("isp/technicians/arauca")
            assert alert["technician"] == "juan" and alert["count"] == 5
            # a technician acknowledges over MQTT → recorded in the incident store, no escalation
            async with aiomqtt.Client("127.0.0.1", broker.port) as tech:
                await tech.publish("isp/ack/INC-000001", json.dumps({"by": "juan"}), qos=1)
            store = IncidentStore(tmp_path / "monitor.db")
            await until(lambda: store.incident("INC-000001").acked_by == "juan", 30, "the ack")
            svc.tick(T0 + 3600)
            assert not [r for r in svc.outbox.rows() if r["action"] == "tech_alert_mqtt" and r["key"].endswith("/2")]
    finally:
        broker.stop()


async def test_broker_restart_loses_no_event(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        svc = make(tmp_path, broker)
        # a persistent QoS 1 subscriber: the broker keeps what it misses while away
        async with Watcher(broker, "archiver", clean=False):
            pass
        async with Running(svc) as run:
            svc.enqueue([ev("opened", T0, ids(5, 0))])
            await run.drained()
            broker.stop()
            svc.enqueue([ev("updated", T0 + 60, ids(3, 0)), ev("resolved", T0 + 120, ids(3, 0))])
            await until(lambda: any(r["attempts"] >= 1 and r["status"] == "pending" for r in svc.outbox.rows()),
                        10, "a failed publish")
            broker.start()
            await run.drained(30)
        async with Watcher(broker, "archiver", clean=False) as archiver:
            await until(lambda: len(archiver.topic("isp/incidents/INC-000001")) == 3, 30, "all three events")
        events = archiver.topic("isp/incidents/INC-000001")
        assert [e["event"] for e in events] == ["opened", "updated", "resolved"]
        assert len({e["message_id"] for e in events}) == 3  # what subscribers deduplicate by
        async with Watcher(broker, "late2") as late:
            await until(lambda: bool(late.topic("isp/status/municipality/arauca")), 30, "retained status")
            assert late.topic("isp/status/node/twr-1")[-1]["status"] == "up"
            assert late.topic("isp/status/municipality/arauca")[-1]["status"] == "ok"
    finally:
        broker.stop()


async def test_broker_down_at_start_gets_everything_as_soon_as_it_comes_up(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)  # not started yet: the daemon starts first, as after a power cut
    try:
        svc = make(tmp_path, broker, ManualClock(T0))
        async with Running(svc) as run:
            svc.enqueue([ev("opened", T0, ids(5, 0))])
            await until(lambda: any(r["attempts"] >= 1 for r in svc.outbox.rows(incident="INC-000001")
                                    if r["channel"] == "mqtt"), 10, "a publish failing while the broker is down")
            broker.start()
            # the service's clock stays frozen: only the retry on (re)connection can deliver the
            # rows that failed, not the end of their back-off
            await run.drained(30, advance=False)
        async with Watcher(broker, "late") as late:
            await until(lambda: bool(late.topic("isp/status/node/twr-1")), 30, "retained node status")
            assert late.topic("isp/status/node/twr-1")[-1]["status"] == "down"
    finally:
        broker.stop()


async def test_lifecycle_events_over_tls_with_password(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path, tls=True)
    assert broker.ca is not None
    broker.start()
    try:
        svc = make(tmp_path, broker, port=broker.tls_port, tls=True, ca_file=str(broker.ca.cert))
        async with Running(svc) as run, Watcher(broker) as live:
            svc.enqueue([ev("opened", T0, ids(5, 0))])
            await run.drained()
            svc.enqueue([ev("resolved", T0 + 600, ids(5, 0))])
            await run.drained()
            await until(lambda: len(live.topic("isp/incidents/INC-000001")) == 2, 30, "both events")
            assert {r["status"] for r in svc.outbox.rows(incident="INC-000001")} == {"delivered"}
        assert [e["event"] for e in live.topic("isp/incidents/INC-000001")] == ["opened", "resolved"]
    finally:
        broker.stop()


async def test_wrong_ca_is_retryable_and_leaks_no_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    broker = Mosquitto(tmp_path, tls=True)
    broker.start()
    try:
        rogue = TestCA(tmp_path, "rogue-ca")  # not the CA that signed the broker's certificate
        svc = make(tmp_path, broker, port=broker.tls_port, tls=True, ca_file=str(rogue.cert))
        async with Running(svc):
            svc.enqueue([ev("opened", T0, ids(5, 0))])
            # rows of an incident go out in order: the first one is retried, the others wait behind it
            await until(lambda: max(r["attempts"] for r in svc.outbox.rows(incident="INC-000001")) >= 3,
                        15, "a row's third failed attempt (several connection attempts)")
            rows = svc.outbox.rows(incident="INC-000001")
            errors = [e for (e,) in svc.outbox.db.execute("SELECT error FROM outbox WHERE attempts > 0")]
        # every failed handshake's socket closed (paho leaves it open for the garbage collector)
        assert connections_to(broker.tls_port) == 0
        assert rows and {r["status"] for r in rows} == {"pending"}
        # the cause reaches the rows and the log (once), not just "not connected"
        assert {r["reason"] for r in rows if r["attempts"] >= 2} == {"tls"}
        assert errors and all(errors), errors
        assert any("CERTIFICATE_VERIFY_FAILED" in e for e in errors), errors
        assert caplog.text.count("MQTT connection failed, will retry") == 1
        assert PASSWORD not in caplog.text + json.dumps(errors) + json.dumps(rows)
        broker.stop()  # flushes its log: it saw handshakes our client aborted, as it trusts another CA
        assert "unknown ca" in (tmp_path / "mosquitto.log").read_text()
    finally:
        broker.stop()


async def test_a_power_cut_is_the_municipalitys_status_power_not_degraded(tmp_path: Path) -> None:
    """Issue 17: ONUs' dying gasp below ap-1 (a ``power`` incident at the node) makes Arauca's retained
    status ``power``: customers are without service, but no crew fixes it; a node that then goes down
    (its battery ran out) is an outage, ``down``; one customer's own power is not a power cut there."""
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        svc = make(tmp_path, broker)
        topic = "isp/status/municipality/arauca"
        async with Running(svc) as run, Watcher(broker) as live:
            svc.enqueue([ev("opened", T0, ids(5, 0), kind="power", root="ap-1")])
            await run.drained()
            await until(lambda: len(live.topic(topic)) == 1, 30, "the status of the power cut")
            assert live.topic(topic)[-1]["status"] == "power"
            assert live.topic(topic)[-1]["open_incidents"][0]["kind"] == "power"
            svc.enqueue([ev("opened", T0 + 30, ["C-0002"], incident="INC-000002", kind="power", root="cpe-0002")])
            await run.drained()
            await until(lambda: len(live.topic(topic)) == 2, 30, "the status with the customer's own power")
            assert live.topic(topic)[-1]["status"] == "power"
            svc.enqueue([ev("updated", T0 + 60, ids(5, 0), kind="outage", root="ap-1")])
            await run.drained()
            await until(lambda: len(live.topic(topic)) == 3, 30, "the status of the outage")
            assert live.topic(topic)[-1]["status"] == "down"
    finally:
        broker.stop()


async def test_a_daemon_past_its_lease_deadline_publishes_nothing(tmp_path: Path) -> None:
    """Issue 13 (HA lab H5): a deposed daemon thawed past its stand-down deadline publishes nothing (the
    rows wait as retries, for whoever holds the lease); with the lease back every message goes once."""
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        svc, opened = with_opened(tmp_path, broker)
        GATE.hold(5.5, lambda: 6.0)
        try:
            async with Running(svc) as run, Watcher(broker) as live:
                svc.enqueue([opened])
                # (one group, in order: the first row is tried again and again, the others wait behind it)
                await until(lambda: any(r["reason"] == "lease_lapsed" and r["attempts"] >= 2
                                        for r in svc.outbox.rows()), 30, "the first row tried twice and held back")
                assert live.got == [] and not svc.outbox.rows(status="delivered")
                GATE.lift()
                await run.drained()
                await until(lambda: len(live.topic("isp/incidents/INC-000001")) == 1, 30, "the event")
                assert len(live.topic("isp/technicians/arauca")) == 1
        finally:
            GATE.lift()
    finally:
        broker.stop()
