"""Hostile SNMP agents on loopback: garbage, forged and endless replies, against a real snmpd.

A hostile UDP "agent" (tests/hostile_snmp.py) sits in front of net-snmp's snmpd and answers each
request with bad datagrams first, then relays snmpd's real answer. The poll must take the real
answer (never the forged sysUpTime of 42.42 s), log no traceback and no part of the community, and
count what it ignored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from monitor import selfmetrics
from monitor.clock import ManualClock
from monitor.probes.snmp import WALK_PAUSE, SnmpProbe
from tests.hostile_snmp import FAKE_TICKS, HostileAgent
from tests.servers.common import free_port
from tests.servers.snmpd import COMMUNITY, Snmpd, snmpd
from tests.snmp_helpers import target, v2c, v3

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    with snmpd(tmp_path_factory.mktemp("snmpd"), free_port(socket.SOCK_DGRAM)) as a:
        yield a


@pytest.fixture
async def probe() -> AsyncIterator[SnmpProbe]:
    p = SnmpProbe()
    await p.start()
    yield p
    await p.close()


def ignored(reason: str) -> float:
    return selfmetrics.REGISTRY.get_sample_value("monitor_snmp_ignored_replies_total", {"reason": reason}) or 0.0


def leaks(text: str, secret: str = COMMUNITY) -> list[str]:
    """Every 4-character piece of ``secret`` that appears in ``text`` (the old leak was a prefix)."""
    return [secret[i:i + 4] for i in range(len(secret) - 3) if secret[i:i + 4] in text]


class _Handler:
    """Records calls of the loop's exception handler (where pysnmp's tracebacks went)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.calls.append(context)


async def test_garbage_and_truncated_replies_no_traceback_no_community_in_log(
    agent: Snmpd, probe: SnmpProbe, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    handler = _Handler()
    asyncio.get_running_loop().set_exception_handler(handler)
    hostile = await HostileAgent.start("proxy", noise=["garbage", "truncated"] * 5, upstream=("127.0.0.1", agent.port))
    before = ignored("malformed")
    t = target("noisy", "generic", v2c(COMMUNITY), hostile.port, timeout=2.0)
    try:
        results = [await probe.poll(t, 10.0) for _ in range(3)]
    finally:
        hostile.close()
    for r in results:
        assert r.ok, r.error
        assert r.uptime_s is not None and r.uptime_s != FAKE_TICKS / 100
    assert leaks(caplog.text + "".join(str(c.get("message")) + str(c.get("handle")) for c in handler.calls)) == []
    assert handler.calls == []
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]
    # at least 10 bad datagrams per request, every GET and GETBULK: all counted, none logged
    assert ignored("malformed") - before >= 30
    noisy = [r for r in caplog.records if r.getMessage() == "snmp replies ignored"]
    assert len(noisy) == 1, "one line per episode, not per datagram"
    assert getattr(noisy[0], "kv", {}).get("malformed", 0) >= 10


@pytest.mark.parametrize("kind", ["wrong-community", "wrong-id", "wrong-pdu", "other-port", "other-address"])
async def test_forged_replies_are_ignored_and_the_real_answer_taken(
    agent: Snmpd, probe: SnmpProbe, kind: str
) -> None:
    """Each forged reply carries sysUpTime 42.42 s and arrives before snmpd's real one."""
    hostile = await HostileAgent.start("proxy", noise=[kind] * 4, upstream=("127.0.0.1", agent.port))
    reason = {"wrong-community": "wrong_community", "wrong-id": "unknown_request", "wrong-pdu": "wrong_pdu",
              "other-port": "wrong_source", "other-address": "wrong_source"}[kind]
    before = ignored(reason)
    try:
        r = await probe.poll(target("forged", "generic", v2c(COMMUNITY), hostile.port, timeout=2.0), 10.0)
    finally:
        hostile.close()
    assert r.ok, r.error
    assert r.uptime_s is not None and r.uptime_s != FAKE_TICKS / 100
    assert ignored(reason) - before >= 4


@pytest.mark.parametrize("kind", ["wrong-community", "wrong-pdu", "other-port", "garbage"])
async def test_only_forged_replies_is_a_timeout(probe: SnmpProbe, kind: str) -> None:
    hostile = await HostileAgent.start(kind)
    try:
        r = await probe.poll(target("liar", "generic", v2c(COMMUNITY), hostile.port, timeout=0.3, retries=1), 5.0)
    finally:
        hostile.close()
    assert not r.ok and r.error == "timeout"
    assert hostile.requests == 2  # sent and resent once, then gave up: the forgeries changed nothing


async def test_v3_ignores_garbage_and_replies_from_another_port(agent: Snmpd, probe: SnmpProbe) -> None:
    """v3 has its own client: the same source check (a copy of the real reply from another port)."""
    hostile = await HostileAgent.start("proxy", noise=["garbage"] * 3, upstream=("127.0.0.1", agent.port),
                                       replay_from="other-port")
    before = ignored("malformed"), ignored("wrong_source")
    try:
        r = await probe.poll(target("v3", "generic", v3(), hostile.port, timeout=2.0), 10.0)
    finally:
        hostile.close()
    assert r.ok, r.error
    assert ignored("malformed") - before[0] >= 3
    assert ignored("wrong_source") - before[1] >= 1


async def _poll(probe: SnmpProbe, mode: str, deadline: float = 30.0, **settings: Any) -> tuple[Any, HostileAgent]:
    """One v2c poll (generic profile) of a hostile agent in ``mode``; ``settings`` change the target."""
    hostile = await HostileAgent.start(mode)
    try:
        tid = "-".join([mode, *(f"{k}={v}" for k, v in settings.items())])  # a cut walk pauses per target
        t = _with(target(tid, "generic", v2c(COMMUNITY), hostile.port, timeout=2.0), **settings)
        return await probe.poll(t, deadline), hostile
    finally:
        hostile.close()


async def test_endless_getbulk_agent_ends_with_our_error_within_bounds(probe: SnmpProbe) -> None:
    r, hostile = await _poll(probe, "endless")
    assert not r.ok and r.error == "walk cut: more than 10000 rows"
    # the generic profile walks 8+ columns side by side, 25 rows each per GETBULK: ~50 requests
    # (the old code kept asking until the poll deadline: 328 in 12 s)
    assert hostile.requests < 100
    assert r.duration_s < 30.0


async def test_walk_limits_come_from_the_target(probe: SnmpProbe) -> None:
    rows, _ = await _poll(probe, "endless", walk_max_rows=100)
    size, _ = await _poll(probe, "endless", walk_max_bytes=2048)
    assert rows.error == "walk cut: more than 100 rows"
    assert size.error == "walk cut: more than 2048 bytes"


async def test_non_increasing_oid_ends_the_walk_with_our_error(probe: SnmpProbe) -> None:
    r, hostile = await _poll(probe, "repeat", 10.0)
    assert not r.ok and r.error == "walk cut: agent sent a non-increasing OID"
    assert hostile.requests < 5


def _with(t: Any, **changes: Any) -> Any:
    assert t.snmp is not None
    return dataclasses.replace(t, snmp=dataclasses.replace(t.snmp, **changes))


async def test_a_cut_walk_pauses_table_walks_for_an_hour_and_scalars_go_on(caplog: pytest.LogCaptureFixture) -> None:
    """An endless agent must not cost a 10,000-row walk every poll: after a cut, only GETs for an hour."""
    caplog.set_level(logging.INFO)
    clock = ManualClock()
    probe = SnmpProbe(clock=clock)
    await probe.start()
    hostile = await HostileAgent.start("endless")
    t = target("endless", "generic", v2c(COMMUNITY), hostile.port, timeout=2.0)
    try:
        cut = await probe.poll(t, 30.0)
        walked = hostile.requests
        clock.advance(60.0)
        paused = await probe.poll(t, 30.0)
        paused_requests = hostile.requests - walked
        clock.advance(WALK_PAUSE)
        again = await probe.poll(t, 30.0)
    finally:
        hostile.close()
        await probe.close()
    assert cut.error == "walk cut: more than 10000 rows" and walked > 20
    assert paused.ok and paused.uptime_s == FAKE_TICKS / 100  # the scalars (this agent's fake ones)
    assert not [m for m in paused.metrics if m.labels], "no table rows while paused"
    assert paused_requests <= 2, "GETs of the scalars only"
    assert again.error == "walk cut: more than 10000 rows"
    assert [r.getMessage() for r in caplog.records].count("snmp table walks paused") == 2
