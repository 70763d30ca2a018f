"""Writes the daemon's state changes and run heartbeats to the event store, and survives when it cannot.

A full disk, a read-only remount, another process holding SQLite's write lock or a PostgreSQL store
restarting or out of reach must neither stop polling nor lose a transition that was announced:
changes that cannot be appended are held in memory, in order and with their own timestamps, and
retried about once a second; the next successful append records them before anything newer. One
log line when the store stops taking writes, one when it takes them again, and the
``monitor_store_held_changes`` gauge (and ``monitor_store_failing{component="events"}``) in between —
never a line per poll or change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from monitor import selfmetrics
from monitor.errors import StorageError
from monitor.logs import Episode, event
from monitor.state import StateChange
from monitor.store import EventStore

log = logging.getLogger("monitor.daemon")

#: Held changes beyond this are dropped oldest first (one log line): 50,000 targets flapping twice.
MAX_HELD = 100_000

#: How long the daemon's writes wait for another connection's lock: the wait blocks the event loop,
#: and a change that could not be written is held and retried, not lost.
BUSY_TIMEOUT = 0.2


class StoreKeeper:
    def __init__(self, store: EventStore, run_id: int) -> None:
        self.store = store
        self.run_id = run_id
        self._held: list[StateChange] = []
        self._trouble = Episode(log, "event store not writable, holding state changes in memory and retrying",
                                "event store writable again, held state changes recorded",
                                selfmetrics.store_trouble("events"))
        self._dropped = 0

    @property
    def held(self) -> int:
        return len(self._held)

    def append(self, changes: Sequence[StateChange]) -> bool:
        """Record ``changes`` after any held ones; hold them all if the store refuses. True if written.

        While changes are held, new ones join them without a write attempt: each attempt on a locked
        store blocks the event loop for BUSY_TIMEOUT, so a mass outage during a lock would stall
        polling once per change; :meth:`retry` tries once a second instead."""
        if self._held:
            self._held.extend(changes)
            self._hold(self._held, None)
            return False
        return self._write(list(changes))

    def retry(self) -> None:
        """Called about once a second: write what is held, if anything."""
        if self._held:
            self._write([])

    def _write(self, new: list[StateChange]) -> bool:
        batch = self._held + new
        if not batch:
            return True
        try:
            self.store.append(batch)
        except StorageError as exc:
            self._hold(batch, exc)
            return False
        self._held = []
        selfmetrics.STORE_HELD.set(0)
        if self._trouble.active:
            self._trouble.ok(changes=len(batch), dropped=self._dropped)
            self._dropped = 0
        return True

    def alive(self, now: float) -> None:
        """The run's heartbeat; a failure is part of the store's episode, logged with it."""
        try:
            self.store.run_alive(self.run_id, now)
        except StorageError as exc:
            self._episode(exc)

    def stopped(self, now: float) -> None:
        """At exit: a last attempt, then one line saying what could not be kept."""
        self.retry()
        try:
            self.store.run_stopped(self.run_id, now)
        except StorageError as exc:
            self._episode(exc)
        if self._held or self._dropped:
            event(log, logging.ERROR, "state changes not recorded: the event store is still not writable",
                  changes=len(self._held) + self._dropped, store=self.store.path)

    def _hold(self, batch: list[StateChange], exc: StorageError | None) -> None:
        if len(batch) > MAX_HELD:
            self._dropped += len(batch) - MAX_HELD
            del batch[:-MAX_HELD]
        self._held = batch
        selfmetrics.STORE_HELD.set(len(batch))
        if exc is not None:
            self._episode(exc)

    def _episode(self, exc: StorageError) -> None:
        self._trouble.failed(error=exc, held=len(self._held))
