"""The broker is not a single point of failure (issue 14): two independent mosquittos, both listed on
the poller's and the core's side. One is killed (SIGKILL: no goodbye, its in-flight QoS 1 messages
die with it) while a poller streams changes; both sides fail over to the other and the core takes
every change exactly once, because a change leaves the poller's spool only when the core's own
acknowledgement covers it (the broker is a pipe) and the core drops repeats by number. A poller that
reaches only the second broker while the core still reaches the first is heard too: the core
listens on every broker at once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from monitor.remote.link import Broker, CoreFeed, PollerLink
from monitor.remote.spool import PollerSpool
from monitor.state import State, StateChange
from tests.servers.common import until
from tests.servers.mosquitto import Mosquitto
from tests.test_remote_link import T0, running

ZONE_OF = {f"cpe-{i}": "arauca" for i in range(1, 1001)}
POLLERS = {"p-arauca": "arauca"}


def down(i: int) -> StateChange:
    return StateChange(f"cpe-{i}", State.UP, State.DOWN, T0 + i, "3 consecutive failed polls: timeout")


class CountingFeed(CoreFeed):
    """The core's feed, counting what the brokers delivered before its repeats were dropped."""

    delivered: int = 0

    async def _handle(self, message: aiomqtt.Message, where: str = "") -> str | None:
        if str(message.topic).endswith("/changes"):
            self.delivered += 1
        return await super()._handle(message, where)


@dataclass
class Outcome:
    taken: list[StateChange] = field(default_factory=list)  # what the core stored, in order
    delivered: int = 0  # messages the brokers delivered to the core, repeats included
    seconds: float = 0.0  # from the kill to the last change acknowledged


async def stream_across_a_broker_death(tmp_path: Path, n: int, kill_after: int) -> Outcome:
    """``n`` changes, one per message; broker A is killed once the core has taken ``kill_after``."""
    roots = [tmp_path / "mqtt-a", tmp_path / "mqtt-b"]
    for r in roots:
        r.mkdir()
    a, b = Mosquitto(roots[0]), Mosquitto(roots[1])
    brokers = [Broker("127.0.0.1", a.port), Broker("127.0.0.1", b.port)]
    out = Outcome()

    async def on_changes(poller: str, changes: Sequence[StateChange]) -> None:
        out.taken.extend(changes)

    spool = PollerSpool(tmp_path / "spool.db", "p-arauca", "arauca")
    link = PollerLink(spool, brokers, heartbeat=0.5, resend_after=1.0)
    feed = CountingFeed(brokers, POLLERS, ZONE_OF, on_changes)
    a.start()
    b.start()
    try:
        async with running(link.run(), feed.run()):
            for i in range(1, n // 2 + 1):
                spool.add([down(i)])
                link.added()
            await until(lambda: len(out.taken) >= kill_after, 60, f"{kill_after} changes through broker A")
            assert a.process is not None
            a.process.stop(signal.SIGKILL)  # mid-stream: some published, some acknowledged, some in flight
            loop = asyncio.get_running_loop()
            killed = loop.time()
            for i in range(n // 2 + 1, n + 1):  # the rest while the poller fails over
                spool.add([down(i)])
                link.added()
            await until(lambda: spool.backlog() == 0, 120, "every change acknowledged through broker B")
            out.seconds = loop.time() - killed
        out.delivered = feed.delivered
        assert feed.sequences.through("p-arauca") == n
    finally:
        a.stop()
        b.stop()
        spool.close()
    return out


async def test_a_broker_killed_mid_stream_loses_and_repeats_nothing(tmp_path: Path) -> None:
    out = await stream_across_a_broker_death(tmp_path, 200, kill_after=40)
    # each change exactly once (not necessarily in order: what broker B got before the core had subscribed
    # there comes again after resend_after, behind newer messages; each keeps its real time)
    assert sorted(c.target for c in out.taken) == sorted(f"cpe-{i}" for i in range(1, 201))
    assert {c.ts for c in out.taken if c.target == "cpe-150"} == {T0 + 150}  # its real time


async def test_a_poller_that_reaches_only_the_second_broker_is_heard(tmp_path: Path) -> None:
    roots = [tmp_path / "mqtt-a", tmp_path / "mqtt-b"]
    for r in roots:
        r.mkdir()
    a, b = Mosquitto(roots[0]), Mosquitto(roots[1])
    taken: list[StateChange] = []

    async def on_changes(poller: str, changes: Sequence[StateChange]) -> None:
        taken.extend(changes)

    spool = PollerSpool(tmp_path / "spool.db", "p-arauca", "arauca")
    # the poller's path to broker A is cut (it has only B left); the core reaches both, A first
    link = PollerLink(spool, [Broker("127.0.0.1", b.port)], heartbeat=0.5, resend_after=1.0)
    feed = CoreFeed([Broker("127.0.0.1", a.port), Broker("127.0.0.1", b.port)], POLLERS, ZONE_OF, on_changes)
    a.start()
    b.start()
    try:
        async with running(link.run(), feed.run()):
            for i in range(1, 11):
                spool.add([down(i)])
                link.added()
            await until(lambda: spool.backlog() == 0, 60, "the poller's changes acknowledged through broker B")
        assert sorted(c.target for c in taken) == sorted(f"cpe-{i}" for i in range(1, 11))
    finally:
        a.stop()
        b.stop()
        spool.close()
