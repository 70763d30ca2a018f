"""Several vantage points in ``monitor run`` (issue 14): the daemon as the core, two pollers of one zone
publishing through a real mosquitto (in-process poller links, each with its spool and numbering).

What the daemon wires besides the intake: the core's own polling follows the NOC poller's declared
vantage node (the core router, polled by real ICMP and cut with nftables), and its once-a-second zone
step sets a silent poller aside. Each shows in the daemon's live states without a new report."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from monitor.daemon import Daemon
from monitor.remote.link import Broker, PollerLink, cancel_until_done
from monitor.remote.spool import PollerSpool
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.firewall import icmp_block, lab_address
from tests.servers.common import until
from tests.servers.mosquitto import PASSWORD, USER, Mosquitto
from tests.tsdb_support import started

pytestmark = [pytest.mark.servers, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="ICMP and nftables need root")]

UP, DOWN, UNK = State.UP, State.DOWN, State.UNKNOWN
CORE = lab_address(60)
TOWN = ["twr-s", "ap-s", "cpe-1", "cpe-2"]
T0 = 1_796_550_000.0


def config(port: int) -> str:
    return f"""
municipalities: [{{id: arauca, name: Arauca}}, {{id: saravena, name: Saravena}}]
sites:
  - {{id: noc, municipality: arauca, name: NOC}}
  - {{id: twr-site, municipality: saravena, name: Torre Saravena}}
service_classes:
  residencial: {{response_hours: 24, availability_target: 98.0}}
polling: {{interval: 0.2, icmp_count: 1, icmp_timeout: 0.1, down_after: 2, up_after: 2}}
daemon: {{state_dir: var, metrics_listen: ""}}
nodes:
  - {{id: core, kind: router, address: {CORE}, site: noc}}
  - {{id: twr-s, kind: tower, address: {lab_address(61)}, parent: core, site: twr-site}}
  - {{id: ap-s, kind: ap, address: {lab_address(62)}, parent: twr-s, site: twr-site}}
customers:
  - {{id: C1, name: Uno, service_class: residencial,
     endpoints: [{{id: cpe-1, kind: cpe, address: {lab_address(63)}, parent: ap-s}}]}}
  - {{id: C2, name: Dos, service_class: residencial,
     endpoints: [{{id: cpe-2, kind: cpe, address: {lab_address(64)}, parent: ap-s}}]}}
pollers:
  brokers: [{{host: 127.0.0.1, port: {port}, username: {USER}, password: {{env: MQTT_CORE_PASS}}}}]
  heartbeat: 0.5s
  silent_after: 5s  # ten heartbeats: a loaded machine never makes a talking poller silent
  zones:
    - {{id: noc, municipalities: [arauca]}}
    - {{id: saravena, municipalities: [saravena], pollers: [p-town, p-noc], vantage: {{p-noc: core}}}}
"""


def ch(target: str, old: State, new: State, ts: float) -> StateChange:
    return StateChange(target, old, new, ts, "2 consecutive failed polls: timeout" if new is DOWN else "answers")


async def test_the_daemon_combines_two_pollers_follows_a_vantage_node_and_sets_a_silent_poller_aside(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_CORE_PASS", PASSWORD)
    (tmp_path / "mqtt").mkdir()
    broker = Mosquitto(tmp_path / "mqtt")
    cfg = tmp_path / "core" / "sites.yaml"
    cfg.parent.mkdir()
    cfg.write_text(config(broker.auth_port))
    daemon = Daemon(cfg)
    links = {p: PollerLink(PollerSpool(tmp_path / f"{p}.db", p, "saravena"),
                           [Broker("127.0.0.1", broker.auth_port, USER, PASSWORD)], heartbeat=0.5, resend_after=1.0)
             for p in ("p-town", "p-noc")}

    def state(t: str) -> State:
        return daemon.states[t].state

    async def send(poller: str, *changes: StateChange) -> None:
        links[poller].spool.add(list(changes))
        links[poller].added()
        await until(lambda: links[poller].spool.backlog() == 0, 60, f"{poller}'s report acknowledged")

    with started(broker):
        task = asyncio.create_task(daemon.run())
        tasks = {p: asyncio.create_task(link.run()) for p, link in links.items()}
        try:
            await until(lambda: daemon.feed is not None and daemon.feed.connected.is_set()
                        and all(lk.connected.is_set() for lk in links.values()), 60, "core and pollers connected")
            await until(lambda: state("core") is UP, 60, "the core router up (the core polls it)")
            for p in links:
                await send(p, *(ch(t, UNK, UP, T0) for t in TOWN))
            assert {state(t) for t in TOWN} == {UP}
            await send("p-town", ch("twr-s", UP, DOWN, T0 + 60))
            assert state("twr-s") is UP  # the NOC still sees it
            await send("p-noc", ch("twr-s", UP, DOWN, T0 + 65))
            await until(lambda: state("twr-s") is DOWN, 60, "both see the tower down")
            await send("p-town", ch("cpe-1", UP, DOWN, T0 + 70))
            assert state("cpe-1") is UP

            with icmp_block() as fw:  # the NOC router fails: the NOC poller, behind it, is blind
                fw.block(CORE)
                await until(lambda: state("core") is DOWN and state("cpe-1") is DOWN, 60,
                            "the NOC poller set aside: the town's view alone")
            await until(lambda: state("core") is UP and state("cpe-1") is UP, 60, "the NOC poller counts again")

            await cancel_until_done(tasks.pop("p-noc"))  # the NOC poller stops talking (no last will)
            await until(lambda: state("cpe-1") is DOWN, 60, "the silent NOC poller set aside")
            assert state("twr-s") is DOWN and state("ap-s") is UP
            assert daemon.zones is not None and not daemon.zones.watch.blind  # the town poller is heard
        finally:
            for t in tasks.values():
                await cancel_until_done(t)
            daemon.request_stop()
            await asyncio.wait_for(task, 30)
    for link in links.values():
        link.spool.close()
    store = EventStore(tmp_path / "core" / "var" / "monitor.db")
    try:
        assert [(c.new, c.ts) for c in store.changes() if c.target == "twr-s"] == [(UP, T0), (DOWN, T0 + 65)]
        assert [c.new for c in store.changes() if c.target == "cpe-1"] == [UP, DOWN, UP, DOWN]
    finally:
        store.close()
