"""A remote poller's late batch through ``monitor run`` (issue 14), on loopback: the daemon as the core,
an in-process poller link with its spool publishing through a real, authenticated mosquitto, real
SMTP for the desk, the technician and the customers.

The poller was cut from its broker for two minutes while its tower failed; its spool hands the
changes over with their real times. The outage opens at the tower's confirmed DOWN, not at the news'
arrival: in the store, the desk's ticket ("Inicio"/"Start"), the technician's alert and every
customer's notice ("since HH:MM"), and after a restart of the core it is still that incident, with
that start, which resolves once; the report's incident line starts there too."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from monitor.correlate.store import IncidentStore
from monitor.daemon import Daemon
from monitor.inventory.loader import load_inventory
from monitor.remote.link import Broker, PollerLink, cancel_until_done
from monitor.remote.spool import PollerSpool
from monitor.report.compute import compute
from monitor.report.model import Period
from monitor.report.source import load_input
from monitor.state import State, StateChange
from tests.servers.common import until
from tests.servers.mosquitto import PASSWORD, USER, Mosquitto
from tests.servers.smtp import SmtpServer
from tests.test_remote_core import CPES, DELIVERY, REMOTE, config_text, desk, people, servers, write  # noqa: F401

pytestmark = [pytest.mark.servers, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="the daemon probes its own zone by ICMP")]
UP, DOWN, UNK = State.UP, State.DOWN, State.UNKNOWN
PARTITION = 120.0  # seconds the news waited in the poller's spool


def local(ts: float) -> str:
    """As the notices print a time (delivery.timezone's default, America/Bogota)."""
    return datetime.fromtimestamp(ts, ZoneInfo("America/Bogota")).strftime("%Y-%m-%d %H:%M")


def text(m: EmailMessage) -> str:
    body = m.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def opened_rows(db: Path) -> list[tuple[str, str, str, float]]:
    store = IncidentStore(db)
    try:
        return [(r.id, r.root, r.status, r.opened_at) for r in store.incidents(status=None)]
    finally:
        store.close()


async def test_a_late_batch_opens_its_outage_at_the_towers_real_down_through_notices_restart_and_report(
        tmp_path: Path, servers: tuple[Mosquitto, SmtpServer]) -> None:  # noqa: F811
    broker, smtp = servers
    cfg = write(tmp_path / "core", config_text(broker, DELIVERY.format(port=smtp.port),
                                               timing="  heartbeat: 0.5s\n  silent_after: 30s\n"))
    db = tmp_path / "core" / "var" / "monitor.db"
    link = PollerLink(PollerSpool(tmp_path / "spool.db", "p-saravena", "saravena"),
                      [Broker("127.0.0.1", broker.auth_port, USER, PASSWORD)], heartbeat=0.5, resend_after=1.0)

    async def send(*changes: StateChange) -> None:
        link.spool.add(list(changes))
        link.added()
        await until(lambda: link.spool.backlog() == 0, 60, "the poller's report acknowledged")

    async def core(run: Daemon, steps: object) -> None:
        task = asyncio.create_task(run.run())
        try:
            await until(lambda: run.feed is not None and run.feed.connected.is_set(), 60, "the core subscribed")
            await steps  # type: ignore[misc]
        finally:
            run.request_stop()
            await asyncio.wait_for(task, 30)

    t0 = time.time()
    down = t0 - PARTITION  # the tower's DOWN, two minutes ago; its CPEs and AP a little before it
    batch = [StateChange(t, UP, DOWN, down - (1.0 if t in CPES else 0.5 if t == "ap-s" else 0.0),
                         "2 consecutive failed polls: timeout") for t in sorted(REMOTE)]

    async def first_run(run: Daemon) -> None:
        await until(lambda: link.connected.is_set(), 60, "the poller connected")
        await send(*(StateChange(t, UNK, UP, t0 - 600, "answers") for t in sorted(REMOTE)))
        await send(*batch)  # the spool after the partition: all at once, minutes late
        # the technician's alert, three customers' notices and the desk's ticket
        await until(lambda: len(people(smtp)) == 4 and len(desk(smtp)) >= 1, 60, "the outage's mails")

    link_task = asyncio.create_task(link.run())
    try:
        first = Daemon(cfg)
        await core(first, first_run(first))
        ((inc, root, status, opened_at),) = opened_rows(db)
        assert (root, status, opened_at) == ("twr-s", "open", down)  # not when the news came
        since, arrived = local(down), local(t0)
        assert since != arrived
        for m in people(smtp):  # "desde las 2026-12-06 16:40" in each customer's and Ana's mail
            assert since in text(m), text(m)
            assert "example.com" not in str(m["To"]) or arrived not in text(m), text(m)
        assert all(since in text(m) for m in desk(smtp))  # the ticket's start

        again = Daemon(cfg)  # the core restarts: the same incident, the same start

        async def second_run() -> None:
            await until(lambda: link.connected.is_set(), 60, "the poller connected again")
            back = time.time()
            await send(*(StateChange(t, DOWN, UP, back, "answers") for t in sorted(REMOTE)))
            await until(lambda: opened_rows(db)[0][2] == "resolved", 60, "resolved after its hold-down")
            await until(lambda: len(people(smtp)) == 8, 60, "the restored notices and the resolution")

        await core(again, second_run())
    finally:
        await cancel_until_done(link_task)
        link.spool.close()
    assert opened_rows(db) == [(inc, "twr-s", "resolved", down)]
    ana = [text(m) for m in people(smtp) if str(m["To"]) == "ana@isp.example"]
    assert len(ana) == 2 and all(since in t for t in ana)  # her alert, and "resolved ... open since" the start
    assert max(smtp.repeats().values()) == 1

    inv = load_input(db, load_inventory(cfg, env={"MQTT_CORE_PASS": PASSWORD}), Period(t0 - 600, time.time(), "t"),
                     until=time.time())
    report = compute(inv, by="node")
    (line,) = report.incidents
    assert (line.id, line.opened_at) == (inc, down)
    tower = next(r.figures for r in report.rows if r.key == "twr-s")
    assert tower.down_s > PARTITION - 5  # counted from the real DOWN, whatever the core's restart took
