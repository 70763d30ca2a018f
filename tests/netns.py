"""Test hosts in network namespaces, behind a bridge in the root namespace (needs root).

Each :class:`NetnsLab` takes a free /24 from the benchmarking range 198.18.0.0/15, puts a bridge with
``.1`` in the root namespace and adds hosts (``.11``, ``.12``, ...) each in its own namespace behind a
veth pair. Tests can take a host's link down and up, run commands inside it (nftables rules for
packet loss, sysctls) and always get everything removed afterwards, even when the test fails.
Namespaces and bridges are named after the creating PID, so leftovers of a killed run are removed
by the next lab.

Use the ``netns_lab`` fixture (import it into the test module) or ``with NetnsLab() as lab:``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

NETNS_PREFIX = "mtn-"
BRIDGE_PREFIX = "mtb"
LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
LAB_RANGE6 = ipaddress.IPv6Network("2001:db8::/32")  # IPv6 documentation range: test namespaces only
FALLBACK_METRIC = 1 << 30  # + the owner's PID: metric of a lab's "unreachable" IPv6 fallback route
_labs = 0


def sh(*argv: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its stderr so the test says what went wrong."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@dataclass
class NetnsHost:
    namespace: str
    address: str  # inside the namespace, on eth0
    veth: str  # root-namespace end, a port of the lab's bridge

    def exec_argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def run(self, *argv: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return sh(*self.exec_argv(*argv), input=input)

    def link_down(self) -> None:
        sh("ip", "-n", self.namespace, "link", "set", "eth0", "down")

    def link_up(self) -> None:
        sh("ip", "-n", self.namespace, "link", "set", "eth0", "up")

    def nft(self, ruleset: str) -> None:
        """Load an nftables ruleset inside the host (e.g. random drop of echo requests)."""
        self.run("nft", "-f", "-", input=ruleset)


class NetnsLab:
    """A bridge, a /24 from 198.18.0.0/15 and any number of namespace hosts; cleaned up on exit."""

    def __init__(self) -> None:
        global _labs
        _labs += 1
        pid = os.getpid()
        self.tag = f"{pid}-{_labs}"
        self.bridge = f"{BRIDGE_PREFIX}{pid}{_labs % 100:02d}"
        self.network: ipaddress.IPv4Network | None = None
        self.hosts: list[NetnsHost] = []
        self.namespaces: list[str] = []
        self._bridge_up = False

    @property
    def gateway(self) -> str:
        assert self.network is not None
        return str(self.network.network_address + 1)

    def __enter__(self) -> NetnsLab:
        remove_stale()
        try:
            self._create_bridge()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _create_bridge(self) -> None:
        self.network = _free_subnet()
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self._bridge_up = True
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def namespace(self) -> str:
        """A bare namespace with only ``lo`` up (e.g. to run a probe under other sysctls)."""
        name = f"{NETNS_PREFIX}{self.tag}-{len(self.namespaces)}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def add_host(self) -> NetnsHost:
        assert self.network is not None, "use the lab as a context manager"
        index = len(self.hosts)
        namespace = self.namespace()
        veth = f"v{self.bridge[len(BRIDGE_PREFIX):]}h{index}"
        address = str(self.network.network_address + 11 + index)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        host = NetnsHost(namespace, address, veth)
        self.hosts.append(host)
        sh("ip", "link", "set", veth, "master", self.bridge)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", namespace, "link", "set", "eth0", "up")
        return host

    def cleanup(self) -> None:
        """Delete namespaces (which removes their veth pairs) and the bridge; never raises."""
        for name in self.namespaces:
            sh("ip", "netns", "del", name, check=False)
        for host in self.hosts:  # normally gone with the namespace already
            if _link_exists(host.veth):
                sh("ip", "link", "del", host.veth, check=False)
        if self._bridge_up:
            sh("ip", "link", "del", self.bridge, check=False)
        self.namespaces.clear()
        self.hosts.clear()
        self._bridge_up = False


def _link_exists(name: str) -> bool:
    return sh("ip", "link", "show", name, check=False).returncode == 0


def _free_subnet() -> ipaddress.IPv4Network:
    """A random /24 of 198.18.0.0/15 that no root-namespace interface uses (other labs may run)."""
    used: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for link in json.loads(sh("ip", "-j", "-4", "addr").stdout or "[]"):
        for a in link.get("addr_info", []):
            net = ipaddress.ip_network(f"{a['local']}/{a.get('prefixlen', 32)}", strict=False)
            if net.overlaps(LAB_RANGE):
                used.add(net)
    candidates = list(LAB_RANGE.subnets(new_prefix=24))[1:]  # keep 198.18.0.0/24 for hand-made setups
    random.shuffle(candidates)
    for net in candidates:
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /24 left in 198.18.0.0/15")


def free_subnet6() -> ipaddress.IPv6Network:
    """A random /48 of 2001:db8::/32 that no root-namespace address or route uses (other labs may run)."""
    seen = [f"{a['local']}/{a['prefixlen']}" for link in json.loads(sh("ip", "-j", "-6", "addr").stdout or "[]")
            for a in link.get("addr_info", [])]
    seen += [r.get("dst", "") for r in json.loads(sh("ip", "-j", "-6", "route").stdout or "[]")]
    used = []
    for text in seen:
        with contextlib.suppress(ValueError):  # "default", link-local with a scope ...
            net = ipaddress.ip_network(text, strict=False)
            if isinstance(net, ipaddress.IPv6Network) and net.overlaps(LAB_RANGE6):
                used.append(net)
    for n in random.sample(range(1, 0x10000), 64):  # 2001:db8::/48 is left for hand-made setups
        net = ipaddress.IPv6Network((int(LAB_RANGE6.network_address) + (n << 80), 48))
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /48 found in 2001:db8::/32")


def add_fallback6(net: ipaddress.IPv6Network) -> None:
    """An ``unreachable`` route for the lab's IPv6 prefix at the lowest priority, tagged with our PID.

    The prefix is routed into the lab's namespaces; if that route ever went away (a link deleted, a
    host that ignores routes whose link is down) while something still pings the lab, the packets
    would follow the host's default route out of the machine. This route catches them instead.
    """
    sh("ip", "-6", "route", "replace", "unreachable", str(net), "metric", str(FALLBACK_METRIC + os.getpid()))


def remove_fallback6(net: ipaddress.IPv6Network, pid: int | None = None) -> None:
    metric = FALLBACK_METRIC + (os.getpid() if pid is None else pid)
    sh("ip", "-6", "route", "del", "unreachable", str(net), "metric", str(metric), check=False)


def _remove_stale_fallbacks() -> None:
    for route in json.loads(sh("ip", "-j", "-6", "route", "show", "type", "unreachable", check=False).stdout or "[]"):
        owner = int(route.get("metric", 0)) - FALLBACK_METRIC
        with contextlib.suppress(ValueError):
            net = ipaddress.ip_network(route.get("dst", ""))
            ours = isinstance(net, ipaddress.IPv6Network) and net.subnet_of(LAB_RANGE6) and 0 < owner < 1 << 23
            if ours and not _pid_alive(owner):
                remove_fallback6(ipaddress.IPv6Network(net), owner)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> None:
    """Remove namespaces, bridges and IPv6 fallback routes left by lab owners that no longer run (killed runs)."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(NETNS_PREFIX):
            with contextlib.suppress(ValueError, IndexError):
                if not _pid_alive(int(name[len(NETNS_PREFIX):].split("-")[0])):
                    sh("ip", "netns", "del", name, check=False)
    for link in json.loads(sh("ip", "-j", "link", "show", "type", "bridge", check=False).stdout or "[]"):
        name = link.get("ifname", "")
        if name.startswith(BRIDGE_PREFIX) and name[len(BRIDGE_PREFIX):].isdigit():
            pid = int(name[len(BRIDGE_PREFIX):-2] or 0)
            if pid and not _pid_alive(pid):
                sh("ip", "link", "del", name, check=False)
    _remove_stale_fallbacks()


@pytest.fixture
def netns_lab() -> Iterator[NetnsLab]:
    """A fresh lab per test; skipped when not root."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with NetnsLab() as lab:
        yield lab


@contextlib.contextmanager
def nft_table(body: str, *, family: str = "inet", namespace: str | None = None) -> Iterator[str]:
    """Create an nftables table from ``body`` (its chains and rules), yield its name, always delete it.

    E.g. a chain ``in { type filter hook input priority 0; ip daddr 127.1.2.3 icmp type echo-request
    drop; }`` makes one loopback address stop answering while the others keep working.
    """
    global _labs
    _labs += 1
    name = f"mt_{os.getpid()}_{_labs}"
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    sh(*prefix, "nft", "-f", "-", input=f"table {family} {name} {{\n{body}\n}}\n")
    try:
        yield name
    finally:
        sh(*prefix, "nft", "delete", "table", family, name, check=False)
