"""monitor.db: one opening and one migration runner for the store, each owner with its own migrations.

The legacy stores are dumps of files that the release before this layer wrote (one
``PRAGMA user_version`` numbering for the log and correlation, ``delivery_schema`` for the outbox;
see tests/fixtures/legacy_store/make.py): an upgrade must open them as they are and lose nothing.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import monitor.store as store_module
from monitor.clock import ManualClock
from monitor.correlate.schema import SCHEMA as CORRELATION
from monitor.correlate.service import CorrelationService
from monitor.correlate.store import IncidentStore
from monitor.db import FORMAT, SQLite, split_statements
from monitor.delivery.outbox import Outbox
from monitor.delivery.schema import SCHEMA as DELIVERY
from monitor.errors import StorageError
from monitor.report.model import Period
from monitor.report.source import load_input
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.fixtures.legacy_store.make import read_back
from tests.scenario_runner import EPOCH, SCENARIOS, load

LEGACY = Path(__file__).parent / "fixtures" / "legacy_store"
CURRENT = {"events": len(store_module.MIGRATIONS), "correlation": CORRELATION.version, "delivery": DELIVERY.version}


def legacy(tmp_path: Path, name: str) -> Path:
    """A store file exactly as the older release left it."""
    db = tmp_path / "monitor.db"
    con = sqlite3.connect(db)
    con.executescript((LEGACY / f"{name}.sql").read_text())
    con.close()
    return db


def layout(db: Path) -> tuple[int, dict[str, int], set[str]]:
    """(user_version, schema_version rows, table names), read on a connection of its own."""
    con = sqlite3.connect(db)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = dict(con.execute("SELECT component, version FROM schema_version")) if "schema_version" in tables else {}
        return int(con.execute("PRAGMA user_version").fetchone()[0]), rows, tables
    finally:
        con.close()


def report_input(db: Path) -> object:
    sc = load(SCENARIOS / "restart_mid_incident.yaml")
    return load_input(db, sc.inventory, Period(EPOCH - 3600, EPOCH + 86400, "day"))


def test_a_store_of_the_previous_release_opens_with_nothing_lost(tmp_path: Path) -> None:
    """Log, states, runs, an open outage with its members and ack, history, a window, the outbox with a
    row cut off mid-send, the planner's memory and a ticket: read back as that release read them."""
    db = legacy(tmp_path, "v5")
    assert layout(db)[0] == 5
    before = report_input(db)  # a report before the daemon's first start after the upgrade: read-only
    assert layout(db)[0] == 5
    expected = json.loads((LEGACY / "v5.expect.json").read_text())
    got = json.loads(json.dumps(read_back(db, True)))  # (tuples as lists, like the file)
    # changed on purpose since (e433f0c): a resolved incident counts who was ever affected (10), not the
    # last update's list (0); the rows behind it are compared with everything else
    counts = [row.pop(4) for row in got["incidents"]]
    assert counts == [2, 10] and [row.pop(4) for row in expected["incidents"]] == [2, 0]
    assert got == expected
    version, rows, tables = layout(db)
    assert (version, rows) == (FORMAT, CURRENT)
    assert "delivery_schema" not in tables  # folded into schema_version
    assert report_input(db) == before
    # the outbox settled the rows a stopped worker left: cut off mid-send is uncertain, claimed waits again
    ob = Outbox(db)
    assert (ob.recovered, ob.assumed) == (0, 0)  # settled by the first opening (read_back), not again
    assert [(r.recipient, r.uncertain) for r in ob.take("email", EPOCH + 3000, 10)] == [
        ("C-cpe-n1-01", True), ("C-cpe-n1-02", False)]
    ob.close()


def test_correlation_resumes_the_open_outage_of_the_previous_release(tmp_path: Path) -> None:
    """The daemon's first start after the upgrade: the outage the old release opened goes on under its
    id (nothing opened or announced again) and resolves once when its targets answer."""
    db = legacy(tmp_path, "v5")
    sc = load(SCENARIOS / "restart_mid_incident.yaml")
    clock = ManualClock(EPOCH + 2600)  # after the old release's last heartbeat
    log = EventStore(db)
    svc = CorrelationService(sc.inventory, db, sc.settings, clock, poll_every=0)
    clock.advance(60)
    assert svc.startup_events + svc.tick() == []
    back = [StateChange(t, State.DOWN, State.UP, clock.now(), "reply") for t in ("twr-norte", "cpe-n1-01", "cpe-n1-02")]
    log.append(back)
    svc.on_state_changes(back)
    events = []
    for _ in range(40):  # 20 min: past the hold-down
        clock.advance(30)
        events += svc.tick()
    assert [(e.event, e.incident) for e in events] == [("updated", "INC-000002"), ("resolved", "INC-000002")]
    svc.close()
    log.close()


def test_a_store_before_was_outage_gets_the_later_columns_once(tmp_path: Path) -> None:
    db = legacy(tmp_path, "v3")
    for _ in range(2):  # the second opening finds nothing left to migrate
        store = IncidentStore(db)
        [(inc, basis, ever)] = store.load_open()
        assert (inc.id, basis, inc.was_outage, inc.pending_since) == ("INC-000001", "outage", False, None)
        assert ever == {"twr-norte", "cpe-n1-01"} and store.incident("INC-000001").upgraded is False
        store.close()
        assert layout(db)[:2] == (FORMAT, CURRENT)


def test_a_failed_upgrade_leaves_the_old_store_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All or nothing, adoption of the old numbering included: the old release could still open it."""
    db = legacy(tmp_path, "v5")
    before = layout(db)
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, "CREATE TABLE broken (;"))
    with pytest.raises(StorageError, match="cannot open the outbox in"):
        Outbox(db)
    assert layout(db) == before
    con = sqlite3.connect(db, timeout=0.1)  # "database is locked" if the lock were left held
    con.execute("BEGIN IMMEDIATE")
    con.execute("ROLLBACK")
    con.close()


@pytest.mark.parametrize("component", ["events", "correlation", "delivery"])
def test_tables_of_a_newer_release_are_refused_untouched(tmp_path: Path, component: str) -> None:
    db = tmp_path / "monitor.db"
    EventStore(db).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE schema_version SET version = version + 1 WHERE component = ?", (component,))
    con.commit()
    con.close()
    before = layout(db)
    for opener in (EventStore, IncidentStore, Outbox):
        with pytest.raises(StorageError, match=f"the {component} tables have schema version .*newer than this"):
            opener(db)
    assert layout(db) == before


@pytest.mark.parametrize("user_version", [6, FORMAT - 1, FORMAT + 1])
@pytest.mark.parametrize("layout_", ["old", "new"])
def test_an_unknown_file_layout_is_refused(tmp_path: Path, user_version: int, layout_: str) -> None:
    """A numbering no release wrote, or a later layout of the file (above FORMAT): refused by name."""
    db = tmp_path / "monitor.db"
    if layout_ == "new":
        EventStore(db).close()
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {user_version}")
    con.close()
    with pytest.raises(StorageError, match=f"schema version {user_version}, newer than this program knows"):
        EventStore(db)


def test_the_previous_release_refuses_a_new_store_by_its_version(tmp_path: Path) -> None:
    """What a downgrade meets: the old releases refuse a user_version above theirs (5) by name."""
    db = tmp_path / "monitor.db"
    Outbox(db).close()
    assert layout(db)[0] == FORMAT > 5


def _version_reads_outside_the_lock(log: list[tuple[int, str]]) -> list[str]:
    """Statements that read a schema version while their connection held no write transaction."""
    locked: dict[int, bool] = {}
    bad = []
    for conn, sql in log:
        text = " ".join(sql.split()).upper()
        if text.startswith("BEGIN IMMEDIATE"):
            locked[conn] = True
        elif text.startswith(("COMMIT", "ROLLBACK")):
            locked[conn] = False
        elif any(v in text for v in ("USER_VERSION", "SCHEMA_VERSION", "DELIVERY_SCHEMA")) and not locked.get(conn):
            bad.append(sql)
    return bad


@pytest.mark.parametrize("opener", [EventStore, IncidentStore, Outbox])
@pytest.mark.parametrize("name", [None, "v3", "v5"])
def test_every_opening_reads_versions_only_under_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opener: type, name: str | None
) -> None:
    """Otherwise two processes can both read "not migrated" and both migrate (the outbox's own
    numbering was read without a lock before: its second opener failed on "table outbox already
    exists", or, without that table, applied a later migration twice)."""
    db = legacy(tmp_path, name) if name else tmp_path / "monitor.db"
    log: list[tuple[int, str]] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        con: sqlite3.Connection = connect(*args, **kwargs)
        con.set_trace_callback(lambda sql: log.append((id(con), sql)))
        return con

    monkeypatch.setattr(sqlite3, "connect", traced)
    opener(db).close()
    assert any("SCHEMA_VERSION" in sql.upper() for _, sql in log)
    assert _version_reads_outside_the_lock(log) == []


OPEN = """
import sys
from pathlib import Path
from monitor.correlate.store import IncidentStore
from monitor.delivery.outbox import Outbox
from monitor.store import EventStore
opener = {"events": EventStore, "incidents": IncidentStore, "outbox": Outbox}[sys.argv[2]]
sys.stdin.readline()  # start together
opener(Path(sys.argv[1])).close()
print("ok")
"""


@pytest.mark.parametrize("name", [None, "v5"])
def test_processes_opening_a_store_at_once_migrate_it_once(tmp_path: Path, name: str | None) -> None:
    """The daemon's three stores and a CLI open a new (or old) file together: the version is read only
    under the write lock, so one migrates and the others find it done (the outbox read its version
    without a lock before: two openings could both create its tables)."""
    db = legacy(tmp_path, name) if name else tmp_path / "monitor.db"
    openers = ["outbox", "incidents", "events", "outbox", "outbox", "incidents", "outbox", "events"]
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(db), o], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for o in openers]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=120) for p in procs]
    assert [(p.returncode, out.strip()) for p, (out, _) in zip(procs, results, strict=True)] == [(0, "ok")] * len(
        openers), [err for _, err in results]
    assert layout(db)[:2] == (FORMAT, CURRENT)


def test_an_opening_waits_for_the_journal_switch_as_long_as_for_a_migration(tmp_path: Path) -> None:
    """An old file still has a rollback journal: the opening's switch to WAL needs the file to itself
    and waited only sqlite3's default 5 s, while the migration after it waits OPEN_TIMEOUT (30 s).
    Eight processes opening an old store at once on a loaded machine could fail 'locked' there."""
    db = legacy(tmp_path, "v5")
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(6.0, holder.execute, ["COMMIT"])  # longer than the old 5 s
    release.start()
    t0 = time.monotonic()
    try:
        EventStore(db).close()
    finally:
        release.join()
        holder.close()
    assert time.monotonic() - t0 >= 5.5  # it did wait for the holder
    assert layout(db)[:2] == (FORMAT, CURRENT)


def test_a_migration_statement_marked_for_one_engine_runs_on_that_engine_only() -> None:
    """One definition for both engines: a storage option only PostgreSQL has (delivery's fillfactor) is
    marked ``-- only on postgresql`` and skipped by SQLite; everything else runs on both."""
    script = """
    CREATE INDEX a ON t (x);
    -- only on postgresql
    ALTER TABLE t SET (fillfactor = 50);
    -- a comment, no marker
    CREATE INDEX b ON t (y);
    """
    assert split_statements(script, "sqlite") == [
        "CREATE INDEX a ON t (x);", "-- a comment, no marker\n    CREATE INDEX b ON t (y);"]
    assert [s.splitlines()[-1].strip() for s in split_statements(script, "postgresql")] == [
        "CREATE INDEX a ON t (x);", "ALTER TABLE t SET (fillfactor = 50);", "CREATE INDEX b ON t (y);"]
    assert SQLite(Path("unused.db")).statements(script) == split_statements(script, "sqlite")


def test_readonly_versions_of_old_and_new_stores(tmp_path: Path) -> None:
    """What a report sees without writing: the old numbering read as component versions."""
    old = legacy(tmp_path, "v3")
    con = SQLite(old).connect_readonly()
    assert SQLite(old).versions(con) == {"events": 2, "correlation": 1}
    con.close()
    new = tmp_path / "new" / "monitor.db"
    EventStore(new).close()
    con = SQLite(new).connect_readonly()
    assert SQLite(new).versions(con) == CURRENT
    con.close()
