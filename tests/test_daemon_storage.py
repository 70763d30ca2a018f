"""The daemon's samples reach a real InfluxDB 1.6.7: ICMP, SNMP from a real agent, and states.

The SNMP agent is snmpsim serving the recorded Ubiquiti airOS 8 device, so the signal written to
the database must be the recording's -70 dBm; everything is read back with InfluxQL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from monitor.daemon import Daemon
from tests.servers.common import free_port, until
from tests.servers.influxdb import InfluxDB1
from tests.servers.snmpsim import snmpsim
from tests.snmp_helpers import scalar
from tests.tsdb_support import started

pytestmark = [pytest.mark.root, pytest.mark.servers]


def config(folder: Path, influx_url: str, snmp_port: int, auth: str = "") -> Path:
    """``auth``: extra ``timeseries`` keys, e.g. a username and a password from a file."""
    (folder / "community").write_text("airos_airos8\n")
    path = folder / "sites.yaml"
    path.write_text(f"""
municipalities: [{{id: arauca, name: Arauca}}]
sites: [{{id: twr-centro, municipality: arauca, name: Torre Centro, lat: 7.08, lon: -70.76}}]
service_classes:
  residencial: {{response_hours: 24, availability_target: 98.0}}
credentials:
  lab: {{version: 2c, community: {{file: community}}}}
polling: {{interval: 1.0, icmp_count: 2, icmp_timeout: 0.3, down_after: 2, up_after: 2}}
daemon: {{state_dir: var, metrics_listen: ""}}
timeseries: {{kind: influxdb1, url: "{influx_url}", database: monitor, flush_interval: 0.1{auth}}}
nodes:
  - {{id: core, kind: router, address: 127.0.0.2, site: twr-centro}}
  - id: ap-centro-1
    kind: ap
    address: 127.0.0.1
    parent: core
    snmp: {{profile: airos, credentials: lab, port: {snmp_port}, timeout: 0.4, retries: 1}}
customers:
  - id: C-0001
    name: Ferretería El Llano
    service_class: residencial
    endpoints: [{{id: cpe-0001, kind: cpe, address: 127.0.1.1, parent: ap-centro-1}}]
""")
    return path


async def test_icmp_snmp_and_state_points_arrive_with_their_tags(tmp_path: Path) -> None:
    (tmp_path / "influx").mkdir()
    influx = InfluxDB1(tmp_path / "influx")
    snmp_port = free_port()
    with started(influx), snmpsim(tmp_path / "snmpsim", snmp_port, ["airos_airos8"]):
        influx.create_database("monitor")
        cfg = config(tmp_path, influx.url, snmp_port)
        daemon = Daemon(cfg)
        task = asyncio.create_task(daemon.run())

        def rows(q: str) -> list[dict[str, Any]]:
            return influx.rows(q, "monitor")

        try:
            await until(lambda: bool(
                len(rows('SELECT * FROM "snmp" WHERE "node" = \'ap-centro-1\'')) >= 2
                and rows('SELECT * FROM "state" WHERE "node" = \'cpe-0001\' AND "state" = 1')
                and rows('SELECT * FROM "state" WHERE "node" = \'core\' AND "state" = 1')), 90,
                "snmp, icmp and state points in InfluxDB")
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 15)

        icmp = rows('SELECT * FROM "icmp" WHERE "node" = \'cpe-0001\'')
        assert icmp and all(r["ok"] == 1 and r["sent"] == 2 for r in icmp)
        assert icmp[0]["customer"] == "C-0001" and icmp[0]["municipality"] == "arauca"
        assert icmp[0]["site"] == "twr-centro" and icmp[0]["service_class"] == "residencial"

        signal = rows('SELECT "wireless_signal_dbm", "wireless_ccq_pct" FROM "snmp" WHERE "node" = \'ap-centro-1\''
                      ' AND "wireless_signal_dbm" < 0')
        expected_signal = float(scalar("airos_airos8", ".1.3.6.1.4.1.41112.1.4.5.1.5.1"))
        expected_ccq = float(scalar("airos_airos8", ".1.3.6.1.4.1.41112.1.4.5.1.7.1"))
        assert signal and {(r["wireless_signal_dbm"], r["wireless_ccq_pct"]) for r in signal} == {
            (expected_signal, expected_ccq)
        }
        polls = rows('SELECT "ok", "uptime_s" FROM "snmp_poll" WHERE "node" = \'ap-centro-1\' AND "ok" = 1')
        assert polls and all(r["uptime_s"] > 0 for r in polls)
        changes = rows('SELECT * FROM "state_change" WHERE "node" = \'core\'')
        assert [(r["old"], r["new"], r["state"]) for r in changes] == [("unknown", "up", 1)]
        sites = rows('SELECT * FROM "site"')
        assert [(r["site"], r["lat"], r["lon"]) for r in sites] == [("twr-centro", 7.08, -70.76)]
        states = rows('SELECT "state", "available" FROM "state" WHERE "node" = \'core\'')
        assert states and states[-1]["state"] == 1 and states[-1]["available"] == 1


async def test_recent_incident_annotations_are_written_again_at_start(tmp_path: Path) -> None:
    """A crash can lose an incident's annotation point in the writer's buffer: start re-sends recent ones."""
    import time

    from monitor.clock import ManualClock
    from monitor.correlate.service import CorrelationService
    from monitor.correlate.settings import CorrelationSettings
    from monitor.inventory.loader import load_inventory
    from monitor.state import State, StateChange
    from monitor.store import EventStore

    (tmp_path / "influx").mkdir()
    influx = InfluxDB1(tmp_path / "influx")
    with started(influx):
        influx.create_database("monitor")
        cfg = config(tmp_path, influx.url, free_port())
        inv = load_inventory(cfg)
        db = tmp_path / "var" / "monitor.db"
        # what a crashed run left behind: ap-centro-1 down, its incident opened and persisted
        t0 = time.time() - 120
        clock = ManualClock(t0)
        log, svc = EventStore(db), CorrelationService(inv, db, CorrelationSettings.for_interval(1.0), clock)
        down = [StateChange("ap-centro-1", State.UNKNOWN, State.DOWN, t0, "3 consecutive failed polls")]
        log.append(down)
        svc.on_state_changes(down)
        clock.advance(5)
        opened = [e for e in svc.tick() if e.event == "opened"]
        svc.close()
        log.close()
        assert [(e.kind, e.root) for e in opened] == [("outage", "ap-centro-1")]

        daemon = Daemon(cfg)
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: bool(influx.rows('SELECT * FROM "incident"', "monitor")), 60,
                        "the incident annotation written again")
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 15)
        rows = influx.rows('SELECT * FROM "incident" WHERE "event" = \'opened\'', "monitor")
        assert [(r["incident"], r["root"], r["open"]) for r in rows] == [(opened[0].incident, "ap-centro-1", 1)]


async def test_sighup_with_the_corrected_password_delivers_everything_held_meanwhile(tmp_path: Path) -> None:
    """The issue's case: a wrong InfluxDB password, then the right one and SIGHUP. The running writer
    must take the new password, and no point polled in between may be lost (they were dropped)."""
    import os
    import signal

    from monitor import selfmetrics

    def sample(name: str, **labels: str) -> float:
        return selfmetrics.REGISTRY.get_sample_value(f"monitor_{name}", labels) or 0.0

    def icmp_polls() -> float:
        return sum(sample("polls_total", probe="icmp", result=r) for r in ("ok", "timeout", "unreachable", "error"))

    (tmp_path / "influx").mkdir()
    influx = InfluxDB1(tmp_path / "influx", admin=("admin", "right-pass-41"))
    with started(influx):
        influx.create_database("monitor")
        secret = tmp_path / "influx_password"
        secret.write_text("wrong-pass-17\n")
        cfg = config(tmp_path, influx.url, free_port(), ", username: admin, password: {file: influx_password}")
        polls0, dropped0 = icmp_polls(), sample("timeseries_spool_dropped_points_total")
        daemon = Daemon(cfg)
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: daemon.ready.is_set(), 30, "daemon started")
            writer = daemon.writer
            assert writer is not None
            await until(lambda: writer.spool_points > 20, 30, "points held")
            secret.write_text("right-pass-41\n")
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: writer.refused is None and writer.spool_points == 0, 30, "held points delivered")
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 15)
        polled = icmp_polls() - polls0
        stored = influx.query('SELECT COUNT("sent") FROM "icmp"', "monitor")[0]["values"][0][1]
        assert stored == polled > 0  # every ICMP poll of the run is in the database, once
        assert sample("timeseries_spool_dropped_points_total") == dropped0
        assert sample("timeseries_writer_blocked", reason="auth") == 0
