"""The HA lab (issue 13): PostgreSQL, SMTP, RT and two ``monitor run`` daemons, each in a namespace of its own.

The network is the emulated ISP's (:class:`tests.lab.topology.IspLab`: routers in namespaces, veth
links, static routes) reshaped: the core, one tower, four APs with 50 customers each (addresses on
the AP's ``lo``, added in one ``ip -batch``: 200 addresses cost one command per AP), and the NOC's
machines on links of their own to the core: ``db`` (PostgreSQL 15), ``svc`` (the SMTP server and
request-tracker), ``noc-a`` and ``noc-b`` (a daemon each). The daemons reach the towers, the
database and the mail and ticket servers through the core, as two machines in a NOC would; the test
process (root namespace) reaches the same hosts over the lab's uplink to look at them. Nothing is
forwarded by the root namespace (its ``ip_forward`` stays as it was): all routing is the core's.

The customers' addresses are a second /24 of 198.18.0.0/15 (four /26, one per AP), routed into
the core from the root namespace too, so nothing addressed to them can leave the machine.
Everything is removed with the lab (processes inside its namespaces are killed as they go); the
cluster's folder is ``/tmp/mlab-<pid>-<n>``, which a later lab recognizes as stale
(:func:`tests.lab.topology.remove_stale`) when this test process was killed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from tests.lab.delivery import NOTICE_SUBJECT
from tests.lab.processes import DaemonProcess, started_here
from tests.lab.topology import IspLab, Router, folder_name
from tests.netns import _free_subnet, add_fallback6, free_subnet6, sh
from tests.servers.common import wait_for
from tests.servers.postgres import PostgreSQL
from tests.servers.rt import PASSWORD, USER, RequestTracker
from tests.servers.smtp import SmtpServer
from tests.test_daemon import metric_value

APS, PER_AP = 4, 50  # 200 customers behind tower-1
NOC = ("db", "svc", "noc-a", "noc-b")
METRICS_PORT = 9100
TECHNICIAN = "ana@isp.example"
PG_PASSWORD = "monitor-test-password"  # tests/servers/postgres.py's default
_folders = itertools.count(900)


class HaLab(IspLab):
    """core - tower-1 - ap-1..4 (50 customers each), and the NOC's hosts on links of their own to the core."""

    customers_net: ipaddress.IPv4Network | None = None

    def _build(self) -> None:
        self.net = _free_subnet()
        self.net6 = free_subnet6()
        add_fallback6(self.net6)  # (every link is dual-stack; nothing is polled over IPv6 here)
        a = self._addr
        core = self._router("core", "router", None, a(2))
        self._link("uplink", None, self.root_link, a(1), core, "wan0", 0)
        self._root_routes()
        core.routes.append(("default", a(1)))
        self.customers_net = _second_subnet(self.net)
        sh("ip", "route", "replace", str(self.customers_net), "via", core.address, "dev", self.root_link)
        tower = self._router("tower-1", "tower", "core", a(6))
        self._link("t1", core, "t1", a(5), tower, "wan0", 1)
        tower.routes.append(("default", a(5)))
        for k, lan in enumerate(list(self.customers_net.subnets(new_prefix=26))[:APS], start=1):
            base = 4 + 4 * k  # the /30 of the tower-AP link: .8, .12, .16, .20
            ap = self._router(f"ap-{k}", "ap", tower.node, a(base + 2))
            self._link(f"a{k}", tower, f"a{k}", a(base + 1), ap, "wan0", 0x10 + k)
            ap.routes.append(("default", a(base + 1)))
            tower.routes.append((str(lan), ap.address))
            core.routes += [(f"{a(base)}/30", tower.address), (str(lan), tower.address)]
            ap.cpes = [str(lan.network_address + 1 + i) for i in range(PER_AP)]
            sh("ip", "-n", ap.namespace, "-batch", "-", input="".join(f"addr add {c}/32 dev lo\n" for c in ap.cpes))
        for i, name in enumerate(NOC):
            base = 224 + 4 * i  # .224/30 ... .236/30
            host = self._router(name, "host", None, a(base + 2))
            self._link(f"n{i}", core, f"n{i}", a(base + 1), host, "eth0", 0x20 + i)
            host.routes.append(("default", a(base + 1)))
        for router in self.routers.values():
            self.apply_routes(router)

    def host(self, name: str) -> Router:
        return self.routers[name]

    def customers(self) -> dict[str, tuple[str, str]]:
        """Customer id -> (its CPE's endpoint id, its address), C-001 ... C-200."""
        cpes = [addr for k in range(1, APS + 1) for addr in self.routers[f"ap-{k}"].cpes]
        return {f"C-{n:03d}": (f"cpe-{n:03d}", addr) for n, addr in enumerate(cpes, start=1)}


def _second_subnet(first: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """A free /24 that is neither ``first`` nor under any route of the root namespace (another lab's)."""
    routes = json.loads(sh("ip", "-j", "-4", "route").stdout or "[]")
    used = []
    for r in routes:
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(r.get("dst", ""), strict=False))
    for _ in range(100):
        net = _free_subnet()
        if net != first and not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no second free /24 in 198.18.0.0/15")


def in_namespace(argv: list[str], host: Router) -> list[str]:
    return ["ip", "netns", "exec", host.namespace, *argv]


@contextlib.contextmanager
def postgres_in(lab: HaLab) -> Iterator[PostgreSQL]:
    """PostgreSQL 15 listening on ``db``'s address, logins from the lab's network; removed at the end."""
    for n in _folders:
        parent = Path(tempfile.gettempdir()) / f"{folder_name()}{n}"
        with contextlib.suppress(FileExistsError):
            parent.mkdir(mode=0o755)
            break
    parent.chmod(0o755)
    db = lab.host("db")
    server = PostgreSQL(host=db.address, root=parent / "pg", clients=str(lab.net))
    server.argv = in_namespace(server.argv, db)
    try:
        server.start(timeout=90)
        yield server
    finally:
        server.remove()
        shutil.rmtree(parent, ignore_errors=True)


@contextlib.contextmanager
def rt_in(lab: HaLab, folder: Path) -> Iterator[RequestTracker]:
    (folder / "rt").mkdir()
    rt = RequestTracker(folder / "rt", host=lab.host("svc").address)
    rt.argv = in_namespace(rt.argv, lab.host("svc"))
    with started_here(rt, timeout=120):
        yield rt


@contextlib.contextmanager
def smtp_in(lab: HaLab, folder: Path) -> Iterator[SmtpServer]:
    """A fresh SMTP server (its own maildir) on ``svc``: one per scenario."""
    folder.mkdir()
    smtp = SmtpServer(folder, host=lab.host("svc").address)
    smtp.argv = in_namespace(smtp.argv, lab.host("svc"))
    with started_here(smtp):
        yield smtp


def fresh_database(server: PostgreSQL, name: str) -> str:
    """A new, empty database on the lab's PostgreSQL; its URL without the password."""
    with psycopg.connect(host=server.host, port=server.port, user=server.user, password=server.password,
                         dbname="postgres", autocommit=True, connect_timeout=10) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return f"postgresql://{server.user}@{server.host}:{server.port}/{name}"


class HaDaemon(DaemonProcess):
    """``monitor run`` inside its NOC host's namespace; up once it logs its wait for the lease."""

    started = 'msg="standby: waiting for the lease"'

    def __init__(self, config: Path, log: Path, host: Router) -> None:
        super().__init__(config, log)
        self.host = host
        self.wrap = ("ip", "netns", "exec", host.namespace)

    def metric(self, name: str) -> float | None:
        """A value from its /metrics (None while it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://{self.host.address}:{METRICS_PORT}/metrics", timeout=5) as r:
                return metric_value(r.read().decode(), name)
        except OSError:
            return None

    def active(self) -> bool:
        return self.metric("monitor_ha_active") == 1

    def standby(self) -> bool:
        return self.metric("monitor_ha_active") == 0

    def exit_status(self) -> int | None:
        assert self.process is not None and self.process.proc is not None
        return self.process.proc.poll()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def write_config(lab: HaLab, folder: Path, listen: str, store: str, smtp: SmtpServer, rt: RequestTracker) -> Path:
    """One daemon's sites.yaml: the lab's inventory, the shared store, delivery to ``svc``'s servers.

    ``correlation.settle`` is four intervals: the tower's DOWN must be confirmed within it of its APs'
    and CPEs' for one outage at the tower. With two intervals, on the loaded machine (eight sessions on
    two cores) it once came 2.3 s after them: four outages at the APs opened first (merged into the
    tower's later), and the scenario was about correlation timing instead of the takeover.
    """
    folder.mkdir()
    (folder / "pg-password").write_text(PG_PASSWORD + "\n")
    (folder / "rt-password").write_text(PASSWORD + "\n")
    nodes = [f"  - {{id: {r.node}, kind: {r.kind}, address: \"{r.address}\", "
             + (f"parent: {r.parent}, site: twr-1}}" if r.parent else "site: noc}")
             for r in lab.routers.values() if r.kind != "host"]
    customers = []
    for cust, (cpe, addr) in lab.customers().items():
        ap = next(r.node for r in lab.routers.values() if addr in r.cpes)
        customers.append(f"  - {{id: {cust}, name: Cliente {cust[2:]}, service_class: residencial,"
                         f" contacts: {{email: {cust.lower()}@clientes.example}},"
                         f" endpoints: [{{id: {cpe}, kind: cpe, address: \"{addr}\", parent: {ap}}}]}}")
    path = folder / "sites.yaml"
    path.write_text(f"""# Generated by tests/lab/ha.py for the HA lab ({lab.net}, customers {lab.customers_net}).
municipalities: [{{id: arauca, name: Arauca}}]
sites:
  - {{id: noc, municipality: arauca, name: NOC Arauca, lat: 7.0903, lon: -70.7617}}
  - {{id: twr-1, municipality: arauca, name: Torre Centro, lat: 7.0847, lon: -70.7591}}
service_classes:
  residencial: {{response_hours: 24, availability_target: 98.0}}
polling: {{interval: 1.0, icmp_count: 2, icmp_timeout: 0.5, icmp_spacing: 0.01, down_after: 2, up_after: 2}}
correlation: {{settle: 4.0, window: 4, hold_down: 4, grace: 4, blind_recovery: 2, update_interval: 2,
  min_share: 30, blind_share: 0.7, vantage: core}}
daemon: {{state_dir: var, metrics_listen: "{listen}", log_format: logfmt, log_level: INFO,
  store: '{store}', store_password: {{file: pg-password}}}}
timeseries: {{kind: none}}
delivery:
  timezone: America/Bogota
  smtp: {{host: {smtp.host}, port: {smtp.port}, security: none, from: "NOC Lab <noc@isp.example>"}}
  desk: {{kind: rt, url: "{rt.url}", username: {USER}, password: {{file: rt-password}}, reopen_within: 0}}
  technicians: [{{id: ana, name: Ana Arauca, email: {TECHNICIAN}}}]
  oncall: [{{municipality: arauca, shifts: [{{days: [mon-sun], tiers: [ana]}}]}}]
  escalation: {{after: 24h}}
  customers: {{company: Lab Net, support_phone: "+57 607 000 0000"}}
  retry: {{initial: 0.2s, maximum: 1s}}
nodes:
{chr(10).join(nodes)}
customers:
{chr(10).join(customers)}
""")
    return path


def notices(smtp: SmtpServer, event: str) -> dict[str, int]:
    """Recipients of one kind of customer notice (``opened``/``restored``), per logical message (Message-ID)."""
    out: dict[str, int] = {}
    for m in smtp.logical().values():
        if NOTICE_SUBJECT[event] in str(m["Subject"]):
            out[str(m["To"])] = out.get(str(m["To"]), 0) + 1
    return out


def technician_mails(smtp: SmtpServer) -> list[str]:
    """Subjects of the technician's logical messages."""
    return sorted(str(m["Subject"]) for m in smtp.logical().values() if m["To"] == TECHNICIAN)


def rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on the scenario's database (the password is the lab server's)."""
    with psycopg.connect(url, password=PG_PASSWORD, autocommit=True, connect_timeout=5) as conn:
        return list(conn.execute(sql, params).fetchall())


def wait_daemon(what: str, condition: Any, timeout: float, *daemons: HaDaemon) -> None:
    """``wait_for`` that shows the daemons' log tails when it times out."""
    try:
        wait_for(condition, timeout, what)
    except TimeoutError as exc:
        tails = "\n".join(f"--- {d.host.node} ---\n{d.log_tail()}" for d in daemons)
        raise AssertionError(f"{exc}\n{tails}") from exc

