"""The active daemon's last moment to act outside: checked right before every call to RT, SMTP, MQTT.

The epoch fence (:mod:`monitor.db_postgres`) keeps a deposed daemon's writes out of the database, but
a request to a service desk or a mail relay cannot be fenced there. The keeper's watchdog thread ends
the term at the stand-down deadline, yet a process that was frozen past it (SIGSTOP, a paused VM, a
swap storm) wakes with its event loop in the middle of a send, and the loop may run on before the
watchdog's stand-down reaches it: the HA lab's H5 saw the thawed daemon's ticket request reach RT
after the standby had taken over and opened its own ticket (issue 13).

So every adapter calls :meth:`Gate.check` right before it puts a request on the wire, after whatever
await came before (a connection, an earlier request's answer): it compares the monotonic clock with
the deadline the keeper sets at every renewal (:func:`monitor.ha.lease.stand_down_at`), no system
call, no lock. A check that passes leaves at least the lease's margin (2.5 s) before a standby can
take over; only a freeze in the few instructions between the check and the write slips through, and
the desk repairs what does (:mod:`monitor.desk.base`: duplicates are merged).

Without a lease (the embedded SQLite store) the gate is always open.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from monitor.delivery.retry import DeliveryRetryable


class LeaseLapsed(DeliveryRetryable):
    """This process's lease is past its stand-down deadline: nothing more goes out (the row stays for
    whoever holds the lease now; this process is standing down)."""


class Gate:
    """The stand-down deadline of the term this process holds (None: no lease, always open)."""

    def __init__(self) -> None:
        self._until: float | None = None
        self._clock: Callable[[], float] = time.monotonic

    def hold(self, until: float, clock: Callable[[], float] = time.monotonic) -> None:
        """The term may act until ``until`` (``clock``'s time; the keeper's clock)."""
        self._clock, self._until = clock, until

    def shut(self) -> None:
        """The term is over: every check fails from now on (until the next :meth:`hold` or :meth:`lift`)."""
        self._until = -math.inf

    def lift(self) -> None:
        """No lease any more (the keeper released it): the gate is open, as on SQLite."""
        self._until = None

    def open(self) -> bool:
        until = self._until
        return until is None or self._clock() < until

    def check(self, what: str) -> None:
        """Raise :class:`LeaseLapsed` if the term is past its deadline; ``what``: the call it guards."""
        if not self.open():
            raise LeaseLapsed(f"not sent ({what}): this daemon's lease is past its stand-down deadline",
                              "lease_lapsed")


#: the process's gate (one daemon per process); set by :mod:`monitor.ha.keeper`
GATE = Gate()
