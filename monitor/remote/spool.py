"""The poller's on-disk spool: every ``changes`` message is numbered and stored before it is published.

A poller in a municipality loses its path to the broker whenever the backhaul does. State changes
confirmed meanwhile are what the core needs most (the outage it cannot see), so each batch is
written here first, in one transaction that also takes its number, and deleted only once the broker
has acknowledged it (QoS 1 PUBACK). After a restart the unacknowledged ones go out again in order,
with their original timestamps inside; a repeat is harmless (the core drops numbers it has seen).
The numbering continues across restarts: the next number lives in the same file.

SQLite with ``synchronous=FULL``: a change the poller confirmed must survive a power cut at the
tower, which is exactly when the poller's own site may lose power too.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from monitor.errors import StorageError
from monitor.remote.messages import MAX_CHANGES, PollerMessage, encode
from monitor.state import StateChange

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 1), last_seq INTEGER NOT NULL);
INSERT OR IGNORE INTO counter (id, last_seq) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL, added REAL NOT NULL);
"""


class PollerSpool:
    def __init__(self, path: Path, poller: str, zone: str) -> None:
        self.poller, self.zone = poller, zone
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"poller spool {path}: {exc}") from exc

    def add(self, changes: Sequence[StateChange], sent: float | None = None) -> list[int]:
        """Number and store ``changes`` (split into messages of at most MAX_CHANGES); their numbers."""
        seqs: list[int] = []
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                (last,) = self.db.execute("SELECT last_seq FROM counter").fetchone()
                for i in range(0, len(changes), MAX_CHANGES):
                    last += 1
                    msg = PollerMessage("changes", self.poller, self.zone, last,
                                        time.time() if sent is None else sent, tuple(changes[i:i + MAX_CHANGES]))
                    self.db.execute("INSERT INTO spool (seq, payload, added) VALUES (?, ?, ?)",
                                    (last, encode(msg), msg.sent))
                    seqs.append(last)
                self.db.execute("UPDATE counter SET last_seq = ?", (last,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"poller spool: {exc}") from exc
        return seqs

    def pending(self, limit: int = 100) -> list[tuple[int, bytes]]:
        """The oldest messages not acknowledged yet, in order."""
        rows = self.db.execute("SELECT seq, payload FROM spool ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [(int(seq), bytes(payload)) for seq, payload in rows]

    def acknowledged_through(self, seq: int) -> None:
        """The core has everything up to ``seq``: forget it, in one transaction (one fsync)."""
        self.db.execute("DELETE FROM spool WHERE seq <= ?", (seq,))

    def last_seq(self) -> int:
        """The number of the last message stored (what a heartbeat announces as published)."""
        (last,) = self.db.execute("SELECT last_seq FROM counter").fetchone()
        return int(last)

    def acked(self) -> int:
        """The number at or below which the spool holds nothing (what a heartbeat announces as acked)."""
        (low,) = self.db.execute("SELECT min(seq) FROM spool").fetchone()
        return int(low) - 1 if low is not None else self.last_seq()

    def backlog(self) -> int:
        (n,) = self.db.execute("SELECT count(*) FROM spool").fetchone()
        return int(n)

    def close(self) -> None:
        self.db.close()
