"""ICMP against test hosts in network namespaces, and the unprivileged (datagram) and no-permission paths.

The datagram path cannot be tested in the root namespace here (``ping_group_range`` is "1 0"), so it
runs the probe in a subprocess inside a namespace with its own sysctl. The "neither possible" path
runs it without capabilities, in nobody's group, in a namespace that keeps the default "1 0".
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.probes.icmp import IcmpProbe
from tests import netns
from tests.netns import NetnsLab
from tests.servers.common import require_binary

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

lab = netns.netns_lab  # the shared fixture, under a short name
REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# Without any capability and in nobody's group, but as the checkout's owner: the child must read the
# checkout and its venv, whose parent folders may be private (a clone in a mode-0700 temporary folder,
# issue 18). Without CAP_DAC_OVERRIDE only the owner's bits grant access, so the owner's uid is kept;
# with an empty inheritable and bounding set the child gets no capability at execve, root or not.
UNPRIVILEGED = ["setpriv", f"--reuid={REPO.stat().st_uid}", "--regid=65534", "--clear-groups", "--inh-caps=-all",
             "--bounding-set=-all"]

CHILD = """
import asyncio, json, os, sys
from monitor.errors import ProbeSetupError
from monitor.probes.icmp import IcmpProbe

async def main(mode, addresses):
    probe = IcmpProbe(mode=mode)
    try:
        await probe.start()
    except ProbeSetupError as exc:
        print(json.dumps({"setup_error": str(exc)}))
        return
    out = {"mode": probe.mode}
    for a in addresses:
        r = await probe.ping(a, count=3, spacing=0.005, per_ping_timeout=float(os.environ.get("PER_PING_TIMEOUT", "2")))
        out[a] = [r.sent, r.received, r.error]
    await probe.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2:]))
"""


def run_child(namespace: str, mode: str, *addresses: str, prefix: tuple[str, ...] = (),
              per_ping_timeout: float = 2.0) -> dict[str, object]:
    argv = ["ip", "netns", "exec", namespace, *prefix, PYTHON, "-c", CHILD, mode, *addresses]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
           "PER_PING_TIMEOUT": str(per_ping_timeout)}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


async def ping_until(probe: IcmpProbe, address: str, answered: bool, timeout: float = 15) -> None:
    """Ping until the host (does not) answer, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        r = await probe.ping(address, count=1, per_ping_timeout=0.3)
        if r.ok == answered:
            return
        assert time.monotonic() < deadline, f"{address} still {'silent' if answered else 'answering'}"


@pytest.fixture
async def probe() -> AsyncIterator[IcmpProbe]:
    p = IcmpProbe()
    await p.start()
    yield p
    await p.close()


async def test_host_link_down_then_up(lab: NetnsLab, probe: IcmpProbe) -> None:
    host = lab.add_host()
    await ping_until(probe, host.address, answered=True)
    r = await probe.ping(host.address, count=3, spacing=0.01)
    assert (r.received, r.error) == (3, None)

    host.link_down()
    r = await probe.ping(host.address, count=3, spacing=0.01, per_ping_timeout=0.5)
    assert r.received == 0 and r.error in ("timeout", "unreachable")

    host.link_up()
    await ping_until(probe, host.address, answered=True)
    assert (await probe.ping(host.address, count=3, spacing=0.01)).received == 3


async def test_partial_loss_is_measured(lab: NetnsLab, probe: IcmpProbe) -> None:
    require_binary("nft")
    host = lab.add_host()
    await ping_until(probe, host.address, answered=True)
    host.nft("""table inet loss {
        chain in { type filter hook input priority 0; icmp type echo-request numgen random mod 100 < 50 drop; }
    }""")
    r = await probe.ping(host.address, count=200, spacing=0.001, per_ping_timeout=1)
    # Binomial(200, 0.5): outside 40..160 has probability < 1e-17.
    assert r.sent == 200 and 40 <= r.received <= 160, r
    assert 20.0 <= r.loss_pct <= 80.0
    assert r.error is None and r.jitter_ms is not None


async def test_ipv4_hosts_in_two_namespaces_answer_concurrently(lab: NetnsLab, probe: IcmpProbe) -> None:
    hosts = [lab.add_host() for _ in range(3)]
    for h in hosts:
        await ping_until(probe, h.address, answered=True)
    results = await asyncio.gather(*(probe.ping(h.address, count=5, spacing=0.002) for h in hosts))
    assert [r.received for r in results] == [5, 5, 5]


def test_datagram_mode_in_a_namespace_that_allows_it(lab: NetnsLab) -> None:
    require_binary("setpriv")
    ns = lab.namespace()
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"],
                   check=True)
    with_v6 = subprocess.run(["ip", "-n", ns, "-6", "addr", "show", "lo"], capture_output=True, text=True,
                             check=True).stdout.find("::1") >= 0
    addresses = ["127.0.0.1", "127.9.8.7"] + (["::1"] if with_v6 else [])
    forced = run_child(ns, "dgram", *addresses)
    assert forced == {"mode": "dgram", **{a: [3, 3, None] for a in addresses}}
    # Without CAP_NET_RAW, "auto" falls back to datagram sockets by itself.
    auto = run_child(ns, "auto", "127.0.0.1", prefix=tuple(UNPRIVILEGED))
    assert auto == {"mode": "dgram", "127.0.0.1": [3, 3, None]}


def test_the_unprivileged_child_reads_a_checkout_inside_private_folders(tmp_path: Path) -> None:
    """A clone in a mode-0700 folder: the child without capabilities still reads it (issue 18: as
    nobody it could not, and the two tests above failed there)."""
    require_binary("setpriv")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "probe.py").write_text("print('read')\n")
    os.chown(private, REPO.stat().st_uid, -1)
    argv = [*UNPRIVILEGED, PYTHON, str(private / "probe.py")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (0, "read\n"), proc.stderr
    caps = subprocess.run([*UNPRIVILEGED, "grep", "^CapEff", "/proc/self/status"], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    assert caps.split() == ["CapEff:", "0000000000000000"]


def test_ipv4_mapped_ipv6_address_answers_over_ipv4(lab: NetnsLab) -> None:
    """Raw and datagram: ``::ffff:127.0.0.1`` is 127.0.0.1 (as ICMPv6 it would not be, see _parse_address).

    In a bare namespace (lo only, no IPv6 route to anywhere): should the probe send ICMPv6 again, the
    send fails there instead of following the machine's default route.
    """
    ns = lab.namespace()
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"],
                   check=True)
    for mode in ("raw", "dgram"):
        assert run_child(ns, mode, "::ffff:127.0.0.1") == {"mode": mode, "::ffff:127.0.0.1": [3, 3, None]}


def test_datagram_mode_reports_unreachable_from_the_error_queue(lab: NetnsLab) -> None:
    ns = lab.namespace()
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"],
                   check=True)
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, text=True, input="""table inet t {
        chain in { type filter hook input priority 0;
            ip daddr 127.0.0.5 icmp type echo-request reject with icmp type host-unreachable; }
    }""")
    started = time.monotonic()
    out = run_child(ns, "dgram", "127.0.0.5", "127.0.0.6", per_ping_timeout=10)
    assert out == {"mode": "dgram", "127.0.0.5": [3, 0, "unreachable"], "127.0.0.6": [3, 3, None]}
    # three 10 s timeouts would take 30 s; the rest is the child's start-up (seconds on a loaded machine)
    assert time.monotonic() - started < 15


SPOOF_CHILD = """
import asyncio, json
from monitor.probes.icmp import IcmpProbe
from tests.icmp_forge import neighbour_attack

async def main():
    probe = IcmpProbe(mode="dgram")
    await probe.start()
    try:
        results = await neighbour_attack(probe, ("127.0.0.2", "127.0.0.3"), "127.0.0.5")
    finally:
        await probe.close()
    print(json.dumps({"mode": probe.mode, "received": [[r.address, r.received] for r in results]}))

asyncio.run(main())
"""


def test_datagram_mode_ignores_replies_forged_from_neighbours_requests(lab: NetnsLab) -> None:
    """Issue 10's neighbour attack (tests/icmp_forge.py) on a datagram socket: the kernel rewrites the
    identifier and routes replies to the socket by it, so the spoofer sniffs it from the requests and
    gets everything right but the token, which the payload still carries."""
    ns = lab.namespace()
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"],
                   check=True)
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, text=True, input="""table inet t {
        chain in { type filter hook input priority 0; ip daddr 127.0.0.5 icmp type echo-request drop; }
    }""")
    argv = ["ip", "netns", "exec", ns, PYTHON, "-c", SPOOF_CHILD]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "mode": "dgram", "received": [["127.0.0.2", 1], ["127.0.0.5", 0], ["127.0.0.3", 1]],
    }


def test_clear_error_when_neither_raw_nor_datagram_is_allowed(lab: NetnsLab) -> None:
    require_binary("setpriv")
    ns = lab.namespace()  # a new namespace keeps the default ping_group_range "1 0"
    out = run_child(ns, "auto", "127.0.0.1", prefix=tuple(UNPRIVILEGED))
    # The interpreter path is resolved as nobody sees it, so only that part may vary.
    assert re.fullmatch(re.escape(
        "cannot open an ICMP socket; tried raw ICMP socket: EPERM Operation not permitted; "
        "datagram ICMP socket: EACCES Permission denied. "
        "Fix: give the process CAP_NET_RAW (run as root, `setcap cap_net_raw+ep PY`, "
        "or AmbientCapabilities=CAP_NET_RAW in its systemd unit), "
        "or allow unprivileged ICMP for group 65534: "
        '`sysctl -w net.ipv4.ping_group_range="0 2147483647"` (now "1 0")'
    ).replace("PY", r"/\S+/python[0-9.]*"), str(out["setup_error"]))
    raw_only = run_child(ns, "raw", "127.0.0.1", prefix=tuple(UNPRIVILEGED))
    assert re.fullmatch(re.escape(
        "cannot open an ICMP socket; tried raw ICMP socket: EPERM Operation not permitted. "
        "Fix: give the process CAP_NET_RAW (run as root, `setcap cap_net_raw+ep PY`, "
        "or AmbientCapabilities=CAP_NET_RAW in its systemd unit)"
    ).replace("PY", r"/\S+/python[0-9.]*"), str(raw_only["setup_error"]))


STARVED_CHILD = """
import asyncio, json, socket, struct, sys, time
from monitor.probes.icmp import IcmpProbe

FLOOD = 10_000  # another pinger's replies queued ahead of ours: more than one reader callback reads

def flood_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.setsockopt(255, 1, struct.pack("I", 0xFFFFFFFF))  # ICMP_FILTER: it reads nothing itself
    packet = bytearray(struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + bytes(56))
    total = sum(struct.unpack("!%dH" % (len(packet) // 2), packet))
    total = (total >> 16) + (total & 0xFFFF)
    struct.pack_into("!H", packet, 2, ~(total + (total >> 16)) & 0xFFFF)
    return s, bytes(packet)

async def main(mode):
    probe = IcmpProbe(mode=mode)
    await probe.start()
    flood, request = flood_socket()
    targets = [f"127.0.1.{i}" for i in range(1, 201)]
    try:
        # warm: address cache; and until the kernel stamps replies on arrival (turned on in deferred work)
        assert all(r.ok for r in await probe.ping_many(targets, per_ping_timeout=2))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stamped = asyncio.create_task(probe.ping("127.0.0.1", count=1, per_ping_timeout=0.05))
            while not probe._socks[4].pending:
                await asyncio.sleep(0)
            time.sleep(0.1)
            if (await stamped).ok:
                break

        async def starved_batch():
            for _ in range(FLOOD):
                flood.sendto(request, ("127.0.2.1", 0))
            return await probe.ping_many(targets, count=1, per_ping_timeout=0.3)

        batch = asyncio.create_task(starved_batch())
        asyncio.get_running_loop().call_soon(time.sleep, 0.8)  # right after the batch is sent: starved
        results = await batch
    finally:
        flood.close()
        await probe.close()
    print(json.dumps({"mode": probe.mode, "received": sum(r.received for r in results),
                      "errors": sorted({str(r.error) for r in results})}))

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize("mode", ["raw", "dgram"])
def test_a_starved_batch_behind_another_pingers_flood_loses_nothing(lab: NetnsLab, mode: str) -> None:
    """Issue 12's false DOWNs: the loop starved past a batch's timeout while 10,000 replies to another
    process's pings sit ahead of the batch's 200 in a raw socket (every raw ICMP socket gets a copy of
    every reply). The reader callback takes 4,096 at a time, so the batch's deadline fired with its
    replies still queued: all 200 came back lost. Now the deadline drains the socket first, and replies
    read late are judged by the kernel's receive time. A datagram socket never sees the flood (the
    kernel routes replies by identifier) but reads its replies late all the same."""
    ns = lab.namespace()  # nobody else's ICMP here, unlike the machine's shared loopback
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"],
                   check=True)
    argv = ["ip", "netns", "exec", ns, PYTHON, "-c", STARVED_CHILD, mode]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"mode": mode, "received": 200, "errors": ["None"]}
