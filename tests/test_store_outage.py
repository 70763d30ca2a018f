"""The store on PostgreSQL going away (a restart, a crash, a cut) while the daemon works (issue 13).

What the daemon already does when SQLite refuses writes (a full disk, a lock) must hold when the
database server goes away: state changes held in memory in order and written when it returns,
incidents recorded late rather than never, notices neither lost nor sent twice, one log line when
each writer loses the store and one when it has it back, and ``monitor_store_failing`` on /metrics
meanwhile. The server is a real PostgreSQL 15 of this module (tests/servers/postgres.py), stopped
the way ``pg_ctl stop -m fast`` stops it (every session ended at once) and started again on the same
port and data.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from monitor import selfmetrics
from monitor.clock import ManualClock
from monitor.daemon import Daemon
from monitor.db import DatabaseError, open_store
from monitor.delivery.config import RetrySettings, SmtpSettings
from monitor.delivery.outbox import HandedOver, NewRow, Outbox, Row
from monitor.delivery.worker import Worker
from monitor.errors import StoodDown
from monitor.notify.email import EmailSender
from monitor.store import components
from tests.firewall import icmp_block
from tests.netns import nft_table
from tests.servers.common import free_port, until
from tests.servers.postgres import PostgreSQL as Server
from tests.servers.smtp import SmtpServer
from tests.store_engines import (  # noqa: F401  (fixtures)
    ThrowawayDatabase,
    config_keys,
    connect,
    pg_database_fixture,
    pg_server_fixture,
)
from tests.test_daemon import metrics
from tests.test_daemon_incidents import AP, CPES, mail_delivery, write_config
from tests.tsdb_support import started

pytestmark = [pytest.mark.servers, pytest.mark.skipif(os.geteuid() != 0, reason="runs postgres as its own user")]

POLICY = RetrySettings(initial=0.05, maximum=0.2, deadline=3600.0)


def failing(component: str) -> float:
    value = selfmetrics.REGISTRY.get_sample_value("monitor_store_failing", {"component": component})
    return -1.0 if value is None else value


def outages(component: str) -> float:
    return selfmetrics.REGISTRY.get_sample_value("monitor_store_outages_total", {"component": component}) or 0.0


def test_a_transaction_cut_off_by_a_lost_connection_is_not_carried_on_to_a_new_one(
        pg_database: ThrowawayDatabase) -> None:
    """The connection dies inside a transaction: its remaining statements fail instead of running on a
    new connection one by one (each committed alone: half a transaction kept); after its ROLLBACK the
    next statement connects again."""
    engine = pg_database
    open_store(engine, components(), what="the store", busy_timeout=5.0).close()
    db, admin = engine.connect(), engine.connect()
    insert = "INSERT INTO target_state (target, state, since) VALUES (?, ?, ?)"
    db.execute("BEGIN IMMEDIATE")
    db.execute(insert, ("a", "up", 1.0))
    admin.execute("SELECT pg_terminate_backend(?)", (db.conn.info.backend_pid,))
    with pytest.raises(DatabaseError):
        db.execute(insert, ("b", "up", 1.0))  # meets the lost connection
    with pytest.raises(DatabaseError, match="lost inside a transaction"):
        db.execute(insert, ("c", "up", 1.0))
    db.execute("ROLLBACK")
    db.execute(insert, ("d", "up", 1.0))  # a new connection, outside any transaction
    assert admin.execute("SELECT target FROM target_state").fetchall() == [("d",)]
    db.close()
    admin.close()


class StopsTheDatabase:
    """The real SMTP sender; the database server stops (fast) right after the first mail went out,
    before the worker can record it: the moment a crash-safe worker is weakest."""

    channel = "email"

    def __init__(self, smtp: SmtpServer, server: Server) -> None:
        self.real = EmailSender(SmtpSettings(host="127.0.0.1", port=smtp.port, security="none",
                                             sender="NOC <noc@isp.example>", pool_size=1, timeout=30.0))
        self.server = server
        self.sent: list[str] = []

    async def send(self, row: Row, handed_over: HandedOver | None = None) -> str | None:
        result = await self.real.send(row, handed_over)
        self.sent.append(row.key)
        if len(self.sent) == 1:
            await self.after_the_first()
        return result

    async def after_the_first(self) -> None:
        await asyncio.to_thread(self.server.stop_fast)

    async def close(self) -> None:
        await self.real.close()


def mail(key: str, to: str) -> NewRow:
    return NewRow(key, "INC-1", "notify", to, "email", "", {"to": to, "subject": "Corte", "body": "Sin servicio",
                                                            "language": "es"})


async def test_a_worker_keeps_its_outcomes_while_the_database_restarts_and_sends_nothing_twice(
        tmp_path: Path, pg_server: Server, pg_database: ThrowawayDatabase, caplog: pytest.LogCaptureFixture) -> None:
    """The database stops between a mail's hand-over and its record: the worker holds the outcome,
    sends nothing more while it cannot record, and once the database is back records the mail as
    delivered (not sent again as uncertain) and sends the rest, each once. One line when the
    outbox stopped taking writes, one when it took them again."""
    caplog.set_level(logging.INFO, logger="monitor.delivery")
    (tmp_path / "smtp").mkdir()
    smtp = SmtpServer(tmp_path / "smtp")
    outbox = Outbox(pg_database, busy_timeout=0.2)
    outbox.add([mail("INC-1/notify/c1/1", "c1@example.com"), mail("INC-1/notify/c2/1", "c2@example.com"),
                mail("INC-1/notify/c3/1", "c3@example.com")], {}, {}, 1.0)
    with started(smtp):
        sender = StopsTheDatabase(smtp, pg_server)
        worker = Worker(outbox, sender, POLICY, ManualClock(2.0))
        task = asyncio.create_task(worker.run())
        try:
            await until(lambda: task.done() or "outbox not writable" in caplog.text, 60,
                        "the worker meeting the stopped database")
            assert not task.done()  # it waits for the database, it does not fail
            assert sender.sent == ["INC-1/notify/c1/1"] and smtp.count() == 1
            await asyncio.to_thread(pg_server.start, 60)
            await until(lambda: not outbox.pending(), 60, "every mail recorded")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sender.close()
        assert smtp.count() == 3 and max(smtp.repeats().values()) == 1
    rows = {r["key"]: (r["status"], r["attempts"]) for r in outbox.rows()}
    assert rows == {f"INC-1/notify/c{i}/1": ("delivered", 1) for i in (1, 2, 3)}
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "outbox" in r.getMessage()]
    assert said == [("ERROR", "outbox not writable, deliveries wait and are retried every second"),
                    ("WARNING", "outbox writable again, deliveries go on")]
    assert "Traceback" not in caplog.text
    outbox.close()


# ------------------------------------------------------------------------------------------------ the daemon

def daemon_config(folder: Path, where: ThrowawayDatabase, smtp: SmtpServer, metrics_port: int) -> Path:
    """An AP with three customers' CPEs on this process's own addresses (tests/test_daemon_incidents.py),
    notices by mail, the store on PostgreSQL (``daemon.store``, the password from a file), /metrics."""
    return write_config(folder, mail_delivery(smtp.port), config_keys(where, folder), f"127.0.0.1:{metrics_port}")


def stored_changes(where: ThrowawayDatabase) -> list[tuple[str, str, str, float]]:
    db = connect(where)
    try:
        return [tuple(r) for r in db.execute("SELECT target, old, new, ts FROM state_changes ORDER BY id").fetchall()]
    finally:
        db.close()


def scraped(port: int, name: str, component: str) -> float | None:
    """A sample of the daemon's /metrics, read over HTTP as Prometheus does."""
    for line in metrics(port).splitlines():
        if line.startswith(f'{name}{{component="{component}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_daemon_loses_nothing_while_postgresql_restarts_twice_mid_incident(
        tmp_path: Path, pg_server: Server, pg_database: ThrowawayDatabase, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL stops while an AP and its CPEs go down, and again while they come back (``pg_ctl stop
    -m fast``, started again on the same port): every transition is in the store afterwards, in the
    order it was announced and with its own time; one incident; each customer and the technician get
    one "opened" and one "restored" mail; each writer of the store logs one line when it went and one
    when it came back, per stop; /metrics shows the store failing meanwhile."""
    caplog.set_level(logging.INFO)
    (tmp_path / "smtp").mkdir()
    smtp = SmtpServer(tmp_path / "smtp")
    port = free_port()
    before = outages("events")  # (the counter is the process's: earlier tests' episodes are in it)
    with started(smtp):
        daemon = Daemon(daemon_config(tmp_path, pg_database, smtp, port))
        task = asyncio.create_task(daemon.run())

        def states(state: str, targets: Iterable[str]) -> bool:
            return all(t in daemon.states and daemon.states[t].state.value == state for t in targets)

        async def outage(change: Callable[[], None], state: str) -> None:
            """The database goes; ``change`` makes the AP and CPEs go ``state``; the database returns."""
            await asyncio.to_thread(pg_server.stop_fast)
            change()
            await until(lambda: states(state, ["ap-1", *CPES]), 60, f"all {state} while the database is away")
            await until(lambda: daemon.polling.keeper is not None and daemon.polling.keeper.held >= 4, 60,
                        "the changes held")
            assert await asyncio.to_thread(scraped, port, "monitor_store_failing", "events") == 1.0
            await asyncio.to_thread(pg_server.start, 60)

        try:
            await until(lambda: states("up", ["core", "ap-1", *CPES]), 60, "all up")
            with icmp_block() as fw:
                await outage(lambda: fw.block(AP, *CPES.values()), "down")
                await until(lambda: smtp.count() >= 4, 90, "the technician's and three customers' mails")
                await outage(lambda: fw.unblock(AP, *CPES.values()), "up")
            await until(lambda: smtp.count() >= 8, 90, "the restored mails")
            await until(lambda: not daemon.polling.keeper.held, 60, "nothing held")  # type: ignore[union-attr]
            assert await asyncio.to_thread(scraped, port, "monitor_store_failing", "events") == 0.0
            assert await asyncio.to_thread(scraped, port, "monitor_store_outages_total", "events") == before + 2
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 60)
    to = sorted(str(m["To"]) for m in smtp.messages())
    assert to == sorted(["ana@isp.example"] * 2 + [f"c{i}@example.com" for i in (1, 2, 3)] * 2)
    changes = [c for c in stored_changes(pg_database) if c[0] in ("ap-1", *CPES)]
    for target in ("ap-1", *CPES):
        assert [(old, new) for t, old, new, _ in changes if t == target][-2:] == [("up", "down"), ("down", "up")]
    assert [c[3] for c in changes] == sorted(c[3] for c in changes)  # in the order announced, with their own time
    lines = [r.getMessage() for r in caplog.records]
    for went, back in [("event store not writable, holding state changes in memory and retrying",
                        "event store writable again, held state changes recorded"),
                       ("incidents cannot be recorded, retrying every second", "incidents recorded again"),
                       ("outbox not writable, deliveries wait and are retried every second",
                        "outbox writable again, deliveries go on")]:
        assert lines.count(went) == lines.count(back) <= 2, (went, lines.count(went), lines.count(back))
    assert lines.count("event store not writable, holding state changes in memory and retrying") == 2
    assert "Traceback" not in caplog.text and "delivery failed" not in caplog.text


#: how long the daemon's loop may be held when the network to PostgreSQL goes silent: one statement
#: waiting out the store connection's TCP user timeout (monitor/db_postgres.py, 2 s) and one reconnect
#: attempt's wait (0.5 s), with room for a loaded machine; before, every statement and every reconnect
#: held it for 10 s, so the term could only end by ending the process
CUT_LAG = 4.0


def stood_down(outcome: BaseException | None) -> bool:
    if isinstance(outcome, BaseExceptionGroup):
        return any(stood_down(e) for e in outcome.exceptions)
    return isinstance(outcome, StoodDown)


async def test_a_silent_network_cut_to_postgresql_does_not_hold_the_daemons_loop(
        tmp_path: Path, pg_server: Server, pg_database: ThrowawayDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """The network to PostgreSQL goes silent (nftables drops every packet to and from its port: no reset,
    no error, as when a link between the machines fails) while an AP and its CPEs go down. The daemon's
    event loop, which also polls, is held for at most one statement's TCP user timeout: it keeps
    polling (the DOWNs are confirmed and held), and when the lease can no longer be renewed it ends its
    term itself, in time, without the process-ending backstop. A daemon started again once the path is
    back (systemd's restart) takes over from the store: every change stored once, in order, and the
    technician and each customer get one "opened" mail."""
    backstop: list[str] = []
    monkeypatch.setattr("monitor.ha.keeper.exit_process", backstop.append)  # (instead of ending pytest)
    (tmp_path / "smtp").mkdir()
    smtp = SmtpServer(tmp_path / "smtp")
    loop = asyncio.get_running_loop()
    lags: list[float] = []

    async def sample_lag() -> None:
        while True:
            start = loop.time()
            await asyncio.sleep(0.05)
            lags.append(loop.time() - start - 0.05)

    def states(daemon: Daemon, state: str, targets: Iterable[str]) -> bool:
        return all(t in daemon.states and daemon.states[t].state.value == state for t in targets)

    cut = (f"chain out {{ type filter hook output priority 0; policy accept; tcp dport {pg_server.port} drop;"
           f" tcp sport {pg_server.port} drop; }}")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with started(smtp), icmp_block() as fw:
        a = Daemon(daemon_config(tmp_path / "a", pg_database, smtp, free_port()))
        run_a = asyncio.create_task(a.run())
        try:
            await until(lambda: states(a, "up", ["core", "ap-1", *CPES]), 60, "all up")
            sampler = asyncio.create_task(sample_lag())
            with nft_table(cut):
                fw.block(AP, *CPES.values())
                await until(lambda: states(a, "down", ["ap-1", *CPES]), 60, "all down while the database is cut off")
                await until(lambda: a.polling.keeper is not None and a.polling.keeper.held >= 4, 60,
                            "the changes held")
                outcome = (await asyncio.gather(asyncio.wait_for(run_a, 60), return_exceptions=True))[0]
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        finally:
            if not run_a.done():
                a.request_stop()
                await asyncio.gather(asyncio.wait_for(run_a, 60), return_exceptions=True)
        print(f"silent cut: the event loop was held at most {max(lags, default=0):.2f} s")
        assert lags and max(lags) <= CUT_LAG, f"the event loop was held {max(lags):.1f} s during the cut"
        assert stood_down(outcome), outcome
        assert backstop == []
        b = Daemon(daemon_config(tmp_path / "b", pg_database, smtp, free_port()))
        run_b = asyncio.create_task(b.run())
        try:
            await until(lambda: smtp.count() >= 4, 120, "the technician's and three customers' mails")
            await until(lambda: b.polling.keeper is not None and not b.polling.keeper.held, 60, "nothing held")
        finally:
            b.request_stop()
            await asyncio.wait_for(run_b, 60)
    to = sorted(str(m["To"]) for m in smtp.messages())
    assert to == sorted(["ana@isp.example"] + [f"c{i}@example.com" for i in (1, 2, 3)])
    changes = [c for c in stored_changes(pg_database) if c[0] in ("ap-1", *CPES)]
    for target in ("ap-1", *CPES):
        assert [(old, new) for t, old, new, _ in changes if t == target] == [("unknown", "up"), ("up", "down")]
    assert [c[3] for c in changes] == sorted(c[3] for c in changes)
