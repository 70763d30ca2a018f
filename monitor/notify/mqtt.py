"""MQTT through aiomqtt: lifecycle events, retained status, technician alerts, and acks coming back.

Every JSON message carries ``message_id`` (its outbox key): QoS 1 and a repeat after a crash can
deliver a message twice, and subscribers drop the second by it. One connection, owned by
:meth:`MqttSender.keep`, which (re)connects with the shared back-off and
listens on ``<prefix>/ack/<incident>`` (payload: who acknowledged). Publishing is QoS 1 and only
while connected; otherwise the row stays in the outbox and is retried, so a broker restart loses
nothing. After every (re)connection ``on_connect`` runs, which lets the service retry the rows
that failed while the broker was away at once instead of at their back-off time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

import aiomqtt

from monitor import jsonbound
from monitor.clock import Clock
from monitor.delivery.config import MqttSettings, RetrySettings
from monitor.delivery.outbox import HandedOver, Row
from monitor.delivery.retry import DeliveryError, DeliveryRetryable, call_with_retry
from monitor.ha.gate import GATE
from monitor.logs import event
from monitor.mqtt_tls import tls_context

log = logging.getLogger("monitor.delivery.mqtt")
PUBLISH_TIMEOUT = 10.0
MAX_ACK_PAYLOAD = 4096  # characters of an inbound ack: {"by": "<name>"} or the name as plain text
MAX_ACK_NAME = 100


class MqttSender:
    channel = "mqtt"

    def __init__(
        self, settings: MqttSettings, policy: RetrySettings, clock: Clock, *,
        on_ack: Callable[[str, str], None] | None = None, on_connect: Callable[[], None] | None = None,
    ) -> None:
        self.s = settings
        self.policy = RetrySettings(initial=0.5, maximum=min(30.0, policy.maximum), factor=2.0,
                                    jitter=policy.jitter, deadline=float("inf"))
        self.clock = clock
        self.on_ack = on_ack
        self.on_connect = on_connect
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        # why the last connection attempt failed, for the rows that wait meanwhile (and one log line)
        self.last_error: DeliveryRetryable | None = None

    def _new_client(self) -> aiomqtt.Client:
        s = self.s
        tls = None
        if s.tls:
            tls = tls_context(s.ca_file)
        return aiomqtt.Client(
            s.host, s.port, username=s.username or None,
            password=s.password.reveal() if s.password is not None else None, identifier=s.client_id,
            keepalive=s.keepalive, tls_context=tls, timeout=10.0,
        )

    async def _connect(self) -> aiomqtt.Client:
        client = self._new_client()
        try:
            await client.__aenter__()
            await client.subscribe(f"{self.s.prefix}/ack/+", qos=1)
        except aiomqtt.MqttError as exc:  # aiomqtt keeps only the text of the cause
            reason = "tls" if "SSL" in str(exc) else \
                "auth" if "authori" in str(exc).lower() or "password" in str(exc).lower() else "unreachable"
            raise DeliveryRetryable(f"MQTT broker {self.s.host}:{self.s.port}: {exc}", reason) from exc
        return client

    def _connect_failed(self, exc: DeliveryError, _delay: float) -> None:
        if self.last_error is None or str(self.last_error) != str(exc):  # once per distinct cause
            event(log, logging.WARNING, "MQTT connection failed, will retry", reason=exc.reason, error=exc)
        self.last_error = exc if isinstance(exc, DeliveryRetryable) else DeliveryRetryable(str(exc), exc.reason)

    async def keep(self) -> None:
        """Run forever: stay connected, hand acks to ``on_ack``, reconnect with back-off."""
        lost = False
        while True:
            client = await call_with_retry(self._connect, self.policy, self.clock, on_retry=self._connect_failed)
            self.last_error = None
            self.client = client
            self.connected.set()
            event(log, logging.INFO if lost else logging.DEBUG, "MQTT connected", broker=f"{self.s.host}:{self.s.port}")
            if self.on_connect is not None:
                self.on_connect()
            try:
                async for message in client.messages:
                    self._ack(message)
            except aiomqtt.MqttError as exc:
                event(log, logging.WARNING, "MQTT connection lost, reconnecting", error=exc)
            finally:
                self.connected.clear()
                self.client = None
                lost = True
                await _disconnect(client)

    def _ack(self, message: aiomqtt.Message) -> None:
        """An ack from anyone who may publish on the topic: bounded, and never an exception here
        (one escaping would end this listener, and with it the delivery service)."""
        incident = str(message.topic).rsplit("/", 1)[-1]
        raw = message.payload
        text = raw.decode(errors="replace") if isinstance(raw, bytes | bytearray) else str(raw or "")
        if len(text) > MAX_ACK_PAYLOAD:
            event(log, logging.WARNING, "MQTT ack ignored: payload too large", incident=incident[:40], size=len(text))
            return
        try:
            doc = jsonbound.loads(text) if text.startswith("{") else {"by": text}
            by = doc.get("by", "mqtt") if isinstance(doc, dict) else "mqtt"
        except ValueError:  # not JSON, or nested too deep (jsonbound.TooDeep)
            by = "mqtt"
        by = by.strip()[:MAX_ACK_NAME] if isinstance(by, str) else ""
        if self.on_ack is not None and incident:
            self.on_ack(incident, by if by and by.isprintable() else "mqtt")

    async def send(self, row: Row, handed_over: HandedOver | None = None) -> str | None:
        client = self.client
        if client is None or not self.connected.is_set():
            cause = self.last_error
            raise DeliveryRetryable(f"MQTT broker not connected ({cause})" if cause else "MQTT broker not connected",
                                    cause.reason if cause else "unreachable")
        p = row.payload
        body = p["payload"]
        if isinstance(body, dict):  # the outbox key: subscribers drop a message repeated after a crash by it
            body = {**body, "message_id": row.key}
        payload = json.dumps(body, ensure_ascii=False, sort_keys=True)
        GATE.check(f"MQTT publish to {p['topic']}")
        try:
            await client.publish(p["topic"], payload, qos=1, retain=bool(p.get("retain")), timeout=PUBLISH_TIMEOUT)
        except aiomqtt.MqttError as exc:
            raise DeliveryRetryable(f"MQTT publish failed: {exc}", "unreachable") from exc
        return None

    async def close(self) -> None:
        client = self.client
        self.client = None
        if client is not None:
            await _disconnect(client)


async def _disconnect(client: aiomqtt.Client) -> None:
    """Say goodbye to the broker, bounded: aiomqtt awaits the broker's answer without a timeout, and a
    connection that died under it would hold a shutdown forever."""
    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
        async with asyncio.timeout(5.0):
            await client.__aexit__(None, None, None)
