"""The store on PostgreSQL (15, psycopg 3): the second engine behind :class:`monitor.db.Engine` (issue 13).

Imported only when the configuration's ``store:`` is a ``postgresql://`` URL, so the embedded SQLite
default needs no PostgreSQL client. The migrations and the stores' SQL are the same as on SQLite;
what differs is translated here, in one place:

- migrations (:meth:`PostgreSQL.statements`): ``INTEGER PRIMARY KEY AUTOINCREMENT`` becomes an
  identity column, ``REAL`` a double, ``WITHOUT ROWID`` goes, the ``end`` column is quoted;
- statements (:func:`translate`): ``?`` parameters become psycopg's ``%s``, ``json_each(?)`` (a JSON
  array parameter as rows, the bulk attach of an outage) becomes ``json_array_elements_text``;
- ``BEGIN IMMEDIATE`` (SQLite: take the write lock at the start of a transaction) becomes ``BEGIN``
  plus a transaction-level advisory lock on :data:`WRITE_LOCK`, so writers are serialized exactly as
  on SQLite: a worker's claim of due rows cannot interleave with another's, whatever the isolation
  level. Readers take no lock (like WAL).

Fencing (active/standby daemons, :mod:`monitor.ha`): while this process holds the lease,
:data:`FENCE` has its epoch, and every write transaction checks, right after taking the write lock
and in the same round trip, that the lease row still has that epoch and has not expired; if not, the
transaction fails with :class:`Fenced` and nothing of it is kept. A deposed daemon's write that
arrives late (a partition that heals, a slow network) can therefore never land after a takeover.

The connection runs in autocommit mode (transactions are explicit, as the stores write them) and
reconnects by itself on its next statement after the server went away (not inside a transaction,
whose remaining statements fail until its end); the statement that met the failure raises
:class:`monitor.db.DatabaseError`, which the stores turn into their own errors (the daemon holds what
it could not write and retries). The password comes from the usual secret sources
(config ``store_password``), never from the URL, and is never in a message: :meth:`describe` is the
URL without it.
"""

from __future__ import annotations

import functools
import re
import select
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlsplit

import psycopg

from monitor.db import VERSION_TABLE, DatabaseError, split_statements

#: the key of the transaction-level advisory lock that migrations take (any fixed 64-bit number)
MIGRATION_LOCK = 0x6D6F6E69746F72  # "monitor"
#: the key of the store-wide write lock every write transaction takes (SQLite's BEGIN IMMEDIATE)
WRITE_LOCK = 0x6D6F6E69746F77  # "monitow"

_BEGIN_WRITE = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
#: a fenced write fails with an integer cast's error (invalid_text_representation) of this text
FENCED = "22P02"
_FENCED_TEXT = "fenced: lease epoch"


class Fenced(DatabaseError):
    """A write of a daemon whose lease epoch is no longer current: refused, nothing kept."""


class Fence:
    """This process's lease epoch while it is the active daemon (None: no lease, nothing checked)."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        #: told when the database refused a write as fenced (the keeper stands down at once); called on
        #: the thread that wrote, so it must only hand the news on
        self.refused: Callable[[], None] | None = None

    def statement(self) -> str | None:
        """The check a write transaction runs after its write lock; None when not fenced.

        Plain SQL, not a PL/pgSQL ``DO`` block (compiled at every run: 0.5 ms more a transaction, here
        0.07): the lease row that is not ours, or has expired, is cast to an integer and the cast fails
        (SQLSTATE 22P02 with our text). The text depends on the row's ``epoch`` column, so the planner
        cannot fold the cast ahead of the ``WHERE``: it fails only when such a row exists.
        """
        epoch = self.epoch
        if epoch is None:
            return None
        return (f"SELECT CAST('{_FENCED_TEXT} {int(epoch)} is not current or has expired (the lease is at epoch '"
                f" || epoch || ')' AS INTEGER) FROM ha_lease WHERE name = 'active' AND NOT (epoch = {int(epoch)}"
                " AND expires > EXTRACT(EPOCH FROM clock_timestamp()))")


#: the process's fence (one daemon per process); set by :mod:`monitor.ha.keeper`
FENCE = Fence()


def _error(exc: psycopg.Error) -> DatabaseError:
    """A driver error as ours; a fenced write as :class:`Fenced`."""
    if getattr(exc, "sqlstate", None) != FENCED or _FENCED_TEXT not in str(exc):
        return DatabaseError(str(exc).strip())
    if FENCE.refused is not None:
        FENCE.refused()
    return Fenced(str(exc).strip())

_DDL = (  # SQLite-isms the migrations use -> PostgreSQL
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\)\s*WITHOUT ROWID"), ")"),
    (re.compile(r"^(\s*)end(\s)", re.MULTILINE), r'\1"end"\2'),  # maintenance.end: reserved in PostgreSQL
)
_TOKENS = re.compile(r"'(?:[^']|'')*'|\bjson_each\(\?\)|\?|%")
_REPLACE = {"?": "%s", "%": "%%", "json_each(?)": "json_array_elements_text(CAST(%s AS json))"}


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """A store statement (qmark parameters, SQLite's ``json_each(?)``) as psycopg runs it; string
    literals are kept as they are. Cached: the stores' statements are a small, fixed set."""
    return _TOKENS.sub(lambda m: _REPLACE.get(m.group(0), m.group(0)), sql)


class Connection:
    """A psycopg connection that takes the stores' SQL and raises :class:`DatabaseError`."""

    def __init__(self, engine: PostgreSQL, conn: psycopg.Connection[Any]) -> None:
        self.engine = engine
        self.conn = conn
        self.lock_wait: float | None = None
        self._closed = False
        self._pipeline: AbstractContextManager[Any] | None = None
        self._detached: _Detached | None = None  # the side connection of write_detached
        #: a transaction was begun on this connection and not ended yet (by the stores' SQL)
        self._in_transaction = False

    def _live(self) -> psycopg.Connection[Any]:
        """The connection, opened again if the server dropped it; but never inside a transaction: the
        transaction died with the old connection, and its remaining statements on a new one would run
        alone, each committed by itself. They fail instead, until the transaction's end (ROLLBACK)."""
        if self.conn.closed and not self._closed:
            if self._in_transaction:
                raise DatabaseError("the connection to the server was lost inside a transaction")
            self.conn = self.engine.raw_connect()
            if self.lock_wait is not None:
                self.conn.execute(_lock_timeout(self.lock_wait))
        return self.conn

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        ends = sql in ("COMMIT", "ROLLBACK")
        if ends and self.conn.closed and self._in_transaction:
            self._in_transaction = False  # (its transaction is gone with the connection)
            if sql == "ROLLBACK":  # nothing left to roll back
                return psycopg.Cursor(self.conn)
            raise DatabaseError("the connection to the server was lost inside a transaction: not committed")
        try:
            conn = self._live()
            if ends:
                self._in_transaction = False
            if sql in ("BEGIN IMMEDIATE", "BEGIN"):
                cur = self._begin_write(conn) if sql == "BEGIN IMMEDIATE" else conn.execute(sql)
                self._in_transaction = True  # (only once begun: a BEGIN that failed left none to end)
                return cur
            if parameters:
                return conn.execute(translate(sql), parameters)
            return conn.execute(sql)
        except psycopg.Error as exc:
            raise _error(exc) from exc

    def _begin_write(self, conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
        """BEGIN, the write lock and (while fenced) the lease check, in one round trip. A failure leaves
        no transaction open: the ``with`` that asked for it never reaches its ROLLBACK."""
        fence = FENCE.statement() if self.engine.fenced else None
        try:
            return conn.execute(_BEGIN_WRITE if fence is None else f"{_BEGIN_WRITE}; {fence}")
        except psycopg.Error:
            self._rollback()
            raise

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> psycopg.Cursor[Any]:
        try:
            cur = self._live().cursor()
            rows = list(parameters)
            if rows:
                cur.executemany(translate(sql), rows)
            return cur
        except psycopg.Error as exc:
            raise _error(exc) from exc

    def begin_pipelined(self) -> None:
        """BEGIN and the write lock, queued: nothing is sent until :meth:`end_pipelined`."""
        try:
            conn = self._live()
            self._in_transaction = True
            self._pipeline = conn.pipeline()
            self._pipeline.__enter__()  # (a context manager spanning two calls: transaction's enter and exit)
            conn.execute("BEGIN")
            conn.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
            fence = FENCE.statement() if self.engine.fenced else None
            if fence is not None:
                conn.execute(fence)
        except psycopg.Error as exc:
            self._pipeline = None
            self._in_transaction = False
            raise _error(exc) from exc

    def end_pipelined(self, error: BaseException | None) -> None:
        """COMMIT queued after the body and the whole transaction sent in one round trip; on an error
        (the body's, or the server's answer to any queued statement) nothing is kept: ROLLBACK. A
        ``fetch`` in the body meets the server's errors as psycopg's: they leave here as DatabaseError."""
        pipeline, self._pipeline = self._pipeline, None
        assert pipeline is not None
        self._in_transaction = False
        try:
            try:
                if error is None:
                    self.conn.execute("COMMIT")
            finally:
                pipeline.__exit__(None, None, None)  # (sends it all; raises the first statement's error)
        except psycopg.Error as exc:
            self._rollback()
            if error is None or isinstance(error, psycopg.Error):
                cause = error if isinstance(error, psycopg.Error) else exc
                raise _error(cause) from cause
            return  # (the body's own error goes on)
        if error is not None:
            self._rollback()
            if isinstance(error, psycopg.Error):
                raise _error(error) from error

    def _rollback(self) -> None:
        try:
            if not self.conn.closed and self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.conn.execute("ROLLBACK")
        except psycopg.Error:
            pass  # (the connection is gone, and its transaction with it; the next statement reconnects)

    def write_detached(self, sql: str, parameters: tuple[int | float, ...]) -> None:
        """One write statement in a transaction of its own (the write lock and the fence as any), sent on
        a side connection and NOT waited for: returns once the kernel holds all of it. The kernel still
        delivers it if this process is killed now, and the server commits what it received, so for a
        crash it counts as written (what the outbox's hand-over record needs; the SMTP adapter relies on
        the same for the final "."). Its answer is read before the next one is sent, or by
        :meth:`wait_detached`; a failure there (the server away, a lock wait, the fence) only loses that
        record. Numbers only as parameters: they are written into the statement."""
        if self._detached is None:
            self._detached = _Detached(self.engine, self.lock_wait)
        fence = FENCE.statement() if self.engine.fenced else None
        literal = translate(sql) % tuple(_number(v) for v in parameters)
        self._detached.send(f"{_BEGIN_WRITE}; {fence + '; ' if fence else ''}{literal}; COMMIT")

    def wait_detached(self) -> None:
        """Until the server has answered every detached write: what is read next sees them."""
        if self._detached is not None:
            self._detached.settle()

    def close(self) -> None:
        self._closed = True
        if self._detached is not None:
            self._detached.close()
            self._detached = None
        self.conn.close()


def _number(value: int | float) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a detached write takes numbers only, not {type(value).__name__}")
    return repr(int(value)) if isinstance(value, int) else repr(float(value))


class _Detached:
    """Side connections that send a transaction each and read its answer only before their next one
    (libpq's asynchronous API on psycopg connections used for nothing else): up to :data:`SIDES` in
    flight at once, so a worker's lanes need not wait for each other's answers either."""

    SIDES = 4

    def __init__(self, engine: PostgreSQL, lock_wait: float | None) -> None:
        self.engine = engine
        self.lock_wait = lock_wait
        self.sides: list[_Side] = []
        self._next = 0

    def send(self, sql: str) -> None:
        side = next((s for s in self.sides if s.ready()), None)
        if side is None and len(self.sides) < self.SIDES:
            side = _Side(self.engine, self.lock_wait)
            self.sides.append(side)
        if side is None:  # all still waiting for an answer: the next in turn waits for its own
            side = self.sides[self._next % len(self.sides)]
            self._next += 1
        side.send(sql)

    def settle(self) -> None:
        for side in self.sides:
            side.settle()

    def close(self) -> None:
        for side in self.sides:
            side.settle()
            side.drop()
        self.sides = []


class _Side:
    """One side connection of :class:`_Detached`. A transaction the server refused is rolled back before
    the next; a broken connection is opened again on the next send; answers are discarded (what they
    record is only a refinement)."""

    #: how long reading an answer may wait (the server away: the record is given up, as the worker's are)
    WAIT = 5.0

    def __init__(self, engine: PostgreSQL, lock_wait: float | None) -> None:
        self.engine = engine
        self.lock_wait = lock_wait
        self.conn: psycopg.Connection[Any] | None = None
        self.waiting = False  # a transaction was sent whose answer is not read yet

    def ready(self) -> bool:
        """Free for a send: nothing sent, or its whole answer has arrived (read now, without waiting)."""
        if not self.waiting:
            return True
        assert self.conn is not None
        try:
            self.conn.pgconn.consume_input()
            if self.conn.pgconn.is_busy():
                return False
        except (psycopg.Error, OSError):
            self.drop()
            return True
        self.settle()
        return not self.waiting

    def send(self, sql: str) -> None:
        self.settle()
        try:
            if self.conn is None or self.conn.closed:
                self.conn = self.engine.raw_connect()
                if self.lock_wait is not None:
                    self.conn.execute(_lock_timeout(self.lock_wait))
            self.conn.pgconn.send_query(sql.encode())  # (blocking mode: returns once all is written)
            self.waiting = True
        except (psycopg.Error, OSError):
            self.drop()

    def settle(self) -> None:
        """Read the last transaction's answer, waiting for it if need be."""
        conn = self.conn
        if not self.waiting or conn is None:
            return
        self.waiting = False
        pg = conn.pgconn
        deadline = time.monotonic() + self.WAIT
        try:
            while True:
                pg.consume_input()
                if pg.is_busy():
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([pg.socket], [], [], left)[0]:
                        self.drop()
                        return
                    continue
                result = pg.get_result()
                if result is None:
                    break
                if result.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == FENCED.encode() and FENCE.refused:
                    FENCE.refused()  # (a deposed daemon's record, refused as any of its writes: it stands down)
            if pg.transaction_status != psycopg.pq.TransactionStatus.IDLE:  # refused midway: left in a block
                pg.send_query(b"ROLLBACK")
                self.waiting = True
                self.settle()
        except (psycopg.Error, OSError):
            self.drop()

    def drop(self) -> None:
        self.waiting = False
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def _lock_timeout(seconds: float) -> str:
    return f"SET lock_timeout = {max(1, int(seconds * 1000))}"


class PostgreSQL:
    """A store in a PostgreSQL database: ``postgresql://user@host:port/dbname`` plus the password."""

    errors: tuple[type[Exception], ...] = (DatabaseError, psycopg.Error, OSError)
    #: its write transactions check :data:`FENCE` (the lease's own connection does not)
    fenced = True

    def __init__(self, url: str, password: str | None = None, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.password = password
        self.connect_timeout = connect_timeout

    def __repr__(self) -> str:
        return f"PostgreSQL({self.describe()!r})"

    def describe(self) -> str:
        """The URL without a password."""
        u = urlsplit(self.url)
        host = u.hostname or ""
        port = f":{u.port}" if u.port else ""
        user = f"{u.username}@" if u.username else ""
        return f"postgresql://{user}{host}{port}{u.path}"

    def raw_connect(self) -> psycopg.Connection[Any]:
        # TCP keepalives and a user timeout bound how long a statement can hang on a cut network (the
        # daemon's stores are called from its event loop): about 10 s instead of the kernel's 15 min. The
        # server ends a session left inside a transaction for 10 s (a client cut off mid-transaction), so
        # the write lock it held does not stop every other writer, a standby's takeover included, for the
        # hours the server's own keepalives would take to notice
        return psycopg.connect(self.url, password=self.password, autocommit=True,
                               connect_timeout=max(1, int(self.connect_timeout)), keepalives=1,
                               keepalives_idle=5, keepalives_interval=2, keepalives_count=3, tcp_user_timeout=10_000,
                               options="-c idle_in_transaction_session_timeout=10000")

    def connect(self) -> Connection:
        try:
            return Connection(self, self.raw_connect())
        except psycopg.Error as exc:
            raise _error(exc) from exc

    def set_lock_wait(self, conn: Any, seconds: float) -> None:
        if isinstance(conn, Connection):
            conn.lock_wait = seconds
        conn.execute(_lock_timeout(seconds))

    def lock_for_migration(self, conn: Any) -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))

    def statements(self, migration: str) -> list[str]:
        out = []
        for statement in split_statements(migration):
            for pattern, replacement in _DDL:
                statement = pattern.sub(replacement, statement)
            out.append(statement)
        return out

    def prepare(self, conn: Any) -> None:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (component TEXT PRIMARY KEY,"
                     " version INTEGER NOT NULL)")
