"""An emulated ISP in network namespaces: a real routed network the daemon polls from the root namespace.

Layout (one /24 of 198.18.0.0/15, split into /30 point-to-point links and one /27 LAN per AP; every
link also dual-stack with a /64 of one /48 of 2001:db8::/32)::

    root (monitor) --uplink-- core --t1-- tower-1 --a1-- ap-1  (CPEs .33-.40)
                                  |               \\-a2-- ap-2  (CPEs .65-.72)
                                  \\--t2-- tower-2 --a3-- ap-3  (IPv6: CPEs <48>:103::1-7)
                                                  \\-a4-- ap-4  (CPEs .129-.135)

ap-3 and its CPEs are monitored over IPv6 only (:data:`IPV6_NODES`): the inventory lists their IPv6
addresses, so the daemon pings them by ICMPv6 and polls ap-3's agent over UDP/IPv6.

Every router namespace forwards and has static routes, so a cut link really makes everything
behind it unreachable. CPEs are addresses on ``lo`` in their AP's namespace (this kernel has no dummy module) (the AP
answers for them, as a customer radio behind it would). A link is cut by setting its
*downstream* end down: the upstream router then sees its port lose carrier (admin up, oper down,
exactly what ``snmpd`` in that namespace reports as ifOperStatus), and the downstream router's
static routes, which the kernel flushes with the link, are put back when it comes up again.

Names carry the creating PID (namespaces ``mtn-<pid>-<node>`` as in ``tests/netns.py``, the temp
folder ``mlab-<pid>-N``), so a later lab removes what a killed run left behind; processes started
inside the namespaces get SIGKILL when the test process dies.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.netns import (
    NETNS_PREFIX,
    _free_subnet,
    _link_exists,
    _pid_alive,
    add_fallback6,
    free_subnet6,
    remove_fallback6,
    sh,
)
from tests.netns import remove_stale as remove_stale_namespaces

FOLDER_PREFIX = "mlab-"
ROOT_LINK_PREFIX = "mlu"
CPES_PER_AP = (8, 8, 7, 7)  # 30 customers
SILENCE_TABLE = "lab_silence"
LOSS_TABLE = "lab_loss"
UPLINK_TABLE = "lab_uplink"  # a host's own uplink cut (nftables inside the host's namespace)
HOSTS_AT = 160  # hosts' /30s from here on in the lab's /24 (the LANs end at .159)
IPV6_NODES = ("ap-3",)  # monitored over IPv6, with the CPEs behind them
# Inside every router namespace: forward IPv6 too; no duplicate address detection (a link coming
# back would answer only after DAD, ~1-2 s late); keep IPv6 addresses on a link set down (the
# kernel flushes them by default, unlike IPv4's).
_V6_SYSCTLS = ("net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.all.accept_dad=0",
               "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.keep_addr_on_down=1",
               "net.ipv6.conf.default.keep_addr_on_down=1")


@dataclass
class Link:
    """A veth pair: ``up_ns``/``up_if`` toward the core (None = root namespace), ``down_*`` away from it."""

    name: str
    up_ns: str | None
    up_if: str
    up_addr: str
    down_ns: str
    down_if: str
    down_addr: str
    up_addr6: str = ""
    down_addr6: str = ""


@dataclass
class Router:
    """One infrastructure namespace: its management address and its static routes."""

    node: str  # inventory id (core, tower-1, ap-1 ...)
    kind: str
    namespace: str
    address: str
    parent: str | None
    address6: str = ""
    uplink: Link | None = None
    routes: list[tuple[str, str]] = field(default_factory=list)  # (prefix, via), either family
    cpes: list[str] = field(default_factory=list)  # the monitored addresses on lo (APs only)

    @property
    def target(self) -> str:
        """The address the monitor polls it at (its inventory address)."""
        return self.address6 if self.node in IPV6_NODES else self.address


class IspLab:
    """Build with ``with IspLab() as lab:``; everything is removed on exit, also after failures."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.routers: dict[str, Router] = {}
        self.links: dict[str, Link] = {}
        self.hosts: dict[str, Router] = {}  # machines hanging off a router (a remote poller's), not polled
        self.root_link = f"{ROOT_LINK_PREFIX}{self.pid}"
        self.net: ipaddress.IPv4Network | None = None
        self.net6: ipaddress.IPv6Network | None = None
        self._namespaces: list[str] = []

    # ------------------------------------------------------------------ build

    def __enter__(self) -> IspLab:
        remove_stale()
        try:
            self._build()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _addr(self, host: int) -> str:
        assert self.net is not None
        return str(self.net.network_address + host)

    def _net6(self, subnet: int) -> ipaddress.IPv6Network:
        """The /64 number ``subnet`` of the lab's /48."""
        assert self.net6 is not None
        return ipaddress.IPv6Network((int(self.net6.network_address) + (subnet << 64), 64))

    def _build(self) -> None:
        self.net = _free_subnet()
        self.net6 = free_subnet6()
        add_fallback6(self.net6)  # before any route into the lab: see its docstring
        a = self._addr
        core = self._router("core", "router", None, a(2))
        self._link("uplink", None, self.root_link, a(1), core, "wan0", 0)
        self._root_routes()
        core.routes += [("default", a(1)), ("default", self._links_up6("uplink"))]
        for t in (1, 2):
            tower = self._router(f"tower-{t}", "tower", "core", a(4 * t + 2))
            self._link(f"t{t}", core, f"t{t}", a(4 * t + 1), tower, "wan0", t)
            tower.routes += [("default", a(4 * t + 1)), ("default", self._links_up6(f"t{t}"))]
            for k in (2 * t - 1, 2 * t):
                base = 8 + 4 * k  # /30 of the tower-AP link: .12, .16, .20, .24
                ap = self._router(f"ap-{k}", "ap", tower.node, a(base + 2))
                self._link(f"a{k}", tower, f"a{k}", a(base + 1), ap, "wan0", 0x10 + k)
                ap.routes += [("default", a(base + 1)), ("default", self._links_up6(f"a{k}"))]
                lan = ipaddress.IPv4Network(f"{a(32 * k)}/27")
                lan6 = self._net6(0x100 + k)
                tower.routes += [(str(lan), ap.address), (str(lan6), ap.address6)]
                core.routes += [(f"{a(base)}/30", tower.address), (str(lan), tower.address),
                                (str(self._net6(0x10 + k)), tower.address6), (str(lan6), tower.address6)]
                self._lan(ap, lan, lan6, CPES_PER_AP[k - 1])
        for router in self.routers.values():
            self.apply_routes(router)

    def _links_up6(self, link: str) -> str:
        return self.links[link].up_addr6

    def _root_routes(self) -> None:
        """The root namespace (the monitor) reaches the whole lab, both families, through the core.

        The core's IPv6 neighbour entry is pinned. The root namespace is a host (IPv6 forwarding
        off), and a host's route lookup skips a route whose gateway failed neighbour discovery
        (the uplink-cut scenario) and re-probes that gateway only once a minute: without the pin
        the lab's prefix would fall to the fallback route (see ``add_fallback6``; without that,
        to the machine's default route) until then.
        """
        core = self.routers["core"]
        sh("ip", "route", "replace", str(self.net), "via", core.address, "dev", self.root_link)
        mac = json.loads(sh("ip", "-n", core.namespace, "-j", "link", "show", "wan0").stdout)[0]["address"]
        sh("ip", "-6", "neigh", "replace", core.address6, "lladdr", mac, "dev", self.root_link, "nud", "permanent")
        sh("ip", "-6", "route", "replace", str(self.net6), "via", core.address6, "dev", self.root_link)

    def _router(self, node: str, kind: str, parent: str | None, address: str) -> Router:
        ns = f"{NETNS_PREFIX}{self.pid}-{node}"
        sh("ip", "netns", "add", ns)
        self._namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", *_V6_SYSCTLS)
        router = Router(node, kind, ns, address, parent)
        self.routers[node] = router
        return router

    def _link(self, name: str, up: Router | None, up_if: str, up_addr: str, down: Router, down_if: str,
              subnet6: int) -> None:
        """A veth pair, dual-stack: ``up_addr``/30 and ``down.address``/30, ::1 and ::2 of /64 ``subnet6``."""
        up_ns = up.namespace if up else None
        where = ["netns", up_ns] if up_ns else []
        sh("ip", "link", "add", up_if, *where, "type", "veth", "peer", "name", down_if, "netns", down.namespace)
        net6 = self._net6(subnet6)
        down.address6 = str(net6.network_address + 2)
        link = Link(name, up_ns, up_if, up_addr, down.namespace, down_if, down.address,
                    str(net6.network_address + 1), down.address6)
        for ns, ifname, addr, addr6 in ((up_ns, up_if, up_addr, link.up_addr6),
                                        (down.namespace, down_if, down.address, down.address6)):
            n = ["-n", ns] if ns else []
            if ns is None:
                sh("sysctl", "-qw", f"net.ipv6.conf.{ifname}.accept_dad=0")  # our own interface in the root
            sh("ip", *n, "addr", "add", f"{addr}/30", "dev", ifname)
            sh("ip", *n, "addr", "add", f"{addr6}/64", "dev", ifname, "nodad")
            sh("ip", *n, "link", "set", ifname, "up")
        self.links[name] = link
        down.uplink = link

    def _lan(self, ap: Router, lan: ipaddress.IPv4Network, lan6: ipaddress.IPv6Network, count: int) -> None:
        """The AP's customers: IPv4 addresses, or IPv6 ones for an AP of :data:`IPV6_NODES`."""
        if ap.node in IPV6_NODES:
            ap.cpes = [f"{lan6.network_address + 1 + i}/128" for i in range(count)]
        else:
            ap.cpes = [f"{lan.network_address + 1 + i}/32" for i in range(count)]
        for addr in ap.cpes:
            sh("ip", "-n", ap.namespace, "addr", "add", addr, "dev", "lo")
        ap.cpes = [addr.split("/")[0] for addr in ap.cpes]

    def apply_routes(self, router: Router) -> None:
        """(Re)install a router's static routes; the kernel drops them when their link goes down."""
        for prefix, via in router.routes:
            family = "-6" if ":" in via else "-4"
            sh("ip", "-n", router.namespace, family, "route", "replace", prefix, "via", via)

    def attach_host(self, name: str, router: str) -> Router:
        """A machine of its own (a remote poller's) on a link of its own to ``router``, dual-stack.

        Not a node of the inventory: no agent, nobody polls it. Every router from ``router`` up to the
        core gets a route to the host's link (the root namespace routes the whole lab via the core),
        so the host reaches the monitor's side and every lab address, and it is cut from all of them
        by :meth:`cut_host` without touching any other link.
        """
        n = len(self.hosts)
        up = self.routers[router]
        base = HOSTS_AT + 4 * n
        host = self._router(name, "host", router, self._addr(base + 2))
        del self.routers[name]  # not a node: no agent, not in the inventory
        self.hosts[name] = host
        self._link(f"h-{name}", up, f"h{n}", self._addr(base + 1), host, "wan0", 0x20 + n)
        host.routes += [("default", self._addr(base + 1)), ("default", self._links_up6(f"h-{name}"))]
        prefix4, prefix6 = f"{self._addr(base)}/30", str(self._net6(0x20 + n))
        child, above = up, up.parent
        while above is not None:
            parent = self.routers[above]
            parent.routes += [(prefix4, child.address), (prefix6, child.address6)]
            self.apply_routes(parent)
            child, above = parent, parent.parent
        self.apply_routes(host)
        return host

    # ------------------------------------------------------------------ faults

    def cut(self, link: str) -> None:
        """Take a link down at its downstream end (a failed radio/fibre seen from upstream as no carrier)."""
        lk = self.links[link]
        sh("ip", "-n", lk.down_ns, "link", "set", lk.down_if, "down")

    def restore(self, link: str) -> None:
        lk = self.links[link]
        sh("ip", "-n", lk.down_ns, "link", "set", lk.down_if, "up")
        self.apply_routes(self._router_of(lk.down_ns))

    def _router_of(self, namespace: str) -> Router:
        return next(r for r in (*self.routers.values(), *self.hosts.values()) if r.namespace == namespace)

    def cut_host(self, name: str) -> None:
        """Cut a host's own uplink from inside its namespace: nftables drops everything but loopback,
        both ways (its sends fail as a firewall's would; its link stays up, nothing else changes)."""
        rules = ("chain input {\n type filter hook input priority 0; policy accept;\n iif lo accept\n drop\n }\n"
                 " chain output {\n type filter hook output priority 0; policy accept;\n oif lo accept\n drop\n }")
        ns = self.hosts[name].namespace
        sh("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", UPLINK_TABLE, check=False)
        sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=f"table inet {UPLINK_TABLE} {{\n {rules}\n}}\n")

    def restore_host(self, name: str) -> None:
        sh("ip", "netns", "exec", self.hosts[name].namespace, "nft", "delete", "table", "inet", UPLINK_TABLE,
           check=False)

    def set_loss(self, node: str, percent: int) -> None:
        """Drop ``percent`` % of the echo requests to a node's polled address (the kernel has no netem)."""
        r = self.routers[node]
        ip, icmp = ("ip6", "icmpv6") if ":" in r.target else ("ip", "icmp")
        self._nft(r.namespace, LOSS_TABLE,
                  f"{ip} daddr {r.target} {icmp} type echo-request numgen random mod 100 < {percent} drop")

    def silence(self, ap: str, addresses: list[str]) -> None:
        """Make CPE addresses behind an AP stop answering while the AP itself still does."""
        r = self.routers[ap]
        rules = [f"{ip} daddr {{ {', '.join(group)} }} drop"
                 for ip, group in (("ip", [a for a in addresses if ":" not in a]),
                                   ("ip6", [a for a in addresses if ":" in a])) if group]
        self._nft(r.namespace, SILENCE_TABLE, "\n ".join(rules))

    def _nft(self, ns: str, table: str, rules: str) -> None:
        """(Re)create ``table`` (family inet: both IPv4 and IPv6) in a namespace with input-hook rules."""
        sh("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", table, check=False)
        chain = f"chain input {{\n type filter hook input priority 0;\n {rules}\n }}"
        sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=f"table inet {table} {{\n {chain}\n}}\n")

    def heal(self) -> None:
        """Undo every fault: links up, routes back, loss and silence rules gone (reset between scenarios)."""
        for name in self.links:
            self.restore(name)
        for r in self.routers.values():
            for table in (LOSS_TABLE, SILENCE_TABLE):
                sh("ip", "netns", "exec", r.namespace, "nft", "delete", "table", "inet", table, check=False)
        for host in self.hosts:
            self.restore_host(host)
        self._root_routes()

    # ------------------------------------------------------------------ queries

    def cpes(self, ap: str | None = None) -> list[str]:
        aps = [self.routers[ap]] if ap else [r for r in self.routers.values() if r.kind == "ap"]
        return [addr for r in aps for addr in r.cpes]

    def below(self, node: str) -> list[str]:
        """Router node ids in the subtree of ``node`` (itself included)."""
        out = [node]
        for r in self.routers.values():
            if r.parent in out and r.node not in out:
                out.append(r.node)
        return out

    def exec_argv(self, node: str, *argv: str) -> list[str]:
        """``argv`` run inside a router's namespace, or a host's."""
        where = self.routers.get(node) or self.hosts[node]
        return ["ip", "netns", "exec", where.namespace, *argv]

    def cleanup(self) -> None:
        """Delete our namespaces (their veths and nft tables go with them); never raises."""
        for ns in self._namespaces:
            _delete_namespace(ns)
        self._namespaces.clear()
        if self.net is not None:
            sh("ip", "route", "del", str(self.net), check=False)
        if self.net6 is not None:
            sh("ip", "-6", "route", "del", str(self.net6), "dev", self.root_link, check=False)
        if _link_exists(self.root_link):
            sh("ip", "link", "del", self.root_link, check=False)
        if self.net6 is not None:
            remove_fallback6(self.net6)  # last: nothing routes into the lab any more


def _delete_namespace(ns: str) -> None:
    """Kill what still runs inside (normally nothing: our processes die with their owner), then delete."""
    for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)
    sh("ip", "netns", "del", ns, check=False)


def remove_stale() -> None:
    """Remove what labs whose test process no longer runs (a killed run) left: processes, namespaces.

    Our namespaces share ``tests/netns.py``'s naming (prefix and owner PID), so its cleanup finds them.
    """
    _kill_stale_processes()
    remove_stale_namespaces()


def folder_name() -> str:
    """Base name of the lab's temp folder: it carries our PID so a later run can tell it is stale."""
    return f"{FOLDER_PREFIX}{os.getpid()}-"


_FOLDER = re.compile(rf"/{FOLDER_PREFIX}(\d+)-\d*/".encode())


def _kill_stale_processes() -> None:
    """Kill (by PID) processes whose command line or environment points into the folder of a dead lab.

    The lab's processes die with the test process (PR_SET_PDEATHSIG), but processes *they* forked
    do not: request-tracker's workers outlive their master. Their environment names the lab folder.
    """
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            text = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue
        for owner in {int(m) for m in _FOLDER.findall(text)}:
            if not _pid_alive(owner):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), 9)
                break
