"""The daemon's store (SQLite, WAL by default): the append-only StateChange log and current states.

Correlation, incidents and reports build on this log, so it is append-only and every change is
committed together with the target's current state in one transaction: a ``kill -9`` at any point
leaves the two consistent, and a restart resumes from exactly the states that were announced.

The log's tables are the ``events`` component of the store, with numbered migrations of their own
(:data:`MIGRATIONS`); correlation and delivery keep theirs beside their code. :func:`components`
lists all three and :mod:`monitor.db` opens and migrates them, one way for every opener.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

from monitor.correlate import schema as correlation
from monitor.db import (
    ERRORS,
    OPEN_TIMEOUT,
    VERSION_TABLE,
    InDoubt,
    Schema,
    StoreCursor,
    Where,
    committed,
    engine_for,
    open_store,
    transaction,
)
from monitor.delivery import schema as delivery
from monitor.errors import StorageError
from monitor.state import State, StateChange

EVENTS = "events"

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
    # 2 (3 in the single numbering before monitor.db): when the daemon was running (reports count time
    # outside every run as unknown, never as up)
    """
    CREATE TABLE monitor_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started REAL NOT NULL,
        last_seen REAL NOT NULL,
        stopped REAL
    );
    """,
    # 3: a DOWN's cause as the parent's subscriber table reported it (dying_gasp, los, other, unknown;
    # NULL otherwise and in rows written before): correlation tells a power cut from a fibre cut by it,
    # and must still after a restart
    """
    ALTER TABLE state_changes ADD COLUMN cause TEXT;
    """,
    # 4: when a remote zone was blind (every poller of it silent; issue 14): reports count its targets'
    # time then as unknown, except what its pollers handed over afterwards with real times
    """
    CREATE TABLE zone_blind (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        zone TEXT NOT NULL,
        started REAL NOT NULL,
        ended REAL
    );
    """,
)


class EventStore:
    """Append-only state-change log with current states, in the daemon's store."""

    def __init__(self, where: Where, busy_timeout: float = 5.0) -> None:
        """``where``: the SQLite file, or another engine (``store:`` in the config). ``busy_timeout``: how
        long a write waits for another connection's lock. The daemon passes a short one, because the wait
        blocks its event loop; it holds what it could not write and retries."""
        engine = engine_for(where)
        self.path = engine.describe()
        self._db = open_store(engine, components(), what="the event store", busy_timeout=busy_timeout,
                              migrate_timeout=OPEN_TIMEOUT)
        #: an append whose COMMIT went unanswered and could not be settled at once, with its changes
        self._doubt: tuple[InDoubt, frozenset[StateChange]] | None = None
        #: what appends found committed after their answer was lost recorded: left out of every append
        #: until one succeeds (the caller holds them until then, with whatever failed after them)
        self._recorded: frozenset[StateChange] = frozenset()

    @property
    def schema_version(self) -> int:
        """The version of the log's own tables (component ``events``)."""
        row = self._db.execute(f"SELECT version FROM {VERSION_TABLE} WHERE component = ?", (EVENTS,)).fetchone()
        return int(row[0]) if row else 0

    def append(self, changes: Sequence[StateChange]) -> None:
        """Record transitions and the resulting current states atomically.

        A caller that holds what failed and appends it again (:class:`monitor.polling.keeper.StoreKeeper`)
        gets each change recorded once even when the failure was a COMMIT whose answer was lost: the
        store asks the server whether that append was committed before its next one, and leaves out
        what it did record (until it can ask, appends fail as before and the caller keeps holding).

        Written in statements of many rows each (:func:`_statements`), and each target's current state
        once (its last change of the batch): a core failure reported by remote pollers is 100,000
        changes at once, and one statement per row cost 0.56-0.63 s CPU where this costs 0.39-0.43 s
        (docs/benchmarks.md, issue 14). PostgreSQL refuses an upsert touching one row twice in a
        statement, which the once per target also avoids. The states go in their targets' order: a
        batch in random target order (a poller's probes need not follow the inventory) then updates the
        primary key's pages in one pass, 2.4-2.8 -> 2.0-2.7 s for 100,000 (in inventory order no change)."""
        if self._doubt is not None:
            self._settle()
        if self._recorded:
            changes = [c for c in changes if c not in self._recorded]
        if not changes:
            self._recorded = frozenset()
            return
        # _value_: the member's text as a plain attribute (.value is a property, ~4x the cost)
        log = [v for c in changes for v in (c.ts, c.target, c.old._value_, c.new._value_, c.reason, c.cause)]
        current = {c.target: (c.new._value_, c.ts) for c in changes}  # the last change of each target wins
        states = [v for target, (state, since) in sorted(current.items()) for v in (target, state, since)]
        try:
            with transaction(self._db):
                for sql, args in _statements(_LOG_ROWS, 6, log):
                    self._db.execute(sql, args)
                for sql, args in _statements(_STATE_ROWS, 3, states):
                    self._db.execute(sql, args)
        except InDoubt as exc:
            self._doubt = (exc, frozenset(changes))
            raise StorageError(f"cannot append to the event store {self.path}: {exc}") from exc
        except ERRORS as exc:
            raise StorageError(f"cannot append to the event store {self.path}: {exc}") from exc
        self._recorded = frozenset()

    def _settle(self) -> None:
        """Ask whether the append in doubt was committed; if it was, what it wrote is left out from now on."""
        assert self._doubt is not None
        doubt, written = self._doubt
        try:
            done = committed(self._db, doubt)
        except ERRORS as exc:
            raise StorageError(f"cannot append to the event store {self.path}: {exc}") from exc
        self._doubt = None
        if done:
            self._recorded |= written

    def run_started(self, now: float) -> int:
        """Record that the daemon started; returns the run id for :meth:`run_alive`/:meth:`run_stopped`."""
        cur = self._write("INSERT INTO monitor_runs (started, last_seen) VALUES (?, ?) RETURNING id", (now, now))
        return int(cur.fetchall()[0][0])  # (all rows: SQLite ends the statement, and its lock, only then)

    def run_alive(self, run: int, now: float) -> None:
        """Heartbeat: after a crash the run is taken to have ended at its last heartbeat."""
        self._write("UPDATE monitor_runs SET last_seen = ? WHERE id = ?", (now, run))

    def run_stopped(self, run: int, now: float) -> None:
        self._write("UPDATE monitor_runs SET last_seen = ?, stopped = ? WHERE id = ?", (now, now, run))

    def _write(self, sql: str, args: tuple[object, ...]) -> StoreCursor:
        try:
            return self._db.execute(sql, args)
        except ERRORS as exc:
            raise StorageError(f"cannot write to the event store {self.path}: {exc}") from exc

    def zone_blind(self, zone: str, since: float) -> None:
        """A remote zone went blind: nothing is known of it since ``since`` (its pollers' last word)."""
        self._write("INSERT INTO zone_blind (zone, started) VALUES (?, ?)", (zone, since))

    def zone_seen(self, zone: str | None, at: float) -> None:
        """``zone`` (None: every zone; a start ends what a stopped core left open) is seen again."""
        if zone is None:
            self._write("UPDATE zone_blind SET ended = CASE WHEN started > ? THEN started ELSE ? END"
                        " WHERE ended IS NULL", (at, at))
        else:
            self._write("UPDATE zone_blind SET ended = ? WHERE zone = ? AND ended IS NULL", (at, zone))

    def zone_watched(self, zone: str, started: float, ended: float, until: float) -> None:
        """The blind episode of ``zone`` from ``started`` to ``ended`` was watched after all from ``until``
        on: a poller kept polling it, cut off from the core, and has handed over all it confirmed. The
        episode ends at ``until`` (at its start: wholly watched); reports then count the zone's log."""
        self._write("UPDATE zone_blind SET ended = ? WHERE zone = ? AND started = ? AND ended = ?",
                    (max(started, min(until, ended)), zone, started, ended))

    def blind_zones(self) -> list[tuple[str, float, float | None]]:
        """(zone, start, end or None while blind) of every blind episode, oldest first."""
        rows = self._db.execute("SELECT zone, started, ended FROM zone_blind ORDER BY started, id")
        return [(str(z), float(a), None if b is None else float(b)) for z, a, b in rows]

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
        sql = "SELECT ts, target, old, new, reason, cause FROM state_changes WHERE 1=1"
        args: list[object] = []
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        if until is not None:
            sql += " AND ts < ?"
            args.append(until)
        wanted = set(targets) if targets is not None else None
        for ts, target, old, new, reason, cause in self._db.execute(sql + " ORDER BY id", args):
            if wanted is None or target in wanted:
                yield StateChange(target, State(old), State(new), ts, reason, cause)

    def close(self) -> None:
        self._db.close()


#: rows per statement at most (a power of two): 6 x 128 = 768 parameters, within the 999 of older SQLite
MAX_ROWS = 128
_LOG_ROWS = "INSERT INTO state_changes (ts, target, old, new, reason, cause) VALUES {}"
_STATE_ROWS = ("INSERT INTO target_state (target, state, since) VALUES {}"
               " ON CONFLICT(target) DO UPDATE SET state = excluded.state, since = excluded.since")


@functools.cache
def _rows_sql(template: str, width: int, rows: int) -> str:
    return template.format(",".join(["(" + ",".join("?" * width) + ")"] * rows))


def _statements(template: str, width: int, values: Sequence[object]) -> Iterator[tuple[str, Sequence[object]]]:
    """``values`` (``width`` per row, flat) as statements of many rows, in order: MAX_ROWS a statement,
    the rest in powers of two, so a connection prepares at most 8 sizes of each statement (SQLite's
    and psycopg's statement caches are small and shared by every statement of the store)."""
    rows, start = len(values) // width, 0
    size = MAX_ROWS
    while rows:
        while size > rows:
            size //= 2
        end = start + size * width
        yield _rows_sql(template, width, size), values[start:end]
        rows, start = rows - size, end


def components() -> tuple[Schema, ...]:
    """Every owner's tables in the daemon's store. Any opener brings all of them up to date (one
    transaction), so no reader ever meets a store half upgraded: the log's and correlation's readers
    join each other's tables, and reports read all three."""
    return (Schema(EVENTS, MIGRATIONS), correlation.SCHEMA, delivery.SCHEMA)
