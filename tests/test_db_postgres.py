"""The store's migration runner and every owner's migrations on a real PostgreSQL 15 (issue 11's seam for
issue 13): the same ``open_store`` and the same migration definitions, only the engine differs."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

psycopg = pytest.importorskip("psycopg")

import monitor.store as store_module  # noqa: E402
from monitor.correlate.schema import SCHEMA as CORRELATION  # noqa: E402
from monitor.db import open_store  # noqa: E402
from monitor.delivery.schema import SCHEMA as DELIVERY  # noqa: E402
from monitor.errors import StorageError  # noqa: E402
from monitor.store import components  # noqa: E402
from tests.pg_engine import PostgreSQL, qmark  # noqa: E402
from tests.servers.postgres import PostgreSQL as Server  # noqa: E402

pytestmark = [pytest.mark.servers, pytest.mark.skipif(os.geteuid() != 0, reason="runs postgres as its own user")]

CURRENT = {"events": len(store_module.MIGRATIONS), "correlation": CORRELATION.version, "delivery": DELIVERY.version}
TABLES = {"state_changes", "target_state", "monitor_runs", "incidents", "incident_targets", "incident_events",
          "incident_actions", "maintenance", "maintenance_events", "correlation_meta", "outbox", "delivery_state",
          "delivery_tickets", "delivery_meta", "schema_version"}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    pg = Server()
    try:
        pg.start(timeout=60)
        yield pg
    finally:
        pg.remove()


@pytest.fixture
def engine(server: Server, request: pytest.FixtureRequest) -> PostgreSQL:
    """A fresh database of its own per test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    server.psql(f"CREATE DATABASE {name}", database="postgres")
    return PostgreSQL(server.dsn.rsplit("/", 1)[0] + "/" + name)


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


def test_qmark_keeps_literals_and_percent_signs() -> None:
    assert qmark("SELECT '?', ? WHERE x LIKE 'a%' AND y = ?") == "SELECT '?', %s WHERE x LIKE 'a%' AND y = %s"
    assert qmark("SELECT '100%'' ?', ?, 5 % 2") == "SELECT '100%'' ?', %s, 5 %% 2"
