"""The lab with remote pollers in three zones (issue 14): the core, four ``monitor poll`` and one broker.

The emulated ISP of ``tests/lab/topology.py`` (the single-daemon lab's, unchanged) split into zones:

- ``noc`` (core, tower-1): the core (``monitor run``) polls it itself;
- ``ap1`` (ap-1 and its 8 CPEs) and ``ap2`` (ap-2 and its 8 CPEs): one poller each, ``p-ap1`` and
  ``p-ap2``, on a machine of its own hanging off its AP (:meth:`IspLab.attach_host`), which is its
  declared vantage node (``vantage:``: a zone with one poller has no second view, so only that node
  seen down tells its own uplink's failure from the zone's);
- ``saravena`` (tower-2, ap-3, ap-4 and their 14 CPEs): two pollers, ``p-town`` on a machine hanging
  off tower-2 (it reaches the broker over the tower's backhaul, as a town's poller does) and
  ``p-noc`` in the NOC (the root namespace, upstream of every link of the lab).

The broker (mosquitto) listens on the root namespace's end of the lab's uplink, the one address every
namespace reaches; the core logs in on its password listener, the pollers on the anonymous one.
Pollers on a host run inside its namespace (``ip netns exec``), so :meth:`IspLab.cut_host` (nftables
in that namespace) cuts the poller from everything at once, its broker and its targets. Each poller
has a folder and config of its own (no delivery, no time series, no core password) and a state
directory in it (its event store and spool). Delivery is the lab's (real SMTP, RT, MQTT). docs/lab.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.config import customer_ids, write_config
from tests.lab.fixtures import IspRun, lab_folder, lab_world
from tests.lab.observe import Observer
from tests.lab.pollers import PollerProcess
from tests.lab.processes import DaemonProcess, started_here
from tests.lab.topology import IspLab
from tests.servers.mosquitto import PASSWORD, USER, Mosquitto

HEARTBEAT, SILENT_AFTER = 0.5, 5.0  # ten heartbeats: a loaded machine never makes a talking poller silent
# zone -> (its infrastructure nodes, its pollers: poller -> the lab host it runs on, None: the NOC)
ZONES: dict[str, tuple[tuple[str, ...], dict[str, str | None]]] = {
    "ap1": (("ap-1",), {"p-ap1": "ap-1"}),
    "ap2": (("ap-2",), {"p-ap2": "ap-2"}),
    "saravena": (("tower-2", "ap-3", "ap-4"), {"p-town": "tower-2", "p-noc": None}),
}
VANTAGE = {"p-ap1": "ap-1", "p-ap2": "ap-2"}  # the node each single poller sees its zone through


def zone_targets(lab: IspLab, zone: str) -> list[str]:
    """Every target of a remote zone: its nodes and the CPEs behind its APs."""
    nodes = ZONES[zone][0]
    return [*nodes, *(cpe for cpe, _cust, ap in customer_ids(lab).values() if ap in nodes)]


def zone_of_poller(poller: str) -> str:
    return next(z for z, (_nodes, pollers) in ZONES.items() if poller in pollers)


def pollers_yaml(lab: IspLab, host: str, port: int, password: bool) -> str:
    """The ``pollers:`` section: ``noc`` by municipality (the core's), the remote zones by node id."""
    auth = f", username: {USER}, password: {{file: mqtt-core-password}}" if password else ""
    zones = []
    for zone, (_nodes, pollers) in ZONES.items():
        vantage = {p: VANTAGE[p] for p in pollers if p in VANTAGE}
        extra = f", vantage: {{{', '.join(f'{p}: {n}' for p, n in vantage.items())}}}" if vantage else ""
        zones.append(f"    - {{id: {zone}, nodes: [{', '.join(zone_targets(lab, zone))}],"
                     f" pollers: [{', '.join(pollers)}]{extra}}}")
    return f"""pollers:
  brokers: [{{host: {host}, port: {port}{auth}}}]
  heartbeat: {HEARTBEAT}s
  silent_after: {SILENT_AFTER}s
  zones:
    - {{id: noc, municipalities: [arauca]}}
{chr(10).join(zones)}
"""


class ZonePoller(PollerProcess):
    """``monitor poll`` of one zone, on its lab host's namespace (or the root's, the NOC's)."""

    def __init__(self, config: Path, log: Path, poller: str, where: tuple[str, ...]) -> None:
        super().__init__(config, log)
        self.poller, self.zone = poller, zone_of_poller(poller)
        self.role = ("poll", "--zone", self.zone, "--poller", poller)
        self.wrap = where


@dataclass
class ZonesRun:
    run: IspRun
    pollers: dict[str, ZonePoller]
    broker: Mosquitto

    def log(self) -> str:
        return self.run.daemon.log.read_text()


@pytest.fixture(scope="module")
def zones_isp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZonesRun]:
    folder = lab_folder(tmp_path_factory, "mosquitto")
    with ExitStack() as stack:
        lab, influx, world = lab_world(stack, folder)
        hosts = {p: lab.attach_host(p, router) for _z, (_n, ps) in ZONES.items()
                 for p, router in ps.items() if router is not None}
        address = lab.links["uplink"].up_addr  # the root namespace's end: every namespace routes to it
        (folder / "pollers-mqtt").mkdir()
        broker = Mosquitto(folder / "pollers-mqtt", host=address)
        stack.enter_context(started_here(broker))
        (folder / "mqtt-core-password").write_text(PASSWORD + "\n")
        # every scenario's incident gets its own ticket (not the last one's, reopened)
        delivery = world.delivery_yaml(folder).replace("desk: {kind: rt,", "desk: {kind: rt, reopen_within: 0,") \
            if world else ""
        config = write_config(lab, folder, influx.url, delivery + pollers_yaml(lab, address, broker.auth_port, True))
        daemon = DaemonProcess(config, folder / "daemon.log")
        stack.callback(daemon.stop)
        pollers = {}
        for _zone, (_nodes, ps) in ZONES.items():
            for p in ps:
                (folder / p).mkdir()
                pconfig = write_config(lab, folder / p, None, pollers_yaml(lab, address, broker.port, False))
                where = tuple(lab.exec_argv(p)) if p in hosts else ()
                pollers[p] = ZonePoller(pconfig, folder / f"{p}.log", p, where)
                stack.callback(pollers[p].stop)
        run = IspRun(lab, daemon, Observer(config, folder / "var" / "monitor.db", influx), folder, world)
        daemon.start()
        for poller in pollers.values():
            poller.start()
        run.reset(timeout=120)
        yield ZonesRun(run, pollers, broker)
