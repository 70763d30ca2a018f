"""A COMMIT whose answer is lost, on a real PostgreSQL 15 (issue 13).

The connection dies after COMMIT reached the server and before the client heard the answer: the
transaction is committed, and the client, told only that the connection broke, would hold what it
wrote and write it again. A proxy (tests/servers/commit_cut.py) passes the COMMIT, throws the
server's answer away and hangs up; ``lose_commit`` hangs up with the COMMIT instead (nothing
committed), the case the client cannot tell from the first. Every writer that retries must end with
exactly one copy of what it wrote, and nothing may be left behind half done.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from monitor.clock import ManualClock
from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.store import IncidentStore
from monitor.daemon import Daemon
from monitor.delivery.config import RetrySettings
from monitor.delivery.outbox import NewRow, Outbox
from monitor.delivery.worker import Worker
from monitor.errors import StorageError
from monitor.polling.keeper import StoreKeeper
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.firewall import icmp_block
from tests.servers.commit_cut import CommitCut
from tests.servers.common import free_port, until
from tests.servers.postgres import PostgreSQL as Server
from tests.servers.smtp import SmtpServer
from tests.store_engines import ThrowawayDatabase, connect, pg_database_fixture, pg_server_fixture  # noqa: F401
from tests.test_daemon_incidents import AP, CPES
from tests.test_store_outage import StopsTheDatabase, daemon_config, stored_changes
from tests.tsdb_support import started

pytestmark = [pytest.mark.servers, pytest.mark.skipif(os.geteuid() != 0, reason="runs postgres as its own user")]


@pytest.fixture
def cut(pg_database: ThrowawayDatabase) -> Iterator[CommitCut]:
    proxy = CommitCut(int(pg_database.url.rsplit(":", 1)[1].split("/")[0]))
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def through(pg_database: ThrowawayDatabase, cut: CommitCut) -> Iterator[ThrowawayDatabase]:
    """The test's database, reached through the proxy."""
    db = ThrowawayDatabase(cut.url(pg_database.url), pg_database.password)
    try:
        yield db
    finally:
        db.close_all()


def change(target: str, ts: float, new: State = State.DOWN) -> StateChange:
    return StateChange(target, State.UP if new is State.DOWN else State.DOWN, new, ts, "3 consecutive failed polls")


def keeping(where: ThrowawayDatabase) -> tuple[EventStore, StoreKeeper]:
    """The event store and the daemon's keeper of it (which holds what failed and writes it again)."""
    store = EventStore(where, busy_timeout=0.5)
    return store, StoreKeeper(store, store.run_started(0.0))


def logged(where: ThrowawayDatabase) -> list[tuple[str, float]]:
    """(target, time) of every change in the log, in the order recorded."""
    check = EventStore(where)
    try:
        return [(c.target, c.ts) for c in check.changes()]
    finally:
        check.close()


@pytest.mark.parametrize("lose", ["reply", "commit"])
def test_state_changes_whose_commit_answer_was_lost_are_recorded_once(
    through: ThrowawayDatabase, pg_database: ThrowawayDatabase, cut: CommitCut, lose: str,
) -> None:
    """The keeper holds what it could not write and writes it again: the log must have each change once,
    whether the lost COMMIT had committed (``reply``) or not (``commit``)."""
    store, keeper = keeping(through)
    keeper.append([change("a", 1.0)])
    cut.lose_reply() if lose == "reply" else cut.lose_commit()
    keeper.append([change("b", 2.0), change("c", 2.0)])
    assert cut.cuts == 1
    keeper.retry()
    keeper.append([change("a", 3.0, State.UP)])
    assert keeper.held == 0
    store.close()
    assert logged(pg_database) == [("a", 1.0), ("b", 2.0), ("c", 2.0), ("a", 3.0)]


@pytest.mark.parametrize("lose", ["reply", "commit"])
def test_a_commit_in_doubt_while_the_server_cannot_be_asked_is_settled_at_the_next_write(
    through: ThrowawayDatabase, pg_database: ThrowawayDatabase, cut: CommitCut, lose: str,
) -> None:
    """The answer lost and the server out of reach right after: the write stays held (the store cannot tell
    yet); once the server answers, the store asks and writes only what is not recorded yet."""
    store, keeper = keeping(through)
    cut.lose_reply() if lose == "reply" else cut.lose_commit()
    cut.refusing = True  # (before the cut: the client connects again at once to ask)
    assert not keeper.append([change("b", 2.0)])
    keeper.retry()
    assert keeper.held == 1
    cut.refusing = False
    keeper.append([change("c", 4.0)])  # (joins what is held)
    keeper.retry()
    assert keeper.held == 0
    store.close()
    assert logged(pg_database) == [("b", 2.0), ("c", 4.0)]


def test_what_a_settled_commit_recorded_stays_left_out_until_a_write_succeeds(
    through: ThrowawayDatabase, pg_database: ThrowawayDatabase, cut: CommitCut,
) -> None:
    """The append in doubt found committed, the append of the rest fails (its COMMIT lost before the
    server had it): the keeper holds both again, and the store must still leave out the first."""
    store, keeper = keeping(through)
    cut.lose_reply()
    cut.refusing = True
    assert not keeper.append([change("b", 2.0)])
    cut.refusing = False
    cut.lose_commit()
    keeper.append([change("c", 4.0)])
    keeper.retry()
    assert cut.cuts == 2 and keeper.held == 2
    keeper.retry()
    assert keeper.held == 0
    store.close()
    assert logged(pg_database) == [("b", 2.0), ("c", 4.0)]


def test_a_commit_that_never_reached_a_session_still_running_its_transaction_ends_that_session(
    through: ThrowawayDatabase, pg_database: ThrowawayDatabase, cut: CommitCut,
) -> None:
    """The client's connection gone with its COMMIT while the server's side stays open (a cut between the
    machines): the server still runs the transaction, and would until its idle timeout. The store ends
    that session (rolling the transaction back) and knows at once that nothing was committed."""
    store, keeper = keeping(through)
    cut.stall_commit()
    assert not keeper.append([change("b", 2.0)])
    assert cut.cuts == 1
    keeper.retry()
    assert keeper.held == 0  # (not waiting out the server's 10 s idle_in_transaction_session_timeout)
    store.close()
    assert logged(pg_database) == [("b", 2.0)]


def test_the_fate_of_a_transaction_is_read_from_the_server_and_one_it_never_had_is_not_committed(
    pg_database: ThrowawayDatabase,
) -> None:
    """What settles a commit in doubt, asked directly: a committed transaction reads as committed, one
    rolled back as not, and an id the server has not given yet (a failover to a replica that never
    received the transaction) as not committed, not as an error that would keep the writer in doubt."""
    conn = pg_database.connect()
    try:
        conn.execute("BEGIN IMMEDIATE")
        token = conn._xact
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        rolled_back = conn._xact
        conn.execute("ROLLBACK")
        assert token is not None and rolled_back is not None
        assert conn.committed(token) is True
        assert conn.committed(rolled_back) is False
        assert conn.committed((token[0] + 10**6, token[1])) is False
    finally:
        conn.close()


def opened(incident: str, ts: float) -> IncidentEvent:
    return IncidentEvent(ts, "opened", incident, "outage", "ap-1", ("cpe-1",), ("c1",), detail="why")


@pytest.mark.parametrize(("lose", "refusing"), [("reply", False), ("reply", True), ("commit", True)])
def test_incident_events_whose_commit_answer_was_lost_are_recorded_once(
    through: ThrowawayDatabase, pg_database: ThrowawayDatabase, cut: CommitCut, lose: str, refusing: bool,
) -> None:
    """Correlation keeps a step's events that it could not record and saves them again with its next step
    (CorrelationService._save): each event, and the note that says why it opened, is in the log once."""
    store = IncidentStore(through, busy_timeout=0.5)
    first = opened("INC-1", 1.0)
    cut.lose_reply() if lose == "reply" else cut.lose_commit()
    cut.refusing = refusing
    try:
        store.save([first], {}, set(), [])
        unsaved = []
    except StorageError:
        unsaved = [first]
    assert unsaved or not refusing
    cut.refusing = False
    store.save([*unsaved, opened("INC-2", 2.0)], {}, set(), [])
    check = IncidentStore(pg_database)
    events = check.db.execute("SELECT incident, event FROM incident_events ORDER BY id").fetchall()
    notes = check.db.execute("SELECT incident FROM incident_actions ORDER BY id").fetchall()
    assert [tuple(e) for e in events] == [("INC-1", "opened"), ("INC-2", "opened")]
    assert [n[0] for n in notes] == ["INC-1", "INC-2"]
    check.close()
    store.close()


def test_incident_events_a_settled_commit_recorded_stay_left_out_until_a_save_succeeds(
    through: ThrowawayDatabase, pg_database: ThrowawayDatabase, cut: CommitCut,
) -> None:
    """As for the event store: correlation saves the step in doubt again with the next, which fails too."""
    store = IncidentStore(through, busy_timeout=0.5)
    first, second = opened("INC-1", 1.0), opened("INC-2", 2.0)
    cut.lose_reply()
    cut.refusing = True
    with pytest.raises(StorageError):
        store.save([first], {}, set(), [])
    cut.refusing = False
    cut.lose_commit()
    with pytest.raises(StorageError):
        store.save([first, second], {}, set(), [])
    store.save([first, second], {}, set(), [])
    check = IncidentStore(pg_database)
    events = check.db.execute("SELECT incident, event FROM incident_events ORDER BY id").fetchall()
    assert [tuple(e) for e in events] == [("INC-1", "opened"), ("INC-2", "opened")]
    check.close()
    store.close()


def mail(key: str) -> NewRow:
    return NewRow(key, "INC-1", "opened", key, "email", "", {"to": f"{key}@example.net"})


@pytest.mark.parametrize("lose", ["reply", "commit"])
def test_a_claim_whose_commit_answer_was_lost_does_not_strand_its_rows(
    through: ThrowawayDatabase, cut: CommitCut, lose: str,
) -> None:
    """A worker's claim marks rows as taken: committed unheard, the worker never has them, and until now
    nothing but a restart gave them back (an MQTT channel is one group: every later message waited too)."""
    outbox = Outbox(through, busy_timeout=0.5)
    outbox.add([mail("x"), mail("y")], {}, {}, 1.0)
    cut.lose_reply() if lose == "reply" else cut.lose_commit()
    with pytest.raises(StorageError):
        outbox.take("email", 2.0, 10)
    assert sorted(r.key for r in outbox.take("email", 2.0, 10)) == ["x", "y"]
    assert outbox.take("email", 2.0, 10) == []  # (claimed now, by the take that answered)
    outbox.close()


class LosesTheNextCommitAnswer(StopsTheDatabase):
    """The real SMTP sender; after the first mail the proxy loses the answer to the next COMMIT: the worker's
    record of that mail, which also marks the next row as being sent."""

    def __init__(self, smtp: SmtpServer, cut: CommitCut, server: Server) -> None:
        super().__init__(smtp, server)
        self.cut = cut

    async def after_the_first(self) -> None:
        self.cut.lose_reply()


async def test_a_worker_whose_record_loses_its_commit_answer_sends_each_mail_once_and_counts_it_once(
    tmp_path: Path, through: ThrowawayDatabase, cut: CommitCut, pg_server: Server,
) -> None:
    """The record of a delivered mail (with the next row's "sending" mark) committed unheard: the worker
    holds the outcome and records it again a second later. Each mail goes out once, each row is delivered
    with one attempt (the record written again used to count a second)."""
    (tmp_path / "smtp").mkdir()
    smtp = SmtpServer(tmp_path / "smtp")
    outbox = Outbox(through, busy_timeout=0.5)
    outbox.add([email(f"c{i}") for i in (1, 2, 3)], {}, {}, 1.0)
    with started(smtp):
        sender = LosesTheNextCommitAnswer(smtp, cut, pg_server)
        worker = Worker(outbox, sender, RetrySettings(initial=0.05, maximum=0.2, deadline=3600.0), ManualClock(2.0))
        task = asyncio.create_task(worker.run())
        try:
            await until(lambda: task.done() or not outbox.pending(), 60, "every mail recorded")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sender.close()
        assert cut.cuts == 1
        assert smtp.count() == 3 and max(smtp.repeats().values()) == 1
    assert {r["key"]: (r["status"], r["attempts"]) for r in outbox.rows()} == {
        f"INC-1/notify/c{i}/1": ("delivered", 1) for i in (1, 2, 3)}
    outbox.close()


def email(to: str) -> NewRow:
    return NewRow(f"INC-1/notify/{to}/1", "INC-1", "notify", to, "email", "",
                  {"to": f"{to}@example.com", "subject": "Corte", "body": "Sin servicio", "language": "es"})


async def test_a_daemon_losing_every_third_commit_answer_records_and_tells_everything_once(
    tmp_path: Path, through: ThrowawayDatabase, pg_database: ThrowawayDatabase, cut: CommitCut,
) -> None:
    """The whole daemon on a store whose every third COMMIT answer is lost while an AP and its three
    customers' CPEs go down and come back (real pings blocked by nftables, a real SMTP server): each
    transition is in the log once, each incident event once, one incident, and the technician and each
    customer get one "opened" and one "restored" mail."""
    (tmp_path / "smtp").mkdir()
    smtp = SmtpServer(tmp_path / "smtp")
    with started(smtp):
        daemon = Daemon(daemon_config(tmp_path, through, smtp, free_port()))
        task = asyncio.create_task(daemon.run())

        def states(state: str, targets: Iterable[str]) -> bool:
            return all(t in daemon.states and daemon.states[t].state.value == state for t in targets)

        try:
            await until(lambda: task.done() or states("up", ["core", "ap-1", *CPES]), 60, "all up")
            cut.lose_every(3)
            with icmp_block() as fw:
                fw.block(AP, *CPES.values())
                await until(lambda: task.done() or smtp.count() >= 4, 90, "the technician's and customers' mails")
                fw.unblock(AP, *CPES.values())
            await until(lambda: task.done() or smtp.count() >= 8, 90, "the restored mails")
            await until(lambda: task.done() or (not (daemon.polling.keeper and daemon.polling.keeper.held)
                        and not pending(pg_database)), 60, "nothing held or waiting")
            cut.lose_every(0)
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 60)
    assert cut.cuts >= 3
    to = sorted(str(m["To"]) for m in smtp.messages())
    assert to == sorted(["ana@isp.example"] * 2 + [f"c{i}@example.com" for i in (1, 2, 3)] * 2)
    changes = [c for c in stored_changes(pg_database) if c[0] in ("ap-1", *CPES)]
    assert len(set(changes)) == len(changes)
    for target in ("ap-1", *CPES):
        assert [(old, new) for t, old, new, _ in changes if t == target][-2:] == [("up", "down"), ("down", "up")]
    db = connect(pg_database)
    try:
        events = [tuple(r) for r in db.execute("SELECT incident, event, ts FROM incident_events").fetchall()]
        incidents = db.execute("SELECT count(*) FROM incidents").fetchone()[0]
    finally:
        db.close()
    assert len(set(events)) == len(events) and {e[1] for e in events} >= {"opened", "resolved"}
    assert incidents == 1


def pending(where: ThrowawayDatabase) -> int:
    db = connect(where)
    try:
        return int(db.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0])
    finally:
        db.close()
