"""Writing the hourly availability rollup: one implementation for ``monitor rollup`` and the daemon.

Both read the daemon's store with the report's reader (:func:`monitor.report.source.load_input`),
turn it into points with :func:`monitor.tsdb.rollup.availability_points` on the local-hour grid of
the configured zone, and send them with :func:`write_points`. The daemon does it itself each hour
(:class:`HourlyRollup`) so the boards are as fresh as the last hour without a timer; the command
backfills a month or a range.

The daemon's task, and why it cannot hurt polling:

* it runs a few minutes (``lag``) after each local hour ends and rewrites that hour and the one
  before it (changes and blind time recorded late land in the second run); the points are the same
  for the same data, so rewriting is harmless;
* at start it writes the hours missing since the last written one (a marker file in the state
  directory), at most ``catch_up`` (2 days) back; older gaps are ``monitor rollup --from/--to``;
* the store is read and the points are computed in a worker thread, one batch at a time, so the
  event loop only sends the batches (memory: the period's state history and one batch);
* when the database is away or refuses the points, the marker stays where it was and the next
  hour's run writes every hour since (retry next hour, no spool: the store keeps the data, and
  rewriting is idempotent); it is logged once when it starts failing and once when it works again.
  Nothing it raises leaves the task: the daemon keeps polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

from monitor.clock import Clock
from monitor.db import Where
from monitor.errors import MonitorError, StorageRetryable
from monitor.inventory.model import Inventory, TimeseriesSettings
from monitor.logs import Episode, event
from monitor.report.model import Period
from monitor.report.source import load_input
from monitor.tsdb.lineprotocol import to_line_protocol
from monitor.tsdb.point import Point
from monitor.tsdb.rollup import availability_points, hour_bounds
from monitor.tsdb.writer import backend_for
from monitor.zones import configured_zone

log = logging.getLogger("monitor.tsdb.rollup")

BATCH = 5000  # points per write request
LAG = 300.0  # seconds after an hour ends before it is written (correlation settles, late changes land)
CATCH_UP = 2 * 86400.0  # at most this far back at start (monitor rollup's default range too)
MARKER = "rollup-hour"  # in the state directory: the end of the last hour written, epoch seconds


def rollup_points(db: Where, inv: Inventory, period: Period, now: float) -> Iterator[Point]:
    """The period's hourly availability points, on the configured zone's local-hour grid."""
    return availability_points(load_input(db, inv, period, until=now), configured_zone(inv))


async def write_points(settings: TimeseriesSettings, points: Iterable[Point], *, attempts: int = 3,
                       delay: float = 1.0, offload: bool = False) -> int:
    """Send the points in batches, returning how many.

    A batch the database could not take for a passing reason (unreachable, timeout, 5xx: retryable)
    is sent again after ``delay``, doubling, up to ``attempts`` times: a busy database should not
    cost an hour of board figures. Then, or at once for a refusal (credentials, no such database),
    the :class:`StorageError` stops the run; the batches already sent are complete hours, and the
    next run rewrites them anyway. ``offload``: each batch is computed and encoded in a worker
    thread (the daemon: the event loop only sends).
    """
    backend = backend_for(settings)
    written = 0
    it = iter(points)

    def take() -> tuple[bytes, int]:
        batch = list(islice(it, BATCH))
        return to_line_protocol(batch), len(batch)

    try:
        while True:
            body, n = await asyncio.to_thread(take) if offload else take()
            if not n:
                break
            wait = delay
            for attempt in range(1, attempts + 1):
                try:
                    if body:
                        await backend.write(body)
                    break
                except StorageRetryable:
                    if attempt == attempts:
                        raise
                    await asyncio.sleep(wait)  # backoff between attempts, not a wait for a condition
                    wait *= 2
            written += n
    finally:
        await backend.close()
    return written


class HourlyRollup:
    """The daemon's hourly rollup task (see the module's docstring)."""

    def __init__(self, inv: Inventory, db_path: Where, clock: Clock, state_dir: Path, *, lag: float = LAG,
                 catch_up: float = CATCH_UP, attempts: int = 2, retry_delay: float = 5.0,
                 on_written: Callable[[float, float, int], None] | None = None) -> None:
        self.inventory = inv  # the daemon sets the reloaded one: zone and database settings follow
        self.db_path = db_path
        self.clock = clock
        self.marker = state_dir / MARKER
        self.lag, self.catch_up = lag, catch_up
        self.attempts, self.retry_delay = attempts, retry_delay
        self.on_written = on_written
        self.done: float | None = self._read_marker()
        self.failures = 0  # runs that could not write (store unreadable, database away or refusing)
        self._wake = asyncio.Event()
        self._failing = Episode(log, "availability rollup not written, retrying next hour",
                                "availability rollup written again")

    def due(self, now: float) -> tuple[float, float] | None:
        """[start, end) to write at ``now``, or None: up to the last local hour that ended ``lag`` ago,
        from the hour before the last one written (or ``catch_up`` back when there is none)."""
        zone = configured_zone(self.inventory)
        end = hour_bounds(now - self.lag, now - self.lag, zone)[0]
        if self.done is not None and self.done >= end:
            return None
        start = end - self.catch_up if self.done is None else max(end - self.catch_up, self.done - 3600.0)
        return (start, end) if end > start else None

    async def run_once(self) -> int | None:
        """Write what is due; the number of points, or None when nothing was due or it failed."""
        now = self.clock.now()
        span = self.due(now)
        if span is None:
            return None
        start, end = span
        inv = self.inventory
        try:
            period = Period(start, end, "rollup", configured_zone(inv))
            points = await asyncio.to_thread(rollup_points, self.db_path, inv, period, now)
            n = await write_points(inv.timeseries, points, attempts=self.attempts, delay=self.retry_delay,
                                   offload=True)
        except MonitorError as exc:  # store unreadable, database away or refusing: the next hour retries
            self.failures += 1
            self._failing.failed(error=exc, since=self.done, hours=round((end - start) / 3600.0))
            return None
        self.done = end
        self._write_marker(end)
        self._failing.ok(points=n)
        event(log, logging.DEBUG, "availability rollup written", start=start, end=end, points=n)
        if self.on_written is not None:
            self.on_written(start, end, n)
        return n

    async def run(self) -> None:
        """Write what is due now (the hours missing at start), then after every hour; until cancelled."""
        while True:
            self._wake.clear()  # a wake() while writing means: look again right after
            try:
                await self.run_once()
            except Exception:  # a bug here must not take the daemon (and polling) down with it
                log.exception("availability rollup failed; trying again next hour")
            await self._sleep()

    def wake(self) -> None:
        """Check now whether an hour is due (tests advance an injected clock, then wake the task)."""
        self._wake.set()

    async def _sleep(self) -> None:
        """Until the next hour is due by ``clock``, waking at least every 5 minutes (the wall clock
        may jump), or until :meth:`wake`."""
        now = self.clock.now()
        nxt = hour_bounds(now - self.lag, now - self.lag, configured_zone(self.inventory))[1] + self.lag
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(max(nxt - now, 1.0), 300.0)):
                await self._wake.wait()

    def _read_marker(self) -> float | None:
        try:
            value = float(self.marker.read_text(encoding="ascii").strip())
        except (OSError, ValueError, UnicodeDecodeError):
            return None  # none yet, or damaged: catch up (rewriting is harmless)
        return value if value == value and abs(value) < 1e11 else None  # finite, a plausible epoch

    def _write_marker(self, end: float) -> None:
        tmp = self.marker.with_name(self.marker.name + ".tmp")
        try:
            tmp.write_text(f"{end:.0f}\n", encoding="ascii")
            os.replace(tmp, self.marker)
        except OSError as exc:  # the next start rewrites a little more, nothing worse
            event(log, logging.WARNING, "availability rollup marker not saved", path=self.marker, error=exc)


__all__ = ["BATCH", "CATCH_UP", "LAG", "HourlyRollup", "rollup_points", "write_points"]
