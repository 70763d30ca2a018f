"""The cyclic garbage collector around the daemon's start: no full collection over a half-built state.

Why: the daemon keeps its inventory, topology and per-target state for its whole life, and the
collector's full collections walk every tracked object that is not frozen. ``gc.freeze()`` after
the start takes what exists then out of those walks; but during the first poll pass each target's
state and bookkeeping are built as it is polled, and with the default thresholds the collector ran
full collections over that growing set (at 50,000 endpoints: 2-3 in the first minute, 67-988 ms
each on a loaded 2-core machine, the event loop's longest lags; none in the steady state afterwards).

So, from the start until every target has been polled once: young collections run as always (the
short-lived cycles of each poll are freed as before), full ones are held; then the survivors are
frozen too and the thresholds are what they were. If the first pass does not complete (a target
that is never polled), the hold ends anyway after ``limit`` seconds. Cyclic garbage that reached
the oldest generation during the hold is frozen with the rest and never freed: a bounded, one-time
amount, not a growth; measured at 50,000 endpoints: none at all (``docs/benchmarks.md``, "GC pauses
in the first interval").
"""

from __future__ import annotations

import asyncio
import gc
import logging

from monitor.logs import event

log = logging.getLogger("monitor.gc")

#: the oldest generation's threshold while held: full collections wait for ``release``
_HELD = 1 << 30


class FirstPassGc:
    """Hold full collections from ``hold()`` until ``release()`` (or the time limit), then freeze."""

    def __init__(self) -> None:
        self._saved: tuple[int, int, int] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def held(self) -> bool:
        return self._saved is not None

    def hold(self, limit: float) -> None:
        """Freeze what exists now and hold full collections for at most ``limit`` seconds."""
        gc.freeze()
        if self._saved is None:
            self._saved = gc.get_threshold()
            young, middle, _ = self._saved
            gc.set_threshold(young, middle, _HELD)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(limit, self.release)

    def release(self) -> None:
        """Freeze the survivors of the first pass and collect as before (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._saved is None:
            return
        young = gc.collect(1)  # the young generations' garbage first: cheap, and not frozen with the rest
        gc.freeze()
        gc.set_threshold(*self._saved)
        self._saved = None
        # (no gc.get_freeze_count() here: it walks the whole frozen list, ~100 ms at 50,000 endpoints)
        event(log, logging.DEBUG, "gc: first pass state frozen", young_garbage=young)
