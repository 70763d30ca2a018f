"""Batches points to the time-series database without ever making polling wait for it.

``submit()`` only appends to an in-memory buffer. ``run()`` (a background task) sends a batch when
``batch_size`` points are waiting or ``flush_interval`` has passed. While the database is
unreachable (or answers 5xx/429), batches go to the on-disk :class:`Spool` and the oldest spooled
batch is retried with exponential backoff; once it succeeds the spool is replayed oldest-first,
and new batches keep going to the end of the spool until it is empty, so order is preserved.
Sequence numbers are taken when a batch leaves the buffer, so a batch whose write failed is
spooled ahead of batches spooled while it was in flight.

A database that refuses the writer itself (401/403 wrong credentials or permissions, 404 no such
database) is treated like an outage: nothing is wrong with the points, only the settings are, so
they are held in the spool until :meth:`TimeseriesWriter.reconfigure` (a reload) brings settings
that work — or the operator fixes the database side — and then delivered in order.

Logging is by episode: one line when the database becomes unreachable or starts refusing us, one
when the spool has been replayed, one when the spool first overflows, one per kind of rejected
batch (400 and other 4xx) per ten minutes, never one per failed write. The counters in
:mod:`monitor.selfmetrics` say the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from monitor import selfmetrics as m
from monitor.clock import Clock, SystemClock
from monitor.errors import ConfigError, StorageError, StoragePermanent, StorageRefused, StorageRetryable
from monitor.inventory.model import TimeseriesSettings
from monitor.tsdb.backend import Backend
from monitor.tsdb.lineprotocol import encode_lines
from monitor.tsdb.point import Point
from monitor.tsdb.spool import Segment, Spool

log = logging.getLogger("monitor.tsdb")

PERMANENT_LOG_EVERY = 600.0  # seconds between two log lines about rejected batches
REFUSED_REASONS = ("auth", "not_found")  # StorageRefused.reason values, labels of the blocked gauge


def _event(level: int, msg: str, **kv: object) -> None:
    log.log(level, msg, extra={"kv": kv})


class TimeseriesWriter:
    def __init__(
        self,
        settings: TimeseriesSettings,
        spool_dir: Path,
        *,
        clock: Clock | None = None,
        backend: Backend | None = None,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
        max_buffer_points: int | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock or SystemClock()
        self._backend = backend if backend is not None else backend_for(settings)
        self._spool = Spool(spool_dir, settings.spool_max_bytes)
        self._batch = max(1, settings.batch_size)
        self._flush_interval = max(0.0, settings.flush_interval)
        self._max_buffer_points = max_buffer_points
        self._max_buffer = max_buffer_points or max(10 * self._batch, 50_000)
        self._retired: list[Backend] = []  # replaced by reconfigure(); closed when no write uses them
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._buffer: deque[Point] = deque()
        self._wake = asyncio.Event()
        self._overflow = asyncio.Event()
        self._stopped = asyncio.Event()
        self._lock = asyncio.Lock()  # serialises "take from buffer + decide + spool"
        self._closing = False
        self._closed = False
        self._running = False
        self._inflight: tuple[int, bytes, int] | None = None  # (seq, body, points) being sent directly
        self._replaying: frozenset[int] = frozenset()
        self._last_flush = self._clock.monotonic()
        self._down = False
        self._retry_at = 0.0
        self._retry_delay = retry_initial
        self._outage_since: float | None = None  # an episode: from first failure to drained spool
        self._unreachable_logged = False
        self._refused: str | None = None  # StorageRefused.reason while the database refuses us
        self._refused_logged: str | None = None
        self._episode_refused: str | None = None  # the current episode saw a refusal (for its end line)
        for label in REFUSED_REASONS:
            m.TS_WRITER_BLOCKED.labels(reason=label).set(0)
        self._replayed = 0
        self._drop_logged = False
        self._permanent_logged_at: float | None = None
        self._permanent_suppressed = 0
        self._update_gauges()
        if self._spool.points:
            self._outage_since = self._clock.monotonic()
            _event(logging.INFO, "time series spool from a previous run will be replayed",
                   backend=self._backend.name, spool_points=self._spool.points, spool_bytes=self._spool.bytes)

    # -- the polling side ---------------------------------------------------------------------

    def submit(self, points: Iterable[Point]) -> None:
        """Queue points for writing. Never blocks on the database and never raises."""
        try:
            self._buffer.extend(points)
        except Exception:  # a caller's bad iterable must not break polling
            log.exception("points not queued: bad input to TimeseriesWriter.submit")
            return
        size = len(self._buffer)
        if self._closed:
            self._persist_sync()  # after close() nothing drains the buffer: keep the points on disk
        elif size >= self._batch:
            self._wake.set()
            if size > self._max_buffer:
                self._overflow.set()

    @property
    def spool_points(self) -> int:
        return self._spool.points

    @property
    def spool_bytes(self) -> int:
        return self._spool.bytes

    @property
    def buffered_points(self) -> int:
        return len(self._buffer)

    @property
    def refused(self) -> str | None:
        """``"auth"`` or ``"not_found"`` while the database refuses this writer, else ``None``."""
        return self._refused

    async def reconfigure(self, settings: TimeseriesSettings) -> None:
        """Apply a reloaded ``timeseries:`` section in place: the buffer, the spool and the batch in
        flight are kept, so fixed credentials deliver everything held while they were wrong.

        A changed connection (kind, url, credentials, database, ...) gets a new backend, tried at
        once; the old one is closed once no write uses it. Batch size, flush interval and the spool
        bound apply to the next batch. Turning time series off and moving the spool take a restart
        (the running spool keeps its directory): said once in the log, the rest still applies.
        """
        old = self.settings
        if settings == old:
            return
        if settings.kind == "none" or settings.spool_dir != old.spool_dir:
            _event(logging.WARNING, "time series: turning them off or moving the spool takes a restart",
                   kind=settings.kind, spool_dir=settings.spool_dir or "spool")
            if settings.kind == "none":
                return
            settings = dataclasses.replace(settings, spool_dir=old.spool_dir)
        new_backend = backend_for(settings) if _connection(settings) != _connection(old) else None
        async with self._lock:
            self.settings = settings
            self._batch = max(1, settings.batch_size)
            self._flush_interval = max(0.0, settings.flush_interval)
            self._max_buffer = self._max_buffer_points or max(10 * self._batch, 50_000)
            self._spool.max_bytes = settings.spool_max_bytes
            if new_backend is not None:
                self._retired.append(self._backend)
                self._backend = new_backend
                self._retry_at = self._clock.monotonic()  # try the new settings now, not after the backoff
                self._retry_delay = self._retry_initial
                self._refused_logged = None  # settings still refused after a reload deserve their own line
        self._wake.set()
        _event(logging.INFO, "time series writer reconfigured", backend=self._backend.name,
               new_connection=new_backend is not None, spool_points=self._spool.points)

    # -- the background task ------------------------------------------------------------------

    async def run(self) -> None:
        """Flush until :meth:`close` is called. If cancelled instead, spool what is in memory."""
        self._running = True
        spill = asyncio.create_task(self._spill_loop(), name="tsdb-spill")
        try:
            await self._flush_loop()
        except asyncio.CancelledError:
            self._persist_sync()
            raise
        finally:
            spill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await spill
            self._running = False
            self._stopped.set()

    async def close(self) -> None:
        """Drain the buffer (to the database, or to the spool while it is down) and release resources.

        Whatever is spooled survives: a new writer on the same spool directory replays it.
        """
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        if self._running:
            await self._stopped.wait()
        else:
            await self._step()
        self._closed = True
        self._persist_sync()  # anything submitted while the last batch was in flight
        await self._close_retired()
        await self._backend.close()
        self._spool.close()

    async def _flush_loop(self) -> None:
        failed = False
        while True:
            delay = self._retry_max if failed else self._next_delay()
            if delay > 0 and not self._closing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # not wait_for: see Scheduler._wait
                        await self._wake.wait()
            self._wake.clear()
            closing = self._closing  # close() during a step needs one more step, a closing one
            try:
                await self._step()
            except Exception:  # a bug here must not take the daemon (and polling) down with it
                if not failed:
                    log.exception("time series writer error; retrying")
                failed = not self._closing
            else:
                failed = False
            if closing:
                return

    def _next_delay(self) -> float:
        now = self._clock.monotonic()
        delay = self._last_flush + self._flush_interval - now
        if self._spool.points:
            delay = min(delay, self._retry_at - now if self._down else 0.0)
        return max(0.0, delay)

    async def _step(self) -> None:
        await self._close_retired()  # writes happen only inside _step: none is in flight now
        now = self._clock.monotonic()
        due = self._closing or now - self._last_flush >= self._flush_interval
        budget = len(self._buffer)  # points that arrive meanwhile wait for the next step
        while budget > 0 and self._buffer and (due or len(self._buffer) >= self._batch):
            budget -= await self._move_batch()
        if due:
            self._last_flush = now
        if self._spool.points and not self._closing and (not self._down or now >= self._retry_at):
            await self._replay_once()

    async def _spill_loop(self) -> None:
        """Bound memory while a write is stuck: move the oldest buffered points to the spool."""
        while True:
            await self._overflow.wait()
            self._overflow.clear()
            while len(self._buffer) > self._max_buffer:
                async with self._lock:
                    if len(self._buffer) <= self._max_buffer:
                        break
                    seq, body, n = self._take()
                    await self._spool_append(seq, body, n)

    def _take(self) -> tuple[int, bytes, int]:
        """Pop one batch from the buffer, encode it and give it its sequence number."""
        count = min(self._batch, len(self._buffer))
        lines = encode_lines(self._buffer.popleft() for _ in range(count))
        seq = self._spool.reserve()
        body = ("\n".join(lines) + "\n").encode() if lines else b""
        return seq, body, len(lines)

    async def _move_batch(self) -> int:
        """Send one batch directly, or spool it (database down, or older points still spooled)."""
        async with self._lock:
            taken = min(self._batch, len(self._buffer))
            seq, body, n = self._take()
            if not n:
                return taken
            retry_due = self._clock.monotonic() >= self._retry_at
            if self._spool.points or (self._down and not retry_due):
                await self._spool_append(seq, body, n)
                return taken
            self._inflight = (seq, body, n)
        # ``_inflight`` is cleared only once the outcome is known: if this task is cancelled
        # mid-write, run() spools the batch (the database may or may not have it; resending is harmless).
        backend = self._backend
        try:
            await backend.write(body)
        except (StorageRetryable, StorageRefused) as exc:
            self._inflight = None
            self._on_held(exc, backend)
            async with self._lock:
                await self._spool_append(seq, body, n)
        except StoragePermanent as exc:
            self._inflight = None
            self._on_permanent(exc, n)
        else:
            self._inflight = None
            self._on_success(n)
        return taken

    async def _replay_once(self) -> None:
        """Send the oldest spooled segments (up to one batch); delete them once acknowledged."""
        async with self._lock:
            segments = self._spool.head(self._batch)
            if not segments:
                return
            self._replaying = frozenset(s.seq for s in segments)
        try:
            points = sum(s.points for s in segments)
            try:
                body = await asyncio.to_thread(self._spool.read, segments)
            except StorageError as exc:
                _event(logging.ERROR, "time series spool segments unreadable, dropped", error=exc, points=points)
                m.TS_SPOOL_DROPPED.inc(points)
            else:
                backend = self._backend
                try:
                    await backend.write(body)
                except (StorageRetryable, StorageRefused) as exc:
                    self._on_held(exc, backend)
                    return
                except StoragePermanent as exc:
                    self._on_permanent(exc, points)
                else:
                    self._on_success(points)
                    self._replayed += points
            async with self._lock:
                await asyncio.to_thread(self._spool.remove, segments)
                self._update_gauges()
        finally:
            self._replaying = frozenset()
        if not self._spool.points:
            self._on_drained()
        else:
            self._wake.set()  # keep replaying without waiting for the next flush

    async def _spool_append(self, seq: int, body: bytes, n: int) -> None:
        """Caller holds ``self._lock``."""
        try:
            # shielded: if the task is cancelled now, the batch (already out of the buffer) still lands
            dropped = await asyncio.shield(asyncio.to_thread(self._spool.append, seq, body, n, self._replaying))
        except StorageError as exc:
            dropped = [Segment(seq, n, len(body), Path())]
            _event(logging.ERROR, "time series spool write failed, points lost", error=exc, points=n)
        self._on_dropped(dropped)
        self._update_gauges()

    def _persist_sync(self) -> None:
        """Last resort on cancellation or after close: write what is in memory to the spool, blocking."""
        batches = []
        if self._inflight is not None:
            batches.append(self._inflight)  # the database may or may not have it: resending is harmless
            self._inflight = None
        while self._buffer:
            batches.append(self._take())
        for seq, body, n in batches:
            if not n:
                continue
            try:
                self._on_dropped(self._spool.append(seq, body, n, self._replaying))
            except StorageError as exc:
                m.TS_SPOOL_DROPPED.inc(n)
                _event(logging.ERROR, "time series spool write failed, points lost", error=exc, points=n)
        self._update_gauges()

    # -- bookkeeping --------------------------------------------------------------------------

    def _on_success(self, n: int) -> None:
        m.TS_POINTS_WRITTEN.inc(n)
        self._down = False
        self._retry_delay = self._retry_initial
        self._set_refused(None)
        if not self._spool.points:
            self._on_drained()  # recovered with nothing left to replay (everything spooled was dropped)

    def _on_held(self, exc: StorageRetryable | StorageRefused, backend: Backend) -> None:
        """The batch is kept (spooled); later ones join it; the oldest is retried with backoff.

        A failure of a backend that :meth:`reconfigure` replaced meanwhile says nothing about the
        new settings: the batch is kept and retried at once with them.
        """
        if backend is not self._backend:
            return
        now = self._clock.monotonic()
        if not self._down:
            self._down = True
            self._retry_delay = self._retry_initial
            if self._outage_since is None:
                self._outage_since = now
                self._replayed = 0
        else:
            self._retry_delay = min(self._retry_delay * 2, self._retry_max)
        self._retry_at = now + self._retry_delay
        if isinstance(exc, StorageRefused):
            m.TS_WRITE_ERRORS.labels(reason=exc.reason).inc()
            self._set_refused(exc.reason)
            if self._refused_logged != exc.reason:
                self._refused_logged = self._episode_refused = exc.reason
                _event(logging.ERROR, "time series database refuses the writer, holding points in the spool",
                       backend=self._backend.name, reason=exc.reason, error=exc)
            return
        m.TS_WRITE_ERRORS.labels(reason="retryable").inc()
        if not self._unreachable_logged:
            self._unreachable_logged = True
            _event(logging.WARNING, "time series database unreachable, spooling",
                   backend=self._backend.name, error=exc)

    def _set_refused(self, reason: str | None) -> None:
        """Track (and export) whether the database refuses us; a write it takes ends the refusal."""
        if reason == self._refused:
            return
        self._refused = reason
        if reason is None:
            self._refused_logged = None  # a later refusal is a new episode, worth its own line
        for label in REFUSED_REASONS:
            m.TS_WRITER_BLOCKED.labels(reason=label).set(1 if label == reason else 0)

    def _on_permanent(self, exc: StoragePermanent, n: int) -> None:
        m.TS_WRITE_ERRORS.labels(reason="permanent").inc()
        self._down = False  # it answered: it is reachable
        self._set_refused(None)  # and it looked at the batch: it accepts us
        now = self._clock.monotonic()
        last = self._permanent_logged_at
        if last is None or now - last >= PERMANENT_LOG_EVERY:
            _event(logging.ERROR, "time series database rejected a batch, dropped it",
                   backend=self._backend.name, points=n, error=exc, suppressed=self._permanent_suppressed)
            self._permanent_logged_at = now
            self._permanent_suppressed = 0
        else:
            self._permanent_suppressed += 1

    def _on_dropped(self, dropped: list[Segment]) -> None:
        if not dropped:
            return
        points = sum(s.points for s in dropped)
        m.TS_SPOOL_DROPPED.inc(points)
        if not self._drop_logged:
            self._drop_logged = True
            _event(logging.WARNING, "time series spool full, dropping the oldest points",
                   spool_max_bytes=self._spool.max_bytes, dropped_points=points)

    def _on_drained(self) -> None:
        if self._outage_since is not None:
            message = ("time series database accepts the writer again, spool replayed" if self._episode_refused
                       else "time series database reachable again, spool replayed")
            _event(logging.INFO, message, backend=self._backend.name, replayed_points=self._replayed,
                   outage_s=round(self._clock.monotonic() - self._outage_since, 1))
        self._outage_since = None
        self._episode_refused = None
        self._unreachable_logged = False
        self._replayed = 0
        self._drop_logged = False

    async def _close_retired(self) -> None:
        """Close backends replaced by :meth:`reconfigure` (only called when no write is in flight)."""
        while self._retired:
            with contextlib.suppress(Exception):  # a dead connection pool: nothing left to lose
                await self._retired.pop().close()

    def _update_gauges(self) -> None:
        m.TS_SPOOL_POINTS.set(self._spool.points)
        m.TS_SPOOL_BYTES.set(self._spool.bytes)


def _connection(settings: TimeseriesSettings) -> tuple[object, ...]:
    """The settings a backend is built from: when any differs on reload, a new backend is needed."""
    return (settings.kind, settings.url, settings.org, settings.bucket, settings.token, settings.database,
            settings.retention_policy, settings.username, settings.password, settings.timeout)


def backend_for(settings: TimeseriesSettings) -> Backend:
    if settings.kind == "influxdb1":
        from monitor.tsdb.influx1 import Influx1Backend

        return Influx1Backend(settings)
    if settings.kind == "influxdb2":
        from monitor.tsdb.influx2 import Influx2Backend

        return Influx2Backend(settings)
    raise ConfigError(f"timeseries.kind: unknown database kind {settings.kind!r} (none, influxdb1, influxdb2)")


def make_writer(settings: TimeseriesSettings, state_dir: Path) -> TimeseriesWriter | None:
    """The writer for ``settings``, or ``None`` when time series are off (``kind: none``)."""
    if settings.kind == "none":
        return None
    spool_dir = Path(settings.spool_dir) if settings.spool_dir else Path("spool")
    if not spool_dir.is_absolute():
        spool_dir = state_dir / spool_dir
    return TimeseriesWriter(settings, spool_dir)
