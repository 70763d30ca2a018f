"""The polling daemon: one TaskGroup owning the scheduler, the polls, the writer and the signals.

Per poll: probes run concurrently under one deadline, the results are judged (``assess``), folded
into the target's confirmed state (``state.step``) and every transition is appended to the event
store before it is logged, so what was announced is what a restart resumes from — except while the
store refuses writes (full, read-only, locked): then transitions are held in memory and written in
order once it takes them (:mod:`monitor.polling.keeper`). Samples go to the
time-series writer, which never blocks polling.

Targets polled by ICMP alone (most customer endpoints) are polled in batches: the scheduler hands
over every such target due in the same tick and the daemon pings them with one
``IcmpProbe.poll_many`` (one send loop, one wake-up), grouped by their poll deadline. Targets with
SNMP are polled one by one as before. A poll that changes nothing costs counters only: no store
write, no log line, metrics children looked up once (``_PollMetrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import signal
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from monitor import selfmetrics
from monitor.api.server import ApiServer
from monitor.clock import Clock, SystemClock
from monitor.correlate.service import CorrelationService
from monitor.delivery.service import DeliveryService
from monitor.errors import ConfigError, MonitorError
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory, PollingSettings, Target
from monitor.logs import event
from monitor.pipeline import IncidentPipeline, IncidentSink
from monitor.polling.assess import assess
from monitor.polling.keeper import BUSY_TIMEOUT, StoreKeeper
from monitor.polling.scheduler import Scheduler
from monitor.polling.snmp_news import Line, SnmpNews
from monitor.polling.table_watch import TableWatch
from monitor.probes.base import IcmpResult, Probe, SnmpResult
from monitor.probes.icmp import IcmpProbe
from monitor.sdnotify import Notifier
from monitor.state import Confirmation, Observation, State, StateChange, TargetState, restored, step
from monitor.store import EventStore
from monitor.tsdb import annotations as notes
from monitor.tsdb import schema
from monitor.tsdb.writer import TimeseriesWriter, make_writer
from monitor.web.process import StatusProcess

if TYPE_CHECKING:
    from monitor.probes.snmp_table import TableResult

log = logging.getLogger("monitor.daemon")


def confirmation(target: Target) -> Confirmation:
    p = target.polling
    return Confirmation(down_after=p.down_after, up_after=p.up_after, degraded_after=p.degraded_after)


#: The reason recorded when a target leaves the inventory (reports end its lifetime there).
REMOVED = "removed from the inventory"

#: How often (seconds) the run's heartbeat is stored (bounds the unknown time after a crash).
HEARTBEAT_EVERY = 30

#: ICMP-only polls due within this many seconds of a tick join its batch (started that much early).
BATCH_AHEAD = 0.05


@runtime_checkable
class BatchProbe(Protocol):
    """A probe that polls many targets as one batch (:meth:`IcmpProbe.poll_many`)."""

    async def poll_many(self, targets: Sequence[Target], timeout: float) -> list[IcmpResult]: ...


class _PollMetrics:
    """The per-poll metric children, looked up once: ``labels()`` costs a lock and a dict lookup
    per call, which at 50,000 targets is a measurable share of a poll's bookkeeping."""

    def __init__(self) -> None:
        self._polls: dict[tuple[str, str], Any] = {}
        self.icmp_seconds = selfmetrics.POLL_SECONDS.labels("icmp")
        self.snmp_seconds = selfmetrics.POLL_SECONDS.labels("snmp")

    def polls(self, probe: str, result: str) -> Any:
        child = self._polls.get((probe, result))
        if child is None:
            child = self._polls[(probe, result)] = selfmetrics.POLLS.labels(probe, result)
        return child

def poll_deadline(target: Target) -> float:
    """The whole poll (ICMP and SNMP together) must end well inside the target's interval."""
    p = target.polling
    icmp_need = p.icmp_count * p.icmp_spacing + p.icmp_timeout + 0.5
    snmp_need = 0.0
    if target.snmp is not None:
        snmp_need = target.snmp.timeout * (target.snmp.retries + 1) * 3
    return min(0.8 * p.interval, max(icmp_need, snmp_need))


@dataclass
class PollOutcome:
    """What one poll produced; returned for ``monitor probe`` and tests."""

    target: Target
    icmp: IcmpResult | None
    snmp: SnmpResult | None
    change: StateChange | None = None
    state: State = State.UNKNOWN


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
        self.states: dict[str, TargetState] = {}
        self.snmp_news = SnmpNews()  # SNMP reachability, told once per poll pass
        self.store: EventStore | None = None
        self.keeper: StoreKeeper | None = None
        self.writer: TimeseriesWriter | None = None
        self.icmp: Probe | None = None
        self.snmp: Probe | None = None
        self.scheduler: Scheduler | None = None
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._reading = threading.Event()  # the running reload's cancel flag (see request_stop)
        self._metrics_server: object | None = None
        self.ready = asyncio.Event()
        self.notifier = Notifier()
        self._first_pass: set[str] | None = None  # targets not yet polled since start
        self.pipeline: IncidentPipeline | None = None
        #: where incident lifecycle events go once persisted (besides annotations and delivery)
        self.incident_sinks: list[IncidentSink] = []
        self.api_server: ApiServer | None = None  # the ``api:`` HTTP API, when configured
        self._api_task: asyncio.Task[None] | None = None
        self.web_server: StatusProcess | None = None  # the ``status_page:`` public page (its own process)
        self._web_task: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self.tables = TableWatch()  # subscriber tables (ONUs, stations) walked with their parent's poll
        self._metrics = _PollMetrics()
        self._confirmations: dict[str, tuple[PollingSettings, Confirmation]] = {}
        self._batch_probe: tuple[Probe | None, bool] | None = None  # (the ICMP probe, polls batches)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        if self.inventory is None:
            self.inventory = load_inventory(self.config_path)
        inv = self.inventory
        state_dir = Path(inv.daemon.state_dir)
        self.store = EventStore(state_dir / "monitor.db", BUSY_TIMEOUT)
        try:
            self.keeper = StoreKeeper(self.store, self.store.run_started(self.clock.now()))
        except MonitorError:
            self.store.close()  # at start a store that takes no writes is fatal: one clear line
            raise
        self._restore_states(inv)
        self._first_pass = set(inv.targets)
        self.tables.configure(inv)
        await self._start_probes(inv)
        self.writer = make_writer(inv.timeseries, state_dir)
        if self.writer is None:
            event(log, logging.INFO, "time series are off: no database configured", config=self.config_path)
        else:
            self.writer.submit(notes.site_points(inv, self.clock.now()))
        self.pipeline = IncidentPipeline(inv, state_dir / "monitor.db", self.clock, self.writer, self.incident_sinks)
        self._start_metrics_server(inv.daemon.metrics_listen)
        # The inventory, topology and states live as long as the process: keep the collector from
        # re-scanning tens of thousands of them on every collection (measured: ~12 % of an ICMP round).
        gc.freeze()
        try:
            # bound before the TaskGroup: a port in use is one clear error, not an exception group
            await self._start_api(inv)
            await self._start_web(inv)
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if self.api_server is not None:
                    self._api_task = tg.create_task(self.api_server.serve())
                if self.web_server is not None:
                    self._web_task = tg.create_task(self.web_server.serve())
                self.scheduler = Scheduler(
                    self._poll_and_record, tg.create_task, concurrency=inv.daemon.concurrency, clock=self.clock,
                    poll_many=self._poll_many_and_record if self._batching() else None,
                    batchable=self._batchable, batch_ahead=self.batch_ahead or 0.0,
                )
                self.scheduler.set_targets(_scheduled(inv))
                scheduler_task = tg.create_task(self.scheduler.run())
                writer_task = tg.create_task(self.writer.run()) if self.writer else None
                self.pipeline.start(tg)
                heartbeat_task = tg.create_task(self._heartbeat())
                self._install_signal_handlers()
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
                await self._stop_api()  # no new staff actions while draining (they would wait in the store)
                await self._stop_web()
                # Drain: no new polls, finish the ones in flight, then flush the writer.
                self.scheduler.stop()
                await scheduler_task
                await self.scheduler.drain()
                self._tell(self.snmp_news.flush())  # the last pass's SNMP news, not lost at the stop
                heartbeat_task.cancel()
                await self.pipeline.stop()  # the last polls' changes correlated; the outbox keeps the rest
                if self.writer is not None and writer_task is not None:
                    await self.writer.close()
                    await writer_task
        finally:
            self._tg = None
            await self._stop_api()
            await self._stop_web()
            if self.pipeline is not None:
                await self.pipeline.close()
            self._remove_signal_handlers()
            await self._close_probes()
            self._stop_metrics_server()
            if self.store is not None:
                if self.keeper is not None:
                    self.keeper.stopped(self.clock.now())
                self.store.close()
        event(log, logging.INFO, "monitor stopped")

    def request_stop(self) -> None:
        self._stop.set()
        self._reading.set()  # a reload still parsing in its thread gives up: stopping must not wait for it

    def request_reload(self) -> None:
        self._reload_requested.set()

    async def _supervise(self) -> None:
        while not self._stop.is_set():
            stop = asyncio.ensure_future(self._stop.wait())
            reload = asyncio.ensure_future(self._reload_requested.wait())
            await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
            for f in (stop, reload):
                f.cancel()
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
        self.tables.configure(new)
        await self._start_probes(new)
        removed = [tid for tid in old.targets if tid not in new.targets]
        now = self.clock.now()
        for tid in removed:
            gone = self.states.pop(tid, TargetState())
            self.snmp_news.forget(tid)
            self._confirmations.pop(tid, None)
            # The end of the target's life in the log: reports stop counting it here.
            self._announce(old.targets[tid], StateChange(tid, gone.state, State.UNKNOWN, now, REMOVED))
        for tid in new.targets:
            self.states.setdefault(tid, TargetState())
        self._update_state_gauge()
        if self.scheduler is not None:
            self.scheduler.set_targets(_scheduled(new))
        if self.pipeline is not None:
            await self.pipeline.reload(new)
        if _api_inputs(new) != _api_inputs(old):
            await self._restart_api(new)
        await self._reload_web(old, new)
        if new.timeseries != old.timeseries:
            await self._reload_timeseries(new)
        added = sum(1 for tid in new.targets if tid not in old.targets)
        changed = sum(1 for tid, t in new.targets.items() if tid in old.targets and old.targets[tid] != t)
        selfmetrics.CONFIG_RELOADS.labels("ok").inc()
        event(log, logging.INFO, "config reloaded", added=added, removed=len(removed), changed=changed,
              targets=len(new.targets))
        return True

    async def _reload_timeseries(self, new: Inventory) -> None:
        """A changed ``timeseries:`` section: the running writer takes it (new credentials included)
        and keeps its buffer and spool; turning time series on takes a restart."""
        if self.writer is None:
            event(log, logging.WARNING, "time series stay off until a restart", kind=new.timeseries.kind)
            return
        try:
            await self.writer.reconfigure(new.timeseries)
        except MonitorError as exc:
            event(log, logging.ERROR, "time series writer keeps its settings after the reload", error=exc)

    # -- incidents ---------------------------------------------------------------------------

    @property
    def correlation(self) -> CorrelationService | None:
        return self.pipeline.correlation if self.pipeline is not None else None

    @property
    def delivery(self) -> DeliveryService | None:
        return self.pipeline.delivery if self.pipeline is not None else None

    async def _heartbeat(self) -> None:
        """Mark the run alive, so a crash's end is known to within HEARTBEAT_EVERY for reports, and
        retry held state changes once a second while the store refuses writes."""
        assert self.keeper is not None
        for second in itertools.count(1):
            await asyncio.sleep(1.0)
            self.keeper.retry()
            if second % HEARTBEAT_EVERY == 0:
                self.keeper.alive(self.clock.now())

    def _restore_states(self, inv: Inventory) -> None:
        assert self.store is not None
        stored = self.store.load_states()
        for tid in inv.targets:
            if tid in stored:
                st, since = stored[tid]
                self.states[tid] = restored(st, since)
            else:
                self.states[tid] = TargetState()
        self._update_state_gauge()

    async def _start_probes(self, inv: Inventory) -> None:
        if self.probes is not None:
            if self.icmp is None and self.snmp is None:  # once; a reload keeps them
                by_kind = {p.kind: p for p in self.probes}
                self.icmp, self.snmp = by_kind.get("icmp"), by_kind.get("snmp")
                for probe in (self.icmp, self.snmp):
                    if probe is not None:
                        await probe.start()
            return
        if self.icmp is None:
            self.icmp = IcmpProbe()
            await self.icmp.start()  # ProbeSetupError here is fatal, with its own clear message
        if self.snmp is None and any(t.snmp is not None for t in inv.targets.values()):
            from monitor.probes.snmp import SnmpProbe

            self.snmp = SnmpProbe(clock=self.clock)
            await self.snmp.start()
        if self.tables.probe is None and any(t.snmp is not None and t.snmp.table for t in inv.targets.values()):
            from monitor.probes.snmp import SnmpProbe
            from monitor.probes.snmp_table import TableProbe

            if isinstance(self.snmp, SnmpProbe):  # walks share its sessions, credentials and bounds
                self.tables.probe = TableProbe(self.snmp, clock=self.clock)

    async def _close_probes(self) -> None:
        for probe in (self.icmp, self.snmp):
            if probe is not None:
                with contextlib.suppress(Exception):
                    await probe.close()

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
        server = ApiServer.for_inventory(inv, Path(inv.daemon.state_dir) / "monitor.db", self.clock)
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
        if not listen:
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

    # -- polling -----------------------------------------------------------------------------

    async def poll_once(self, target: Target) -> tuple[IcmpResult | None, SnmpResult | None]:
        """Run the target's probes concurrently under one deadline."""
        deadline = poll_deadline(target)
        icmp_task = self.icmp.poll(target, deadline) if self.icmp is not None else None
        snmp_task = self.snmp.poll(target, deadline) if self.snmp is not None and target.snmp else None
        coros = [c for c in (icmp_task, snmp_task) if c is not None]
        results = await asyncio.gather(*coros)
        icmp = next((r for r in results if isinstance(r, IcmpResult)), None)
        snmp = next((r for r in results if isinstance(r, SnmpResult)), None)
        return icmp, snmp

    async def _poll_and_record(self, target: Target) -> None:
        started = self.clock.monotonic()
        table: TableResult | None = None
        if self.tables.wants(target):
            (icmp, snmp), table = await asyncio.gather(
                self.poll_once(target), self.tables.poll(target, poll_deadline(target)))
        else:
            icmp, snmp = await self.poll_once(target)
        now = self.clock.now()
        self.record(target, icmp, snmp, now, self.clock.monotonic() - started)
        if table is not None:
            self.record_table(target, table, now)

    def record_table(self, parent: Target, table: TableResult, now: float) -> None:
        """Fold one walk of ``parent``'s subscriber table into its address-less endpoints' states."""
        selfmetrics.POLLS.labels("snmp-table", "ok" if table.ok else _result_label(table.error)).inc()
        reachable = self.states.get(parent.id, TargetState()).fail_streak == 0
        for target, obs, outcome in self.tables.fold(parent, table, now, reachable):
            new, change = self._step(target, obs, now)
            if self.writer is not None:
                points = schema.snmp_points(target, SnmpResult(target.id, "", True, metrics=outcome.metrics), now)
                points.append(schema.state_point(target, new.state.value, now, change.reason if change else ""))
                self.writer.submit(points)

    def _rules(self, target: Target) -> Confirmation:
        """The target's confirmation rules, built once per polling settings object (a reload brings
        new ones; the cache holds the old object, so identity cannot be confused)."""
        cached = self._confirmations.get(target.id)
        if cached is None or cached[0] is not target.polling:
            cached = self._confirmations[target.id] = (target.polling, confirmation(target))
        return cached[1]

    def _batching(self) -> bool:
        """Batches wanted (``batch_ahead``) and the ICMP probe polls them (the demo's scripted one does not)."""
        return self.batch_ahead is not None and isinstance(self.icmp, BatchProbe)

    def _batchable(self, target: Target) -> bool:
        """ICMP alone, on a probe that polls batches: the scheduler may group it with others. (Asked
        for every due target: the isinstance check on the Protocol, ~2 µs, is made once per probe.)"""
        if self._batch_probe is None or self._batch_probe[0] is not self.icmp:
            self._batch_probe = (self.icmp, isinstance(self.icmp, BatchProbe))
        return target.snmp is None and self._batch_probe[1]

    async def _poll_many_and_record(self, targets: list[Target]) -> None:
        """One ICMP batch per poll deadline for targets polled by ICMP alone; each result is recorded
        as its own poll. ``took`` is the batch's time: its results arrive together."""
        probe = self.icmp
        assert isinstance(probe, BatchProbe)
        by_deadline: dict[float, list[Target]] = {}
        for t in targets:
            by_deadline.setdefault(poll_deadline(t), []).append(t)
        started = self.clock.monotonic()
        batches = [probe.poll_many(group, deadline) for deadline, group in by_deadline.items()]
        results = await asyncio.gather(*batches)
        now, took = self.clock.now(), self.clock.monotonic() - started
        record = self._record
        for group, batch in zip(by_deadline.values(), results, strict=True):
            for target, icmp in zip(group, batch, strict=True):
                record(target, icmp, None, now, took)

    def record(
        self, target: Target, icmp: IcmpResult | None, snmp: SnmpResult | None, now: float, took: float = 0.0
    ) -> PollOutcome:
        """Fold one poll's results into state, event log, metrics and time series."""
        new, change = self._record(target, icmp, snmp, now, took)
        return PollOutcome(target, icmp, snmp, change, new.state)

    def _record(
        self, target: Target, icmp: IcmpResult | None, snmp: SnmpResult | None, now: float, took: float
    ) -> tuple[TargetState, StateChange | None]:
        metrics = self._metrics
        if icmp is not None:
            metrics.polls("icmp", "ok" if icmp.received else _result_label(icmp.error)).inc()
            metrics.icmp_seconds.observe(took)
        if snmp is not None:
            metrics.polls("snmp", "ok" if snmp.ok else _result_label(snmp.error)).inc()
            metrics.snmp_seconds.observe(snmp.duration_s)
            self._note_snmp(target, snmp)

        new, change = self._step(target, self.tables.merged(target, assess(target, icmp, snmp), now), now)

        if self.writer is not None:
            points = []
            if icmp is not None:
                points += schema.icmp_points(target, icmp, now)
            if snmp is not None:
                points += schema.snmp_points(target, snmp, now)
            points.append(schema.state_point(target, new.state.value, now, change.reason if change else ""))
            self.writer.submit(points)
        return new, change

    def _step(self, target: Target, obs: Observation, now: float) -> tuple[TargetState, StateChange | None]:
        """Fold one observation into the target's confirmed state; announce a transition."""
        prev = self.states.get(target.id) or TargetState()
        new, change = step(prev, obs, now, self._rules(target), target.id)
        self.states[target.id] = new
        if change is not None:
            self._announce(target, change)
        if self._first_pass:
            self._first_pass.discard(target.id)
            if not self._first_pass:
                self._log_first_pass()
        return new, change

    def _announce(self, target: Target, change: StateChange) -> None:
        assert self.keeper is not None
        self.keeper.append([change])  # held in order and retried while the store refuses writes
        if self.pipeline is not None:
            self.pipeline.note(change)
        if self.writer is not None:
            self.writer.submit([notes.state_change_point(change, target)])
        selfmetrics.STATE_CHANGES.labels(change.new.value).inc()
        selfmetrics.TARGETS.labels(change.old.value).dec()
        selfmetrics.TARGETS.labels(change.new.value).inc()
        if change.new in (State.DOWN, State.DEGRADED):
            level = logging.WARNING
        elif change.old == State.UNKNOWN:
            level = logging.DEBUG  # first contact is not news; 50,000 of them at startup would be noise
        else:
            level = logging.INFO
        event(
            log, level, f"target {change.new.value}", target=target.id, kind=target.kind, address=target.address,
            old=change.old.value, new=change.new.value, reason=change.reason,
            municipality=target.municipality or "", site=target.site or "",
        )

    def _log_first_pass(self) -> None:
        """One summary line once every target has been polled: what the network looks like now."""
        counts = Counter(s.state.value for s in self.states.values())
        event(log, logging.INFO, "first poll pass complete", targets=len(self.states),
              **{st.value: counts.get(st.value, 0) for st in State})

    def _note_snmp(self, target: Target, snmp: SnmpResult) -> None:
        """Log SNMP reachability on change only (a node may answer pings but not SNMP), the changes
        of one poll pass in one line (:mod:`monitor.polling.snmp_news`)."""
        self._tell(self.snmp_news.note(target.id, snmp.ok, snmp.error or ""))
        if snmp.rebooted:
            event(log, logging.WARNING, "agent rebooted", target=target.id, uptime_s=snmp.uptime_s)

    @staticmethod
    def _tell(lines: Sequence[Line]) -> None:
        for line in lines:
            event(log, line.level, line.msg, **line.kv)

    def _update_state_gauge(self) -> None:
        """Recount targets per state (start and reload only; transitions adjust it incrementally)."""
        counts = Counter(s.state.value for s in self.states.values())
        for st in State:
            selfmetrics.TARGETS.labels(st.value).set(counts.get(st.value, 0))


def _api_inputs(inv: Inventory) -> tuple[object, ...]:
    """What the API server is built from: a reload that changes any of it restarts the server."""
    techs = inv.delivery.technicians if inv.delivery is not None else {}
    return inv.api, inv.daemon.state_dir, tuple((t.id, t.language) for t in techs.values())


def _scheduled(inv: Inventory) -> list[Target]:
    """Targets polled on their own: all but endpoints known only by their parent's table."""
    return [t for t in inv.targets.values() if t.address]


def _result_label(error: str | None) -> str:
    """A bounded label value for the polls metric (errors are free text)."""
    if not error:
        return "error"
    head = error.split(":", 1)[0].strip().lower()
    return head if head in {"timeout", "auth", "unreachable"} else "error"
