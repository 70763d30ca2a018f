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

The outbox's hot path (``transaction(db, pipelined=True)``) is a batched transaction: its statements
are queued and sent with BEGIN, the write lock, the fence and COMMIT as ONE simple-query message,
each an ``EXECUTE`` of a statement the session prepared at its first use, the values written in as
literals by libpq's escaping (:class:`_Session`). psycopg's pipeline mode did the same in one round
trip but spent ~300 µs of Python per transaction on it, and the server parsed and planned every
statement again (docs/benchmarks.md, issue 13). The message goes out and its answers are read on
libpq itself (:func:`_run`), not through a psycopg cursor: ~25-45 µs less of Python a message.

Fencing (active/standby daemons, :mod:`monitor.ha`): while this process holds the lease,
:data:`FENCE` has its epoch, and every write transaction checks, right after taking the write lock
and in the same round trip, that the lease row still has that epoch and has not expired; if not, the
transaction fails with :class:`Fenced` and nothing of it is kept. A deposed daemon's write that
arrives late (a partition that heals, a slow network) can therefore never land after a takeover.
The exceptions are the outbox's hand-over records and records of delivered rows
(:meth:`Connection.write_detached`): fenced too, but without the write lock, as updates that only
change a row still being sent, harmless wherever they land (see there).

The connection runs in autocommit mode (transactions are explicit, as the stores write them) and
reconnects by itself on its next statement after the server went away (not inside a transaction,
whose remaining statements fail until its end); the statement that met the failure raises
:class:`monitor.db.DatabaseError`, which the stores turn into their own errors (the daemon holds what
it could not write and retries). A silent network (packets dropped, no reset) costs the first
statement that meets it :data:`USER_TIMEOUT` and then fails every statement at once while a thread
connects again (:class:`_Reach`): the daemon's event loop, which calls the stores and also polls, is
held seconds once per cut, not at every statement and retry. The password comes from the usual secret sources
(config ``store_password``), never from the URL, and is never in a message: :meth:`describe` is the
URL without it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import re
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import psycopg
import psycopg.abc
import psycopg.adapt
import psycopg.sql

from monitor.db import VERSION_TABLE, DatabaseError, InDoubt, split_statements

#: the key of the transaction-level advisory lock that migrations take (any fixed 64-bit number)
MIGRATION_LOCK = 0x6D6F6E69746F72  # "monitor"
#: the key of the store-wide write lock every write transaction takes (SQLite's BEGIN IMMEDIATE)
WRITE_LOCK = 0x6D6F6E69746F77  # "monitow"

_BEGIN_WRITE = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
#: the write transaction's id, asked for with its BEGIN (one round trip): what tells, when COMMIT's answer
#: is lost, whether it was committed (``pg_xact_status``); a write transaction is given one anyway
_XACT_ID = "SELECT pg_current_xact_id()::text"
#: how long settling a commit in doubt waits for the old session to end when it is still running
_TERMINATE_WAIT_MS = 1000
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


#: :meth:`Fence.statement` with the epoch as a parameter (twice): one prepared statement for every epoch
_FENCE_CHECK = (f"SELECT CAST('{_FENCED_TEXT} ' || CAST(? AS INTEGER) || ' is not current or has expired (the lease"
                " is at epoch ' || epoch || ')' AS INTEGER) FROM ha_lease WHERE name = 'active' AND NOT (epoch ="
                " CAST(? AS INTEGER) AND expires > EXTRACT(EPOCH FROM clock_timestamp()))")
_WRITE_LOCK_SQL = f"SELECT pg_advisory_xact_lock({WRITE_LOCK})"


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


#: how long what a connection sent may stay unacknowledged by the server's machine before the
#: connection counts as lost (libpq's ``tcp_user_timeout``; keepalive probes of an idle connection
#: too). It bounds how long a statement holds the daemon's event loop when the network goes silent;
#: a live server's kernel acknowledges within milliseconds however busy the server is.
USER_TIMEOUT = 2.0


class _Reach:
    """Whether one database server answers, as this process's connections to it found: shared by them.

    The daemon calls its stores on its event loop, which also polls. When the network to the server
    goes silent (packets dropped, no reset), the first statement that meets it waits out
    :data:`USER_TIMEOUT` and marks the server unreachable; from then on every statement of every
    connection to it fails at once, instead of each one waiting out its own timeout and each reconnect
    its ``connect_timeout`` (10 s each, again at every retry). Connecting happens on a thread of its
    own, one attempt at a time; a caller waits for an attempt it started only :data:`WAIT` (a server
    that is up, or refuses, answers within that), and not at all for one already under way. An
    attempt that connects makes the server reachable again.
    Only silence marks the server unreachable (a timeout, or a connection not made within WAIT): a
    refusal or a reset (a restart) leaves every connection to try again at once, as before.
    Connections opened before the server was lost are replaced once it is back (``losses``): a restart
    ended their sessions, and finding that out statement by statement would be an episode of its own.
    """

    WAIT = 0.5

    def __init__(self) -> None:
        self.down = False
        self.losses = 0  # how many times the server was found lost (connections remember it at opening)
        self._lock = threading.Lock()
        self._attempt: concurrent.futures.Future[psycopg.Connection[Any]] | None = None

    def lost(self) -> None:
        self.down = True
        self.losses += 1

    def check(self, engine: PostgreSQL) -> None:
        """Nothing while the server is reachable; else DatabaseError (at once, or after WAIT for an
        attempt this call started), until an attempt connected."""
        if not self.down:
            return
        attempt, new = self._start(engine)
        if new:
            concurrent.futures.wait([attempt], timeout=self.WAIT)
        if attempt.done() and attempt.exception() is None:
            with self._lock:
                mine = self._attempt is attempt
                if mine:
                    self._attempt = None
            if mine:
                attempt.result().close()  # (only a proof: a connection that needs a new one makes its own)
            self.down = False
            return
        raise DatabaseError(f"{engine.describe()} does not answer (the network or the server is down):"
                            " connecting again in the background")

    def connect(self, engine: PostgreSQL) -> psycopg.Connection[Any]:
        """A new connection: the one an attempt made, or a new attempt's if it connects within WAIT."""
        attempt, new = self._start(engine)
        try:
            conn = attempt.result(timeout=self.WAIT if new else 0)
        except concurrent.futures.TimeoutError:
            if not self.down:
                self.lost()  # (no answer within WAIT: silence, or a server too slow to count on now)
            raise DatabaseError(f"{engine.describe()} does not answer yet: connecting in the background") from None
        except psycopg.Error as exc:
            if _silent(exc) and not self.down:
                self.lost()
            raise _error(exc) from exc
        finally:
            with self._lock:
                if self._attempt is attempt and attempt.done():
                    self._attempt = None  # (taken, or failed: the next call tries again)
        self.down = False
        return conn

    def _start(self, engine: PostgreSQL) -> tuple[concurrent.futures.Future[psycopg.Connection[Any]], bool]:
        with self._lock:
            attempt = self._attempt
            if attempt is not None and not (attempt.done() and attempt.exception() is not None):
                return attempt, False
            attempt = self._attempt = concurrent.futures.Future()
        threading.Thread(target=_connect_into, args=(engine, attempt), name="postgresql-connect", daemon=True).start()
        return attempt, True


def _silent(exc: BaseException) -> bool:
    """Whether a connection failed for want of any answer (a timeout), not by the server's refusal or
    reset (a restart: connecting again at once is cheap and right)."""
    text = str(exc)
    return "timed out" in text or "timeout expired" in text


def _connect_into(engine: PostgreSQL, attempt: concurrent.futures.Future[psycopg.Connection[Any]]) -> None:
    try:
        attempt.set_result(engine.raw_connect())
    except BaseException as exc:  # (handed to whoever waits for the attempt)
        attempt.set_exception(exc)


_REACHES: dict[tuple[type, str], _Reach] = {}
_REACHES_LOCK = threading.Lock()


def _reach(engine: PostgreSQL) -> _Reach:
    """The reachability of ``engine``'s server as this process knows it (one per engine class and URL:
    the lease's connections, with their own timeouts, keep their own)."""
    key = (type(engine), engine.url)
    with _REACHES_LOCK:
        reach = _REACHES.get(key)
        if reach is None:
            reach = _REACHES[key] = _Reach()
        return reach


class Connection:
    """A psycopg connection that takes the stores' SQL and raises :class:`DatabaseError`."""

    def __init__(self, engine: PostgreSQL, conn: psycopg.Connection[Any]) -> None:
        self.engine = engine
        self.conn = conn
        self.reach = _reach(engine)
        self._opened_at = self.reach.losses
        self.lock_wait: float | None = None
        self._closed = False
        self._batch: list[tuple[str, Any, _Result]] | None = None  # a batched transaction's queue
        self._begun = False  # ... of which a part was sent already (BEGIN included)
        self._session: _Session | None = None  # what the current server session has prepared
        self._detached: _Detached | None = None  # the side connection of write_detached
        #: a transaction was begun on this connection and not ended yet (by the stores' SQL)
        self._in_transaction = False
        #: the current write transaction's (id, server process): settles its COMMIT if the answer is lost
        self._xact: tuple[int, int] | None = None

    def _live(self) -> psycopg.Connection[Any]:
        """The connection, opened again if the server dropped it; but never inside a transaction: the
        transaction died with the old connection, and its remaining statements on a new one would run
        alone, each committed by itself. They fail instead, until the transaction's end (ROLLBACK)."""
        reach = self.reach
        reach.check(self.engine)
        if self._opened_at != reach.losses and not self._in_transaction and not self.conn.closed:
            self.conn.close()  # (opened before the server was lost: replaced, see _Reach)
        if self.conn.closed and not self._closed:
            if self._in_transaction:
                raise DatabaseError("the connection to the server was lost inside a transaction")
            self._opened_at = reach.losses
            self.conn = reach.connect(self.engine)
            if self.lock_wait is not None:
                self.conn.execute(_lock_timeout(self.lock_wait))
        return self.conn

    def _failed(self, exc: psycopg.Error) -> DatabaseError:
        """A driver error as ours; a connection lost to silence marks the server unreachable."""
        if self.conn.closed and _silent(exc):
            self.reach.lost()
        return _error(exc)

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any] | _Result:
        if self._batch is not None:
            result = _Result(self)
            self._batch.append((sql, tuple(parameters), result))
            return result
        ends = sql in ("COMMIT", "ROLLBACK")
        xact = None
        if ends:
            xact, self._xact = self._xact, None
        if ends and self.reach.down and not self.conn.closed:
            self.conn.close()  # (not waited on: the server ends the transaction of a connection that went)
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
            error = self._failed(exc)
            if sql == "COMMIT" and xact is not None and self.conn.closed:
                return self._settle(xact, error)
            raise error from exc

    def _begin_write(self, conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
        """BEGIN, the write lock, (while fenced) the lease check and the transaction's id, in one round
        trip. A failure leaves no transaction open: the ``with`` that asked for it never reaches its
        ROLLBACK."""
        fence = FENCE.statement() if self.engine.fenced else None
        try:
            begin = _BEGIN_WRITE if fence is None else f"{_BEGIN_WRITE}; {fence}"
            cur = conn.execute(f"{begin}; {_XACT_ID}")
            while cur.nextset():
                pass
            row = cur.fetchone()
            self._xact = None if row is None else (int(row[0]), conn.info.backend_pid)
            return cur
        except psycopg.Error:
            self._rollback()
            raise

    def _settle(self, xact: tuple[int, int], error: DatabaseError) -> psycopg.Cursor[Any]:
        """COMMIT was sent and the connection broke before its answer: asked on a new connection at once,
        the commit counts as what the server did (an answer as if heard, or a plain failure that the
        caller may retry); :class:`InDoubt` only while the server cannot be asked."""
        try:
            done = self.committed(xact)
        except DatabaseError as exc:
            raise InDoubt(f"{error} (COMMIT was sent, its answer lost; whether it was committed cannot be"
                          f" told yet: {exc})", xact) from error
        if not done:
            raise DatabaseError(f"{error} (the transaction was not committed)") from error
        return psycopg.Cursor(self.conn)

    def committed(self, token: object) -> bool:
        """Whether the write transaction ``token`` (an :class:`InDoubt`'s) was committed, asked on this
        connection (opened again if need be). The server knows each recent transaction's fate
        (``pg_xact_status``); one still in progress is the old session's, which never got the COMMIT or
        has not acted on it yet: it is ended (what it held is rolled back) and asked again. Raises
        :class:`DatabaseError` while the server cannot be asked or the old session does not end."""
        xid, pid = cast(tuple[int, int], token)
        try:
            conn = self._live()
            status = _xact_status(conn, xid)
            if status == "in progress":
                conn.execute("SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity WHERE pid = %s"
                             " AND backend_xid::text = %s", (_TERMINATE_WAIT_MS, pid, str(xid % 2**32)))
                status = _xact_status(conn, xid)
        except psycopg.Error as exc:
            raise self._failed(exc) from exc
        if status == "in progress":
            raise DatabaseError(f"transaction {xid} is still in progress in the server's process {pid}")
        return status == "committed"

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> psycopg.Cursor[Any] | _Result:
        if self._batch is not None:  # (one statement per row, all in the batch's message)
            results = [self.execute(sql, row) for row in parameters]
            return _Result(self, parts=results)
        try:
            cur = self._live().cursor()
            rows = list(parameters)
            if rows:
                cur.executemany(translate(sql), rows)
            return cur
        except psycopg.Error as exc:
            raise self._failed(exc) from exc

    def begin_pipelined(self) -> None:
        """Begin a batched transaction: its statements are queued, nothing is sent until
        :meth:`end_pipelined` sends BEGIN, the write lock, the fence, the statements and COMMIT as one
        simple-query message (or a ``fetch`` in the body sends what is queued so far)."""
        self._batch = []
        self._begun = False

    def end_pipelined(self, error: BaseException | None) -> None:
        """The transaction's one round trip; on an error (the body's, or the server's answer to any
        statement) nothing is kept. A body that failed before anything was sent costs nothing at all."""
        if error is None:
            try:
                self._flush(commit=True)
                return
            except DatabaseError:
                self._abandon()
                raise
        self._abandon()
        if isinstance(error, psycopg.Error):
            raise _error(error) from error

    def _abandon(self) -> None:
        """Forget the batch; roll back what of it the server began (nothing to do if nothing was sent)."""
        self._batch, self._begun, self._in_transaction = None, False, False
        self._rollback()

    def _flush(self, *, commit: bool) -> None:
        """Send what the batch queued (after BEGIN, the lock and the fence if not begun yet; COMMIT at the
        end if ``commit``) as one message, and hand each statement's answer to its cursor.

        A message that began the transaction and met a prepared statement the session lost (psycopg
        deallocates all of a session's after a ROLLBACK it sees; a pooler may too) kept nothing: it is
        prepared and sent once more."""
        batch = self._batch
        assert batch is not None
        self._batch = [] if not commit else None
        begun = self._begun
        again = not begun
        while True:
            try:
                conn = self._live()
                session = self._session_for(conn)
                prepare = not self._in_transaction  # (a failed PREPARE would spoil an open transaction)
                parts: list[str] = []
                if not begun:
                    parts += ["BEGIN", session.statement(_WRITE_LOCK_SQL, (), prepare)]
                    epoch = FENCE.epoch if self.engine.fenced else None
                    if epoch is not None:
                        parts.append(session.statement(_FENCE_CHECK, (epoch, epoch), prepare))
                first = len(parts)
                parts += [session.statement(sql, args, prepare) for sql, args, _ in batch]
                if commit:
                    parts.append("COMMIT")
                self._in_transaction = not commit
                self._begun = not commit
                answers = _run(conn, "; ".join(parts))
                break
            except psycopg.Error as exc:
                if again and getattr(exc, "sqlstate", None) == _NO_SUCH_STATEMENT:
                    again = False
                    self._rollback()
                    self._session = None
                    self._in_transaction = False
                    continue
                error = self._failed(exc)
                if commit and self.conn.closed:  # (nothing tells which part the server did: the caller's care)
                    raise InDoubt(f"{error} (COMMIT was sent, its answer lost: it may have been committed)") from exc
                raise error from exc
        loader: psycopg.abc.Transformer | None = None
        for (_, _, result), answer in zip(batch, answers[first:first + len(batch)], strict=True):  # (no COMMIT)
            rows: list[Any] = []
            if answer.status == psycopg.pq.ExecStatus.TUPLES_OK and answer.ntuples:
                if loader is None:
                    loader = psycopg.adapt.Transformer(conn)
                loader.set_pgresult(answer)
                rows = loader.load_rows(0, answer.ntuples, tuple)
            count = answer.command_tuples
            result.fill(rows, -1 if count is None else count)

    def _session_for(self, conn: psycopg.Connection[Any]) -> _Session:
        if self._session is None or self._session.conn is not conn:
            self._session = _Session(conn)
        return self._session

    def _rollback(self) -> None:
        if self.reach.down:  # (not waited on: the server ends the transaction of a connection that went)
            self.conn.close()
            return
        try:
            if not self.conn.closed and self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.conn.execute("ROLLBACK")
        except psycopg.Error:
            pass  # (the connection is gone, and its transaction with it; the next statement reconnects)

    def write_detached(self, sql: str, parameters: tuple[int | float | str | None, ...],
                       undone: object = None) -> None:
        """One write statement in a transaction of its own, sent on a side connection and NOT waited for:
        returns once the kernel holds all of it. The kernel still delivers it if this process is killed
        now, and the server commits what it received, so for a crash it counts as written (what the
        outbox's hand-over record needs; the SMTP adapter relies on the same for the final "."). Its
        answer is read when the next one is sent (if it has come), or by :meth:`wait_detached`; a
        failure there (the server away, a lock wait, the fence) loses that record, or, given ``undone``,
        hands that back through :meth:`detached_undone` for the caller to write again (the outbox's
        records of delivered rows: written twice, the second changes nothing).

        The fence is checked in the same transaction (both prepared statements before one Sync of the
        side connection's pipeline: an implicit transaction, all or nothing), but the store's write
        lock is NOT taken: only for a statement whose effect on each row is conditional on that row's
        own state, so that it may land anywhere among the other writers, a takeover included, without
        doing harm (the hand-over record: only a row still being sent is marked, and it was handed
        over; the record of delivered rows: only rows still taken are recorded, and they were
        delivered; row locks order them against every other write of those rows). Waiting for the
        write lock behind the lanes' commits cost the server a sleep and a wake-up per record."""
        if self._detached is None:
            self._detached = _Detached(self.engine, self.lock_wait)
        self._detached.send(sql, parameters, undone)

    def wait_detached(self) -> bool:
        """Until the server has answered every detached write: what is read next sees them. Whether any
        was not answered yet."""
        if self._detached is None or not self._detached.outstanding:
            return False
        self._detached.settle()
        return True

    def detached_undone(self) -> list[object]:
        """The ``undone`` of the detached writes found not landed since the last call."""
        detached = self._detached
        if detached is None or not detached.undone:
            return []
        undone, detached.undone = detached.undone, []
        return undone

    def close(self) -> None:
        self._closed = True
        if self._detached is not None:
            self._detached.close()
            self._detached = None
        self.conn.close()


def _run(conn: psycopg.Connection[Any], sql: str) -> list[psycopg.pq.abc.PGresult]:
    """``sql`` (one simple-query message, any number of statements) sent and answered on libpq itself: the
    answers, one per statement, or the first error as psycopg raises it. psycopg's ``execute`` does the
    same with ~25-45 µs more of Python per message (its cursor, generators and result sets: half the
    client's CPU of a lanes' commit, docs/benchmarks.md, issue 13); this is what the outbox's hot path
    sends, and it needs neither. Connection failures raise as psycopg's (``OperationalError``, the
    connection then ``closed``), so the callers tell a lost COMMIT as before."""
    pg = conn.pgconn
    pg.send_query(sql.encode(conn.info.encoding))
    poller = select.poll()
    if pg.flush():  # (a non-blocking connection: what the socket did not take yet)
        poller.register(pg.socket, select.POLLOUT)
        while pg.flush():
            poller.poll()
        poller.unregister(pg.socket)
    poller.register(pg.socket, select.POLLIN)
    answers: list[psycopg.pq.abc.PGresult] = []
    while True:
        pg.consume_input()
        while not pg.is_busy():
            answer = pg.get_result()
            if answer is None:
                for answer in answers:
                    if answer.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                        raise psycopg.errors.error_from_result(answer, encoding=conn.info.encoding)
                return answers
            answers.append(answer)
        poller.poll()


class _Result:
    """What a statement of a batched transaction answered (a cursor's part the stores use), known once
    the batch is sent: reading it earlier sends what is queued so far (one more round trip)."""

    def __init__(self, owner: Connection, parts: list[_Result | psycopg.Cursor[Any]] | None = None) -> None:
        self._owner = owner
        self._parts = parts  # (executemany: one statement per row; rowcount is their sum)
        self._rows: list[Any] | None = None
        self._count = -1
        self._at = 0

    def fill(self, rows: list[Any], count: int) -> None:
        self._rows, self._count = rows, count

    def _answered(self) -> list[Any]:
        if self._parts is not None:
            self._rows, self._count = [], sum(p.rowcount for p in self._parts)
        elif self._rows is None:
            self._owner._flush(commit=False)
        assert self._rows is not None
        return self._rows

    @property
    def rowcount(self) -> int:
        self._answered()
        return self._count

    def fetchone(self) -> Any:
        rows = self._answered()
        if self._at >= len(rows):
            return None
        self._at += 1
        return rows[self._at - 1]

    def fetchall(self) -> list[Any]:
        rows = self._answered()[self._at:]
        self._at += len(rows)
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


_UNPREPARED = "?"
#: invalid_sql_statement_name: EXECUTE of a statement the session does not have (any more)
_NO_SUCH_STATEMENT = "26000"  # (no statement name: not asked yet)


@functools.lru_cache(maxsize=256)
def _numbered(sql: str) -> str:
    """A store statement with ``$1``, ``$2``... for its parameters, as PREPARE takes it."""
    count = itertools.count(1)

    def number(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "?":
            return f"${next(count)}"
        if token == "json_each(?)":
            return f"json_array_elements_text(CAST(${next(count)} AS json))"
        return token  # (a string literal; "%" stays: no client-side formatting here)
    return _TOKENS.sub(number, sql)


def _inline(sql: str, values: list[str]) -> str:
    """A store statement with its values (SQL literals) written in place of its parameters."""
    left = iter(values)

    def put(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "?":
            return next(left)
        if token == "json_each(?)":
            return f"json_array_elements_text(CAST({next(left)} AS json))"
        return token
    return _TOKENS.sub(put, sql)


_FLOAT_WORDS = {"inf": "'Infinity'::float8", "-inf": "'-Infinity'::float8", "nan": "'NaN'::float8"}


class _Session:
    """One server session as a batch writes to it: the stores' statements prepared once each (parsed and
    planned once per session: a short statement then costs the server about half), their values
    written as SQL literals (libpq's own escaping, in the session's encoding), all of a transaction
    in one simple-query message, sent and answered with a fraction of the Python psycopg's pipeline
    mode spends per statement (docs/benchmarks.md, issue 13)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.names: dict[str, str | None] = {}
        self.escaping = psycopg.pq.Escaping(conn.pgconn)
        self.encoding = conn.info.encoding

    def statement(self, sql: str, params: Sequence[Any], prepare: bool) -> str:
        """``sql`` with ``params`` as one statement of a simple-query message: EXECUTE of the prepared
        statement (PREPAREd now, a round trip of its own, if ``prepare`` and not yet), else the values
        written in."""
        name = self.names.get(sql, _UNPREPARED)
        if name == _UNPREPARED:
            name = self._prepare(sql) if prepare else None
        values = [self.literal(v) for v in params]
        if name is None:
            return _inline(sql, values) if values else sql
        return f"EXECUTE {name}({', '.join(values)})" if values else f"EXECUTE {name}"

    def _prepare(self, sql: str) -> str | None:
        name: str | None = f"monitor_{len(self.names) + 1}"
        try:
            self.conn.execute(f"PREPARE {name} AS {_numbered(sql)}")
        except psycopg.OperationalError:
            raise
        except psycopg.Error:  # (a statement PostgreSQL cannot prepare alone: its values are written in)
            if self.conn.closed or self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                raise
            name = None
        self.names[sql] = name
        return name

    def literal(self, value: Any) -> str:
        kind = type(value)
        if kind is int:
            return str(value) if value >= 0 else f"({value})"
        if kind is str:
            return bytes(self.escaping.escape_literal(_no_nul(value).encode(self.encoding))).decode(self.encoding)
        if kind is float:
            text = repr(value)
            return _FLOAT_WORDS.get(text) or (text if value >= 0 else f"({text})")
        if value is None:
            return "NULL"
        return str(psycopg.sql.Literal(value).as_string(self.conn))


class _Detached:
    """A side connection in libpq's pipeline mode that sends one transaction a record and reads the answers
    only when it next sends (those already there) or is told to settle: the lanes never wait for them,
    and the server takes the records one after another as they come, prepared statements bound and run
    (no query text to parse), on one backend woken once for several (docs/benchmarks.md, issue 13:
    a simple-query message each on up to four side connections cost the server ~130 µs a record)."""

    #: answers not read yet, at most (then the oldest are waited for: a server that stopped reading
    #: must not make the records pile up in this process)
    QUEUE = 64
    #: how long reading an answer may wait (the server away: the records are given up, as the worker's are)
    WAIT = 5.0

    def __init__(self, engine: PostgreSQL, lock_wait: float | None) -> None:
        self.engine = engine
        self.lock_wait = lock_wait
        self.conn: psycopg.Connection[Any] | None = None
        self.session: _Session | None = None
        self.opened_at = 0  # _Reach.losses when it was opened
        #: per transaction sent whose answers (up to its Sync) are not read yet, oldest first: its ``undone``
        self.waiting: collections.deque[object] = collections.deque()
        self.refused = False  # the oldest of them met an error (known once its Sync is read)
        #: the ``undone`` of writes found not landed, for :meth:`Connection.detached_undone`
        self.undone: list[object] = []

    @property
    def outstanding(self) -> int:
        return len(self.waiting)

    def send(self, sql: str, parameters: Sequence[int | float | str | None], undone: object = None) -> None:
        """``sql`` in a transaction of its own, with the fence, sent and not waited for: on return the
        kernel holds all of it."""
        queued = False
        try:
            self._read(wait=self.outstanding >= self.QUEUE)
            conn = self._connection()
            epoch = FENCE.epoch if self.engine.fenced else None
            parts: list[tuple[str, Sequence[int | float | str | None]]] = []
            if epoch is not None:
                parts.append((self._name(_FENCE_CHECK), (epoch, epoch)))
            parts.append((self._name(sql), tuple(parameters)))
            pg = conn.pgconn
            encoding = conn.info.encoding
            values = [[_text(v, encoding) for v in args] for _, args in parts]
            self.waiting.append(undone)  # (from here on, a failure hands it back: drop)
            queued = True
            for (name, _), args in zip(parts, values, strict=True):
                pg.send_query_prepared(name.encode(), args)
            pg.pipeline_sync()
            if pg.flush() != 0:  # (blocking mode: 0 once all is written)
                raise DatabaseError("a detached write was not sent whole")
        except _Unwritable:
            self._give_back(undone)  # (nothing of it was sent: the connection goes on)
        except (psycopg.Error, DatabaseError, OSError):
            if not queued:
                self._give_back(undone)  # (not sent at all)
            self.drop()

    def settle(self) -> None:
        """Read every answer, waiting for them if need be."""
        self._read(wait=True)

    def close(self) -> None:
        self.settle()
        self.drop()

    def _connection(self) -> psycopg.Connection[Any]:
        reach = _reach(self.engine)
        reach.check(self.engine)
        if self.conn is not None and self.opened_at != reach.losses:
            self.drop()  # (opened before the server was lost: replaced, see _Reach)
        if self.conn is None or self.conn.closed or self.session is None:
            self.drop()
            self.opened_at = reach.losses
            self.conn = reach.connect(self.engine)
            self.session = _Session(self.conn)
            if self.lock_wait is not None:
                self.conn.execute(_lock_timeout(self.lock_wait))
            self.conn.pgconn.enter_pipeline_mode()
        return self.conn

    def _name(self, sql: str) -> str:
        """The session's prepared statement for ``sql``, PREPAREd at its first use (outside the pipeline,
        once the answers before it are read)."""
        assert self.session is not None and self.conn is not None
        name = self.session.names.get(sql, _UNPREPARED)
        if name == _UNPREPARED:
            self._read(wait=True)
            if self.conn is None or self.session is None:  # (the answers ended the connection: dropped)
                raise DatabaseError("the side connection was lost")
            pg = self.conn.pgconn
            pg.exit_pipeline_mode()
            name = self.session._prepare(sql)  # (the session is this connection's own)
            pg.enter_pipeline_mode()
        if name is None:
            raise DatabaseError(f"cannot prepare a detached write: {sql}")
        return name

    def _read(self, *, wait: bool) -> None:
        """The answers that have arrived (all of them if ``wait``); a fenced record tells the fence."""
        conn = self.conn
        if not self.outstanding or conn is None:
            return
        if wait and _reach(self.engine).down:  # (the answers may never come: the records are given up)
            self.drop()
            return
        pg = conn.pgconn
        deadline = time.monotonic() + self.WAIT
        try:
            while self.outstanding:
                if pg.status != psycopg.pq.ConnStatus.OK:  # (broken: no Sync will come)
                    self.drop()
                    return
                pg.consume_input()
                if pg.is_busy():
                    if not wait:
                        return
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([pg.socket], [], [], left)[0]:
                        self.drop()
                        return
                    continue
                result = pg.get_result()
                if result is None:
                    continue  # (the end of one statement's results)
                status = result.status
                if status == psycopg.pq.ExecStatus.PIPELINE_SYNC:
                    undone = self.waiting.popleft()
                    if self.refused:
                        self.refused = False
                        self._give_back(undone)
                elif status in (psycopg.pq.ExecStatus.FATAL_ERROR, psycopg.pq.ExecStatus.PIPELINE_ABORTED):
                    self.refused = True
                    if result.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == FENCED.encode() and FENCE.refused:
                        FENCE.refused()  # (a deposed daemon's record, refused as any of its writes: it stands down)
        except (psycopg.Error, OSError) as exc:
            if _silent(exc):  # (the TCP user timeout: the server is out of reach for every connection, _Reach)
                _reach(self.engine).lost()
            self.drop()

    def _give_back(self, undone: object) -> None:
        if undone is not None:
            self.undone.append(undone)

    def drop(self) -> None:
        """Close the connection; the writes not answered yet may or may not have landed: handed back."""
        for undone in self.waiting:
            self._give_back(undone)
        self.waiting.clear()
        self.refused = False
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.session = None


class _Unwritable(DatabaseError):
    """A value PostgreSQL cannot take, refused before anything is sent (the connection is fine)."""


def _no_nul(text: str) -> str:
    """``text`` if PostgreSQL text can hold it (libpq would cut it at a NUL where psycopg refuses it)."""
    if "\x00" in text:
        raise _Unwritable("PostgreSQL text cannot contain NUL (0x00) characters")
    return text


def _text(value: int | float | str | None, encoding: str = "utf-8") -> bytes | None:
    """A parameter as PostgreSQL's text input takes it (a float's infinities and NaN spelt its way; None
    is NULL)."""
    kind = type(value)
    if kind is float:
        text = repr(value)
        return {"inf": b"Infinity", "-inf": b"-Infinity", "nan": b"NaN"}.get(text) or text.encode()
    if kind is str:
        return _no_nul(cast(str, value)).encode(encoding)
    if value is None:
        return None
    return str(int(cast(int, value))).encode()


def _xact_status(conn: psycopg.Connection[Any], xid: int) -> str | None:
    """'committed', 'aborted', 'in progress', None (too old to be known: long since settled), or
    'unknown': an id this server has not given yet, after a failover to a replica that never received
    that transaction (asynchronous replication): it is not in this database, so not committed here."""
    try:
        row = conn.execute("SELECT pg_xact_status(CAST(%s AS xid8))", (str(xid),)).fetchone()
    except psycopg.errors.InvalidParameterValue as exc:
        if "in the future" not in str(exc):
            raise
        return "unknown"
    return None if row is None else cast(str | None, row[0])


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
        """The URL without a password (nor sslmode); a Unix socket's folder kept (``?host=``)."""
        u = urlsplit(self.url)
        host = u.hostname or ""
        port = f":{u.port}" if u.port else ""
        user = f"{u.username}@" if u.username else ""
        socket = next((f"?host={v}" for k, v in parse_qsl(u.query) if k == "host"), "")
        return f"postgresql://{user}{host}{port}{u.path}{socket}"

    def raw_connect(self) -> psycopg.Connection[Any]:
        # TCP keepalives and a user timeout bound how long a statement can hang on a cut network (the
        # daemon's stores are called from its event loop): USER_TIMEOUT instead of the kernel's 15 min,
        # once per cut (_Reach). The server ends a session left inside a transaction for 10 s (a client
        # cut off mid-transaction), so the write lock it held does not stop every other writer, a
        # standby's takeover included, for the hours the server's own keepalives would take to notice
        return psycopg.connect(self.url, password=self.password, autocommit=True,
                               connect_timeout=max(1, int(self.connect_timeout)), keepalives=1,
                               keepalives_idle=5, keepalives_interval=1, keepalives_count=2,
                               tcp_user_timeout=int(USER_TIMEOUT * 1000),
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
        for statement in split_statements(migration, "postgresql"):
            for pattern, replacement in _DDL:
                statement = pattern.sub(replacement, statement)
            out.append(statement)
        return out

    def prepare(self, conn: Any) -> None:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (component TEXT PRIMARY KEY,"
                     " version INTEGER NOT NULL)")
