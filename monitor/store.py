"""The daemon's embedded store (SQLite, WAL): the append-only StateChange log and current states.

Correlation, incidents and reports build on this log, so it is append-only and every change is
committed together with the target's current state in one transaction: a ``kill -9`` at any point
leaves the two consistent, and a restart resumes from exactly the states that were announced.
Schema changes are numbered migrations applied in order and recorded in ``PRAGMA user_version``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from monitor.errors import StorageError
from monitor.state import State, StateChange

MIGRATIONS: tuple[str, ...] = (
    # 1: state change log and current state per target
    """
    CREATE TABLE state_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        target TEXT NOT NULL,
        old TEXT NOT NULL,
        new TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX state_changes_ts ON state_changes (ts);
    CREATE INDEX state_changes_target_ts ON state_changes (target, ts);
    CREATE TABLE target_state (
        target TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        since REAL NOT NULL
    );
    """,
    # 2: incidents, their targets and lifecycle history, staff actions, maintenance windows
    # (written by monitor.correlate.store)
    """
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        basis TEXT NOT NULL,
        root TEXT NOT NULL,
        status TEXT NOT NULL,
        opened_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        cleared_at REAL,
        closed_at REAL,
        merged_into TEXT,
        grace_from REAL,
        clear_since REAL,
        last_update REAL NOT NULL,
        acked_at REAL,
        acked_by TEXT
    );
    CREATE INDEX incidents_status ON incidents (status, seq);
    CREATE INDEX incidents_opened ON incidents (opened_at);
    CREATE TABLE incident_targets (
        incident TEXT NOT NULL,
        target TEXT NOT NULL,
        down INTEGER NOT NULL,
        PRIMARY KEY (incident, target)
    ) WITHOUT ROWID;
    CREATE TABLE incident_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        incident TEXT NOT NULL,
        event TEXT NOT NULL,
        kind TEXT NOT NULL,
        root TEXT NOT NULL,
        affected_endpoints TEXT NOT NULL,
        affected_customers TEXT NOT NULL,
        affected_nodes TEXT NOT NULL,
        into_incident TEXT
    );
    CREATE INDEX incident_events_incident ON incident_events (incident, id);
    CREATE INDEX incident_events_ts ON incident_events (ts);
    CREATE TABLE incident_actions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        incident TEXT NOT NULL,
        ts REAL NOT NULL,
        action TEXT NOT NULL,
        author TEXT NOT NULL,
        text TEXT NOT NULL,
        done_at REAL
    );
    CREATE INDEX incident_actions_incident ON incident_actions (incident, id);
    CREATE TABLE maintenance (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        node TEXT NOT NULL,
        start REAL NOT NULL,
        end REAL NOT NULL,
        reason TEXT NOT NULL,
        author TEXT NOT NULL,
        customers TEXT NOT NULL,
        created_at REAL NOT NULL,
        removed_at REAL
    );
    CREATE TABLE maintenance_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        window_id INTEGER NOT NULL,
        node TEXT NOT NULL,
        ts REAL NOT NULL,
        event TEXT NOT NULL
    );
    CREATE TABLE correlation_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 3: when the daemon was running (reports count time outside every run as unknown, never as up)
    """
    CREATE TABLE monitor_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started REAL NOT NULL,
        last_seen REAL NOT NULL,
        stopped REAL
    );
    """,
    # 4: a suspected incident whose node then went down itself (now an outage, same id) stays a mass
    # incident while K endpoints are down after the node is back; the engine must know that on resume
    """
    ALTER TABLE incidents ADD COLUMN was_outage INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: since when an incident's affected set changed without an update announcing it yet (updates
    # gather for update_interval; a restart in between must neither lose nor delay that update)
    """
    ALTER TABLE incidents ADD COLUMN pending_since REAL;
    """,
)


class EventStore:
    """Append-only state-change log with current states, in one SQLite file."""

    def __init__(self, path: Path, busy_timeout: float = 5.0) -> None:
        """``busy_timeout``: how long a write waits for another connection's lock. The daemon passes a
        short one, because the wait blocks its event loop; it holds what it could not write and retries."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            self._close_quietly()
            raise StorageError(f"cannot open the event store {path}: {exc}") from exc
        except StorageError:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        """Apply missing migrations in one write transaction.

        ``BEGIN IMMEDIATE`` takes the write lock before the version is read, so two processes opening a
        new store at once (the daemon and a CLI) cannot both migrate it; on any failure the transaction
        is rolled back, so no half-migrated schema and no open transaction holding the lock remain.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            current = self.schema_version
            if current > len(MIGRATIONS):
                raise StorageError(
                    f"{self.path} has schema version {current}, newer than this program knows ({len(MIGRATIONS)}):"
                    " it was written by a newer release"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in _statements(MIGRATIONS[version - 1]):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def append(self, changes: Sequence[StateChange]) -> None:
        """Record transitions and the resulting current states atomically."""
        if not changes:
            return
        try:
            with _transaction(self._db):
                self._db.executemany(
                    "INSERT INTO state_changes (ts, target, old, new, reason) VALUES (?, ?, ?, ?, ?)",
                    [(c.ts, c.target, c.old.value, c.new.value, c.reason) for c in changes],
                )
                self._db.executemany(
                    "INSERT INTO target_state (target, state, since) VALUES (?, ?, ?)"
                    " ON CONFLICT(target) DO UPDATE SET state = excluded.state, since = excluded.since",
                    [(c.target, c.new.value, c.ts) for c in changes],
                )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot append to the event store {self.path}: {exc}") from exc

    def run_started(self, now: float) -> int:
        """Record that the daemon started; returns the run id for :meth:`run_alive`/:meth:`run_stopped`."""
        cur = self._write("INSERT INTO monitor_runs (started, last_seen) VALUES (?, ?)", (now, now))
        return int(cur.lastrowid or 0)

    def run_alive(self, run: int, now: float) -> None:
        """Heartbeat: after a crash the run is taken to have ended at its last heartbeat."""
        self._write("UPDATE monitor_runs SET last_seen = ? WHERE id = ?", (now, run))

    def run_stopped(self, run: int, now: float) -> None:
        self._write("UPDATE monitor_runs SET last_seen = ?, stopped = ? WHERE id = ?", (now, now, run))

    def _write(self, sql: str, args: tuple[object, ...]) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write to the event store {self.path}: {exc}") from exc

    def runs(self) -> list[tuple[float, float]]:
        """(start, end) of every run, oldest first; a crashed run ends at its last heartbeat."""
        rows = self._db.execute("SELECT started, COALESCE(stopped, last_seen) FROM monitor_runs ORDER BY started")
        return [(float(a), float(b)) for a, b in rows]

    def load_states(self) -> dict[str, tuple[State, float]]:
        rows = self._db.execute("SELECT target, state, since FROM target_state")
        return {target: (State(state), since) for target, state, since in rows}

    def changes(
        self, *, since: float | None = None, until: float | None = None, targets: Iterable[str] | None = None
    ) -> Iterator[StateChange]:
        """State changes in the order they were recorded, optionally limited to a time range."""
        sql = "SELECT ts, target, old, new, reason FROM state_changes WHERE 1=1"
        args: list[object] = []
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        if until is not None:
            sql += " AND ts < ?"
            args.append(until)
        wanted = set(targets) if targets is not None else None
        for ts, target, old, new, reason in self._db.execute(sql + " ORDER BY id", args):
            if wanted is None or target in wanted:
                yield StateChange(target, State(old), State(new), ts, reason)

    def close(self) -> None:
        self._db.close()


def _statements(script: str) -> list[str]:
    """Split a migration script into complete SQL statements (``sqlite3.complete_statement``)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


class _transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
