"""The PostgreSQL engine (monitor/db_postgres.py) on a real PostgreSQL 15: the store's migration runner and
every owner's migrations (the same ``open_store`` and the same definitions, only the engine differs), the
translation of the stores' SQL, the write lock, a reconnection after the server went away."""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

import monitor.store as store_module
from monitor.correlate.schema import SCHEMA as CORRELATION
from monitor.db import DatabaseError, open_store, transaction
from monitor.db_postgres import USER_TIMEOUT, Connection, PostgreSQL, translate
from monitor.db_postgres import _Reach as Reach
from monitor.delivery.outbox import NewRow, Outbox, Row
from monitor.delivery.schema import SCHEMA as DELIVERY
from monitor.errors import StorageError
from monitor.inventory.settings import store_url_problem
from monitor.state import State, StateChange
from monitor.store import EventStore, components
from tests.netns import nft_table
from tests.servers.common import wait_for
from tests.servers.postgres import PostgreSQL as Server
from tests.store_engines import ThrowawayDatabase, over_socket, pg_database_fixture, pg_server_fixture  # noqa: F401

pytestmark = [pytest.mark.servers, pytest.mark.skipif(os.geteuid() != 0, reason="runs postgres as its own user")]

CURRENT = {"events": len(store_module.MIGRATIONS), "correlation": CORRELATION.version, "delivery": DELIVERY.version}
TABLES = {"state_changes", "target_state", "monitor_runs", "zone_blind", "incidents", "incident_targets",
          "incident_events", "incident_actions", "maintenance", "maintenance_events", "correlation_meta", "outbox",
          "delivery_state", "delivery_tickets", "delivery_meta", "schema_version"}


@pytest.fixture
def server(pg_server: Server) -> Server:
    return pg_server


@pytest.fixture
def engine(pg_database: ThrowawayDatabase) -> ThrowawayDatabase:
    """A fresh database of its own per test."""
    return pg_database


def tables(engine: PostgreSQL) -> set[str]:
    conn = engine.connect()
    try:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}
    finally:
        conn.close()


def versions(engine: PostgreSQL) -> dict[str, int]:
    conn = engine.connect()
    try:
        return dict(conn.execute("SELECT component, version FROM schema_version").fetchall())
    finally:
        conn.close()


def test_every_owners_migrations_run_unchanged(engine: PostgreSQL) -> None:
    for _ in range(2):  # the second opening finds nothing to do
        conn = open_store(engine, components(), what="the store", busy_timeout=5.0)
        conn.close()
        assert tables(engine) == TABLES and versions(engine) == CURRENT
    conn = open_store(engine, components(), what="the store", busy_timeout=5.0)
    try:  # the translated columns behave as the stores expect: identity ids, doubles, the quoted "end"
        conn.execute("INSERT INTO state_changes (ts, target, old, new, reason) VALUES (?, ?, ?, ?, ?)",
                     (1.5, "a", "up", "down", "100% loss"))
        conn.execute('INSERT INTO maintenance (node, start, "end", reason, author, customers, created_at)'
                     " VALUES (?, ?, ?, 'it''s planned?', ?, '[]', ?)", ("ap", 1.0, 2.25, "ana", 0.5))
        assert conn.execute("SELECT id, ts, reason FROM state_changes").fetchall() == [(1, 1.5, "100% loss")]
        assert conn.execute('SELECT "end", reason FROM maintenance').fetchall() == [(2.25, "it's planned?")]
    finally:
        conn.close()


def test_openings_at_once_migrate_once(engine: PostgreSQL) -> None:
    """The advisory lock is taken before the version is read: without it, concurrent openings each
    create the tables and all but one fail (duplicate relation or type)."""
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def opening() -> None:
        try:
            barrier.wait(timeout=60)
            open_store(engine, components(), what="the store", busy_timeout=30.0).close()
        except BaseException as exc:  # (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=opening) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert tables(engine) == TABLES and versions(engine) == CURRENT


def test_a_failed_migration_leaves_nothing_and_no_lock(engine: PostgreSQL, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL's DDL is transactional too: all or nothing, as on SQLite."""
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, "CREATE TABLE broken (;"))
    with pytest.raises(StorageError, match=r"cannot open the store postgresql://monitor@127\.0\.0\.1:") as info:
        open_store(engine, components(), what="the store", busy_timeout=5.0)
    assert "monitor-test-password" not in str(info.value)
    assert tables(engine) == set()
    monkeypatch.undo()
    conn = open_store(engine, components(), what="the store", busy_timeout=0.5)  # the lock was released
    conn.close()
    assert versions(engine) == CURRENT


def test_newer_tables_are_refused_untouched(engine: PostgreSQL) -> None:
    open_store(engine, components(), what="the store", busy_timeout=5.0).close()
    conn = engine.connect()
    conn.execute("UPDATE schema_version SET version = version + 1 WHERE component = 'delivery'")
    conn.close()
    with pytest.raises(StorageError, match=f"the delivery tables have schema version {DELIVERY.version + 1}, newer"):
        open_store(engine, components(), what="the store", busy_timeout=5.0)
    assert versions(engine) == {**CURRENT, "delivery": DELIVERY.version + 1}


def test_translate_keeps_literals_and_percent_signs() -> None:
    assert translate("SELECT '?', ? WHERE x LIKE 'a%' AND y = ?") == "SELECT '?', %s WHERE x LIKE 'a%' AND y = %s"
    assert translate("SELECT '100%'' ?', ?, 5 % 2") == "SELECT '100%'' ?', %s, 5 %% 2"
    assert translate("SELECT value FROM json_each(?) WHERE 'json_each(?)' != ?") == (
        "SELECT value FROM json_array_elements_text(CAST(%s AS json)) WHERE 'json_each(?)' != %s")


def test_the_password_stays_out_of_descriptions_and_errors(server: Server) -> None:
    engine = PostgreSQL(f"postgresql://monitor@127.0.0.1:{server.port}/monitor", password="not-the-password")
    assert engine.describe() == f"postgresql://monitor@127.0.0.1:{server.port}/monitor"
    assert "not-the-password" not in repr(engine)
    with pytest.raises(StorageError, match="password authentication failed") as info:
        EventStore(engine)
    assert "not-the-password" not in str(info.value)


def test_a_server_on_this_machine_is_reached_through_its_unix_socket(engine: ThrowawayDatabase, server: Server) -> None:
    """``postgresql://USER@:PORT/DATABASE?host=FOLDER`` (a valid ``daemon.store``): the same database without
    TCP, for the outbox's connection and its side connection alike; the socket's folder is kept in the
    description, the password out of it."""
    local = over_socket(engine, server)
    name = engine.url.rsplit("/", 1)[1]
    assert store_url_problem(local.url) is None
    assert local.describe() == f"postgresql://{server.user}@:{server.port}/{name}?host={server.root}"
    assert server.password not in local.describe()
    outbox = Outbox(local)
    try:
        outbox.add([NewRow(f"I/notify/c{i}/1", "I", "notify", f"c{i}", "email", "", {}) for i in range(3)], {}, {}, 1.0)
        rows = outbox.take("email", 10.0, 3)
        outbox.finish([], [], [], 10.0, sending=[r.id for r in rows])
        outbox.handed_over(rows[0].id, 10.5)  # (on the side connection)
        outbox.finish([(r.id, "250 ok") for r in rows], [], [], 11.0)
        db = outbox.db
        assert isinstance(db, Connection)
        db.wait_detached()
        assert [r["status"] for r in outbox.rows()] == ["delivered"] * 3
        with psycopg.connect(engine.url, password=engine.password, autocommit=True) as admin:
            clients = admin.execute("SELECT client_addr IS NULL FROM pg_stat_activity WHERE datname = %s"
                                    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                                    (name,)).fetchall()
        assert clients == [(True,), (True,)]  # (the outbox's connection and its side connection: no TCP peer)
    finally:
        outbox.close()


def test_write_transactions_are_serialized_like_sqlites(engine: ThrowawayDatabase) -> None:
    """``BEGIN IMMEDIATE`` takes the store's write lock: a second writer waits for it (here: gives up
    after its lock wait), while readers go on. Without the lock both would claim the same outbox rows."""
    open_store(engine, components(), what="the store", busy_timeout=5.0).close()
    first = engine.connect()
    second = engine.connect()
    engine.set_lock_wait(second, 0.2)
    with transaction(first):
        first.execute("INSERT INTO target_state (target, state, since) VALUES (?, ?, ?)", ("a", "up", 1.0))
        assert second.execute("SELECT count(*) FROM target_state").fetchone() == (0,)  # readers: no wait
        with pytest.raises(DatabaseError, match="lock timeout"):
            second.execute("BEGIN IMMEDIATE")
        second.execute("ROLLBACK")
    with transaction(second):  # released at the first one's commit
        assert second.execute("SELECT count(*) FROM target_state").fetchone() == (1,)


def test_a_store_reconnects_after_the_server_went_away(engine: ThrowawayDatabase, server: Server) -> None:
    """The statement that meets the outage fails (the daemon holds what it could not write and retries);
    the next one, with the server back, reconnects on its own."""
    store = EventStore(engine, busy_timeout=0.5)
    store.append([StateChange("a", State.UP, State.DOWN, 1.0, "x")])
    server.stop()
    try:
        with pytest.raises(StorageError, match="cannot append to the event store postgresql://"):
            store.append([StateChange("a", State.DOWN, State.UP, 2.0, "y")])
    finally:
        server.start(timeout=60)
    store.append([StateChange("a", State.DOWN, State.UP, 3.0, "z")])
    assert [c.reason for c in store.changes()] == ["x", "z"]
    assert store.load_states() == {"a": (State.UP, 3.0)}
    store.close()


def round_trips(conn: Connection, body: Callable[[], None]) -> int:
    """How many times the client waited for the server while ``body`` ran: the Query, Sync and Flush
    messages it sent (libpq's trace of the wire protocol)."""
    with tempfile.TemporaryFile(mode="w+") as trace:
        conn.conn.pgconn.trace(trace.fileno())
        conn.conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            body()
        finally:
            conn.conn.pgconn.untrace()
        trace.seek(0)
        sent = [m.group(1) for line in trace if (m := re.match(r"F\t\d+\t(\w+)", line))]
    # (a Flush asks for what is queued so far; one right after a Sync is part of that same wait)
    return sum(1 for i, m in enumerate(sent)
               if m in ("Query", "Sync") or (m == "Flush" and (i == 0 or sent[i - 1] != "Sync")))


def test_a_pipelined_transaction_is_one_round_trip_and_all_or_nothing(engine: ThrowawayDatabase) -> None:
    """The outbox's hot path (``transaction(pipelined=True)``): BEGIN, the write lock, the statements and
    COMMIT go to the server at once, one simple-query message of prepared statements; a statement the
    server refuses, or one whose result is read inside, fails as a DatabaseError, nothing of the
    transaction is kept, and the connection goes on."""
    open_store(engine, components(), what="the store", busy_timeout=5.0).close()
    db = engine.connect()
    insert = "INSERT INTO target_state (target, state, since) VALUES (?, ?, ?)"

    def write(*targets: str, pipelined: bool = True) -> None:
        with transaction(db, pipelined=pipelined):
            for t in targets:
                db.execute(insert, (t, "up", 1.0))
            db.executemany("UPDATE target_state SET since = ? WHERE target = ?", [(2.0, t) for t in targets])

    # (the first use of each statement on a session prepares it: the write lock, the insert, the update)
    assert round_trips(db, lambda: write("a")) == 1 + 3
    assert round_trips(db, lambda: write("b")) == 1
    assert round_trips(db, lambda: write("c", pipelined=False)) == 4  # (BEGIN + lock, each statement, COMMIT)
    with pytest.raises(DatabaseError, match="duplicate key"):
        write("d", "a")  # (a is there already: d is not kept either)

    def read_inside() -> None:
        with transaction(db, pipelined=True):
            db.execute(insert, ("e", "up", 1.0))
            db.execute("SELECT nothing FROM target_state").fetchall()

    with pytest.raises(DatabaseError, match="nothing"):
        read_inside()
    assert sorted(db.execute("SELECT target, since FROM target_state").fetchall()) == [
        ("a", 2.0), ("b", 2.0), ("c", 2.0)]
    assert db.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    other = engine.connect()  # the write lock is taken as by BEGIN IMMEDIATE: a second writer waits for it
    engine.set_lock_wait(db, 0.2)
    with transaction(other):
        other.execute(insert, ("f", "up", 1.0))
        with pytest.raises(DatabaseError, match="lock timeout"):
            write("g")
    write("h")
    assert {t for (t,) in db.execute("SELECT target FROM target_state").fetchall()} == {"a", "b", "c", "f", "h"}


def test_the_outbox_hot_path_takes_one_round_trip_per_claimed_batch_and_per_record(engine: ThrowawayDatabase) -> None:
    """Claim a batch (one statement, its rows read after COMMIT: one, two before), mark sending (one),
    record the hand-over (none waited for: one before), record delivered (none waited for, on the side
    connection: one before): ten a row before transactions were pipelined (docs/benchmarks.md,
    bench/store). The first use of each statement on the session prepares it, once (one round trip each)."""
    outbox = Outbox(engine)
    outbox.add([NewRow(f"I/notify/c{i}/1", "I", "notify", f"c{i}", "email", "", {}) for i in range(4)], {}, {}, 1.0)
    db = outbox.db
    assert isinstance(db, Connection)
    taken: list[Row] = []
    assert round_trips(db, lambda: taken.extend(outbox.take("email", 10.0, 1))) == 1 + 2  # (the lock, the claim)
    assert round_trips(db, lambda: outbox.finish([], [], [], 10.0, sending=[taken[0].id])) == 1 + 1
    assert round_trips(db, lambda: outbox.finish([(taken[0].id, "ok")], [], [], 10.0)) == 0  # (on the side)
    taken = []
    assert round_trips(db, lambda: taken.extend(outbox.take("email", 10.0, 3))) == 1
    assert [r.key for r in taken] == [f"I/notify/c{i}/1" for i in range(1, 4)]  # oldest first
    assert outbox.take("email", 10.0, 3) == []  # claimed
    assert round_trips(db, lambda: outbox.finish([], [], [], 10.0, sending=[taken[0].id])) == 1
    # the hand-over record (the final "." of a mail): sent, not waited for; it lands all the same
    assert round_trips(db, lambda: outbox.handed_over(taken[0].id, 10.5)) == 0
    db.wait_detached()
    assert db.execute("SELECT inflight, done_at FROM outbox WHERE id = ?", (taken[0].id,)).fetchone() == (3, 10.5)
    assert round_trips(db, lambda: outbox.finish([(taken[0].id, "ok")], [], [], 10.0)) == 0
    assert [(r["status"], r["result"]) for r in outbox.rows()][:2] == [("delivered", "ok")] * 2  # (reads wait)
    assert round_trips(db, lambda: outbox.finish([], [], [], 11.0)) == 0  # (nothing to record: no commit)
    outbox.close()


def test_a_lanes_commit_marks_in_one_statement_and_its_records_of_delivered_rows_go_on_the_side(
        engine: ThrowawayDatabase) -> None:
    """Four lanes' commit (4 rows marked sending, 4 recorded delivered, each with its own result) is BEGIN,
    the write lock, ONE statement for the marks, and COMMIT: each statement costs the server an
    executor's start and end (it was one a row, ten in all; then one for the marks and one for the
    records). The records of the delivered rows are one statement on the side connection, sent before
    that commit and not waited for: another server process writes them while the lanes go on."""
    outbox = Outbox(engine)
    outbox.add([NewRow(f"I/notify/c{i:02d}/1", "I", "notify", f"c{i:02d}", "email", "", {}) for i in range(12)],
               {}, {}, 1.0)
    db = outbox.db
    assert isinstance(db, Connection)
    first, second, third = (outbox.take("email", 10.0, 4) for _ in range(3))
    outbox.finish([], [], [], 10.0, sending=[r.id for r in first])
    outbox.finish([(r.id, f"<{r.recipient}@x>") for r in first], [], [], 11.0, sending=[r.id for r in second])
    with tempfile.TemporaryFile(mode="w+") as trace:
        db.conn.pgconn.trace(trace.fileno())
        db.conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            outbox.finish([(r.id, f"<{r.recipient}@x>") for r in second], [], [], 12.0, sending=[r.id for r in third])
        finally:
            db.conn.pgconn.untrace()
        trace.seek(0)
        queries = [line for line in trace if re.match(r"F\t\d+\tQuery", line)]
    assert len(queries) == 1
    assert queries[0].count("EXECUTE") == 2  # (the write lock; the marks)
    assert "@x>" not in queries[0]  # (no result: the records went on the side connection)
    assert [(r["recipient"], r["result"]) for r in outbox.rows(status="delivered")] == [
        (f"c{i:02d}", f"<c{i:02d}@x>") for i in range(8)]
    assert db.execute("SELECT id FROM outbox WHERE inflight = 1 AND attempts = 0 ORDER BY id").fetchall() == [
        (r.id,) for r in third]  # (marked, their attempts as they were)
    outbox.close()


def test_hand_over_records_queue_on_one_side_connection_without_waiting(engine: ThrowawayDatabase) -> None:
    """Hand-over records of lanes sending at once go out one after another on ONE side connection in
    libpq's pipeline mode (a transaction each, prepared statements bound and run), none waited for:
    the server takes them on one backend instead of one simple-query message each on up to four. All
    land; a server that went away in between loses only the records sent to it, and the next ones
    go out on a new connection."""
    outbox = Outbox(engine)
    n = 40
    outbox.add([NewRow(f"I/notify/c{i:02d}/1", "I", "notify", f"c{i:02d}", "email", "", {}) for i in range(n)],
               {}, {}, 1.0)
    db = outbox.db
    assert isinstance(db, Connection)
    rows = outbox.take("email", 10.0, n)
    outbox.finish([], [], [], 10.0, sending=[r.id for r in rows])
    def hand_over_30() -> None:
        for r in rows[:30]:
            outbox.handed_over(r.id, 10.5)

    assert round_trips(db, hand_over_30) == 0
    with psycopg.connect(engine.url, password=engine.password, autocommit=True) as admin:
        name = engine.url.rsplit("/", 1)[1]
        sessions = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s"  # (no autovacuum worker)
                                 " AND backend_type = 'client backend'", (name,)).fetchone()
        assert sessions is not None and sessions[0] == 3  # (the outbox's, its side connection, this one)
        db.wait_detached()
        assert db.execute("SELECT count(*) FROM outbox WHERE inflight = 3").fetchone() == (30,)
        side = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
                             " AND backend_type = 'client backend' AND pid <> %s",
                             (name, db.conn.info.backend_pid)).fetchone()
        assert side is not None
        admin.execute("SELECT pg_terminate_backend(%s)", (side[0],))
        wait_for(lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (side[0],)).fetchone(),
                 what="the side session's end")

    def lands() -> bool:  # (records meeting the dead session, or a new one still connecting, are lost)
        outbox.handed_over(rows[30].id, 10.6)
        db.wait_detached()
        return bool(db.execute("SELECT inflight FROM outbox WHERE id = ?", (rows[30].id,)).fetchone() == (3,))

    wait_for(lands, timeout=60, what="a hand-over record on a new side connection")
    for r in rows[31:]:
        outbox.handed_over(r.id, 10.6)
    db.wait_detached()
    assert db.execute("SELECT count(*) FROM outbox WHERE inflight = 3").fetchone() == (n,)
    outbox.close()


def delivered_rows(outbox: Outbox) -> list[tuple[str, str | None, int, float]]:
    """(status, result, attempts, done_at) of each row, in id order (read by the outbox's own connection)."""
    return [tuple(r) for r in outbox.db.execute(
        "SELECT status, result, attempts, done_at FROM outbox ORDER BY id").fetchall()]


def test_records_of_delivered_rows_the_server_refused_are_written_again_by_the_next_write(
        engine: ThrowawayDatabase) -> None:
    """The side connection's record of two delivered rows meets a row lock it may not wait for (another
    session's long transaction): the server refuses it. Nothing is lost: the outbox writes both again,
    each with its own result and time, in its next write transaction; while the row is still held
    that write fails as any would (the worker keeps trying) and the records wait in memory."""
    outbox = Outbox(engine, busy_timeout=0.2)
    outbox.add([NewRow(f"I/notify/c{i}/1", "I", "notify", f"c{i}", "email", "", {}) for i in range(3)], {}, {}, 1.0)
    db = outbox.db
    assert isinstance(db, Connection)
    rows = outbox.take("email", 10.0, 2)
    outbox.finish([], [], [], 10.0, sending=[r.id for r in rows])
    with psycopg.connect(engine.url, password=engine.password) as holder:  # (a transaction, not autocommit)
        holder.execute("SELECT 1 FROM outbox WHERE id = %s FOR UPDATE", (rows[0].id,))
        outbox.finish([(rows[0].id, "250 first"), (rows[1].id, "250 second")], [], [], 11.0)
        assert db.wait_detached()
        assert [r[0] for r in delivered_rows(outbox)] == ["pending"] * 3  # (refused: both, one transaction)
        with pytest.raises(StorageError, match="lock timeout"):
            outbox.finish([], [], [], 12.0)  # (nothing new to record: only the two again, and the row is held)
        holder.rollback()
    assert [r.key for r in outbox.take("email", 13.0, 5)] == ["I/notify/c2/1"]  # (the claim's transaction)
    assert delivered_rows(outbox)[:2] == [("delivered", "250 first", 1, 11.0), ("delivered", "250 second", 1, 11.0)]
    outbox.finish([(rows[0].id, "250 first")], [], [], 14.0)  # (once more, as after an answer lost: no change)
    assert delivered_rows(outbox)[:2] == [("delivered", "250 first", 1, 11.0), ("delivered", "250 second", 1, 11.0)]
    outbox.close()


def test_a_detached_write_of_text_with_nul_is_handed_back_not_cut_short(engine: ThrowawayDatabase) -> None:
    """libpq's text parameters end at a NUL: a value with one would land cut short. The side connection
    refuses it before sending anything and hands the write back, as the main connection refuses it."""
    outbox = Outbox(engine)
    outbox.add([NewRow("I/notify/c0/1", "I", "notify", "c0", "email", "", {})], {}, {}, 1.0)
    db = outbox.db
    assert isinstance(db, Connection)
    [taken] = outbox.take("email", 10.0, 1)
    update = "UPDATE outbox SET result = ? WHERE id = ?"
    db.write_detached(update, ("250 ok", taken.id))
    side = db._detached.conn if db._detached is not None else None
    db.write_detached(update, ("250 cut\x00here", taken.id), "again")
    assert db.detached_undone() == ["again"]  # (at once: nothing of it was sent)
    db.wait_detached()  # (the first, on the same connection)
    assert side is not None and db._detached is not None and db._detached.conn is side
    assert delivered_rows(outbox)[0][1] == "250 ok"
    with pytest.raises(DatabaseError, match="NUL"):
        db.execute(update, ("250 cut\x00here", taken.id))
    outbox.close()


def test_records_of_delivered_rows_whose_side_session_ended_unanswered_are_written_again(
        engine: ThrowawayDatabase) -> None:
    """The side session ends (terminated: a server restart, a pooler's reset) while the record of a
    delivered row waits there for a row lock: the record never lands, and its answer never comes. The
    outbox writes it again in its next write transaction, once, with the row's own result and time."""
    outbox = Outbox(engine)
    outbox.add([NewRow(f"I/notify/c{i}/1", "I", "notify", f"c{i}", "email", "", {}) for i in range(2)], {}, {}, 1.0)
    db = outbox.db
    assert isinstance(db, Connection)
    rows = outbox.take("email", 10.0, 2)
    outbox.finish([], [], [], 10.0, sending=[r.id for r in rows])
    outbox.handed_over(rows[0].id, 10.5)  # (opens the side connection)
    assert db.wait_detached()
    name = engine.url.rsplit("/", 1)[1]
    with psycopg.connect(engine.url, password=engine.password) as holder, \
            psycopg.connect(engine.url, password=engine.password, autocommit=True) as admin:
        holder.execute("SELECT 1 FROM outbox WHERE id = %s FOR UPDATE", (rows[0].id,))
        outbox.finish([(rows[0].id, "250 ok")], [], [], 11.0)
        waiting: list[int] = []

        def side_waits() -> bool:
            found = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
                                  " AND backend_type = 'client backend'", (name,)).fetchall()
            waiting[:] = [pid for (pid,) in found]
            return len(waiting) == 1
        wait_for(side_waits, timeout=30, what="the side session waiting for the row lock")
        admin.execute("SELECT pg_terminate_backend(%s)", (waiting[0],))
        wait_for(lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (waiting[0],)).fetchone(),
                 what="the side session's end")
        holder.rollback()
    assert db.wait_detached()  # (its answer: the connection's end)
    assert delivered_rows(outbox)[0][0] == "pending"  # (not landed, not written again yet)
    assert outbox.take("email", 12.0, 5) == []  # (the next write: the claim's transaction)
    assert delivered_rows(outbox)[0] == ("delivered", "250 ok", 1, 11.0)
    outbox.close()


def test_the_hot_path_updates_of_a_notice_write_no_index_entry(engine: ThrowawayDatabase) -> None:
    """Of the four updates of a notice's row (claimed, sending, handed over, delivered), the first three
    change no indexed column and find room on the row's page (fillfactor 50): PostgreSQL writes them as
    HOT updates, no entry in any of the outbox's six indexes. Before delivery's migration 3 every one
    of them changed ``inflight``, a column of the claim's index: none was HOT."""
    outbox = Outbox(engine)
    n = 200
    outbox.add([NewRow(f"I/notify/c{i:03d}/1", "I", "notify", f"c{i:03d}", "email", "",
                       {"body": "Sin servicio " * 20}) for i in range(n)], {}, {}, 1.0)
    for _ in range(n // 8):
        rows = outbox.take("email", 10.0, 8)
        for r in rows:  # as a lane does: the mark, the hand-over, the outcome with the next row's mark
            outbox.finish([], [], [], 10.0, sending=[r.id])
            outbox.handed_over(r.id, 10.5)
            assert isinstance(outbox.db, Connection)
            outbox.db.wait_detached()
            outbox.finish([(r.id, "ok")], [], [], 11.0)
    assert len(outbox.rows(status="delivered")) == n
    outbox.close()  # (a session's counts reach the statistics at its end)
    seen: list[tuple[int, int]] = []
    with psycopg.connect(engine.url, password=engine.password, autocommit=True) as conn:
        def counted() -> bool:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'outbox'")
            updates, hot = row.fetchone() or (0, 0)
            seen.append((int(updates), int(hot)))
            return bool(updates >= 4 * n)
        wait_for(counted, timeout=60, what="the outbox's update counts in the statistics")
    updates, hot = seen[-1]
    assert updates == 4 * n
    assert hot >= 2 * n, (updates, hot)  # (3n at best: a page's pruning may come too late for some)


def test_a_delivered_rows_record_sent_into_a_silent_cut_is_given_back_and_written_once_the_path_is_back(
        engine: ThrowawayDatabase, server: Server) -> None:
    """The record of a delivered row goes out on the side connection just as nftables starts dropping
    every packet: the next read waits for its answer, the TCP user timeout ends the side connection
    and counts the server unreachable for every connection (_Reach: that read's own statement fails at
    once instead of waiting out a second timeout); the record is handed back, and written, once, by
    the outbox's first write after the path is back."""
    outbox = Outbox(engine, busy_timeout=0.5)
    outbox.add([NewRow(f"I/notify/c{i}/1", "I", "notify", f"c{i}", "email", "", {}) for i in range(2)], {}, {}, 1.0)
    db = outbox.db
    assert isinstance(db, Connection)
    before, taken = outbox.take("email", 10.0, 2)
    outbox.finish([], [], [], 10.0, sending=[before.id, taken.id])
    outbox.finish([(before.id, "250 before")], [], [], 10.5)  # (the side connection open, its statement prepared)
    assert db.wait_detached()
    cut = (f"chain out {{ type filter hook output priority 0; policy accept; tcp dport {server.port} drop;"
           f" tcp sport {server.port} drop; }}")
    with nft_table(cut):
        outbox.finish([(taken.id, "250 ok")], [], [], 11.0)  # (sent: not waited for)
        start = time.monotonic()
        with pytest.raises(StorageError):
            outbox.next_due("email")
        first = time.monotonic() - start
        assert db.reach.down
        start = time.monotonic()
        with pytest.raises(StorageError):
            outbox.next_due("email")
        second = time.monotonic() - start
    assert USER_TIMEOUT * 0.9 <= first <= USER_TIMEOUT + Reach.WAIT + 0.8, first  # (not two user timeouts)
    assert second <= Reach.WAIT + 1.0, second

    def written() -> bool:
        try:
            outbox.take("email", 12.0, 1)
        except StorageError:
            return False
        return True
    wait_for(written, 30, "the outbox's first write once the path is back")
    assert delivered_rows(outbox) == [("delivered", "250 before", 1, 10.5), ("delivered", "250 ok", 1, 11.0)]
    outbox.close()


def test_a_silent_cut_costs_one_statement_its_user_timeout_then_statements_fail_at_once(
        engine: ThrowawayDatabase, server: Server) -> None:
    """nftables drops every packet to and from the server's port (no reset): the first statement waits
    out the TCP user timeout, every later one, on this connection or another, fails at once instead of
    waiting out its own timeout and a 10 s reconnect each time (the daemon calls its stores on its event
    loop); once the path is back the connections work again by themselves."""
    store = EventStore(engine, busy_timeout=0.5)
    outbox = Outbox(engine, busy_timeout=0.5)
    store.append([StateChange("a", State.UP, State.DOWN, 1.0, "x")])
    cut = (f"chain out {{ type filter hook output priority 0; policy accept; tcp dport {server.port} drop;"
           f" tcp sport {server.port} drop; }}")
    waits: list[float] = []
    calls: list[Callable[[], object]] = [lambda: store.append([StateChange("a", State.DOWN, State.UP, 2.0, "y")]),
                                         lambda: outbox.next_due("email"), store.load_states,
                                         lambda: outbox.next_due("email")]
    with nft_table(cut):
        for call in calls:
            start = time.monotonic()
            with pytest.raises(StorageError):
                call()
            waits.append(time.monotonic() - start)
    assert USER_TIMEOUT * 0.9 <= waits[0] <= USER_TIMEOUT + 3.0, waits
    assert max(waits[1:]) <= Reach.WAIT + 1.0, waits  # (10 s each before)

    def works() -> bool:
        try:
            store.append([StateChange("a", State.DOWN, State.UP, 3.0, "z")])
            return outbox.next_due("email") is None
        except StorageError:
            return False
    wait_for(works, 30, "the store again once the path is back")
    assert [c.reason for c in store.changes()] == ["x", "z"]
    store.close()
    outbox.close()
