"""The daemon turns a real outage on loopback into one correlated incident, and resolves it.

An AP and the three CPEs behind it stop answering (nftables drops their echo requests): the CPEs
may be confirmed before the AP, yet exactly one *outage* incident rooted at the AP must open, with
the three endpoints attached; when they answer again it resolves. Side effects are the sink's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.store import IncidentStore
from monitor.daemon import Daemon
from monitor.delivery.outbox import Outbox
from tests.firewall import icmp_block, lab_address
from tests.servers.common import until
from tests.servers.smtp import SmtpServer
from tests.store_engines import Where, config_keys, configured, pg_server_fixture, where_fixture  # noqa: F401
from tests.tsdb_support import started

pytestmark = pytest.mark.root

# this process's own addresses: blocks apply host-wide (tests/firewall.py)
AP = lab_address(20)
CPES = {"cpe-1": lab_address(21), "cpe-2": lab_address(22), "cpe-3": lab_address(23)}


def write_config(folder: Path, delivery: str = "", store: str = "", metrics_listen: str = "") -> Path:
    """``store``: more ``daemon:`` keys (tests.store_engines.config_keys)."""
    endpoints = "\n".join(
        f"  - {{id: C{i}, name: Cliente {i}, service_class: residencial, contacts: {{email: c{i}@example.com}},"
        f" language: {'en' if i == 3 else 'es'},"
        f" endpoints: [{{id: {cpe}, kind: cpe, address: {addr}, parent: ap-1}}]}}"
        for i, (cpe, addr) in enumerate(CPES.items(), 1)
    )
    path = folder / "sites.yaml"
    path.write_text(f"""
municipalities: [{{id: m1, name: Municipio Uno}}]
sites: [{{id: s1, municipality: m1, name: Torre Uno}}]
service_classes:
  residencial: {{response_hours: 24, availability_target: 98.0}}
polling: {{interval: 0.2, icmp_count: 1, icmp_timeout: 0.1, down_after: 2, up_after: 2}}
correlation: {{settle: 0.5, hold_down: 0.6, window: 1.0}}
daemon: {{state_dir: var, metrics_listen: "{metrics_listen}"{store}}}
nodes:
  - {{id: core, kind: router, address: 127.0.0.1, site: s1}}
  - {{id: ap-1, kind: ap, address: {AP}, parent: core}}
customers:
{endpoints}
{delivery}""")
    return path


def mail_delivery(smtp_port: int) -> str:
    """A ``delivery:`` section: the technician and the customers by mail through the SMTP server on ``smtp_port``."""
    return f"""
delivery:
  smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none, from: "NOC <noc@isp.example>"}}
  technicians: [{{id: ana, name: Ana Torres, email: ana@isp.example}}]
  oncall: [{{municipality: "*", shifts: [{{days: [mon-sun], tiers: [ana]}}]}}]
  customers: {{kinds: [outage, suspected], channels: [email], company: Llanos Net}}
  retry: {{initial: 0.2s, maximum: 1s}}
"""


async def test_ap_outage_is_one_incident_rooted_at_the_ap(tmp_path: Path) -> None:
    daemon = Daemon(write_config(tmp_path))
    events: list[IncidentEvent] = []
    daemon.incident_sinks.append(events.extend)
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: len(daemon.states) == 5 and all(s.state.value == "up" for s in daemon.states.values()))
        with icmp_block() as fw:
            fw.block(AP, *CPES.values())
            await until(lambda: any(e.event == "opened" for e in events)
                        and all(daemon.states[t].state.value == "down" for t in ["ap-1", *CPES]))
        await until(lambda: any(e.event == "resolved" for e in events))
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 15)

    opened = [e for e in events if e.event == "opened"]
    assert len(opened) == 1, events
    assert (opened[0].kind, opened[0].root) == ("outage", "ap-1")
    incident = opened[0].incident
    assert {e.incident for e in events} == {incident}  # no second incident, no per-CPE alarms
    resolved = [e for e in events if e.event == "resolved"]
    assert len(resolved) == 1 and set(resolved[0].affected_endpoints) == set(CPES)
    assert set(resolved[0].affected_customers) == {"C1", "C2", "C3"}

    store = IncidentStore(tmp_path / "var" / "monitor.db")
    try:
        rows = store.incidents(status=None)
        assert [(r.id, r.kind, r.root, r.status) for r in rows] == [(incident, "outage", "ap-1", "resolved")]
    finally:
        store.close()


async def test_outage_notices_reach_a_real_smtp_server_once_each(tmp_path: Path, where: Where) -> None:
    """The whole pipeline: real pings fail → incident → technician alert + one notice per customer → restored;
    on the SQLite store and on PostgreSQL (``daemon.store``)."""
    (tmp_path / "smtp").mkdir()
    smtp = SmtpServer(tmp_path / "smtp")
    with started(smtp):
        daemon = Daemon(write_config(tmp_path, mail_delivery(smtp.port), config_keys(where, tmp_path)))
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: len(daemon.states) == 5
                        and all(s.state.value == "up" for s in daemon.states.values()))
            with icmp_block() as fw:
                fw.block(AP, *CPES.values())
                await until(lambda: len(smtp.logical()) >= 4)  # the technician and three customers
            # three "service restored" notices and the technician's "resolved"
            await until(lambda: len(smtp.logical()) >= 8)
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 15)
    mails = smtp.logical().values()
    to = sorted(str(m["To"]) for m in mails)
    assert to == sorted(["ana@isp.example"] * 2 + [f"c{i}@example.com" for i in (1, 2, 3)] * 2)
    assert max(smtp.repeats().values()) == 1  # nobody got the same message twice
    english = [m for m in mails if str(m["To"]) == "c3@example.com"]
    assert all(m["Content-Language"] == "en" for m in english)
    assert isinstance(where, Path) or not (tmp_path / "var" / "monitor.db").exists()  # no SQLite file beside
    store = IncidentStore(configured(where, tmp_path / "var"))  # the configured store holds it all
    outbox = Outbox(configured(where, tmp_path / "var"))
    try:
        assert [(r.kind, r.root, r.status) for r in store.incidents(status=None)] == [("outage", "ap-1", "resolved")]
        assert len(outbox.rows(status="delivered")) == 8 and outbox.pending() == {}
    finally:
        store.close()
        outbox.close()
