"""The one way the daemon's store is opened and migrated: connect, session settings, lock waits, migrations.

The store is one database shared by three owners (the state-change log, correlation, delivery). Each
owner declares its tables as a :class:`Schema`: a component name and its own numbered migrations,
never edited once released. :func:`open_store` connects and brings every component of the store up
to date in ONE transaction that holds the write lock before any version is read, so two processes
opening a new or old store at once (the daemon and a CLI) cannot both migrate it, and a failure
leaves neither a half-migrated schema nor a held lock. Versions live in a table (``schema_version``,
one row per component), which every SQL engine has, instead of SQLite's ``PRAGMA user_version``.

What is engine-specific sits behind :class:`Engine`: connecting, the session settings, how long a
statement waits for another connection's lock, taking the migration lock, splitting a migration
into statements, the engine's error types, and preparing the version table (SQLite adopts a file
written before this layer existed there). :class:`SQLite` is the embedded default. A second engine
(PostgreSQL, issue 13) implements the same protocol: its ``lock_for_migration`` is ``BEGIN`` plus a
transaction-level advisory lock, its ``statements`` translate the three SQLite-isms the migrations
use (``INTEGER PRIMARY KEY AUTOINCREMENT``, ``REAL``, ``WITHOUT ROWID``) and quote ``end`` (a column
name PostgreSQL reserves), its ``prepare`` only creates ``schema_version``, and its connection takes
qmark (``?``) parameters like the stores' SQL: :mod:`monitor.db_postgres` (imported only when a
``store:`` URL asks for it, so the embedded default needs no PostgreSQL client).

The stores' own SQL is written once, in the dialect both engines share (``ON CONFLICT``, ``RETURNING``,
a quoted ``"end"``); a PostgreSQL connection translates the three things left in one place
(:func:`monitor.db_postgres.translate`): ``?`` parameters, ``json_each(?)`` and ``BEGIN IMMEDIATE``
(SQLite's write lock, taken there as an advisory lock). A SQLite store's connection is sqlite3's own,
untouched: the embedded default pays nothing for the second engine.
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias, TypeGuard, TypeVar, cast, runtime_checkable

from monitor.errors import ConfigError, StorageError

#: ``PRAGMA user_version`` of a SQLite store in this format. Releases before it kept one numbering
#: there (1-5) and refuse anything higher as "written by a newer release", which is what they should
#: say instead of failing on tables that already exist.
FORMAT = 1000

VERSION_TABLE = "schema_version"

#: how long the stores' openings wait for another connection's write lock (migrating takes it), when
#: their ``busy_timeout`` for normal work is shorter (the daemon's: a wait blocks its event loop).
#: Generous: only an opening waits this long, and eight processes opening an old store together on a
#: loaded 2-core machine took longer than 5 s to migrate one after another (one failed "locked").
OPEN_TIMEOUT = 30.0

#: The single numbering before this layer (``PRAGMA user_version``, every owner's tables in one
#: sequence) as each component's own version: 1 log and states (events 1), 2 incidents (correlation
#: 1), 3 runs (events 2), 4 ``was_outage`` (correlation 2), 5 ``pending_since`` (correlation 3).
#: Delivery had its own ``delivery_schema`` table, adopted as it is.
_LEGACY: dict[int, dict[str, int]] = {
    0: {},
    1: {"events": 1},
    2: {"events": 1, "correlation": 1},
    3: {"events": 2, "correlation": 1},
    4: {"events": 2, "correlation": 2},
    5: {"events": 2, "correlation": 3},
}


@dataclass(frozen=True, slots=True)
class Schema:
    """One owner's tables: its component name in ``schema_version`` and its migrations, in order.

    A migration is applied once, in one transaction with every other one of that opening; released
    migrations are never edited (old stores have run them), new ones are appended.
    """

    component: str
    migrations: tuple[str, ...]

    @property
    def version(self) -> int:
        return len(self.migrations)


class DatabaseError(StorageError):
    """What a connection of an engine other than SQLite raises (its driver's errors, translated there).

    SQLite's connection is sqlite3's own, so its errors stay ``sqlite3.Error``; the stores catch
    :data:`ERRORS`, which names both.
    """


class InDoubt(DatabaseError):
    """COMMIT was sent and the connection broke before its answer: the transaction may be committed.

    SQLite, in this process, never leaves a commit in doubt; a server across a network does when the
    connection dies between COMMIT reaching it and its answer coming back. A writer that holds what it
    could not write and retries must not write it a second time: ``token`` (None when the engine
    cannot tell) asks the connection later whether it was committed (:func:`committed`)."""

    def __init__(self, message: str, token: object | None = None) -> None:
        super().__init__(message)
        self.token = token


@runtime_checkable
class Settling(Protocol):
    """A connection that can tell whether a transaction it left in doubt was committed (PostgreSQL's)."""

    def committed(self, token: object) -> bool: ...


def committed(db: object, doubt: InDoubt) -> bool:
    """Whether the transaction ``doubt`` left unanswered was committed; raises :class:`DatabaseError` while
    the server cannot be asked (the caller keeps holding what it wrote), and when the engine has no way
    to tell (``token`` None: the caller must make its retry harmless on its own)."""
    if doubt.token is None or not _implements(type(db), Settling):
        raise DatabaseError(f"cannot tell whether a transaction was committed: {doubt}")
    return cast(Settling, db).committed(doubt.token)


#: what a store's statements may raise, on any engine
ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, DatabaseError)


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class StoreCursor(Cursor, Protocol):
    """What the stores use of a cursor (sqlite3's and psycopg's both are one)."""

    @property
    def rowcount(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the migration runner needs of a connection (DB-API, qmark parameters, no implicit BEGIN)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def close(self) -> None: ...


class StoreConnection(Connection, Protocol):
    """What the stores use of a connection: qmark parameters, explicit transactions (``BEGIN IMMEDIATE``
    for a write), ``executemany`` whose ``rowcount`` is the sum over the rows."""

    def execute(self, sql: str, parameters: Any = ..., /) -> StoreCursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> StoreCursor: ...


C = TypeVar("C", bound=Connection)
C_co = TypeVar("C_co", bound=Connection, covariant=True)


class Engine(Protocol[C_co]):
    """Where the store is and how to talk to it; the runner and the stores stay the same on every engine."""

    #: what the engine's driver raises; translated into :class:`StorageError` at this edge
    errors: tuple[type[Exception], ...]

    def describe(self) -> str:
        """Where the store is, for messages (never a password)."""
        ...

    def connect(self) -> C_co: ...

    def set_lock_wait(self, conn: Connection, seconds: float) -> None:
        """How long a statement waits for another connection's lock before it fails."""
        ...

    def lock_for_migration(self, conn: Connection) -> None:
        """Begin a transaction that holds the write lock (no other opening can read a version meanwhile)."""
        ...

    def statements(self, migration: str) -> list[str]:
        """A migration script as complete statements in this engine's dialect."""
        ...

    def prepare(self, conn: Connection) -> None:
        """Inside the migration transaction: make sure ``schema_version`` exists and says what the store
        holds (SQLite adopts the layout of older releases here)."""
        ...


class SQLite:
    """The embedded engine: one file, WAL journal (readers never block the writer), NORMAL sync.

    NORMAL in WAL mode loses at most the last transactions on power loss, never consistency; a
    ``kill -9`` loses nothing committed.
    """

    errors: tuple[type[Exception], ...] = (sqlite3.Error, OSError)

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # an opening waits OPEN_TIMEOUT here too: an old file's switch to WAL needs it to itself, like a
        # migration (open_store sets the lock wait for normal work right after)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=OPEN_TIMEOUT)
        try:
            _switch_to_wal(db, time.monotonic() + OPEN_TIMEOUT)
            db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    def connect_readonly(self) -> sqlite3.Connection:
        """For readers that must never interfere with the daemon beyond WAL reads (reports)."""
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)

    def set_lock_wait(self, conn: Connection, seconds: float) -> None:
        conn.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    def lock_for_migration(self, conn: Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def statements(self, migration: str) -> list[str]:
        return split_statements(migration, "sqlite")

    def versions(self, conn: Connection) -> dict[str, int]:
        """Component versions without writing anything (a read-only reader of a store old or new)."""
        if _has_table(conn, VERSION_TABLE):
            rows = conn.execute(f"SELECT component, version FROM {VERSION_TABLE}").fetchall()
            return {str(c): int(v) for c, v in rows}
        found = dict(_LEGACY.get(int(conn.execute("PRAGMA user_version").fetchone()[0]), {}))
        found.update(_delivery_schema(conn))
        return found

    def prepare(self, conn: Connection) -> None:
        """A file without ``schema_version``: new (user_version 0) or written by an older release.

        The old numbering becomes one row per component, delivery's own table is folded in, and the
        file is marked :data:`FORMAT`, all in the migration transaction (rolled back with it).
        """
        old = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if old == FORMAT and _has_table(conn, VERSION_TABLE):
            return
        if old not in _LEGACY:  # (above FORMAT: a later layout of the file, refused the same way)
            raise StorageError(
                f"{self.path} has schema version {old}, newer than this program knows:"
                " it was written by a newer release"
            )
        versions = {**_LEGACY[old], **_delivery_schema(conn)}
        conn.execute("DROP TABLE IF EXISTS delivery_schema")
        conn.execute(f"CREATE TABLE {VERSION_TABLE} (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        for component, version in versions.items():
            conn.execute(f"INSERT INTO {VERSION_TABLE} (component, version) VALUES (?, ?)", (component, version))
        conn.execute(f"PRAGMA user_version = {FORMAT}")


def open_store(
    engine: Engine[C], schemas: Sequence[Schema], *, what: str, busy_timeout: float,
    migrate_timeout: float | None = None,
) -> C:
    """Connect, bring every component of ``schemas`` up to date, and set the lock wait for normal work.

    ``what`` names the opener in errors ("the event store"). ``busy_timeout``: how long a write waits
    for another connection's lock afterwards (the daemon's is short: the wait blocks its event loop).
    ``migrate_timeout`` (default ``busy_timeout``): how long the opening waits for the write lock.
    """
    conn = _connect(engine, what)
    try:
        engine.set_lock_wait(conn, busy_timeout if migrate_timeout is None else migrate_timeout)
        migrate(engine, conn, schemas)
        if migrate_timeout is not None:
            engine.set_lock_wait(conn, busy_timeout)
    except engine.errors as exc:
        conn.close()
        raise StorageError(f"cannot open {what} {engine.describe()}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _connect(engine: Engine[C], what: str) -> C:
    """A connection, or StorageError naming ``what`` and the store (never its password)."""
    try:
        return engine.connect()
    except engine.errors as exc:
        raise StorageError(f"cannot open {what} {engine.describe()}: {exc}") from exc


def migrate(engine: Engine[C], conn: C, schemas: Iterable[Schema]) -> None:
    """Apply every missing migration of ``schemas`` in one transaction that took the write lock first.

    A component whose stored version is higher than its migrations was written by a newer release:
    refused, nothing changed. Any failure rolls the whole opening back.
    """
    engine.lock_for_migration(conn)
    try:
        engine.prepare(conn)
        have = dict(conn.execute(f"SELECT component, version FROM {VERSION_TABLE}").fetchall())
        for schema in schemas:
            current = int(have.get(schema.component, 0))
            if current > schema.version:
                raise StorageError(
                    f"{engine.describe()}: the {schema.component} tables have schema version {current}, newer than"
                    f" this program knows ({schema.version}): they were written by a newer release"
                )
            for version in range(current + 1, schema.version + 1):
                for statement in engine.statements(schema.migrations[version - 1]):
                    conn.execute(statement)
            if current < schema.version:
                conn.execute(
                    f"INSERT INTO {VERSION_TABLE} (component, version) VALUES (?, ?)"
                    " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (schema.component, schema.version),
                )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


#: a migration's statement that begins with this comment runs on the named engine only (a storage
#: option one engine has and the other has no words for: PostgreSQL's ``fillfactor``), so the one
#: definition of a component's tables still serves both
_ONLY_ON = re.compile(r"\A--[ \t]*only on (\w+)[ \t]*$", re.MULTILINE)


def split_statements(script: str, engine: str = "sqlite") -> list[str]:
    """A migration script as complete statements (``sqlite3.complete_statement``: lexical only, so a
    ``;`` inside a string stays; usable for any engine's scripts written in the migrations' SQL),
    without those marked ``-- only on <another engine>`` on their first line."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return [s for s in out if (m := _ONLY_ON.match(s)) is None or m.group(1) == engine]


def _switch_to_wal(db: sqlite3.Connection, deadline: float) -> None:
    """``PRAGMA journal_mode=WAL``, tried again while another opening holds the file, until ``deadline``.

    The switch of a new (rollback-journal) file reads it under a shared lock and then wants the
    exclusive one. When another process's switch already holds the lock above shared and waits for
    ours to go, SQLite answers "database is locked" at once instead of calling the busy handler (a
    wait would deadlock): one of six processes creating a store together failed that way in CI, and
    about 3 % of the openings in a fork loop (``test_store``). Trying again after the other switch
    ends finds the file in WAL already.
    """
    pause = 0.001
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, 0.1)


def _delivery_schema(conn: Connection) -> dict[str, int]:
    """The outbox's own version table of releases before this layer, as a component version."""
    if not _has_table(conn, "delivery_schema"):
        return {}
    row = conn.execute("SELECT MAX(version) FROM delivery_schema").fetchone()
    return {"delivery": int(row[0])} if row[0] else {}


def _has_table(conn: Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


class StoreSettings(Protocol):
    """The configuration's say on where the store is (``daemon:`` in the inventory)."""

    @property
    def state_dir(self) -> str: ...

    @property
    def store(self) -> str: ...

    @property
    def store_password(self) -> Any: ...


#: a store as the stores and services take it: the SQLite file's path, or another engine
Where: TypeAlias = "Path | Engine[StoreConnection]"


def store_location(daemon: StoreSettings) -> Where:
    """Where the configured store is: ``<state_dir>/monitor.db`` (SQLite) unless ``daemon.store`` names a
    PostgreSQL database, whose engine is imported only then (the default needs no PostgreSQL client)."""
    if not daemon.store:
        return Path(daemon.state_dir) / "monitor.db"
    try:
        from monitor.db_postgres import PostgreSQL
    except ImportError as exc:  # psycopg is an optional dependency
        raise ConfigError(f"daemon.store names a PostgreSQL database, but its client is not installed ({exc}):"
                          " pip install 'isp-monitor[postgresql]'") from exc
    secret = daemon.store_password
    return PostgreSQL(daemon.store, secret.reveal() if secret is not None else None)


def engine_for(where: Where) -> Engine[StoreConnection]:
    """A store given as a path is the embedded SQLite file there; anything else already is an engine."""
    return SQLite(where) if isinstance(where, Path) else where


def open_readonly(where: Where) -> tuple[StoreConnection, dict[str, int]]:
    """A read-only connection and the store's component versions, migrating nothing (reports: a store
    written by an older release may lack the later tables, and a report never writes). SQLite opens the
    file with ``mode=ro``; another engine gets a read-only session (``default_transaction_read_only``)."""
    if isinstance(where, Path):
        if not where.exists():
            raise StorageError(f"{where}: no store here (has the daemon run with this config?)")
        engine = SQLite(where)
        try:
            db = engine.connect_readonly()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the store {where}: {exc}") from exc
        try:
            engine.set_lock_wait(db, 5.0)
            return db, engine.versions(db)
        except sqlite3.Error as exc:
            db.close()
            raise StorageError(f"cannot read the store {where}: {exc}") from exc
    conn = _connect(where, "the store")
    try:
        conn.execute("SET default_transaction_read_only = on")
        rows = conn.execute(f"SELECT component, version FROM {VERSION_TABLE}").fetchall()
    except where.errors as exc:
        conn.close()
        raise StorageError(f"cannot read the store {where.describe()}: {exc} (has the daemon run with this"
                           " config?)") from exc
    return conn, {str(c): int(v) for c, v in rows}


class transaction:
    """One write transaction that takes the write lock at its start (no deadlock upgrading a read lock).

    ``BEGIN IMMEDIATE`` on SQLite; a PostgreSQL connection takes its store-wide write lock for it, so
    writers are serialized the same way on both engines (see :mod:`monitor.db_postgres`).
    """

    def __init__(self, db: StoreConnection, *, pipelined: bool = False) -> None:
        """``pipelined``: the body needs no result before its end (no ``rowcount``; a ``fetch`` sends what
        is queued so far, one more round trip). A PostgreSQL connection then sends the transaction, BEGIN
        to COMMIT, in one round trip instead of one per statement (the outbox's hot path); SQLite has no
        round trips and runs it as any other."""
        self.db = db
        self.pipelined = pipelined and _implements(type(db), Pipelining)

    def __enter__(self) -> None:
        if self.pipelined:
            cast(Pipelining, self.db).begin_pipelined()
        else:
            self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: BaseException | None, *_: object) -> None:
        if self.pipelined:
            cast(Pipelining, self.db).end_pipelined(exc)
        else:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


@runtime_checkable
class Pipelining(Protocol):
    """A connection that can queue a whole write transaction and send it at once (PostgreSQL's)."""

    def begin_pipelined(self) -> None: ...

    def end_pipelined(self, error: BaseException | None) -> None:
        """COMMIT if the body raised no ``error``, else ROLLBACK (a driver's error becomes :class:`DatabaseError`)."""
        ...


@runtime_checkable
class Detaching(Protocol):
    """A connection that can send a one-statement write without waiting for its answer (PostgreSQL's):
    where a record only has to survive this process being killed, it costs no round trip."""

    def write_detached(self, sql: str, parameters: tuple[int | float | str | None, ...],
                       undone: object = None) -> None:
        """``undone``: handed back by :meth:`detached_undone` if this write is not known to have landed
        (the server refused it, or the connection ended before its answer); None: a lost write is lost."""
        ...

    def wait_detached(self) -> bool:
        """Until every detached write is answered; whether any was waiting for its answer."""
        ...

    def detached_undone(self) -> list[object]:
        """The ``undone`` of the writes found not landed since the last call (answers read so far)."""
        ...


def detaching(db: object) -> TypeGuard[Detaching]:
    """Whether ``db`` can write without waiting (:class:`Detaching`), cheaply: asked once per class."""
    return _implements(type(db), Detaching)


_IMPLEMENTS: dict[tuple[type, type], bool] = {}


def _implements(cls: type, protocol: type) -> bool:
    """``issubclass`` against a runtime protocol, remembered: an ``isinstance`` against one costs ~50 µs
    in Python 3.11, and the outbox asks on every transaction of its hot path."""
    known = _IMPLEMENTS.get((cls, protocol))
    if known is None:
        known = _IMPLEMENTS[(cls, protocol)] = issubclass(cls, protocol)
    return known

