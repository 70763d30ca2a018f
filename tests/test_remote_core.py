"""``monitor run`` with remote pollers (issue 14), end to end on loopback: a real ``monitor poll`` process
polls the Saravena zone by real ICMP and publishes through a real, authenticated mosquitto to the core
(the daemon in this process), which polls only its own zone. A tower cut in Saravena becomes one
outage incident at the core, with one desk ticket, the technician's alert and each customer's
notice, and resolves when the tower answers again, as in single-daemon mode. The core stores the
poller's changes with the poller's timestamps before acknowledging them."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import pytest

from monitor import selfmetrics
from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.store import IncidentStore
from monitor.daemon import Daemon
from monitor.inventory.loader import load_inventory
from monitor.remote.core import RemoteIntake
from monitor.remote.link import Broker, PollerLink
from monitor.remote.spool import PollerSpool
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.firewall import icmp_block, lab_address
from tests.servers.common import until
from tests.servers.mosquitto import PASSWORD, USER, Mosquitto
from tests.servers.smtp import SmtpServer
from tests.test_remote_link import running
from tests.tsdb_support import started

pytestmark = [pytest.mark.servers, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="ICMP and nftables need root")]
ROOT = Path(__file__).resolve().parents[1]

TOWER, AP = lab_address(40), lab_address(41)
CPES = {"cpe-1": lab_address(42), "cpe-2": lab_address(43), "cpe-3": lab_address(44)}
LOCAL = lab_address(45)  # cpe-n, in the core's own zone
REMOTE = {"twr-s", "ap-s", *CPES}
DELIVERY = """
delivery:
  smtp: {{host: 127.0.0.1, port: {port}, security: none, from: "NOC <noc@isp.example>"}}
  technicians: [{{id: ana, name: Ana Torres, email: ana@isp.example}}]
  oncall: [{{municipality: "*", shifts: [{{days: [mon-sun], tiers: [ana]}}]}}]
  customers: {{kinds: [outage, suspected], channels: [email], company: Llanos Net}}
  desk: {{kind: email, address: soporte@isp.example}}
  retry: {{initial: 0.2s, maximum: 1s}}
"""


def config_text(broker: Mosquitto, delivery: str = "", timing: str = "") -> str:
    customers = "\n".join(
        f"  - {{id: C{i}, name: Cliente {i}, service_class: residencial, contacts: {{email: c{i}@example.com}},"
        f" endpoints: [{{id: {cpe}, kind: cpe, address: {addr}, parent: ap-s}}]}}"
        for i, (cpe, addr) in enumerate(CPES.items(), 1))
    section = f"""
pollers:
  brokers: [{{host: 127.0.0.1, port: {broker.auth_port}, username: {USER}, password: {{env: MQTT_CORE_PASS}}}}]
{timing}  zones:
    - {{id: noc, municipalities: [arauca]}}
    - {{id: saravena, municipalities: [saravena], pollers: [p-saravena]}}
"""
    return f"""
municipalities: [{{id: arauca, name: Arauca}}, {{id: saravena, name: Saravena}}]
sites:
  - {{id: noc, municipality: arauca, name: NOC}}
  - {{id: twr-site, municipality: saravena, name: Torre Saravena}}
service_classes:
  residencial: {{response_hours: 24, availability_target: 98.0}}
polling: {{interval: 0.2, icmp_count: 1, icmp_timeout: 0.1, down_after: 2, up_after: 2}}
correlation: {{settle: 2, hold_down: 0.6, window: 1.0}}  # settle: generous for a loaded machine
daemon: {{state_dir: var, metrics_listen: ""}}
nodes:
  - {{id: core, kind: router, address: 127.0.0.1, site: noc}}
  - {{id: twr-s, kind: tower, address: {TOWER}, parent: core, site: twr-site}}
  - {{id: ap-s, kind: ap, address: {AP}, parent: twr-s, site: twr-site}}
customers:
{customers}
  - {{id: C9, name: Nueve, service_class: residencial,
      endpoints: [{{id: cpe-n, kind: cpe, address: {LOCAL}, parent: core}}]}}
{section}{delivery}"""


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sites.yaml"
    path.write_text(text)
    return path


def desk(smtp: SmtpServer) -> list[EmailMessage]:
    return [m for m in smtp.logical().values() if str(m["To"]) == "soporte@isp.example"]


def people(smtp: SmtpServer) -> list[EmailMessage]:
    """The technician's and the customers' mails (not the desk's)."""
    return [m for m in smtp.logical().values() if str(m["To"]) != "soporte@isp.example"]


def unacked(spool: Path) -> int:
    """Messages in the poller's spool (read-only, beside the running poller); -1 before it exists."""
    if not spool.exists():
        return -1
    db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM spool").fetchone()[0])
    finally:
        db.close()


@contextmanager
def poller(tmp: Path, cfg: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``monitor poll`` for Saravena as its own process, authenticated as the broker's user. The core's
    broker password (MQTT_CORE_PASS, which the shared config names) is not in its environment: a
    poller's machine holds its own secrets only."""
    (tmp / "mqtt.pass").write_text(PASSWORD + "\n")
    env = {k: v for k, v in os.environ.items() if k != "MQTT_CORE_PASS"}
    with open(tmp / "poller.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "poll", "--config", str(cfg), "--zone", "saravena",
             "--poller", "p-saravena", "--mqtt-user", USER, "--mqtt-password-file", str(tmp / "mqtt.pass")],
            stdout=log, stderr=log, cwd=cfg.parent, env={**env, "PYTHONPATH": str(ROOT)})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Mosquitto, SmtpServer]]:
    monkeypatch.setenv("MQTT_CORE_PASS", PASSWORD)
    for d in ("mqtt", "smtp"):
        (tmp_path / d).mkdir()
    broker, smtp = Mosquitto(tmp_path / "mqtt"), SmtpServer(tmp_path / "smtp")
    with started(broker), started(smtp):
        yield broker, smtp


async def test_a_tower_cut_seen_by_a_remote_poller_is_one_incident_with_its_ticket_and_notices(
        tmp_path: Path, servers: tuple[Mosquitto, SmtpServer]) -> None:
    broker, smtp = servers
    text = config_text(broker, DELIVERY.format(port=smtp.port))
    core_cfg, poller_cfg = write(tmp_path / "core", text), write(tmp_path / "poller", text)
    poller_db = tmp_path / "poller" / "var" / "poller-p-saravena.db"
    daemon = Daemon(core_cfg)
    events: list[IncidentEvent] = []
    daemon.incident_sinks.append(events.extend)
    task = asyncio.create_task(daemon.run())
    try:
        with poller(tmp_path, poller_cfg) as proc:
            await until(lambda: daemon.feed is not None and daemon.feed.connected.is_set(), 60, "core subscribed")
            assert daemon.polling.scheduler is not None
            assert set(daemon.polling.scheduler._targets) == {"core", "cpe-n"}  # the core polls its zone only
            await until(lambda: all(daemon.states[t].state is State.UP for t in [*REMOTE, "core", "cpe-n"]), 60,
                        "every target up at the core, the remote ones through the poller")
            with icmp_block() as fw:
                fw.block(TOWER, AP, *CPES.values())
                # the technician's alert, three customers' notices and the desk's ticket
                await until(lambda: len(people(smtp)) == 4 and len(desk(smtp)) >= 1 and all(
                    daemon.states[t].state is State.DOWN for t in REMOTE), 60, "the outage's mails")
            await until(lambda: any(e.event == "resolved" for e in events), 60, "the incident resolved")
            await until(lambda: len(people(smtp)) == 8, 60, "restored notices and the technician's resolution")
            # every change the poller numbered is acknowledged (so it left the poller's spool)
            await until(lambda: daemon.feed is not None and unacked(poller_db) == 0, 60, "the spool drained")
            proc.send_signal(signal.SIGTERM)
            await until(lambda: proc.poll() is not None, 30, "the poller exits on SIGTERM")  # the core runs on
            assert proc.returncode == 0, (tmp_path / "poller.log").read_text()[-2000:]
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)

    opened = [e for e in events if e.event == "opened"]
    assert [(e.kind, e.root) for e in opened] == [("outage", "twr-s")], events
    assert {e.incident for e in events} == {opened[0].incident}  # no second incident, no per-CPE alarm
    resolved = next(e for e in events if e.event == "resolved")
    assert set(resolved.affected_endpoints) == set(CPES) and set(resolved.affected_customers) == {"C1", "C2", "C3"}

    assert max(smtp.repeats().values()) == 1
    customers = [f"c{i}@example.com" for i in (1, 2, 3)] * 2
    assert sorted(str(m["To"]) for m in people(smtp)) == sorted(["ana@isp.example"] * 2 + customers)
    assert all(str(m["Subject"]).startswith(f"[{opened[0].incident}]") for m in desk(smtp))  # one ticket

    # stored at the core with the poller's own times, each change once, before the poller let go of it
    store = EventStore(tmp_path / "core" / "var" / "monitor.db")
    remote = [c for c in store.changes() if c.target in REMOTE]
    store.close()
    assert [c.new for c in remote if c.target == "cpe-1"] == [State.UP, State.DOWN, State.UP]
    assert len({(c.target, c.ts) for c in remote}) == len(remote)
    spool = PollerSpool(poller_db, "p-saravena", "saravena")
    try:
        # all acknowledged; changes confirmed in the same batch round share a message (Publisher)
        assert spool.backlog() == 0 and 0 < spool.last_seq() <= len(remote)
        assert daemon.feed is not None and daemon.feed.sequences.through("p-saravena") == spool.last_seq()
    finally:
        spool.close()
    incidents = IncidentStore(tmp_path / "core" / "var" / "monitor.db")
    try:
        assert [(r.kind, r.root, r.status) for r in incidents.incidents(status=None)] == [
            ("outage", "twr-s", "resolved")]
    finally:
        incidents.close()


async def test_a_change_the_store_refuses_is_not_acknowledged_and_comes_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The core acknowledges a poller's message only once its changes are in the event store: while
    another process holds the store's write lock nothing is acknowledged, the poller keeps the
    message and sends it again, and it is stored and correlated once when the lock goes."""
    monkeypatch.setenv("MQTT_CORE_PASS", PASSWORD)
    (tmp_path / "mqtt").mkdir()
    broker = Mosquitto(tmp_path / "mqtt")
    inv = load_inventory(write(tmp_path / "core", config_text(broker)))
    db = tmp_path / "core" / "var" / "monitor.db"
    db.parent.mkdir()
    store = EventStore(db, busy_timeout=0.2)
    noted: list[StateChange] = []
    intake = RemoteIntake(inv, store, {}, noted.append, db.parent)
    feed = intake.feed(inv)
    spool = PollerSpool(tmp_path / "spool.db", "p-saravena", "saravena")
    link = PollerLink(spool, [Broker("127.0.0.1", broker.auth_port, USER, PASSWORD)], resend_after=0.5)
    down = StateChange("cpe-1", State.UP, State.DOWN, 1_796_550_000.0, "2 consecutive failed polls: timeout")
    locker = sqlite3.connect(db, isolation_level=None)
    with started(broker):
        async with running(feed.run(), link.run()):
            await until(lambda: feed.connected.is_set() and link.connected.is_set(), 60, "both connected")
            locker.execute("BEGIN EXCLUSIVE")
            spool.add([down])
            link.added()
            await until(lambda: feed._storing.active, 60, "the store refused the change")
            assert spool.backlog() == 1 and feed.sequences.through("p-saravena") == 0 and noted == []
            locker.execute("ROLLBACK")
            await until(lambda: spool.backlog() == 0, 60, "stored, acknowledged, out of the spool")
    locker.close()
    spool.close()
    assert noted == [down]  # correlated once, at the poller's time
    assert [c for c in store.changes() if c.target == "cpe-1"] == [down]
    assert intake.load_sequences().through("p-saravena") == 1  # kept for a restart of the core
    store.close()


async def test_a_killed_poller_blinds_its_zone_only_without_an_outage_until_it_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of the only poller of Saravena: the broker publishes its last will, and once it has been
    silent for pollers.silent_after the zone is blind: its targets are unknown at the core (neither
    down nor up), the core's own zone is untouched, no incident opens and the event log is not
    written. A new poller process is heard and the zone is back with its stored states."""
    monkeypatch.setenv("MQTT_CORE_PASS", PASSWORD)
    (tmp_path / "mqtt").mkdir()
    broker = Mosquitto(tmp_path / "mqtt")
    text = config_text(broker, timing="  heartbeat: 0.5s\n  silent_after: 3s\n")
    core_cfg, poller_cfg = write(tmp_path / "core", text), write(tmp_path / "poller", text)
    daemon = Daemon(core_cfg)
    events: list[IncidentEvent] = []
    daemon.incident_sinks.append(events.extend)

    def states(*targets: str) -> set[State]:
        return {daemon.states[t].state for t in targets}

    with started(broker):
        task = asyncio.create_task(daemon.run())
        try:
            with poller(tmp_path, poller_cfg) as proc:
                # (a poller slower to start than silent_after had its zone blind meanwhile: back once heard)
                await until(lambda: daemon.zones is not None and not daemon.zones.watch.blind
                            and states(*REMOTE, "core", "cpe-n") == {State.UP}, 60, "every target up at the core")
                proc.kill()
                await until(lambda: daemon.feed is not None and "p-saravena" in daemon.feed.offline, 60,
                            "the poller's last will")
                await until(lambda: daemon.zones is not None and "saravena" in daemon.zones.watch.blind, 60,
                            "the zone blind")
                assert states(*REMOTE) == {State.UNKNOWN} and states("core", "cpe-n") == {State.UP}
                assert selfmetrics.ZONE_BLIND.labels("saravena")._value.get() == 1
            with poller(tmp_path, poller_cfg):
                await until(lambda: daemon.zones is not None and not daemon.zones.watch.blind
                            and states(*REMOTE) == {State.UP}, 60, "the zone back, its targets up")
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 30)
    assert events == []  # no outage, no notice: the core never took the silence for a failure
    store = EventStore(tmp_path / "core" / "var" / "monitor.db")
    try:
        assert {c.new for c in store.changes() if c.target in REMOTE} == {State.UP}  # nothing written meanwhile
    finally:
        store.close()


async def test_a_reload_hands_a_zone_between_the_core_and_its_poller_without_removing_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGHUP with the zone's pollers dropped: the core polls the zone itself; with them back, it stops
    again. Neither hand-over is a target 'removed from the inventory' in the event log."""
    monkeypatch.setenv("MQTT_CORE_PASS", PASSWORD)
    (tmp_path / "mqtt").mkdir()
    broker = Mosquitto(tmp_path / "mqtt")
    text = config_text(broker)
    cfg = write(tmp_path / "core", text)
    daemon = Daemon(cfg)

    def polled() -> set[str]:
        assert daemon.polling.scheduler is not None
        return set(daemon.polling.scheduler._targets)

    with started(broker):
        task = asyncio.create_task(daemon.run())
        try:
            await until(daemon.ready.is_set, 60, "the core started")
            assert polled() == {"core", "cpe-n"}
            cfg.write_text(text.replace(", pollers: [p-saravena]", ""))
            assert await daemon.reload()
            assert polled() == {"core", "cpe-n", *REMOTE}
            assert daemon.feed is not None and daemon.feed.poller_zones == {}
            await until(lambda: daemon.states["cpe-1"].state is State.UP, 60, "the core polls Saravena")
            cfg.write_text(text)
            assert await daemon.reload()
            assert polled() == {"core", "cpe-n"} and daemon.feed.poller_zones == {"p-saravena": "saravena"}
            assert daemon.states["cpe-1"].state is State.UP  # its state stays, until its poller says otherwise
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 30)
    store = EventStore(tmp_path / "core" / "var" / "monitor.db")
    try:
        assert [c for c in store.changes() if c.new is State.UNKNOWN] == []
    finally:
        store.close()
