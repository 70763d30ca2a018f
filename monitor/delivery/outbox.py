"""The durable outbox: every side effect of an incident is a row before anything is sent.

Rows live in the daemon's store (SQLite or PostgreSQL, :mod:`monitor.db`), next to the state log and
the incidents, and carry an idempotency key ``incident/action/recipient/version``: planning the same event twice inserts
nothing new. ``inflight`` says where a row is: 0 waiting, :data:`CLAIMED` taken by a worker but not
attempted, :data:`SENDING` handed to an adapter. The worker records each outcome as soon as it is
known, in the same commit that marks its next row as sending, so after a crash only the rows that
were being sent (at most one per connection) may have reached the other side. Those come back
flagged ``uncertain``, and the adapters check first (ticket lookup by incident id, comment
reference) or reuse what makes a repeat harmless (the same Message-ID); claimed rows simply wait
again.

The tables are delivery's own component of the store, with numbered migrations of their own
(:mod:`monitor.delivery.schema`).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast, overload

from monitor.db import (
    ERRORS,
    OPEN_TIMEOUT,
    Detaching,
    InDoubt,
    StoreConnection,
    Where,
    detaching,
    engine_for,
    open_store,
)
from monitor.db import transaction as _tx
from monitor.errors import StorageError
from monitor.store import components

SENDING = 1  # handed to an adapter: maybe delivered if the process dies now (1 was "in flight" before)
CLAIMED = 2  # taken by a worker, not attempted yet: nothing happened outside
HANDED_OVER = 3  # the receiver has all of it, only its answer is missing (SMTP: the final "."; HTTP: the last byte)
ASSUMED = "assumed delivered: the receiver had the whole message when the sending process stopped"

HandedOver = Callable[[], None]
"""Called by an adapter at its point of no return, so the outbox can record it before it is passed."""



@dataclass(frozen=True, slots=True)
class NewRow:
    key: str
    incident: str
    action: str
    recipient: str
    channel: str
    group: str
    payload: dict[str, Any]
    not_before: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Row(NewRow):
    """A queued row as a worker takes it."""

    id: int
    attempts: int
    uncertain: bool
    created_at: float


#: rows marked sending or recorded delivered by one statement at most (one text per count up to it: few
#: prepared statements; a lanes' commit of up to 8 lanes is one)
_CHUNK = 16
_MARK, _DELIVERED = 0, 1


@overload
def _clean(text: str) -> str: ...
@overload
def _clean(text: str | None) -> str | None: ...
def _clean(text: str | None) -> str | None:
    """An adapter's result or error as the store can hold it: text from outside may carry NUL, which
    PostgreSQL text cannot (its write would fail at every retry, and the channel with it)."""
    return text if text is None or "\x00" not in text else text.replace("\x00", "\ufffd")


@functools.lru_cache(maxsize=_CHUNK)
def _sending_and_delivered(count: int) -> str:
    """Mark rows sending and record rows delivered, ``count`` in all, in ONE statement (a lanes' commit: the
    server starts and ends one executor instead of two, ~15 % of the commit's CPU on PostgreSQL,
    docs/benchmarks.md), each row with its kind and its own result: (now, id, kind, result, id, ...).

    A row to mark (:data:`_MARK`) is marked whatever it was; a delivered one is recorded only while still
    taken (``inflight``), so recording it again changes nothing, not even its attempts. A marked row's other
    columns are written back unchanged, so on PostgreSQL that update stays HOT."""
    rows = ", ".join(["(CAST(? AS INTEGER), CAST(? AS INTEGER), CAST(? AS TEXT))"] * count)
    return (f"UPDATE outbox SET status = CASE d.k WHEN {_MARK} THEN status ELSE 'delivered' END,"
            f" inflight = CASE d.k WHEN {_MARK} THEN {SENDING} ELSE 0 END,"
            f" attempts = attempts + CASE d.k WHEN {_MARK} THEN 0 ELSE 1 END,"
            f" done_at = CASE d.k WHEN {_MARK} THEN done_at ELSE ? END,"
            f" result = CASE d.k WHEN {_MARK} THEN result ELSE d.r END"
            f" FROM (SELECT column1 AS i, column2 AS k, column3 AS r FROM (VALUES {rows}) AS v) AS d"
            f" WHERE outbox.id = d.i AND (d.k = {_MARK} OR outbox.inflight <> 0)")


class Outbox:
    """Outbox rows, the planner's memory and the incident → ticket map, in one connection to the store."""

    def __init__(self, where: Where, busy_timeout: float = 10.0) -> None:
        """``where``: the SQLite file, or another engine (``store:`` in the config). ``busy_timeout``: how
        long a write waits for another connection's lock; the daemon passes a short one (the wait blocks
        its event loop; a failed write is retried, the rows stay put)."""
        engine = engine_for(where)
        self.path = engine.describe()
        self.db: StoreConnection = open_store(engine, components(), what="the outbox in",
                                              busy_timeout=busy_timeout, migrate_timeout=OPEN_TIMEOUT)
        #: channels whose last claim's COMMIT went unanswered: rows it may have claimed, nobody holds
        self._claims_in_doubt: set[str] = set()
        #: rows recorded delivered on the side connection (PostgreSQL) that the server did not take, or
        #: whose answer was lost: id -> (result, done_at), written again by the next write transaction
        self._unrecorded: dict[int, tuple[str | None, float]] = {}
        self.recovered, self.assumed = self.recover()

    def recover(self, channel: str | None = None) -> tuple[int, int]:
        """Settle rows a stopped worker left in flight (all channels at open; one when its worker restarts).

        Whatever was being sent may have arrived: it comes back ``uncertain`` and the adapters check
        before repeating; what was handed over whole has arrived (its receiver only could not say
        so): delivered. Returns (repeated, assumed delivered).
        """
        only = "" if channel is None else " AND channel = ?"
        args: tuple[str, ...] = () if channel is None else (channel,)
        try:
            self._landed()  # (hand-overs and records of delivered rows sent by this process decide below)
            with _tx(self.db):
                repeated = self.db.execute(f"UPDATE outbox SET inflight = 0, uncertain = 1 WHERE inflight = ?{only}",
                                           (SENDING, *args)).rowcount
                assumed = self._assume_delivered(f"inflight = ?{only}", (HANDED_OVER, *args))
                self.db.execute(f"UPDATE outbox SET inflight = 0 WHERE inflight = ?{only}", (CLAIMED, *args))
        except ERRORS as exc:
            raise StorageError(f"cannot settle interrupted deliveries in {self.path}: {exc}") from exc
        return repeated, assumed

    def close(self) -> None:
        with contextlib.suppress(StorageError):  # (rows left being sent: the next start settles them, as after a crash)
            self._landed()
        self.db.close()

    # ------------------------------------------------------------ planning

    def add(
        self, rows: Sequence[NewRow], states: dict[str, tuple[str, dict[str, Any]]], meta: dict[str, str],
        now: float,
    ) -> int:
        """Insert rows (duplicates by key are ignored) with the planner's memory, atomically."""
        try:
            with _tx(self.db):
                added = self.db.executemany(  # (rowcount: the rows inserted, summed over the batch)
                    "INSERT INTO outbox (key, incident, action, recipient, channel, grp, payload,"
                    " created_at, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [(r.key, r.incident, r.action, r.recipient, r.channel, r.group, json.dumps(r.payload), now,
                      max(now, r.not_before)) for r in rows],
                ).rowcount
                self.db.executemany(
                    "INSERT INTO delivery_state (incident, status, state) VALUES (?, ?, ?) ON CONFLICT(incident)"
                    " DO UPDATE SET status = excluded.status, state = excluded.state",
                    [(inc, status, json.dumps(state)) for inc, (status, state) in states.items()],
                )
                self.db.executemany(
                    "INSERT INTO delivery_meta (key, value) VALUES (?, ?) ON CONFLICT(key)"
                    " DO UPDATE SET value = excluded.value", list(meta.items()),
                )
        except ERRORS as exc:
            raise StorageError(f"cannot queue deliveries in {self.path}: {exc}") from exc
        return added

    def states(self, incidents: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Planner memory of the given incidents, or of every open one."""
        if incidents is None:
            rows = self.db.execute("SELECT incident, state FROM delivery_state WHERE status = 'open'").fetchall()
        else:
            ids = list(dict.fromkeys(incidents))
            rows = []
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows += self.db.execute(
                    f"SELECT incident, state FROM delivery_state WHERE incident IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall()
        return {inc: json.loads(s) for inc, s in rows}

    def meta(self, key: str, default: str = "") -> str:
        row = self.db.execute("SELECT value FROM delivery_meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    # ------------------------------------------------------------ workers

    def take(self, channel: str, now: float, limit: int) -> list[Row]:
        """Due rows of a channel, oldest first; of each group only its oldest pending row.

        One statement claims them and returns them (on PostgreSQL one round trip for the whole
        transaction: its rows are read after COMMIT was sent with it); claims are serialized by the
        store's write lock, so two workers never take the same row. The rows are found in id order on
        ``outbox_claim`` (``+next_at``: not by their due time, which would sort every due row).

        A claim whose COMMIT went unanswered (the connection broke) may have claimed rows that nobody
        holds: the next claim of the channel gives back every row of it still claimed, in its own
        transaction, before it claims (one worker per channel and store, which :meth:`recover` at a
        worker's start relies on too; the lease fences any other daemon's).

        On PostgreSQL a claim does not wait for the records of delivered rows still on their way on the
        side connection (:meth:`finish`), but a claim that finds nothing while some are claims once more
        when they have landed: a group's next row is due only once its last one is recorded delivered."""
        rows = self._claim(channel, now, limit)
        side = self._side()
        if not rows and side is not None and side.wait_detached():
            rows = self._claim(channel, now, limit)
        return rows

    def _claim(self, channel: str, now: float, limit: int) -> list[Row]:
        tx = _tx(self.db, pipelined=True)
        unclaim = channel in self._claims_in_doubt
        side = self._side()
        again = {} if side is None else self._undone(side)
        try:
            with tx:
                self._record_again(again)
                if unclaim:
                    self.db.execute("UPDATE outbox SET inflight = 0 WHERE inflight = ? AND channel = ?",
                                    (CLAIMED, channel))
                cur = self.db.execute(
                    "UPDATE outbox SET inflight = ? WHERE id IN (SELECT id FROM outbox o WHERE channel = ?"
                    " AND status = 'pending' AND inflight = 0 AND +next_at <= ? AND (grp = '' OR id = (SELECT MIN(id)"
                    " FROM outbox p WHERE p.grp = o.grp AND p.status = 'pending')) ORDER BY id LIMIT ?)"
                    " RETURNING id, key, incident, action, recipient, channel, grp, payload, attempts, uncertain,"
                    " created_at", (CLAIMED, channel, now, limit))
                # (SQLite ends the statement, and its lock, only once read; a pipeline has the rows at its end)
                rows = None if tx.pipelined else cur.fetchall()
            if rows is None:
                rows = cur.fetchall()
        except InDoubt as exc:
            self._claims_in_doubt.add(channel)
            raise StorageError(f"cannot read the outbox in {self.path}: {exc}") from exc
        except ERRORS as exc:
            raise StorageError(f"cannot read the outbox in {self.path}: {exc}") from exc
        self._claims_in_doubt.discard(channel)
        self._recorded(again)
        return [Row(r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), id=r[0], attempts=r[8],
                    uncertain=bool(r[9]), created_at=r[10]) for r in sorted(rows)]

    def finish(
        self, delivered: Sequence[tuple[int, str | None]], retries: Sequence[tuple[int, float, str, str]],
        failed: Sequence[tuple[int, str, str]], now: float, sending: Sequence[int] = (),
    ) -> None:
        """Record outcomes: (id, result); (id, next_at, reason, error); (id, reason, error).

        ``sending`` marks rows about to be handed to an adapter, in the same commit: one commit per
        item keeps the window of a crash to what is on the wire. Nothing to record costs nothing. The
        rows marked sending and those delivered are one statement together, up to 16 rows (on
        PostgreSQL each statement is an executor's start and end on the server: a worker's lanes mark
        4 and record 4 rows a commit), the rarer retries and failures one a row. An outcome is recorded
        only on a row still taken (``inflight``), so recording it again (a commit whose answer was lost,
        retried by the worker) changes nothing, not even the count of attempts.

        On PostgreSQL the rows delivered are recorded on the side connection (:class:`monitor.db.Detaching`),
        sent before this commit and not waited for: once the kernel has them a crash cannot stop them, as
        it could not stop them inside this commit, and another server process writes them while the
        lanes go on (a lanes' commit that marks only is half the server's work the lanes wait for,
        docs/benchmarks.md). Those the server does not take (it went away, a lock wait, the fence) are
        written again by this outbox's next write transaction, which changes nothing where they had
        landed after all; its reads wait for them (:meth:`_landed`).
        """
        results = [(i, _clean(res)) for i, res in delivered]
        retries = [(i, at, r, _clean(err)) for i, at, r, err in retries]
        failed = [(i, r, _clean(err)) for i, r, err in failed]
        side = self._side()
        if side is not None:
            for at in range(0, len(results), _CHUNK):
                chunk = results[at:at + _CHUNK]
                side.write_detached(_sending_and_delivered(len(chunk)),
                                    (now, *(v for i, res in chunk for v in (i, _DELIVERED, res))), (now, chunk))
            results = []
        again = {} if side is None else self._undone(side)
        if not (sending or results or retries or failed or again):
            return
        marks = [(i, _MARK, None) for i in sending] + [(i, _DELIVERED, res) for i, res in results]
        try:
            with _tx(self.db, pipelined=True):
                self._record_again(again)
                for at in range(0, len(marks), _CHUNK):
                    part = marks[at:at + _CHUNK]
                    self.db.execute(_sending_and_delivered(len(part)), (now, *(v for row in part for v in row)))
                self.db.executemany(
                    "UPDATE outbox SET inflight = 0, uncertain = 0, attempts = attempts + 1, next_at = ?,"
                    " reason = ?, error = ? WHERE id = ? AND inflight <> 0",
                    [(at, r, err, i) for i, at, r, err in retries])
                self.db.executemany(
                    "UPDATE outbox SET status = 'failed', inflight = 0, attempts = attempts + 1, done_at = ?,"
                    " reason = ?, error = ? WHERE id = ? AND inflight <> 0", [(now, r, err, i) for i, r, err in failed])
        except ERRORS as exc:
            raise StorageError(f"cannot record deliveries in {self.path}: {exc}") from exc
        self._recorded(again)

    def _side(self) -> Detaching | None:
        """The store's connection if it has a side connection for writes not waited for (PostgreSQL)."""
        db = self.db
        return db if detaching(db) else None

    def _undone(self, side: Detaching) -> dict[int, tuple[str | None, float]]:
        """The records of delivered rows the side connection found not landed so far (none waited for),
        with those not written again yet."""
        for now, rows in cast(list[tuple[float, list[tuple[int, str | None]]]], side.detached_undone()):
            for i, res in rows:
                self._unrecorded.setdefault(i, (res, now))
        return dict(self._unrecorded)

    def _record_again(self, again: dict[int, tuple[str | None, float]]) -> None:
        """(In a write transaction) the records of delivered rows not known to have landed, each with its time."""
        for i, (res, now) in again.items():
            self.db.execute(_sending_and_delivered(1), (now, i, _DELIVERED, res))

    def _recorded(self, again: dict[int, tuple[str | None, float]]) -> None:
        for i in again:
            self._unrecorded.pop(i, None)

    def _sees_own(self) -> None:
        """(Before a read) until the server answered what this outbox sent on the side connection."""
        side = self._side()
        if side is not None:
            side.wait_detached()

    def _landed(self) -> None:
        """Until the server answered every record this outbox sent on the side connection (PostgreSQL):
        what it reads next sees them; those not landed are written again now."""
        side = self._side()
        if side is None:
            return
        side.wait_detached()
        again = self._undone(side)
        if not again:
            return
        try:
            with _tx(self.db, pipelined=True):
                self._record_again(again)
        except ERRORS as exc:
            raise StorageError(f"cannot record deliveries in {self.path}: {exc}") from exc
        self._recorded(again)

    def handed_over(self, row_id: int, now: float) -> None:
        """The adapter is about to pass its point of no return for this row (one commit).

        ``done_at`` is set now: if the answer never comes (crash), this is when it was delivered. Only a
        row still being sent is marked (so a record that arrives late changes nothing). On PostgreSQL
        the record is sent without waiting for the server (:class:`monitor.db.Detaching`): once the
        kernel has it, a crash can no longer stop it, which is all this record is for.
        """
        sql = "UPDATE outbox SET inflight = ?, done_at = ? WHERE id = ? AND status = 'pending' AND inflight = ?"
        args = (HANDED_OVER, now, row_id, SENDING)
        try:
            if detaching(self.db):
                self.db.write_detached(sql, args)
                return
            with _tx(self.db, pipelined=True):
                self.db.execute(sql, args)
        except ERRORS as exc:
            raise StorageError(f"cannot record a hand-over in {self.path}: {exc}") from exc

    def _assume_delivered(self, where: str, args: Sequence[Any]) -> int:
        return int(self.db.execute(
            "UPDATE outbox SET status = 'delivered', inflight = 0, attempts = attempts + 1, uncertain = 1,"
            f" result = ? WHERE status = 'pending' AND {where}", (ASSUMED, *args)).rowcount)

    def release(self, ids: Sequence[int], *, uncertain: Sequence[int] = ()) -> None:
        """Shutdown: rows not attempted are pending again; rows cut off mid-send are pending and
        uncertain, or delivered if they had been handed over whole."""
        if not (ids or uncertain):
            return
        try:
            self._landed()  # (the hand-overs and records of delivered rows sent so far decide below)
            with _tx(self.db):
                self.db.executemany("UPDATE outbox SET inflight = 0 WHERE id = ?", [(i,) for i in ids])
                for i in uncertain:
                    if not self._assume_delivered("id = ? AND inflight = ?", (i, HANDED_OVER)):
                        self.db.execute("UPDATE outbox SET inflight = 0, uncertain = 1 WHERE id = ?", (i,))
        except ERRORS as exc:
            raise StorageError(f"cannot release deliveries in {self.path}: {exc}") from exc

    def retry_now(self, channel: str, now: float) -> None:
        """The receiver is back (broker reconnected): waiting rows are due now, not at their back-off."""
        try:
            with _tx(self.db):
                self.db.execute(
                    "UPDATE outbox SET next_at = ? WHERE channel = ? AND status = 'pending' AND next_at > ?",
                    (now, channel, now))
        except ERRORS as exc:
            raise StorageError(f"cannot reschedule deliveries in {self.path}: {exc}") from exc

    def next_due(self, channel: str) -> float | None:
        try:
            self._sees_own()
            row = self.db.execute(
                "SELECT MIN(next_at) FROM outbox WHERE channel = ? AND status = 'pending' AND inflight = 0", (channel,)
            ).fetchone()
        except ERRORS as exc:
            raise StorageError(f"cannot read the outbox in {self.path}: {exc}") from exc
        return float(row[0]) if row and row[0] is not None else None

    def pending(self) -> dict[str, tuple[int, float | None]]:
        """Per channel: pending rows and the creation time of the oldest (metrics)."""
        out: dict[str, tuple[int, float | None]] = {}
        self._sees_own()
        for ch, n, oldest in self.db.execute(
            "SELECT channel, COUNT(*), MIN(created_at) FROM outbox WHERE status = 'pending' GROUP BY channel"
        ):
            out[ch] = (int(n), oldest)
        return out

    def rows(self, *, incident: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Rows for inspection (tests, the CLI)."""
        sql = ("SELECT id, key, incident, action, recipient, channel, status, attempts, reason, result, payload"
               " FROM outbox WHERE 1=1")
        args: list[Any] = []
        self._sees_own()
        if incident is not None:
            sql += " AND incident = ?"
            args.append(incident)
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        cols = ("id", "key", "incident", "action", "recipient", "channel", "status", "attempts", "reason", "result",
                "payload")
        out = []
        for r in self.db.execute(sql + " ORDER BY id", args):
            d = dict(zip(cols, r, strict=True))
            d["payload"] = json.loads(d["payload"])
            out.append(d)
        return out

    # ------------------------------------------------------------ tickets

    def ticket(self, incident: str) -> str | None:
        row = self.db.execute("SELECT ticket FROM delivery_tickets WHERE incident = ?", (incident,)).fetchone()
        return str(row[0]) if row else None

    def set_ticket(self, incident: str, desk: str, ticket: str) -> None:
        with _tx(self.db):
            self.db.execute(
                "INSERT INTO delivery_tickets (incident, desk, ticket) VALUES (?, ?, ?) ON CONFLICT(incident)"
                " DO UPDATE SET desk = excluded.desk, ticket = excluded.ticket", (incident, desk, ticket))

    def tickets(self) -> dict[str, str]:
        return {i: t for i, t in self.db.execute("SELECT incident, ticket FROM delivery_tickets")}
