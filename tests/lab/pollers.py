"""The lab with a remote poller (issue 14): the core (``monitor run``) in the NOC and ``monitor poll`` for
the Saravena zone (tower-2, ap-3, ap-4 and their 14 CPEs), reporting through a mosquitto of their own.

Both processes run in the root namespace, where the lab's whole network is routed: the poller probes
only its zone's namespaced hosts, the core only the rest (the ``pollers:`` section says so), so a cut
tower is seen by the poller alone. The poller's broker is a separate mosquitto (the delivery's one,
``tests/lab/delivery.py``, carries technician alerts): the core logs in on its password listener, the
poller on its anonymous one, so that listener's port carries the poller's traffic and nothing else.
:meth:`PollerRun.partition` drops that port on loopback with nftables (no RST: the poller's link
sees a silent backhaul, as a dead radio looks), and the core's own delivery and probes go on.

The poller's config is the core's with the poller's broker port and no delivery, time series or
core password: a poller's machine holds only what polling needs.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.remote.spool import PollerSpool
from monitor.state import StateChange
from monitor.store import EventStore
from tests.lab.config import customer_ids, write_config
from tests.lab.delivery import Receivers
from tests.lab.fixtures import IspRun, lab_world
from tests.lab.observe import Observer
from tests.lab.processes import DaemonProcess, LabProcess, started_here
from tests.lab.topology import IspLab, folder_name
from tests.netns import nft_table
from tests.servers.common import require_binary, wait_for
from tests.servers.influxdb import InfluxDB1
from tests.servers.mosquitto import PASSWORD, USER, Mosquitto

ZONE, POLLER = "saravena", "p-saravena"
ZONE_NODES = ("tower-2", "ap-3", "ap-4")
HEARTBEAT, SILENT_AFTER = 0.5, 5.0  # ten heartbeats: a loaded machine never makes a talking poller silent


def zone_targets(lab: IspLab) -> list[str]:
    """Every target of the poller's zone: the tower, its APs and the CPEs behind them."""
    return [*ZONE_NODES, *(cpe for cpe, _cust, ap in customer_ids(lab).values() if ap in ZONE_NODES)]


def pollers_yaml(lab: IspLab, port: int, password: str, host: str = "127.0.0.1",
                 more: Sequence[tuple[str, int]] = ()) -> str:
    """The ``pollers:`` section: zone ``noc`` (the core polls it) and ``saravena`` (the poller's), by node id;
    the broker at ``host:port`` first, then ``more`` (host, port), in that order."""
    auth = f", username: {USER}, password: {{file: mqtt-core-password}}" if password else ""
    brokers = ", ".join(f"{{host: {h}, port: {p}{auth}}}" for h, p in [(host, port), *more])
    return f"""pollers:
  brokers: [{brokers}]
  heartbeat: {HEARTBEAT}s
  silent_after: {SILENT_AFTER}s
  zones:
    - {{id: noc, municipalities: [arauca]}}
    - {{id: {ZONE}, nodes: [{', '.join(zone_targets(lab))}], pollers: [{POLLER}]}}
"""


class PollerProcess(DaemonProcess):
    """``monitor poll --zone saravena`` as a subprocess that dies with the test process."""

    role = ("poll", "--zone", ZONE, "--poller", POLLER)
    started = 'msg="poller started"'
    poller, zone = POLLER, ZONE

    def changes(self, since: float = 0.0) -> list[StateChange]:
        """What the poller confirmed (its own event store: every change it spooled is there first)."""
        store = EventStore(self.config.parent / "var" / "monitor.db")
        try:
            return list(store.changes(since=since))
        finally:
            store.close()

    def backlog(self) -> int:
        """Rows of its spool the core has not acknowledged yet (0: everything handed over)."""
        spool = PollerSpool(self.config.parent / "var" / f"poller-{self.poller}.db", self.poller, self.zone)
        try:
            return spool.backlog()
        finally:
            spool.close()


@dataclass
class PollerRun:
    run: IspRun
    poller: PollerProcess
    broker: Mosquitto

    @contextmanager
    def partition(self) -> Iterator[None]:
        """The poller cut from its broker: its listener's packets dropped both ways on loopback."""
        port = self.broker.port
        body = ("chain out { type filter hook output priority 0; policy accept;"
                f" tcp dport {port} drop; tcp sport {port} drop; }}")
        with nft_table(body, family="ip"):
            yield

    def kill_broker(self) -> None:
        """SIGKILL the poller's broker, as a crash would (its persistence keeps what it had written)."""
        assert self.broker.process is not None and self.broker.process.proc is not None
        os.kill(self.broker.process.pid, signal.SIGKILL)
        self.broker.process.proc.wait(10)

    def restart_broker(self) -> None:
        """Start the broker again on the same ports, dying with the test process like the first one."""
        proc = self.broker.process = LabProcess(self.broker.argv, self.broker.root / "mosquitto.log")
        proc.start()
        wait_for(lambda: proc.alive() and self.broker.ready(), 60, "the poller's broker restarted")


@pytest.fixture(scope="module")
def pollers_isp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PollerRun]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, raw ICMP)")
    for tool in ("ip", "nft", "snmpd", "influxd", "mosquitto"):
        require_binary(tool)
    folder = tmp_path_factory.mktemp(folder_name())
    with ExitStack() as stack:
        lab, influx, world = lab_world(stack, folder)
        (folder / "pollers-mqtt").mkdir()
        broker = Mosquitto(folder / "pollers-mqtt")
        stack.enter_context(started_here(broker))
        run, poller = core_and_poller(stack, folder, lab, influx, world, [broker])
        yield PollerRun(run, poller, broker)


def core_and_poller(stack: ExitStack, folder: Path, lab: IspLab, influx: InfluxDB1, world: Receivers | None,
                    brokers: Sequence[Mosquitto]) -> tuple[IspRun, PollerProcess]:
    """The core and the poller, both with ``brokers`` in that order (the core on each one's password
    listener, the poller on its anonymous one), started and stopped by ``stack``; every target up."""
    (folder / "mqtt-core-password").write_text(PASSWORD + "\n")
    # every scenario's incident at tower-2 gets its own ticket (not the last one's, reopened)
    delivery = world.delivery_yaml(folder).replace("desk: {kind: rt,", "desk: {kind: rt, reopen_within: 0,") \
        if world else ""
    first, *more = brokers
    config = write_config(lab, folder, influx.url, delivery + pollers_yaml(
        lab, first.auth_port, PASSWORD, first.host, [(b.host, b.auth_port) for b in more]))
    (folder / "poller").mkdir()
    pconfig = write_config(lab, folder / "poller", None, pollers_yaml(
        lab, first.port, "", first.host, [(b.host, b.port) for b in more]))
    daemon = DaemonProcess(config, folder / "daemon.log")
    stack.callback(daemon.stop)
    poller = PollerProcess(pconfig, folder / "poller.log")
    stack.callback(poller.stop)
    run = IspRun(lab, daemon, Observer(config, folder / "var" / "monitor.db", influx), folder, world)
    daemon.start()
    poller.start()
    run.reset(timeout=120)
    return run, poller
