"""The polling stage: probes, scheduler, confirmed state per target, the event store, samples.

Per poll: probes run concurrently under one deadline, the results are judged (``assess``), folded
into the target's confirmed state (``state.step``) and every transition is appended to the event
store before it is logged, so what was announced is what a restart resumes from — except while the
store refuses writes (full, read-only, locked): then transitions are held in memory and written in
order once it takes them (:mod:`monitor.polling.keeper`). Each transition then goes to the stage's
``sinks`` (the daemon's incident pipeline; a remote poller's publisher). Samples go to the
time-series writer, which never blocks polling.

Targets polled by ICMP alone (most customer endpoints) are polled in batches: the scheduler hands
over every such target due in the same tick and the stage pings them with one
``IcmpProbe.poll_many`` (one send loop, one wake-up), grouped by their poll deadline. Targets with
SNMP are polled one by one. A poll that changes nothing costs counters only: no store write, no
log line, metrics children looked up once (``_PollMetrics``).

The stage knows nothing of incidents, delivery or HTTP: the daemon wires it to those, and a
separate poller process can run it alone. Its life: :meth:`PollingStage.open` (store, restored
states), :meth:`~PollingStage.start_probes`, :meth:`~PollingStage.schedule` and the scheduler's
``run`` in the caller's TaskGroup, :meth:`~PollingStage.heartbeat`, then :meth:`~PollingStage.stop`,
:meth:`~PollingStage.drain` and :meth:`~PollingStage.close`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitor import selfmetrics
from monitor.clock import Clock
from monitor.correlate.settings import derive
from monitor.cutoff import CutOff, confirm_cut_off
from monitor.db import store_location
from monitor.errors import MonitorError
from monitor.inventory.model import Inventory, PollingSettings, Target
from monitor.logs import event
from monitor.polling.assess import assess
from monitor.polling.keeper import BUSY_TIMEOUT, StoreKeeper
from monitor.polling.probeset import ProbeSet, poll_deadline
from monitor.polling.scheduler import Scheduler
from monitor.polling.snmp_news import Line, SnmpNews
from monitor.polling.table_watch import TableWatch
from monitor.probes.base import IcmpResult, Probe, SnmpResult
from monitor.state import Confirmation, Observation, State, StateChange, TargetState, restored, step
from monitor.store import EventStore
from monitor.tsdb import annotations as notes
from monitor.tsdb import schema

if TYPE_CHECKING:
    from monitor.probes.snmp_table import TableResult
    from monitor.tsdb.writer import TimeseriesWriter

log = logging.getLogger("monitor.daemon")

#: The reason recorded when a target leaves the inventory (reports end its lifetime there).
REMOVED = "removed from the inventory"

#: How often (seconds) the run's heartbeat is stored (bounds the unknown time after a crash).
HEARTBEAT_EVERY = 30

#: ICMP-only polls due within this many seconds of a tick join its batch (started that much early).
BATCH_AHEAD = 0.05

#: Where a confirmed transition goes once it is queued for the event store.
ChangeSink = Callable[[StateChange], None]
_SUMMARY_SLICE = 2_000  # states counted per loop turn for the first pass's summary line


def confirmation(target: Target) -> Confirmation:
    p = target.polling
    return Confirmation(down_after=p.down_after, up_after=p.up_after, degraded_after=p.degraded_after)


def cut_off(inv: Inventory) -> CutOff:
    """Which DOWN node cuts a target off, for ``inv``'s topology and vantage nodes (monitor/cutoff.py)."""
    vantage = derive(inv.polling.interval, inv.correlation).vantage
    lead = {tid: (t.polling.down_after - 1) * t.polling.interval for tid, t in inv.targets.items()}
    return CutOff({tid: t.parents for tid, t in inv.targets.items()}, lead, vantage)


def scheduled(inv: Inventory) -> list[Target]:
    """Targets polled on their own: all but endpoints known only by their parent's table."""
    return [t for t in inv.targets.values() if t.address]


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


@dataclass
class PollOutcome:
    """What one poll produced (:meth:`PollingStage.record`)."""

    target: Target
    icmp: IcmpResult | None
    snmp: SnmpResult | None
    change: StateChange | None = None
    state: State = State.UNKNOWN


class PollingStage:
    """Polls the inventory's targets and keeps their confirmed states; transitions go to ``sinks``."""

    def __init__(
        self, clock: Clock, *, probes: Sequence[Probe] | None = None, batch_ahead: float | None = BATCH_AHEAD,
    ) -> None:
        self.clock = clock
        #: the probes polled with; ``probes`` given (``monitor demo``, tests) replace the real ones by kind
        self.probes = ProbeSet(clock, probes)
        #: ICMP-only polls due within this many seconds of a tick join its batch; None: every target
        #: is polled on its own (as ``monitor probe`` does), e.g. to compare the two in tests
        self.batch_ahead = batch_ahead
        self.states: dict[str, TargetState] = {}
        self.snmp_news = SnmpNews()  # SNMP reachability, told once per poll pass
        self.tables = TableWatch()  # subscriber tables (ONUs, stations) walked with their parent's poll
        self.store: EventStore | None = None
        self.keeper: StoreKeeper | None = None
        #: the time-series writer samples go to (None: time series are off); owned by the caller
        self.writer: TimeseriesWriter | None = None
        self.scheduler: Scheduler | None = None
        self.sinks: list[ChangeSink] = []
        self._first_pass: set[str] | None = None  # targets not yet polled since start
        self._summary: asyncio.Task[None] | None = None  # the first pass's summary line, being counted
        #: called once every target has been polled since start (the daemon's GC policy)
        self.on_first_pass: Callable[[], None] | None = None
        self._metrics = _PollMetrics()
        self._confirmations: dict[str, tuple[PollingSettings, Confirmation]] = {}
        #: below a node confirmed DOWN a failed poll confirms DOWN at once (monitor/cutoff.py)
        self._cutoff = CutOff({}, {})

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self, inv: Inventory) -> None:
        """Open the event store in the state directory, start this run in it and restore every
        target's last confirmed state. MonitorError when the store takes no writes: nothing to poll
        for if announced transitions cannot be kept."""
        self.store = EventStore(store_location(inv.daemon), BUSY_TIMEOUT)
        try:
            self.keeper = StoreKeeper(self.store, self.store.run_started(self.clock.now()))
        except MonitorError:
            self.store.close()  # at start a store that takes no writes is fatal: one clear line
            raise
        self._restore_states(inv)
        self._first_pass = set(inv.targets)
        self.tables.configure(inv)
        self._cutoff = cut_off(inv)

    async def start_probes(self, inv: Inventory) -> None:
        """Start the probes ``inv`` needs (ProbeSetupError when one cannot work on this machine)."""
        await self.probes.start(inv)
        if self.tables.probe is None:
            self.tables.probe = self.probes.table

    def schedule(self, inv: Inventory, spawn: Callable[[Coroutine[Any, Any, None]], object]) -> Scheduler:
        """The scheduler of ``inv``'s targets, each poll spawned with ``spawn`` (the caller's
        ``TaskGroup.create_task``); the caller runs its ``run()``."""
        self.scheduler = Scheduler(
            self._poll_and_record, spawn, concurrency=inv.daemon.concurrency, clock=self.clock,
            poll_many=self._poll_many_and_record if self._batching() else None,
            batchable=self.probes.batchable, batch_ahead=self.batch_ahead or 0.0,
        )
        self.scheduler.set_targets(scheduled(inv))
        return self.scheduler

    def stop(self) -> None:
        """No new polls (the ones in flight finish: :meth:`drain`)."""
        if self._summary is not None:
            self._summary.cancel()  # (a stop right after the first pass: its summary line is not news)
        if self.scheduler is not None:
            self.scheduler.stop()

    async def drain(self) -> None:
        """Wait for the polls in flight; tell the last pass's SNMP news (not lost at the stop)."""
        if self.scheduler is not None:
            await self.scheduler.drain()
        self._tell(self.snmp_news.flush())

    async def heartbeat(self) -> None:
        """Mark the run alive, so a crash's end is known to within HEARTBEAT_EVERY for reports, and
        retry held state changes once a second while the store refuses writes."""
        assert self.keeper is not None
        for second in itertools.count(1):
            await asyncio.sleep(1.0)
            self.keeper.retry()
            if second % HEARTBEAT_EVERY == 0:
                self.keeper.alive(self.clock.now())

    async def close(self) -> None:
        """Close the probes, end the run in the store (one line for changes it never took), close it."""
        await self.probes.close()
        if self.store is not None:
            if self.keeper is not None:
                self.keeper.stopped(self.clock.now())
            self.store.close()

    async def reload(self, old: Inventory, new: Inventory) -> int:
        """Take a changed inventory: unchanged targets keep their state and slots, removed ones end
        their life in the log (UNKNOWN, :data:`REMOVED`). Returns how many were removed."""
        self.tables.configure(new)
        self._cutoff = cut_off(new)
        await self.start_probes(new)
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
            self.scheduler.set_targets(scheduled(new))
        return len(removed)

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

    # -- polling -----------------------------------------------------------------------------

    async def poll_once(self, target: Target) -> tuple[IcmpResult | None, SnmpResult | None]:
        """Run the target's probes concurrently under one deadline."""
        return await self.probes.poll_once(target)

    async def _poll_and_record(self, target: Target) -> None:
        started = self.clock.monotonic()
        table: TableResult | None = None
        if self.tables.wants(target):
            (icmp, snmp), table = await asyncio.gather(
                self.probes.poll_once(target), self.tables.poll(target, poll_deadline(target)))
        else:
            icmp, snmp = await self.probes.poll_once(target)
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

    def _down_since(self, tid: str) -> float | None:
        st = self.states.get(tid)
        return st.since if st is not None and st.state is State.DOWN else None

    def _rules(self, target: Target) -> Confirmation:
        """The target's confirmation rules, built once per polling settings object (a reload brings
        new ones; the cache holds the old object, so identity cannot be confused)."""
        cached = self._confirmations.get(target.id)
        if cached is None or cached[0] is not target.polling:
            cached = self._confirmations[target.id] = (target.polling, confirmation(target))
        return cached[1]

    def _batching(self) -> bool:
        """Batches wanted (``batch_ahead``) and the ICMP probe polls them (the demo's scripted one does not)."""
        return self.batch_ahead is not None and self.probes.batches()

    async def _poll_many_and_record(self, targets: list[Target]) -> None:
        """One ICMP batch per poll deadline for targets polled by ICMP alone; each result is recorded
        as its own poll. ``took`` is the batch's time: its results arrive together."""
        started = self.clock.monotonic()
        batches = await self.probes.poll_many(targets)
        now, took = self.clock.now(), self.clock.monotonic() - started
        record = self._record
        for group, results in batches:
            for target, icmp in zip(group, results, strict=True):
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
        if change is None and not obs.reachable and new.state is not State.DOWN:
            answered = now - new.fail_streak * target.polling.interval
            node = self._cutoff.cut_by(target.id, self._down_since, answered)
            if node is not None:
                new, change = confirm_cut_off(prev, new, obs, now, target.id, node)
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
        for sink in self.sinks:
            sink(change)
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
        if self.on_first_pass is not None:
            self.on_first_pass()
        states = list(self.states.values())
        try:
            self._summary = asyncio.get_running_loop().create_task(self._summarize(states))
        except RuntimeError:  # recorded outside an event loop (a test driving the stage): at once
            _log_summary(states, Counter(s.state.value for s in states))

    @staticmethod
    async def _summarize(states: list[TargetState]) -> None:
        """Count the states a slice per loop turn: one pass over 50,000 of them (memory-bound: each is
        its own object) held the loop 65-200 ms, its longest lag of the first interval."""
        counts: Counter[str] = Counter()
        for i in range(0, len(states), _SUMMARY_SLICE):
            counts.update(s.state.value for s in states[i:i + _SUMMARY_SLICE])
            await asyncio.sleep(0)
        _log_summary(states, counts)

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


def _log_summary(states: list[TargetState], counts: Counter[str]) -> None:
    event(log, logging.INFO, "first poll pass complete", targets=len(states),
          **{st.value: counts.get(st.value, 0) for st in State})


def _result_label(error: str | None) -> str:
    """A bounded label value for the polls metric (errors are free text)."""
    if not error:
        return "error"
    head = error.split(":", 1)[0].strip().lower()
    return head if head in {"timeout", "auth", "unreachable"} else "error"
