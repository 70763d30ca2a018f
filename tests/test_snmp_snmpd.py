"""The generic profile against a real net-snmp snmpd on loopback (v2c and v3), and failure modes."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.clock import ManualClock
from monitor.errors import ConfigError, ProbeSetupError
from monitor.probes.snmp import SnmpProbe
from tests.servers.common import free_port, until
from tests.servers.snmpd import COMMUNITY, Snmpd, snmpd
from tests.snmp_helpers import target, v2c, v3

pytestmark = pytest.mark.servers
SECRETS = (COMMUNITY, "authpass123", "privpass123", "wrongpass999")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    with snmpd(tmp_path_factory.mktemp("snmpd"), free_port(socket.SOCK_DGRAM)) as a:
        yield a


def _loopback_traffic(nbytes: int) -> None:
    """Send UDP datagrams to ourselves over lo so its octet counters move."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        chunk = b"x" * 60000
        for _ in range(nbytes // len(chunk) + 1):
            tx.sendto(chunk, rx.getsockname())
            rx.recv(65536)


@pytest.mark.parametrize("version", ["2c", "3"])
async def test_generic_profile_uptime_interfaces_and_rates(agent: Snmpd, version: str) -> None:
    clock = ManualClock()
    probe = SnmpProbe(clock=clock)
    await probe.start()
    cred = v2c(COMMUNITY) if version == "2c" else v3()
    t = target("host", "generic", cred, agent.port)
    try:
        first = await probe.poll(t, 5.0)
        assert first.ok, first.error
        assert first.uptime_s is not None and first.uptime_s >= 0
        names = {dict(m.labels).get("ifname") for m in first.metrics if m.name == "if_oper_status"}
        assert "lo" in names
        assert not any(m.name == "if_in_bps" for m in first.metrics)  # first poll: no rate yet
        _loopback_traffic(5_000_000)
        # snmpd caches IF-MIB for a few seconds: poll until the counter moved (real deadline),
        # each poll 10 virtual seconds after the previous one
        lo_in: list[float] = []
        deadline = time.monotonic() + 15
        while not any(lo_in) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            clock.advance(10.0)
            second = await probe.poll(t, 5.0)
            assert second.ok and not second.rebooted
            lo_in = [m.value for m in second.metrics if m.name == "if_in_bps" and m.labels == (("ifname", "lo"),)]
            assert lo_in, "a rate from the second poll on"
    finally:
        await probe.close()
    # ≥ 5 MB between two polls 10 (virtual) seconds apart → ≥ 4 Mbit/s
    assert lo_in[0] >= 5_000_000 * 8 / 10
    assert any(m.name == "if_in_errors_per_s" for m in second.metrics)


async def test_wrong_v3_key_is_an_auth_error_and_secrets_stay_out(
    agent: Snmpd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    probe = SnmpProbe()
    await probe.start()
    try:
        result = await probe.poll(target("v3bad", "generic", v3(auth="wrongpass999"), agent.port), 5.0)
        good = await probe.poll(target("v2", "generic", v2c(COMMUNITY), agent.port), 5.0)
    finally:
        await probe.close()
    assert not result.ok and result.error is not None and result.error.startswith("auth:")
    text = repr(result) + repr(good) + caplog.text
    for secret in SECRETS:
        assert secret not in text


async def test_stopped_agent_times_out_within_deadline(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    with snmpd(tmp_path / "a", port) as a:
        a.process.stop()
        probe = SnmpProbe()
        await probe.start()
        t0 = time.monotonic()
        try:
            result = await probe.poll(target("gone", "generic", v2c(COMMUNITY), port, timeout=0.5, retries=20), 1.5)
        finally:
            await probe.close()
    # the 1.5 s deadline, not the 10.5 s of 21 attempts (the margin is for a loaded machine)
    assert time.monotonic() - t0 < 5.0
    assert not result.ok and result.error == "timeout"


async def test_unknown_profile_and_bad_profile_files(tmp_path: Path) -> None:
    probe = SnmpProbe()
    with pytest.raises(ProbeSetupError, match="unknown SNMP profile 'nope'"):
        await probe.poll(target("x", "nope", v2c(COMMUNITY), 161), 1.0)
    (tmp_path / "bad.yaml").write_text(
        "name: bad\nextends: missing\nscalars:\n  - {name: x, oid: 1.3.6.a, colour: red}\n"
        "tables:\n  - {name: t, index: [{decode: base64}], columns: []}\n"
    )
    with pytest.raises(ConfigError) as err:
        SnmpProbe(profile_dirs=[tmp_path])
    text = str(err.value)
    assert "bad.yaml: scalars[0].oid: expected a numeric OID" in text
    assert "bad.yaml: scalars[0].colour: unknown key" in text
    assert "bad.yaml: tables[0].index[0].decode: expected one of" in text
    assert "bad.yaml: tables[0].columns: expected at least one column" in text
    (tmp_path / "bad.yaml").write_text("name: bad\nextends: missing\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: extends: unknown profile 'missing'"):
        SnmpProbe(profile_dirs=[tmp_path])


def _open_sockets() -> set[str]:
    """This process's open sockets, by inode (what a leaked transport keeps until the loop ends)."""
    fds = Path("/proc/self/fd")
    found = set()
    for fd in fds.iterdir():
        try:
            link = str(fd.readlink())
        except OSError:  # closed since the listing
            continue
        if link.startswith("socket:"):
            found.add(link)
    return found


@pytest.mark.parametrize("version", ["2c", "3"])
async def test_first_polls_at_once_share_one_socket_closed_with_the_probe(agent: Snmpd, version: str) -> None:
    """The daemon's first round polls many agents at once: every first request finds no socket yet
    and opens one while the others wait for theirs. One socket per family is kept and closed with the
    probe; before, each concurrent first request opened its own and all but the last stayed open
    until the event loop ended (ResourceWarning: unclosed transport in the daemon tests)."""
    before = _open_sockets()
    probe = SnmpProbe()
    await probe.start()
    cred = v2c(COMMUNITY) if version == "2c" else v3()
    try:
        results = await asyncio.gather(*(probe.poll(target(f"t{i}", "generic", cred, agent.port, timeout=5.0), 10.0)
                                         for i in range(6)))
        assert all(r.ok for r in results), [r.error for r in results]
        assert len(_open_sockets() - before) == 1
    finally:
        await probe.close()
    # a transport's socket is closed on the loop's next turn
    await until(lambda: _open_sockets() - before == set(), 30, "the probe's sockets closed")
