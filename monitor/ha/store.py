"""The lease row in the PostgreSQL store: acquire, renew, release, read (issue 13).

One row, ``ha_lease.name = 'active'``: the holder, its epoch (one more at every change of holder),
since when it holds it and when the lease expires, both in the *database's* clock (seconds since the
epoch), so the machines' own clocks never need to agree. Its own connection, with short network
timeouts: a renewal that cannot get an answer fails within seconds instead of the store's ten, and
the leader's deadline (:mod:`monitor.ha.lease`) is kept by a thread that never waits on it anyway.

Taking the lease holds the store's write lock (the one every write transaction takes first), so a
takeover cannot interleave with a write of the old holder: that write either committed before the
new epoch, while the old lease was still valid, or meets the new epoch and is refused
(:meth:`monitor.db_postgres.Fence`).
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Any

import psycopg

from monitor.db import ERRORS, Schema, open_store, transaction
from monitor.db_postgres import PostgreSQL
from monitor.errors import StorageError

NAME = "active"
NOW = "EXTRACT(EPOCH FROM clock_timestamp())"  # the database's wall clock, as the lease's columns keep it

SCHEMA = Schema("ha", (
    """
    CREATE TABLE ha_lease (
        name TEXT PRIMARY KEY,
        epoch INTEGER NOT NULL,
        holder TEXT NOT NULL,
        pid INTEGER NOT NULL,
        since REAL NOT NULL,
        expires REAL NOT NULL
    );
    """,
))


@dataclass(frozen=True, slots=True)
class Lease:
    """The row as ``monitor status`` and /metrics show it."""

    epoch: int
    holder: str
    pid: int
    since: float  # database clock
    expires: float  # database clock
    now: float  # the database's clock when read

    @property
    def valid(self) -> bool:
        return self.expires > self.now


def instance_name() -> str:
    """Who holds the lease, for people: the host name (one daemon per machine)."""
    return socket.gethostname()


class _LeaseEngine(PostgreSQL):
    """The store's database with short network timeouts: the lease's questions must be answered in
    seconds or count as unanswered. Its writes are the lease's own: never fenced."""

    fenced = False

    def raw_connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, password=self.password, autocommit=True, connect_timeout=2,
                               keepalives=1, keepalives_idle=1, keepalives_interval=1, keepalives_count=2,
                               tcp_user_timeout=2_000, options="-c statement_timeout=2000")


class LeaseStore:
    """The lease row, on a connection of its own (opened lazily, reopened after a failure)."""

    def __init__(self, engine: PostgreSQL, holder: str | None = None) -> None:
        self.engine = _LeaseEngine(engine.url, engine.password)
        self.holder = holder or instance_name()
        self.pid = os.getpid()
        self._db: Any = None

    def describe(self) -> str:
        return self.engine.describe()

    def _conn(self) -> Any:
        if self._db is None:
            self._db = open_store(self.engine, (SCHEMA,), what="the lease in", busy_timeout=2.0,
                                  migrate_timeout=10.0)
            self._db.execute(
                "INSERT INTO ha_lease (name, epoch, holder, pid, since, expires) VALUES (?, 0, '', 0, 0, 0)"
                " ON CONFLICT DO NOTHING", (NAME,))
        return self._db

    def _run(self, what: str, fn: Any) -> Any:
        try:
            return fn(self._conn())
        except ERRORS as exc:
            self.close()
            raise StorageError(f"cannot {what} in {self.describe()}: {exc}") from exc

    def acquire(self, ttl: float) -> tuple[int, float] | None:
        """Take the lease if it has expired: (epoch, since), or None while another daemon holds it."""
        def take(db: Any) -> tuple[int, float] | None:
            with transaction(db):
                row = db.execute(
                    f"UPDATE ha_lease SET epoch = epoch + 1, holder = ?, pid = ?, since = {NOW},"
                    f" expires = {NOW} + ? WHERE name = ? AND expires <= {NOW} RETURNING epoch, since",
                    (self.holder, self.pid, ttl, NAME)).fetchone()
            return (int(row[0]), float(row[1])) if row else None
        result: tuple[int, float] | None = self._run("take the lease", take)
        return result

    def renew(self, epoch: int, ttl: float) -> bool:
        """Extend our lease (True), or learn that it is not ours any more (False: expired or taken)."""
        ok: bool = self._run("renew the lease", lambda db: db.execute(
            f"UPDATE ha_lease SET expires = {NOW} + ? WHERE name = ? AND epoch = ? AND expires > {NOW}",
            (ttl, NAME, epoch)).rowcount == 1)
        return ok

    def release(self, epoch: int) -> None:
        """A stopping leader hands over at once: the lease expires now (a standby takes it within a retry)."""
        self._run("release the lease", lambda db: db.execute(
            f"UPDATE ha_lease SET expires = {NOW} WHERE name = ? AND epoch = ?", (NAME, epoch)))

    def read(self) -> Lease | None:
        """The lease row (None before any daemon took it)."""
        row = self._run("read the lease", lambda db: db.execute(
            f"SELECT epoch, holder, pid, since, expires, {NOW} FROM ha_lease WHERE name = ? AND epoch > 0",
            (NAME,)).fetchone())
        return Lease(int(row[0]), str(row[1]), int(row[2]), float(row[3]), float(row[4]), float(row[5])) if row \
            else None

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(*ERRORS):
                db.close()
