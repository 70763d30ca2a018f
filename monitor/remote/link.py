"""Pollers and the core over MQTT, with an end-to-end acknowledgement so the broker is only a pipe.

Topics under ``<prefix>/<poller>/``:

- ``changes`` (poller → core, QoS 1): the spooled messages, in order (:mod:`.spool`).
- ``status`` (poller → core, QoS 1, retained): a heartbeat (:mod:`.messages`) every
  ``heartbeat`` seconds; the broker publishes ``offline`` there (the poller's last will) when the
  poller vanishes without saying goodbye.
- ``acked`` (core → poller, QoS 1, retained): the number up to which the core has taken every
  message of that poller. Published by a task of its own beside the core's reading: a publish
  to a broker that died waits for aiomqtt's 10 s timeout, and the reading notices the death at
  once (the hold on correlation below starts then, not 10 s late).

And ``<prefix>/core`` (core → every poller, QoS 1, retained): the core's *hello*, a new token each
time it has (re)subscribed on a broker. A poller that gets it live (not as the retained message its
own subscription brings: then the core's subscription is older than anything it publishes on this
connection) sends a heartbeat and everything its spool holds at once: what it sent before may have
reached a broker on which the core had no subscription yet (a broker restarted without the core's session, SIGKILLed
before it saved it: the poller came back first, the broker acknowledged its messages and dropped
them). Without the hello it waited ``resend_after`` (30 s) for an acknowledgement that could not
come (the lab's P3, issue 14).

Why an acknowledgement of our own on top of QoS 1: a PUBACK only says the broker has the message.
A broker that dies (or a core that dies between the broker's delivery and its own write) would lose
it. The poller keeps each message in its spool until the core's ``acked`` covers it and sends again
what stays unacknowledged for ``resend_after`` seconds or after a reconnect; the core drops the
repeats by number (:class:`~monitor.remote.sequence.Sequences`). So a state change is handled once
whatever the broker does. The core publishes ``acked`` only after ``on_changes`` returned (the
changes are in its store) and the numbering is kept (``on_taken``).

When the core loses a broker, the pollers heard through it are *in doubt* until their heartbeat
after the hello shows every message taken (:mod:`.handover`): meanwhile :meth:`CoreFeed.hold` tells
the incident pipeline not to judge past the loss, so the part of a poll cycle taken before it is not
correlated without the rest.

Several brokers (independent ones, no bridge or cluster: ``docs/install.md``): a poller uses the
first of its list that answers and moves to the next when its connection dies; the core listens on
all of them at once, so it hears a poller wherever that poller's path led it, and acknowledges on
the broker the message came through.

Throughput (a burst when a whole zone fails): the poller publishes up to ``IN_FLIGHT`` messages
before waiting for their PUBACKs and forgets acknowledged ones in one transaction; the core
acknowledges once its queue of received messages is empty, or every ``ACK_EVERY`` messages. Measured
on loopback under load (load average 10): 1,800 one-change messages spooled, stored at the core and
acknowledged in 2.9-4.4 s, of which ~3 ms a change is the spool's fsync (before: 25 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiomqtt

from monitor import selfmetrics
from monitor.clock import Clock, SystemClock
from monitor.delivery.config import RetrySettings
from monitor.delivery.retry import backoff
from monitor.errors import MonitorError
from monitor.logs import Episode, event
from monitor.mqtt_tls import tls_context
from monitor.remote.handover import WAIT, Handover
from monitor.remote.messages import PollerMessage, RemoteMessageError, decode, encode
from monitor.remote.sequence import Sequences
from monitor.remote.spool import PollerSpool
from monitor.state import StateChange

log = logging.getLogger(__name__)

OFFLINE = b"offline"
MAX_ACK = 32  # bytes of an ``acked`` payload: a decimal number
HELLO = "core"  # <prefix>/core: the core's hello (a token, new at each subscription)
MAX_HELLO = 64  # bytes of a hello payload
CLOSE_TIMEOUT = 5.0  # s to say goodbye to a broker
IN_FLIGHT = 100  # changes messages a poller publishes before waiting for their PUBACKs
ACK_EVERY = 100  # messages the core takes at most before it acknowledges (it does sooner when idle)
#: Between attempts to reach a broker: at most 5 s, so a poller cut off for minutes hands its spool
#: over within seconds of its path's return (with 30 s, as first written, the lab's 2-minute
#: partition was handed over 13.7 and 22 s after the heal in 2 of 3 runs). An attempt is one TCP
#: connection: a few hundred pollers retrying every few seconds are nothing to a broker.
RECONNECT = RetrySettings(initial=0.5, maximum=5.0, factor=2.0, jitter=0.5, deadline=float("inf"))


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line or an error
    tls: bool = False
    ca_file: str = ""  # the CA that signed the broker's certificate ("": the system's)


async def _connect(brokers: Sequence[Broker], turn: int, client_id: str, will: aiomqtt.Will | None
                   ) -> tuple[aiomqtt.Client, Broker]:
    """The next broker of the list that answers (the list is tried round from ``turn``)."""
    errors = []
    for i in range(len(brokers)):
        b = brokers[(turn + i) % len(brokers)]
        try:  # the CA file is read at each attempt: a replaced certificate needs no restart
            tls = tls_context(b.ca_file) if b.tls else None
        except (OSError, ssl.SSLError) as exc:
            errors.append(f"{b.host}:{b.port}: CA file {b.ca_file}: {exc}")
            continue
        client = aiomqtt.Client(b.host, b.port, username=b.username, password=b.password, identifier=client_id,
                                clean_session=False, will=will, timeout=10.0, keepalive=30, tls_context=tls)
        client.pending_calls_threshold = 2 * IN_FLIGHT  # aiomqtt warns per publish above 10 in flight
        try:
            await client.__aenter__()
            return client, b
        except aiomqtt.MqttError as exc:
            errors.append(f"{b.host}:{b.port}: {exc}")
    raise ConnectionError("; ".join(errors))


async def cancel_until_done(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it, again if a cancellation was swallowed inside aiomqtt (Python
    3.11's wait_for can): one cancel did not always end a link's task."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)


async def _end_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel until every task is done, even while we are cancelled ourselves meanwhile (a cancel
    swallowed inside aiomqtt must not leave one running); then pass our own cancellation on."""
    cancelled = False
    while pending := [t for t in tasks if not t.done()]:
        for t in pending:
            t.cancel()
        try:
            await asyncio.wait(pending, timeout=1.0)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def _go_on() -> None:
    """Raise the cancellation a library swallowed: aiomqtt awaits with Python 3.11's wait_for, which
    returns its inner result when that completes in the turn the task is cancelled. The task's
    count of requested cancels still shows it, and a child loop that would run for ever checks it
    each turn (a TaskGroup cancels its children only once). Only in tasks nobody uncancels: in 3.11 a
    TaskGroup whose child failed can leave its parent's count raised (``PollerLink.run``)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _wait(ev: asyncio.Event, timeout: float) -> None:
    """Until ``ev`` is set or ``timeout`` has passed. Not asyncio.wait_for: Python 3.11's can lose a
    cancellation that comes in the same turn as the event, and a link's task then never ends (its
    TaskGroup cancels a child once)."""
    waiter = asyncio.ensure_future(ev.wait())
    try:
        await asyncio.wait([waiter], timeout=timeout)
    finally:
        waiter.cancel()


async def _close(client: aiomqtt.Client) -> None:
    """Disconnect, bounded (aiomqtt waits up to its own 10 s timeout for the broker's goodbye)."""
    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await client.__aexit__(None, None, None)


class PollerLink:
    """The poller's side: drains the spool to the broker, heartbeats, takes the core's acks."""

    def __init__(self, spool: PollerSpool, brokers: Sequence[Broker], *, prefix: str = "monitor/pollers",
                 heartbeat: float = 10.0, resend_after: float = 30.0, clock: Clock | None = None,
                 polling_since: float | None = None) -> None:
        """``polling_since``: when this run began polling (its heartbeats say so: see messages.py)."""
        self.spool, self.brokers, self.heartbeat, self.resend_after = spool, list(brokers), heartbeat, resend_after
        self.clock = clock or SystemClock()
        self.polling_since = polling_since
        base = f"{prefix}/{spool.poller}"
        self.topics = {k: f"{base}/{k}" for k in ("changes", "status", "acked")}
        self.hello_topic = f"{prefix}/{HELLO}"
        self.wake = asyncio.Event()  # set by whoever added to the spool
        self.acked = 0  # the core's last acknowledgement
        self.connected = asyncio.Event()
        self.failures = 0  # attempts to reach a broker failed in a row
        self.hello: bytes | None = None  # the core's last hello seen
        self._resend = False  # a new hello: send everything the spool holds again, now
        self._beat = asyncio.Event()  # heartbeat now (a new hello: the core learns our last number at once)

    def added(self) -> None:
        """New messages are in the spool: publish them now."""
        self.wake.set()

    async def run(self) -> None:
        turn = 0
        will = aiomqtt.Will(self.topics["status"], OFFLINE, qos=1, retain=True)
        while True:
            try:
                client, broker = await _connect(self.brokers, turn, f"poller-{self.spool.poller}", will)
            except ConnectionError as exc:
                event(log, logging.WARNING, "poller cannot reach a broker, spooling", error=exc,
                      backlog=self.spool.backlog())
                self.failures += 1
                await asyncio.sleep(backoff(RECONNECT, self.failures))  # the notifiers' back-off, with jitter
                turn += 1
                continue
            self.failures = 0
            event(log, logging.INFO, "poller connected", broker=f"{broker.host}:{broker.port}",
                  backlog=self.spool.backlog())
            try:
                await client.subscribe(self.topics["acked"], qos=1)
                await client.subscribe(self.hello_topic, qos=1)
                self.connected.set()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._acks(client))
                    tg.create_task(self._heartbeats(client))
                    tg.create_task(self._publish(client))
            except* aiomqtt.MqttError as group:
                event(log, logging.WARNING, "poller lost its broker, spooling", error=group.exceptions[0])
            finally:
                self.connected.clear()
                turn += 1
                await _close(client)

    async def _publish(self, client: aiomqtt.Client) -> None:
        sent: dict[int, float] = {}  # seq -> when it was last published on this connection
        while True:
            _go_on()
            self.wake.clear()
            if self._resend:  # the core (re)subscribed: what it may have missed goes again
                self._resend = False
                sent.clear()
            now = self.clock.now()
            self.spool.acknowledged_through(self.acked)  # one transaction, not one per message
            due = [(seq, payload) for seq, payload in self.spool.pending(limit=1000)
                   if seq not in sent or now - sent[seq] >= self.resend_after]
            for i in range(0, len(due), IN_FLIGHT):  # pipelined: a round trip per window, not per message
                window = due[i:i + IN_FLIGHT]
                results = await asyncio.gather(
                    *(client.publish(self.topics["changes"], payload, qos=1) for _, payload in window),
                    return_exceptions=True)
                failed = [r for r in results if isinstance(r, BaseException)]
                if failed:
                    raise failed[0]
                sent.update((seq, now) for seq, _ in window)
            await _wait(self.wake, min(self.resend_after, 1.0))

    async def _acks(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            raw = message.payload
            if message.topic.matches(self.hello_topic):
                if isinstance(raw, bytes | bytearray) and 0 < len(raw) <= MAX_HELLO:
                    self.hello = bytes(raw)
                    if not message.retain:  # retained: the core subscribed before we did, it heard us
                        self._resend = True
                        self.wake.set()
                        self._beat.set()
                        event(log, logging.INFO, "poller sees the core (re)subscribed, sending its heartbeat "
                              "and backlog now", backlog=self.spool.backlog())
                continue
            if not isinstance(raw, bytes | bytearray) or len(raw) > MAX_ACK or not raw.isdigit():
                continue
            n = int(raw)
            if n > self.acked:
                self.acked = n
                self.wake.set()

    async def _heartbeats(self, client: aiomqtt.Client) -> None:
        while True:
            _go_on()
            self._beat.clear()
            beat = PollerMessage("heartbeat", self.spool.poller, self.spool.zone, self.spool.last_seq(),
                                 self.clock.now(), acked=self.spool.acked(), polling_since=self.polling_since)
            await client.publish(self.topics["status"], encode(beat), qos=1, retain=True)
            await _wait(self._beat, self.heartbeat)


class Listener(Protocol):
    """Who hears of pollers' liveness (:class:`monitor.remote.core.BlindZones`)."""

    def heard(self, poller: str, at: float) -> None: ...

    def gone(self, poller: str) -> None: ...

    def current(self, poller: str, sent: float, polling_since: float) -> None: ...


OnChanges = Callable[[str, Sequence[StateChange]], Awaitable[None]]
#: called after each message taken, with the bookkeeping to keep across restarts (before the ack)
OnTaken = Callable[[Sequences], None]


class CoreFeed:
    """The core's side: every poller's changes, checked, each message once, acknowledged when stored."""

    def __init__(self, brokers: Sequence[Broker], poller_zones: Mapping[str, str], zone_of: Mapping[str, str],
                 on_changes: OnChanges, *, prefix: str = "monitor/pollers", sequences: Sequences | None = None,
                 clock: Clock | None = None, client_id: str = "monitor-core", on_taken: OnTaken | None = None,
                 watch: Listener | None = None, on_current: Callable[[str, float, float], None] | None = None,
                 handover_wait: float = WAIT) -> None:
        self.brokers, self.poller_zones, self.zone_of = list(brokers), poller_zones, zone_of
        self.on_changes, self.prefix, self.client_id = on_changes, prefix, client_id
        self.sequences = sequences or Sequences()
        self.on_taken = on_taken
        self.watch = watch  # told of every poller heard and every last will (zone blindness)
        #: told when a poller's heartbeat shows every change it had published taken (it caught up)
        self.on_current = on_current
        # on_changes could not store (MonitorError): not acknowledged, so the poller sends it again
        self._storing = Episode(log, "poller changes not stored, not acknowledged (the poller sends them again)",
                                "poller changes stored again")
        self.clock = clock or SystemClock()
        self.last_seen: dict[str, float] = {}  # poller -> when its last heartbeat or message arrived
        self.offline: set[str] = set()  # pollers whose last will the broker published
        self.dropped: dict[str, int] = {}  # reason -> messages dropped
        self.connected = asyncio.Event()  # subscribed on at least one broker
        self._up: set[str] = set()  # the brokers it is subscribed on
        self._taking = asyncio.Lock()  # two brokers may bring the same message at once
        self.handover = Handover(handover_wait)  # pollers whose changes may be missing (the broker lost)
        self._via: dict[str, str] = {}  # poller -> the broker its last message came through

    def _drop(self, reason: str, poller: str, detail: str) -> None:
        first = reason not in self.dropped
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        selfmetrics.REMOTE_DROPPED.labels(reason).inc()
        if first:  # once per reason: a hostile sender must not flood the log
            event(log, logging.WARNING, "poller message dropped", reason=reason, poller=poller[:40], detail=detail)

    async def run(self) -> None:
        """Listen on every broker of the list at once. A poller uses one at a time and moves to the
        next when its own path fails, so a core on one broker only could wait for ever on another;
        what two brokers both bring (a resend after a failover) is dropped by number."""
        tasks = [asyncio.create_task(self._serve(broker)) for broker in self.brokers]
        try:
            await asyncio.gather(*tasks)  # they never return; a bug in one ends them all
        finally:
            await _end_all(tasks)  # not a TaskGroup: it cancels once, and aiomqtt may swallow that

    async def _serve(self, broker: Broker) -> None:
        where = f"{broker.host}:{broker.port}"
        unreachable = Episode(log, "core cannot reach a broker", "core reaches the broker again")
        failures = 0
        while True:
            try:
                client, _ = await _connect([broker], 0, self.client_id, None)
            except ConnectionError as exc:
                unreachable.failed(broker=where, error=exc)  # once, not at every retry: it may stay down
                failures += 1
                await asyncio.sleep(backoff(RECONNECT, failures))  # the notifiers' back-off, with jitter
                continue
            failures = 0
            unreachable.ok(broker=where)
            try:
                await client.subscribe(f"{self.prefix}/+/changes", qos=1)
                await client.subscribe(f"{self.prefix}/+/status", qos=1)
                # subscribed: pollers that sent into a broker without our subscription send again now
                hello = f"{self.client_id[:40]} {secrets.token_hex(8)}".encode()
                await client.publish(f"{self.prefix}/{HELLO}", hello, qos=1, retain=True)
                self._up.add(where)
                self.connected.set()
                unacked: set[str] = set()  # pollers with messages taken since their last ack
                due: set[str] = set()  # pollers to acknowledge now (the acker's)
                ready = asyncio.Event()
                acker = asyncio.create_task(self._acker(client, due, ready))
                taken = 0
                try:
                    async for message in client.messages:
                        poller = await self._handle(message, where)
                        if poller is not None:
                            unacked.add(poller)
                            taken += 1
                        if unacked and (taken >= ACK_EVERY or not len(client.messages)):
                            due.update(unacked)
                            ready.set()
                            unacked.clear()
                            taken = 0
                        if acker.done():
                            acker.result()  # its publish failed: the connection is gone
                finally:
                    await cancel_until_done(acker)
            except aiomqtt.MqttError as exc:
                # what its pollers publish now is not heard: correlation holds until they caught up
                now = self.clock.now()  # (not one already gone: its last will, or silent for the whole wait)
                held = sorted(p for p, via in self._via.items() if via == where and p not in self.offline
                              and now - self.last_seen.get(p, now) <= self.handover.wait)
                self.handover.lost(held, now)
                event(log, logging.WARNING, "core lost a broker", broker=where, error=exc,
                      holding=",".join(held) or "-")
            finally:
                self._up.discard(where)
                if not self._up:
                    self.connected.clear()
                await _close(client)

    async def _acker(self, client: aiomqtt.Client, due: set[str], ready: asyncio.Event) -> None:
        """Acknowledge the pollers in ``due`` whenever ``ready`` is set (the reading adds to them)."""
        while True:
            _go_on()
            await ready.wait()
            ready.clear()
            pollers = set(due)
            due.clear()
            await self._ack(client, pollers)

    async def _ack(self, client: aiomqtt.Client, pollers: set[str]) -> None:
        """Keep the numbering (``on_taken``), then tell each poller up to where everything is stored."""
        if self.on_taken is not None:
            self.on_taken(self.sequences)
        for poller in sorted(pollers):
            await client.publish(f"{self.prefix}/{poller}/acked", str(self.sequences.through(poller)).encode(),
                                 qos=1, retain=True)

    def hold(self, now: float) -> float | None:
        """The moment correlation must not judge past while a poller's changes may be missing (None:
        nothing missing); a poller not caught up within the hand-over wait is logged and let go."""
        limit = self.handover.hold(now)
        for poller in self.handover.expired:
            event(log, logging.WARNING, "poller's changes still missing after the hand-over wait, "
                  "correlating without them", poller=poller, wait=self.handover.wait)
        self.handover.expired.clear()
        return limit

    def _caught_up(self, poller: str, ended: bool) -> None:
        if ended:
            event(log, logging.INFO, "poller caught up after a lost broker, correlation goes on", poller=poller,
                  through=self.sequences.through(poller))

    def _current(self, msg: PollerMessage, now: float, retained: bool) -> None:
        """A heartbeat whose number is taken: everything its poller had confirmed when it sent it is here."""
        sent = min(msg.sent, now)
        if self.on_current is not None:
            self.on_current(msg.poller, now, sent)
        if self.watch is not None and msg.polling_since is not None and not retained:
            self.watch.current(msg.poller, sent, msg.polling_since)

    async def _handle(self, message: aiomqtt.Message, where: str = "") -> str | None:
        """Check and take one message; the poller to acknowledge (its changes are stored, or a repeat)."""
        parts = str(message.topic).split("/")
        poller, kind = parts[-2], parts[-1]
        raw = message.payload
        data = bytes(raw) if isinstance(raw, bytes | bytearray) else b""
        if kind == "status" and data == OFFLINE:
            if poller in self.poller_zones and poller not in self.offline:
                self.offline.add(poller)
                event(log, logging.WARNING, "poller offline (its last will)", poller=poller)
                if self.watch is not None:
                    self.watch.gone(poller)
            return None
        try:
            msg = decode(data, self.zone_of, self.poller_zones)
        except RemoteMessageError as exc:
            self._drop(exc.reason, poller, exc.detail)
            return None
        if msg.poller != poller or (kind == "changes") != (msg.kind == "changes"):
            self._drop("wrong_topic", poller, f"{msg.kind} of {msg.poller!r} on {message.topic}")
            return None
        now = self.clock.now()
        self.last_seen[poller] = now
        self._via[poller] = where
        self.offline.discard(poller)
        if self.watch is not None:  # a retained heartbeat may be old news: it counts from when it was sent
            self.watch.heard(poller, min(msg.sent, now) if message.retain else now)
        if msg.kind == "heartbeat":
            if not message.retain:  # live (a retained one may be from before the loss)
                self._caught_up(poller, self.handover.announced(poller, msg.seq, self.sequences.through(poller)))
            if not self.sequences.behind(poller, msg.seq):
                self._current(msg, now, message.retain)
            if msg.acked is None:
                return None
            async with self._taking:
                forgotten = self.sequences.settle(poller, msg.acked)
            if not forgotten:
                return None
            event(log, logging.WARNING, "poller numbering rebased (the core had no record of these numbers)",
                  poller=poller, acked=msg.acked, unknowable=forgotten)
            self._caught_up(poller, self.handover.taken(poller, self.sequences.through(poller)))
            return poller  # acknowledge now: its spool drains
        async with self._taking:  # from fresh to take: the same number from another broker waits here
            if self.sequences.fresh(poller, msg.seq):
                try:
                    await self.on_changes(poller, msg.changes)
                except MonitorError as exc:
                    self._storing.failed(poller=poller, seq=msg.seq, error=exc)
                    return None  # not acknowledged: the poller sends it again
                self._storing.ok(poller=poller)
                verdict = self.sequences.take(poller, msg.seq)
                through = self.sequences.through(poller)
                if verdict.gap or verdict.given_up:
                    event(log, logging.WARNING, "poller messages missing (late or lost)", poller=poller,
                          seq=msg.seq, gap=verdict.gap, given_up=verdict.given_up)
                    self.handover.gap(poller, msg.seq, through, now)
                self._caught_up(poller, self.handover.taken(poller, through))
        return poller  # taken now, or a repeat of one taken (its ack may have been lost)
