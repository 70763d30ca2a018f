"""Holding the lease: a standby waits for it, the active daemon renews it and stands down in time.

Two threads, not the event loop: the daemon's stores run on its event loop and a statement can block
it for seconds when the database is cut off, and a standing down that waited for the loop could come
after the lease expired. The *renewer* sends renewals when :func:`monitor.ha.lease.next_step` says so
(it may itself hang on the network); the *watchdog* only sleeps until the stand-down deadline and
never touches the database, so the deadline is kept whatever the renewer and the loop are stuck on.
The deadline is also handed to :data:`monitor.ha.gate.GATE`, which every delivery adapter checks
right before a call to the outside (a loop thawed past the deadline sends nothing more, whichever
thread runs first).

Standing down ends the process (exit status :data:`STOOD_DOWN`; systemd's ``Restart=always`` starts
it again, as a standby): everything a deposed daemon holds in memory (changes not written, polls in
flight, rows claimed for sending) is exactly what must not reach the store or the customers after a
takeover, and leaving the process drops all of it at once, whatever the loop is blocked on.
Kubernetes' controllers do the same on a lost lease.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from monitor import selfmetrics
from monitor.db_postgres import FENCE
from monitor.errors import StorageError
from monitor.ha.gate import GATE
from monitor.ha.lease import Do, Outcome, Term, Timing, after_renewal, next_step, stand_down_at
from monitor.ha.store import LeaseStore
from monitor.logs import event

log = logging.getLogger("monitor.ha")

#: exit status of a daemon that stood down (EX_TEMPFAIL: start again, as a standby)
STOOD_DOWN = 75


def exit_process(reason: str) -> None:
    """The default stand-down: the log line, then the process ends at once (see the module's docstring)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(STOOD_DOWN)


class Keeper:
    """The lease of one daemon process: wait for it, keep it, give it back."""

    def __init__(self, lease: LeaseStore, timing: Timing | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 stand_down: Callable[[str], None] = exit_process) -> None:
        self.lease = lease
        self.timing = timing or Timing()
        self.clock = clock
        self._stand_down = stand_down
        self.term: Term | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._changed = threading.Event()  # a renewal moved the deadline: the watchdog looks again
        self._down = False
        self._refused = False  # the store refused a write as fenced: stand down now
        self._threads: list[threading.Thread] = []
        selfmetrics.HA_ACTIVE.set(0)

    # -- standby -----------------------------------------------------------------------------

    def wait_for_term(self, stop: threading.Event) -> Term | None:
        """Block until this process holds the lease (its term), or None when ``stop`` is set first."""
        failing = False
        event(log, logging.INFO, "standby: waiting for the lease", store=self.lease.describe(),
              instance=self.lease.holder)
        while not stop.is_set():
            sent = self.clock()
            try:
                got = self.lease.acquire(self.timing.ttl)
            except StorageError as exc:
                if not failing:
                    event(log, logging.WARNING, "standby: cannot reach the lease, retrying", error=exc)
                failing = True
                got = None
            else:
                if failing:
                    event(log, logging.INFO, "standby: the lease's database answers again")
                failing = False
            if got is not None:
                epoch, since = got
                term = Term(epoch, since, sent)
                self._begin(term)
                return term
            stop.wait(self.timing.retry)
        return None

    # -- active ------------------------------------------------------------------------------

    def _begin(self, term: Term) -> None:
        with self._lock:
            self.term = term
            GATE.hold(stand_down_at(self.timing, term), self.clock)
        FENCE.epoch = term.epoch
        FENCE.refused = self._write_refused
        selfmetrics.HA_ACTIVE.set(1)
        selfmetrics.HA_EPOCH.set(term.epoch)
        selfmetrics.HA_SINCE.set(term.since)
        event(log, logging.INFO, "active: holding the lease", epoch=term.epoch, instance=self.lease.holder,
              stand_down_in=round(stand_down_at(self.timing, term) - self.clock(), 1))
        for target, name in ((self._renew, "lease-renewer"), (self._watch, "lease-watchdog")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _renew(self) -> None:
        last_try: float | None = None
        failing = False  # one log line per episode of failed renewals
        while not self._stop.is_set():
            with self._lock:
                term = self.term
            if term is None:
                return
            step = next_step(self.timing, term, last_try, self.clock())
            if step.do is Do.STAND_DOWN:
                self.stand_down(term, "lease not renewed in time")
                return
            if step.do is Do.WAIT:
                self._stop.wait(max(0.0, step.at - self.clock()))
                continue
            last_try = self.clock()
            try:
                outcome = Outcome.RENEWED if self.lease.renew(term.epoch, self.timing.ttl) else Outcome.LOST
            except StorageError as exc:
                if not failing:
                    event(log, logging.WARNING, "lease renewal failed, retrying until the deadline", epoch=term.epoch,
                          error=exc, stand_down_in=round(stand_down_at(self.timing, term) - self.clock(), 1))
                failing = True
                outcome = Outcome.FAILED
            else:
                if failing and outcome is Outcome.RENEWED:
                    event(log, logging.INFO, "lease renewed again", epoch=term.epoch)
                    failing = False
            after = after_renewal(term, last_try, outcome)
            if after is None:
                self.stand_down(term, "the lease is no longer ours")
                return
            with self._lock:
                if self.term is not None:
                    self.term = after
                    GATE.hold(stand_down_at(self.timing, after), self.clock)
            self._changed.set()

    def _write_refused(self) -> None:
        """A write of this term met another epoch (or an expired lease) in the database: the watchdog
        stands down now rather than at the next renewal. Only a flag here: called from the writer."""
        self._refused = True
        self._changed.set()

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                term = self.term
            if term is None:
                return
            if self._refused:
                self.stand_down(term, "the store refused a write: the lease is no longer ours")
                return
            wait = stand_down_at(self.timing, term) - self.clock()
            if wait <= 0:
                self.stand_down(term, "lease not renewed in time")
                return
            self._changed.wait(wait)
            self._changed.clear()  # (a flag set between the check and here is seen: the loop looks again)

    def stand_down(self, term: Term, reason: str) -> None:
        """Stop being active: polling and sending end with the process (or the injected action)."""
        with self._lock:
            if self._down or self.term is None:
                return
            self._down = True
            self.term = None
            GATE.shut()
        FENCE.epoch, FENCE.refused = None, None
        selfmetrics.HA_ACTIVE.set(0)
        event(log, logging.ERROR, "standing down: stop polling and sending", reason=reason, epoch=term.epoch,
              instance=self.lease.holder)
        self._stop.set()
        self._changed.set()
        self._stand_down(reason)

    def release(self) -> None:
        """A clean stop: the threads end, the lease is given back (a standby takes it within a retry)."""
        with self._lock:
            term, self.term = self.term, None
        GATE.shut()  # (the term's sends are over; after the threads: lifted, as FENCE is cleared)
        self._stop.set()
        self._changed.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        FENCE.epoch, FENCE.refused = None, None
        GATE.lift()
        selfmetrics.HA_ACTIVE.set(0)
        if term is not None and not self._down:
            try:
                self.lease.release(term.epoch)
                event(log, logging.INFO, "lease released", epoch=term.epoch)
            except StorageError as exc:
                event(log, logging.WARNING, "lease not released: a standby takes it when it expires", error=exc)
        self.lease.close()
