"""The SNMP transport's own socket loop: resends and timeouts from one deadline heap, many GETs in
flight on one socket, and sends the kernel defers (monitor/probes/snmp_transport.py)."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.snmp.run import OIDS
from monitor.errors import ProbeTimeout
from monitor.probes.snmp_transport import Endpoint, Session, SnmpTransport, _Waiter
from monitor.probes.snmp_usm import make_user
from monitor.probes.snmp_v2c import decode_message
from tests.servers.common import free_port, until
from tests.servers.snmpd import COMMUNITY, V3_AUTH, V3_PRIV, V3_USER, snmpd

pytestmark = pytest.mark.servers


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    """A UDP port on loopback that reads nothing back: every request to it goes unanswered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        yield s


def _drain(s: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(s.recv(65536))
        except BlockingIOError:
            return out


async def test_a_silent_agent_gets_every_attempt_then_a_timeout(silent: socket.socket) -> None:
    transport = SnmpTransport()
    session = Session(transport, Endpoint("127.0.0.1", silent.getsockname()[1], 0.2, 2), community=COMMUNITY)
    t0 = time.monotonic()
    try:
        with pytest.raises(ProbeTimeout):
            await session.get(OIDS)
    finally:
        await transport.close()
    assert time.monotonic() - t0 >= 0.6 - 0.01  # three attempts of 0.2 s each, none cut short
    sent = _drain(silent)
    assert len(sent) == 3 and len(set(sent)) == 1  # the same message (same request id) each time


async def test_a_shorter_timeout_is_not_held_up_by_a_longer_one_in_flight(silent: socket.socket) -> None:
    """Deadlines share one timer: a request with a shorter deadline than the one armed re-arms it."""
    transport = SnmpTransport()
    port = silent.getsockname()[1]
    slow = Session(transport, Endpoint("127.0.0.1", port, 60.0, 0), community=COMMUNITY)
    quick = Session(transport, Endpoint("127.0.0.1", port, 0.1, 1), community=COMMUNITY)
    waiting = asyncio.ensure_future(slow.get(OIDS))
    try:
        await until(lambda: len(transport.waiting) == 1, 30)
        with pytest.raises(ProbeTimeout):
            await asyncio.wait_for(quick.get(OIDS), 30)
        assert not waiting.done()  # the 60 s one still waits
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await transport.close()
    assert not transport.waiting
    assert len(_drain(silent)) == 3  # slow once, quick twice


def v3_session(timeout: float, retries: int) -> tuple[SnmpTransport, Session, int]:
    """A fresh transport and an authPriv session to a free loopback port (the agent started on it next)."""
    transport, port = SnmpTransport(), free_port(socket.SOCK_DGRAM)
    user = make_user(V3_USER, "SHA", V3_AUTH, "AES", V3_PRIV)
    return transport, Session(transport, Endpoint("127.0.0.1", port, timeout, retries), user=user, cred_key="t"), port


async def test_many_v3_gets_in_flight_on_one_socket_each_get_their_answer(tmp_path: Path) -> None:
    transport, session, port = v3_session(5.0, 3)
    with snmpd(tmp_path / "agent", port):
        try:
            first = await session.get(OIDS)
            answers = await asyncio.gather(*(session.get(OIDS[i:] + OIDS[:i]) for i in range(len(OIDS))))
        finally:
            await transport.close()
    for i, got in enumerate(answers):
        assert [oid for oid, _ in got] == list(OIDS[i:] + OIDS[:i])  # each its own request's answer
    assert [oid for oid, _ in first] == list(OIDS)
    assert not transport.waiting and not transport._pending["3"]


async def test_an_answered_get_leaves_nothing_alive_until_its_timeout(tmp_path: Path) -> None:
    """An answered request's waiter, future and check are freed at once, not held by its deadline
    until the timeout: held, every GET's objects reached the GC's oldest generation and full
    collections ran every few thousand GETs (~10 % of a GET's CPU, issue 12)."""
    transport, session, port = v3_session(60.0, 1)
    with snmpd(tmp_path / "agent", port):
        try:
            for _ in range(20):
                assert len(await session.get(OIDS)) == len(OIDS)
            gc.collect()
            alive = [o for o in gc.get_objects() if type(o) is _Waiter and o.source[1] == port]
            assert alive == []
            assert len(transport._deadlines) >= 20 and not transport._armed  # the deadlines wait, untracked
            assert not any(gc.is_tracked(entry) for entry in transport._deadlines)
        finally:
            await transport.close()


class _Busy:
    """A socket whose first sends fail as a full send buffer does (EAGAIN)."""

    def __init__(self, sock: socket.socket, refuse: int) -> None:
        self.sock, self.refuse = sock, refuse

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.refuse:
            self.refuse -= 1
            raise BlockingIOError
        return self.sock.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


async def test_sends_the_kernel_defers_go_out_in_order_when_the_socket_is_writable(silent: socket.socket) -> None:
    transport = SnmpTransport()
    channel = transport._socket("2c", socket.AF_INET, decode_message)
    channel.sock = _Busy(channel.sock, 1)  # type: ignore[assignment]
    to = silent.getsockname()
    try:
        for i in range(5):
            channel.sendto(bytes([i]), to)
        assert len(channel.backlog) == 5  # the first refused, the rest queued behind it
        got: list[bytes] = []

        def all_out() -> bool:
            got.extend(_drain(silent))
            return len(got) == 5

        await until(all_out, 30)
    finally:
        await transport.close()
    assert got == [bytes([i]) for i in range(5)] and not channel.backlog
