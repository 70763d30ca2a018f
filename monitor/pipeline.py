"""From confirmed state changes to incidents and their side effects, for the daemon.

The daemon hands every confirmed transition to :meth:`IncidentPipeline.note`; once a second the
pipeline correlates what accumulated (one engine step and one transaction for a whole burst — the
engine waits a settle period before any side effect, so the batching costs no latency that
matters), persists the lifecycle events and passes them to the sinks: board annotations in the
time-series database and the delivery service's outbox. Delivery runs supervised: a failure is
logged and the workers restart, the durable outbox keeps the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from operator import attrgetter

from monitor import selfmetrics
from monitor.clock import Clock
from monitor.correlate.incidents import IncidentEvent, format_ts
from monitor.correlate.service import CorrelationService
from monitor.correlate.settings import CorrelationSettings, derive
from monitor.db import Where
from monitor.delivery.service import DeliveryService
from monitor.errors import MonitorError
from monitor.inventory.model import Inventory
from monitor.logs import Episode, event
from monitor.polling.keeper import BUSY_TIMEOUT
from monitor.state import StateChange
from monitor.tsdb import annotations as notes
from monitor.tsdb.writer import TimeseriesWriter

log = logging.getLogger("monitor.pipeline")

IncidentSink = Callable[[list[IncidentEvent]], None]

#: How often pending state changes are correlated and the engine's timers advanced.
CORRELATE_EVERY = 1.0

#: Incident events this recent get their annotation points written again at start (crash safety).
REANNOTATE = 3600.0

_TS = attrgetter("ts")


def correlation_settings(inv: Inventory) -> CorrelationSettings:
    """Defaults derived from the poll interval, then the config's ``correlation:`` section (parsed at load)."""
    return derive(inv.polling.interval, inv.correlation)


class IncidentPipeline:
    def __init__(
        self, inv: Inventory, db_path: Where, clock: Clock, writer: TimeseriesWriter | None,
        sinks: list[IncidentSink],
    ) -> None:
        self.inventory = inv
        self.db_path = db_path
        self.clock = clock
        self.writer = writer
        self.sinks = sinks  # shared with the daemon, so callers may add theirs before start
        self.correlation = CorrelationService(inv, db_path, correlation_settings(inv), clock, busy_timeout=BUSY_TIMEOUT)
        # correlation cannot persist: logged once, then once when it can again
        self._recording = Episode(log, "incidents cannot be recorded, retrying every second",
                                  "incidents recorded again", selfmetrics.store_trouble("incidents"))
        self.delivery: DeliveryService | None = None
        self._delivery_task: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._pending: list[StateChange] = []
        #: when a remote poller's changes may be missing, the moment correlation must not judge past
        #: (:meth:`monitor.remote.link.CoreFeed.hold`); None: no remote pollers
        self.hold: Callable[[float], float | None] | None = None
        self._holding = False
        self._sync_maintenance(inv)
        if writer is not None:
            self.sinks.append(self._annotate)
            self._annotate(self._recent_events())

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, tg: asyncio.TaskGroup) -> None:
        self._tg = tg
        self._start_delivery(self.inventory)
        # What resuming decided is persisted already: delivery's catch-up planned it (planning it a
        # second time is harmless, the keys derive from the events, but it is work); the first start
        # of delivery skipped history, so there the start's events are handed over like any others.
        self._publish(self.correlation.startup_events)
        if self.delivery is not None and not self.delivery.caught_up:
            self.delivery.enqueue(self.correlation.startup_events)
        self.sinks.append(self._enqueue)
        self._loop_task = tg.create_task(self._loop())

    async def stop(self) -> None:
        """Correlate the last changes, then stop delivery (undelivered work waits in the outbox)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            self._loop_task = None
        self.correlate_now(force=True)
        await self._stop_delivery()

    async def close(self) -> None:
        await self._stop_delivery()
        self.correlation.close()

    async def reload(self, new: Inventory) -> None:
        self.correlate_now(force=True)
        self.inventory = new
        self.correlation.settings = correlation_settings(new)
        try:
            self._publish(self.correlation.reload(new))
        except MonitorError as exc:  # the store refuses writes: the running topology stays until the next reload
            event(log, logging.ERROR, "correlation not reloaded: incidents cannot be recorded", error=exc)
        self._sync_maintenance(new)
        if self.writer is not None:
            self.writer.submit(notes.site_points(new, self.clock.now()))
        # Delivery plans from the inventory (customers, routing, templates): restart it on the new one.
        await self._stop_delivery()
        self._start_delivery(new)

    # -- correlation -------------------------------------------------------------------------

    def note(self, change: StateChange) -> None:
        self._pending.append(change)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(CORRELATE_EVERY)
            self.correlate_now()

    def correlate_now(self, *, force: bool = False) -> None:
        """One engine step. The engine took ``pending`` even if persisting failed (the service keeps
        the step's events and returns them with the next step that persists), so nothing is re-applied.

        While a remote poller's changes may be missing (``hold``: the core lost the broker they came
        by, :mod:`monitor.remote.handover`), correlation's time stops where that began and the changes
        wait here: the part of a poll cycle that arrived before is not judged without the rest. Once
        the rest is in, what waited is applied in the order of its own times (the poller's spool and
        the core's own polls interleaved as they happened). ``force``: a stop or reload does not wait.
        """
        if not force and self.hold is not None:
            limit = self.hold(self.clock.now())
            if limit is not None:
                if not self._holding:
                    self._holding = True
                    event(log, logging.INFO, "correlation holds: a remote poller's changes may be missing",
                          since=format_ts(limit))
                self._step(lambda: self.correlation.tick(limit))
                return
        pending, self._pending = self._pending, []
        if self._holding:
            self._holding = False
            pending.sort(key=_TS)  # stable: a target's own changes keep their order
            event(log, logging.INFO, "correlation goes on: the remote pollers' changes are in", changes=len(pending))
        self._step(lambda: self.correlation.on_state_changes(pending) if pending else self.correlation.tick())

    def _step(self, step: Callable[[], list[IncidentEvent]]) -> None:
        try:
            events = step()
        except MonitorError as exc:
            self._recording.failed(error=exc)
            return
        self._recording.ok(events=len(events))
        self._publish(events)

    def _publish(self, events: list[IncidentEvent]) -> None:
        if not events:
            return
        for sink in self.sinks:
            try:
                sink(events)
            except Exception:  # a broken sink must not stop correlation; the events are persisted
                log.exception("incident sink failed", extra={"kv": {"sink": getattr(sink, "__name__", sink)}})

    def _sync_maintenance(self, inv: Inventory) -> None:
        """Make the store's config-made windows equal the config's ``maintenance:`` list."""
        self.correlation.sync_config_windows(inv.maintenance)

    # -- sinks -------------------------------------------------------------------------------

    def _annotate(self, events: list[IncidentEvent]) -> None:
        """Incident lifecycle events as points, so boards can annotate and list them."""
        if self.writer is not None:
            self.writer.submit(notes.incident_points(events, self.inventory))

    def _recent_events(self) -> list[IncidentEvent]:
        """Lifecycle events of the last REANNOTATE seconds, written again at start.

        The writer buffers points for a moment; a crash right after an incident opened would lose its
        annotation for good. Points are idempotent (same series, same timestamp), so re-sending the
        recent ones costs nothing and closes that gap.
        """
        return self.correlation.recorded_since(self.clock.now() - REANNOTATE)

    def _enqueue(self, events: list[IncidentEvent]) -> None:
        if self.delivery is not None:
            self.delivery.enqueue(events)

    # -- delivery ----------------------------------------------------------------------------

    def _start_delivery(self, inv: Inventory) -> None:
        if inv.delivery is None or self._tg is None:
            return
        self.delivery = DeliveryService(inv, self.db_path, inv.delivery, self.clock, busy_timeout=BUSY_TIMEOUT)
        self._delivery_task = self._tg.create_task(self._run_delivery(self.delivery))

    async def _run_delivery(self, service: DeliveryService) -> None:
        """Deliver until stopped; a failure is logged and the workers restart (the outbox keeps the work)."""
        delay = 1.0
        while True:
            try:
                await service.run()
                return
            except Exception:
                log.exception("delivery failed, restarting it", extra={"kv": {"in_s": delay}})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _stop_delivery(self) -> None:
        task, service = self._delivery_task, self.delivery
        self._delivery_task, self.delivery = None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if service is not None:
            await service.close()
