"""The daemon: one TaskGroup owning the polling stage, the incident pipeline, the listeners and the signals.

Polling itself (probes, scheduler, confirmed states, the event store, samples) is the
:mod:`monitor.polling` stage; the daemon wires its confirmed transitions into the incident pipeline
(correlation, delivery), and with remote pollers (``pollers:``) polls only the targets no poller
covers and takes the pollers' changes from the broker into the same store and pipeline
(:mod:`monitor.remote.core`); it runs the time-series writer the stage and the pipeline write to, serves the
staff API, the status page and /metrics, and handles SIGTERM/SIGINT (drain and stop), SIGHUP
(reload) and systemd's notify protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from monitor import selfmetrics
from monitor.api.server import ApiServer
from monitor.clock import Clock, SystemClock
from monitor.correlate.service import CorrelationService
from monitor.db import store_location
from monitor.delivery.service import DeliveryService
from monitor.errors import ConfigError, MonitorError, StoodDown
from monitor.gcpolicy import FirstPassGc
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.logs import event
from monitor.pipeline import IncidentPipeline, IncidentSink
from monitor.polling.stage import BATCH_AHEAD, PollingStage
from monitor.probes.base import Probe
from monitor.remote.core import BlindZones, RemoteIntake, core_inventory, remote_targets
from monitor.remote.link import CoreFeed, cancel_until_done
from monitor.sdnotify import Notifier
from monitor.state import StateChange, TargetState
from monitor.store import EventStore
from monitor.tsdb import annotations as notes
from monitor.tsdb.rollup_job import HourlyRollup
from monitor.tsdb.writer import TimeseriesWriter, make_writer
from monitor.web.process import StatusProcess

if TYPE_CHECKING:
    from monitor.ha.keeper import Keeper

log = logging.getLogger("monitor.daemon")


@dataclass
class Daemon:
    config_path: Path
    clock: Clock = field(default_factory=SystemClock)
    inventory: Inventory | None = None
    #: probes to poll with instead of the real ICMP/SNMP ones (``monitor demo``, tests): each is
    #: used for its ``kind`` ("icmp", "snmp"), started with the daemon and closed when it stops
    probes: Sequence[Probe] | None = None
    #: ICMP-only polls due within this many seconds of a tick join its batch; None: every target is
    #: polled on its own (as ``monitor probe`` does), e.g. to compare the two in tests
    batch_ahead: float | None = BATCH_AHEAD

    def __post_init__(self) -> None:
        #: probes, scheduler, confirmed states, event store: everything up to a confirmed change
        self.polling = PollingStage(self.clock, probes=self.probes, batch_ahead=self.batch_ahead)
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._reading = threading.Event()  # the running reload's cancel flag (see request_stop)
        self._standby_stop = threading.Event()  # ends a standby's wait for the lease (its own thread)
        self._deposed: str | None = None  # why the lease was lost (the active term ends)
        self._deposed_event = asyncio.Event()
        self._gc = FirstPassGc()
        self._term_over = threading.Event()  # set once no task of the active term runs any more
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the lease (PostgreSQL store: active/standby daemons, monitor.ha); None on SQLite
        self.keeper: Keeper | None = None
        self._metrics_server: object | None = None
        self.ready = asyncio.Event()
        self.notifier = Notifier()
        self.pipeline: IncidentPipeline | None = None
        #: where incident lifecycle events go once persisted (besides annotations and delivery)
        self.incident_sinks: list[IncidentSink] = []
        self.api_server: ApiServer | None = None  # the ``api:`` HTTP API, when configured
        self._api_task: asyncio.Task[None] | None = None
        self.web_server: StatusProcess | None = None  # the ``status_page:`` public page (its own process)
        self._web_task: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        #: the boards' hourly availability, written by the daemon itself (time series on)
        self.rollup: HourlyRollup | None = None
        #: remote pollers' changes into the store and pipeline (``pollers:`` with pollers), and their feed
        self.remote: RemoteIntake | None = None
        self.feed: CoreFeed | None = None
        self.zones: BlindZones | None = None  # zones whose pollers are all silent

    @property
    def states(self) -> dict[str, TargetState]:
        """Every target's confirmed state (the polling stage's)."""
        return self.polling.states

    @property
    def store(self) -> EventStore | None:
        return self.polling.store

    @property
    def writer(self) -> TimeseriesWriter | None:
        return self.polling.writer

    @property
    def icmp(self) -> Probe | None:
        return self.polling.probes.icmp

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped. On a PostgreSQL store, first wait as a standby until this process holds
        the lease (:mod:`monitor.ha`); on SQLite there is no lease: active at once."""
        if self.inventory is None:
            self.inventory = load_inventory(self.config_path)
        where = store_location(self.inventory.daemon)
        if isinstance(where, Path):
            selfmetrics.HA_ACTIVE.set(1)
            selfmetrics.HA_SINCE.set(self.clock.now())
            await self._run_active()
            return
        from monitor.db_postgres import PostgreSQL
        from monitor.ha.keeper import Keeper  # (PostgreSQL's client: only for a PostgreSQL store)
        from monitor.ha.store import LeaseStore

        assert isinstance(where, PostgreSQL)  # (the one engine besides SQLite)
        self.keeper = Keeper(LeaseStore(where), stand_down=self._lease_lost)
        try:
            if await self._standby(self.keeper):
                await self._run_active()
            else:
                event(log, logging.INFO, "monitor stopped")
        finally:
            # after every write of the term (the run's end included): a standby takes over at once
            self.keeper.release()

    async def _standby(self, keeper: Keeper) -> bool:
        """Wait for the lease (True), serving /metrics and answering systemd meanwhile; False when
        stopped first. Polling, correlation and delivery do not exist until then."""
        inv = self.inventory
        assert inv is not None
        self._install_signal_handlers()
        self._start_metrics_server(inv.daemon.metrics_listen)
        self.notifier.ready("standby: waiting for the lease")
        watchdog = asyncio.ensure_future(self._watchdog()) if self.notifier.watchdog_interval else None
        self._loop = asyncio.get_running_loop()
        try:
            return await asyncio.to_thread(keeper.wait_for_term, self._standby_stop) is not None
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if self._stop.is_set():
                self._remove_signal_handlers()
                self._stop_metrics_server()

    def _lease_lost(self, reason: str) -> None:
        """The keeper's stand-down (in its thread, at the deadline): the loop ends the active term at
        once (:meth:`_supervise` raises StoodDown, the TaskGroup cancels polling and delivery). A loop
        that cannot do so within half the margin (blocked in a statement on a cut network) gets no
        more time: the process ends. Either way the store refuses the term's writes (the fence)."""
        from monitor.ha.keeper import exit_process

        assert self._loop is not None and self.keeper is not None
        self._loop.call_soon_threadsafe(self._depose, reason)
        if not self._term_over.wait(self.keeper.timing.margin / 2):
            event(log, logging.ERROR, "the event loop did not stop in time: ending the process", reason=reason)
            exit_process(reason)

    def _depose(self, reason: str) -> None:
        self._deposed = reason
        self._deposed_event.set()

    async def _run_active(self) -> None:
        try:
            await self._run_term()
        finally:
            self._term_over.set()

    async def _run_term(self) -> None:
        inv = self.inventory
        assert inv is not None
        state_dir = Path(inv.daemon.state_dir)
        polling = self.polling
        local = core_inventory(inv)  # without the targets remote pollers cover (all of them: no pollers:)
        polling.open(local)
        await polling.start_probes(local)
        writer = polling.writer = make_writer(inv.timeseries, state_dir)
        if writer is None:
            event(log, logging.INFO, "time series are off: no database configured", config=self.config_path)
        else:
            writer.submit(notes.site_points(inv, self.clock.now()))
            self.rollup = HourlyRollup(inv, store_location(inv.daemon), self.clock, state_dir)
        self.pipeline = IncidentPipeline(inv, store_location(inv.daemon), self.clock, writer, self.incident_sinks)
        polling.sinks.append(self._correlate)
        if inv.pollers is not None and inv.pollers.poller_zones():
            assert polling.store is not None
            self.remote = RemoteIntake(inv, polling.store, polling.states, self._correlate, state_dir,
                                       self.clock.now)
            polling.sinks.append(self.remote.core_change)  # a node the core polls may be a poller's vantage
            self.zones = BlindZones.watching(inv, polling.store, polling.states, self.clock.now())
            self.feed = self.remote.feed(inv, self.zones)
            self.pipeline.hold = self.feed.hold  # a poller's changes may be missing: correlation waits for them
        # The inventory, topology and states live as long as the process: keep the collector from
        # re-scanning tens of thousands of them on every collection (measured: ~12 % of an ICMP round),
        # and hold full collections until the first pass has built every target's state (monitor/gcpolicy.py).
        self._gc.hold(2 * max((t.polling.interval for t in local.targets.values()), default=60.0) + 60.0)
        polling.on_first_pass = self._gc.release
        try:
            # before anything listens: whoever sees /metrics, the API or the page up may send SIGHUP or
            # SIGTERM at once, and SIGHUP's default action would kill the daemon (a reload or stop asked
            # for during the start happens once _supervise runs)
            self._install_signal_handlers()
            self._start_metrics_server(inv.daemon.metrics_listen)
            # bound before the TaskGroup: a port in use is one clear error, not an exception group
            await self._start_api(inv)
            await self._start_web(inv)
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if self.api_server is not None:
                    self._api_task = tg.create_task(self.api_server.serve())
                if self.web_server is not None:
                    self._web_task = tg.create_task(self.web_server.serve())
                scheduler_task = tg.create_task(polling.schedule(local, tg.create_task).run())
                feed_task = tg.create_task(self.feed.run()) if self.feed is not None else None
                zones_task = tg.create_task(self._watch_zones(self.zones)) if self.zones is not None else None
                writer_task = tg.create_task(writer.run()) if writer else None
                rollup_task = tg.create_task(self.rollup.run()) if self.rollup is not None else None
                self.pipeline.start(tg)
                heartbeat_task = tg.create_task(polling.heartbeat())
                event(
                    log, logging.INFO, "monitor started", config=self.config_path, targets=len(inv.targets),
                    icmp_mode=getattr(self.icmp, "mode", self.icmp.kind) if self.icmp else "off", state_dir=state_dir,
                )
                self.ready.set()
                self.notifier.ready(f"polling {len(inv.targets)} targets")
                watchdog_task = tg.create_task(self._watchdog()) if self.notifier.watchdog_interval else None
                await self._supervise()
                self.notifier.stopping()
                if watchdog_task is not None:
                    watchdog_task.cancel()
                if rollup_task is not None:
                    rollup_task.cancel()  # an hour cut short is rewritten at the next start
                await self._stop_api()  # no new staff actions while draining (they would wait in the store)
                await self._stop_web()
                # Drain: no new polls, finish the ones in flight, then flush the writer.
                polling.stop()
                await scheduler_task
                await polling.drain()
                heartbeat_task.cancel()
                if zones_task is not None:
                    zones_task.cancel()
                if feed_task is not None:
                    await cancel_until_done(feed_task)  # what is not acknowledged comes again after the restart
                await self.pipeline.stop()  # the last polls' changes correlated; the outbox keeps the rest
                if writer is not None and writer_task is not None:
                    await writer.close()
                    await writer_task
        finally:
            self._tg = None
            self._term_over.set()  # (polling and delivery tasks are gone; closing the stores follows)
            await self._stop_api()
            await self._stop_web()
            if self.pipeline is not None:
                await self.pipeline.close()
            self._remove_signal_handlers()
            await polling.close()  # probes, then the run's end in the event store
            self._stop_metrics_server()
            self._gc.release()
        event(log, logging.INFO, "monitor stopped")

    def request_stop(self) -> None:
        self._stop.set()
        self._reading.set()  # a reload still parsing in its thread gives up: stopping must not wait for it
        self._standby_stop.set()

    def request_reload(self) -> None:
        self._reload_requested.set()

    async def _supervise(self) -> None:
        while not self._stop.is_set():
            stop = asyncio.ensure_future(self._stop.wait())
            reload = asyncio.ensure_future(self._reload_requested.wait())
            deposed = asyncio.ensure_future(self._deposed_event.wait())
            await asyncio.wait({stop, reload, deposed}, return_when=asyncio.FIRST_COMPLETED)
            for f in (stop, reload, deposed):
                f.cancel()
            if self._deposed is not None:  # no drain: what this term holds must not reach the store
                raise StoodDown(f"stood down: {self._deposed}")
            if self._reload_requested.is_set() and not self._stop.is_set():
                self._reload_requested.clear()
                self.notifier.reloading()
                await self.reload()
                self.notifier.ready()

    async def _watchdog(self) -> None:
        """Ping systemd's watchdog while the event loop is responsive; a stuck loop gets restarted."""
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(self.notifier.watchdog_interval)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def _remove_signal_handlers(self) -> None:
        with contextlib.suppress(Exception):
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    # -- configuration -----------------------------------------------------------------------

    async def reload(self) -> bool:
        """Apply a changed config without disturbing unchanged targets; keep the old one on error.

        The file is read in a worker thread: a 20,000-endpoint YAML takes seconds to parse, and on
        the event loop that was seconds without polls, replies or /metrics.
        """
        try:
            self._reading = threading.Event()
            new = await asyncio.to_thread(load_inventory, self.config_path, cancel=self._reading)
        except ConfigError as exc:
            selfmetrics.CONFIG_RELOADS.labels("error").inc()
            event(log, logging.ERROR, "config reload failed, keeping the running config",
                  config=self.config_path, problems=len(exc.problems), first=exc.problems[0])
            return False
        old = self.inventory
        assert old is not None
        self.inventory = new
        removed = await self.polling.reload(*self._polled(old, new))
        self._reload_remote(old, new)
        if self.pipeline is not None:
            await self.pipeline.reload(new)
        if _api_inputs(new) != _api_inputs(old):
            await self._restart_api(new)
        await self._reload_web(old, new)
        if self.rollup is not None:
            self.rollup.inventory = new  # its zone and database settings
        if new.timeseries != old.timeseries:
            await self._reload_timeseries(new)
        added = sum(1 for tid in new.targets if tid not in old.targets)
        changed = sum(1 for tid, t in new.targets.items() if tid in old.targets and old.targets[tid] != t)
        selfmetrics.CONFIG_RELOADS.labels("ok").inc()
        event(log, logging.INFO, "config reloaded", added=added, removed=removed, changed=changed,
              targets=len(new.targets))
        return True

    def _polled(self, old: Inventory, new: Inventory) -> tuple[Inventory, Inventory]:
        """What the polling stage polled and polls now: without the remote zones' targets while a feed
        takes them (all of them until a restart turns remote pollers on). A target handed to a poller
        is not removed (it stays in the inventory, its state with it): the stage only stops polling it."""
        if self.feed is None:
            return old, new
        handed = remote_targets(new)
        before = core_inventory(old)
        before = dataclasses.replace(before, targets={t: v for t, v in before.targets.items() if t not in handed})
        return before, core_inventory(new)

    def _reload_remote(self, old: Inventory, new: Inventory) -> None:
        """Zones and pollers changed: the feed checks messages against the new map, blind zones that
        are gone return. The connection is made at start: turning remote pollers on, a new broker
        list or prefix take a restart; turned off, the core polls everything and ignores the feed."""
        remote, feed, p = self.remote, self.feed, new.pollers
        on = p is not None and bool(p.poller_zones())
        if remote is None or feed is None:
            if on:
                event(log, logging.WARNING, "remote pollers configured: takes a restart (the core polls every "
                                            "target until then)")
            return
        now = self.clock.now()
        remote.configure(new, now)
        if self.zones is not None:
            self.zones.configure(new, now)
        feed.poller_zones = p.poller_zones() if p is not None else {}
        feed.zone_of = p.zone_of if p is not None else {}
        if not on:
            event(log, logging.WARNING, "remote pollers removed: the core polls every target, its feed stays "
                                        "connected until a restart")
        elif old.pollers is None or (p is not None and (p.brokers, p.prefix) != (old.pollers.brokers,
                                                                                 old.pollers.prefix)):
            event(log, logging.WARNING, "a changed broker list or topic prefix takes a restart")

    async def _watch_zones(self, zones: BlindZones) -> None:
        """Once a second: a zone whose pollers are all silent is blind, one heard again is back; the
        technicians on call hear of each once (:mod:`monitor.delivery.zones`)."""
        while True:
            await asyncio.sleep(1.0)
            now = self.clock.now()
            zones.step(now)
            if self.remote is not None:  # a silent poller's view is set aside while its zone has others
                self.remote.silence(zones.watch.silent_pollers(now), now)
            if self.delivery is not None:
                self.delivery.sync_zones(zones.watch.sight(now))

    async def _reload_timeseries(self, new: Inventory) -> None:
        """A changed ``timeseries:`` section: the running writer takes it (new credentials included)
        and keeps its buffer and spool; turning time series on takes a restart."""
        if self.polling.writer is None:
            event(log, logging.WARNING, "time series stay off until a restart", kind=new.timeseries.kind)
            return
        try:
            await self.polling.writer.reconfigure(new.timeseries)
        except MonitorError as exc:
            event(log, logging.ERROR, "time series writer keeps its settings after the reload", error=exc)

    # -- incidents ---------------------------------------------------------------------------

    def _correlate(self, change: StateChange) -> None:
        """The polling stage's sink: each confirmed change goes to the incident pipeline (looked up
        per change, so whatever pipeline the daemon holds now is the one told)."""
        if self.pipeline is not None:
            self.pipeline.note(change)

    @property
    def correlation(self) -> CorrelationService | None:
        return self.pipeline.correlation if self.pipeline is not None else None

    @property
    def delivery(self) -> DeliveryService | None:
        return self.pipeline.delivery if self.pipeline is not None else None

    # -- HTTP listeners: the staff API (monitor.api) and the public status page (monitor.web) --

    async def _serve(self, server: ApiServer | StatusProcess | None) -> asyncio.Task[None] | None:
        """Bind ``server`` (MonitorError when it cannot) and serve it in the TaskGroup once there is one."""
        if server is None:
            return None
        await server.start()
        return self._tg.create_task(server.serve()) if self._tg is not None else None

    @staticmethod
    async def _unserve(task: asyncio.Task[None] | None, server: ApiServer | StatusProcess | None) -> None:
        if task is not None:
            task.cancel()  # serve() stops the server on its way out
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif server is not None:
            await server.stop()

    async def _start_api(self, inv: Inventory) -> None:
        """Bind the API when ``api:`` asks for it (MonitorError when it cannot); serve it in the TaskGroup."""
        server = ApiServer.for_inventory(inv, store_location(inv.daemon), self.clock)
        self._api_task = await self._serve(server)
        self.api_server = server

    async def _stop_api(self) -> None:
        task, server = self._api_task, self.api_server
        self._api_task, self.api_server = None, None
        await self._unserve(task, server)

    async def _restart_api(self, inv: Inventory) -> None:
        """A changed ``api:`` section on reload: the old server goes, the new one comes (or none)."""
        await self._stop_api()
        try:
            await self._start_api(inv)
        except MonitorError as exc:
            event(log, logging.ERROR, "API not restarted after the reload", error=exc)
            return
        event(log, logging.INFO, "API restarted for the reloaded config", on=self.api_server is not None)

    async def _start_web(self, inv: Inventory) -> None:
        """Start the status page's process when ``status_page:`` asks for it (MonitorError when it cannot
        bind): a crowd on the page then never competes with the polls for this event loop."""
        server = StatusProcess.for_inventory(inv, self.config_path)
        self._web_task = await self._serve(server)
        self.web_server = server

    async def _stop_web(self) -> None:
        task, server = self._web_task, self.web_server
        self._web_task, self.web_server = None, None
        await self._unserve(task, server)

    async def _reload_web(self, old: Inventory, new: Inventory) -> None:
        """Same settings: the running page takes the new inventory; changed ones: a new server."""
        if (new.status_page, new.daemon.state_dir) == (old.status_page, old.daemon.state_dir):
            if self.web_server is not None:
                self.web_server.set_inventory(new)
            return
        await self._stop_web()
        try:
            await self._start_web(new)
        except MonitorError as exc:
            event(log, logging.ERROR, "status page not restarted after the reload", error=exc)
            return
        event(log, logging.INFO, "status page restarted for the reloaded config", on=self.web_server is not None)

    def _start_metrics_server(self, listen: str) -> None:
        if not listen or self._metrics_server is not None:  # (a standby started it already)
            return
        from prometheus_client import start_http_server

        host, _, port = listen.rpartition(":")
        try:
            server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=selfmetrics.REGISTRY)
        except OSError as exc:
            raise MonitorError(f"cannot serve /metrics on {listen}: {exc}") from exc
        self._metrics_server = server

    def _stop_metrics_server(self) -> None:
        server = self._metrics_server
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
            self._metrics_server = None


def _api_inputs(inv: Inventory) -> tuple[object, ...]:
    """What the API server is built from: a reload that changes any of it restarts the server."""
    techs = inv.delivery.technicians if inv.delivery is not None else {}
    return inv.api, inv.daemon.state_dir, tuple((t.id, t.language) for t in techs.values())
