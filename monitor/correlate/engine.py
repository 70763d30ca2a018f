"""The correlation engine: a pure, deterministic core over StateChange events and injected time.

Input: confirmed state changes (``apply``) and the passing of time (``tick``). Output: incident
lifecycle events. No I/O, no wall clock, no iteration over unordered containers when deciding or
emitting, so the same input always yields byte-identical output (that is what ``monitor replay``
and the scenario tests rely on).

How a failure becomes an incident:

* A target confirmed DOWN waits ``settle`` seconds (a poll cycle is not ordered by topology, so its
  parent may be confirmed a little later). Then it is *evaluated*: walking up while every parent is
  down gives its topological root. A node root is an *outage*; every down target below it whose
  path leads to it is attached. An endpoint that is its own root is a *single* incident, unless the
  mass-outage rule holds at a still-answering node above it (*suspected*), counting only failures
  that no open incident or down node explains.
* An incident already open below a newly found root is folded into it (``merged``), never resolved.
* Recoveries shrink the affected set. Once the root is back, what is still down ``grace`` after its
  own parent came back is re-evaluated on its own; once nothing is down, the incident resolves
  after ``hold_down`` of calm, so a flapping target keeps one incident open.
* A failed vantage node, or too many independent failures at once, is *blindness*: one internal
  incident, and no customer incidents are opened until it has been over for ``blind_recovery``.
* What a subscriber table says caused a failure (``StateChange.cause``) is used: ONUs reporting
  dying gasp are a *power* incident (K and P of them below an answering OLT or PON port: a power
  cut in that area; one alone: its customer's own power), never an outage nor counted as
  independent failures; K and P reporting LOS below an answering port (or OLT) are an *outage*
  rooted there (a fibre cut). See ``_cause_mass``.

Costs: evaluating a target walks its ancestors (depth ~5); opening an outage walks the down part of
its subtree once. Timers live in FIFO queues (their delays are constants, so due times arrive in
order), so a burst of 100k changes is O(n) work overall.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import compress, repeat
from operator import not_

from monitor.correlate.burst import Burst, FailureRates
from monitor.correlate.degraded import loss_top, shows_loss
from monitor.correlate.incidents import Incident, IncidentEvent, Kind, format_ts, incident_id
from monitor.correlate.maintenance import Window, WindowEvent
from monitor.correlate.settings import CorrelationSettings
from monitor.correlate.together import failed_together
from monitor.correlate.topology import Topology
from monitor.state import State, StateChange

_INF = float("inf")
BLIND_ROOT = "monitor"  # root of a blind incident raised by the share rule (no single node to blame)
DYING_GASP, LOS = "dying_gasp", "los"  # the last down causes that decide (StateChange.cause)
#: mass incidents at a node that still answers: judged while K of their endpoints are down
MASS: tuple[Kind, ...] = ("suspected", "power")

# member log operations, for the store: (incident id, target, op), or (incident id, targets, op)
# for a run logged as one entry (an outage attaching its whole subtree); LEFT_DOWN: still down when
# staff resolved the incident (left alone until it changes, also after a restart)
ADD, RECOVERED, DROP, LEFT_DOWN = "add", "recovered", "drop", "left_down"
MemberOp = tuple[str, str | tuple[str, ...], str]


class Engine:
    def __init__(
        self, topo: Topology, settings: CorrelationSettings, *, start: float = 0.0, next_seq: int = 1
    ) -> None:
        self.topo = topo
        self.s = settings
        self.now = start
        self.next_seq = next_seq
        self.down: dict[str, float] = {}  # target -> confirmed down since
        self.incidents: dict[str, Incident] = {}  # open incidents by root (blind excluded)
        self.by_id: dict[str, Incident] = {}
        self.member: dict[str, str] = {}  # target -> root of the incident it is attached to
        self.ever: dict[str, set[str]] = {}  # incident id -> targets affected and not moved elsewhere
        self.basis: dict[str, Kind] = {}  # incident id -> kind it would have outside maintenance
        # the blindness going on (its clear_since: the cause cleared, it ends blind_recovery later); kept
        # when staff close its alert, which silences it but does not end it (not in by_id then)
        self.blind: Incident | None = None
        self.blind_ended: list[tuple[str, float]] = []  # (blind incident, when the blindness ended), for the store
        self._vantage = frozenset(settings.vantage)
        # below this many independent failures the share rule cannot fire: skip the check
        self._blind_quiet = max(settings.blind_min - 1, int(settings.blind_share * len(topo)))
        self._n_targets = len(topo)
        # the top-level nodes, nearest the monitor (those with something below them, if any has)
        tops = tuple(t for t in topo.parents if not topo.parents[t])
        self._tops = tuple(t for t in tops if topo.children[t]) or tops
        self._top_set = frozenset(self._tops)
        self._flat = not topo.children[self._tops[0]] if self._tops else False  # no top has anything below
        self._tops_flag = False  # every top-level node down or lossy (kept when one changes state)
        self.degraded: set[str] = set()  # confirmed DEGRADED (answering, beyond a loss/rtt threshold)
        # down target -> the last down cause its parent's table reported (dying_gasp, los, other,
        # unknown) with its DOWN; resumed from the state-change log after a restart
        self.cause: dict[str, str] = {}
        self._settle: deque[tuple[float, str, float]] = deque()  # (due, target, down since)
        self._grace: deque[tuple[float, str, float]] = deque()  # (due, incident id, grace_from)
        self.back: dict[str, float] = {}  # node -> when it last came back (each member's own grace)
        self._hold: deque[tuple[float, str, float]] = deque()  # (due, incident id, clear_since)
        self._blind_timer: deque[tuple[float, str, float]] = deque()
        # targets still down when a blindness ended whose parent came back with the rest: judged only
        # grace after that return (see _end_blind); (due, target, down since), in order of due
        self._after_blind: deque[tuple[float, str, float]] = deque()
        self._recent: deque[tuple[float, str]] = deque()  # endpoint down transitions inside W
        self._in_window: set[str] = set()
        self._recent_count: dict[str, int] = dict.fromkeys(topo.endpoints_below, 0)
        self._root_cache: dict[str, str] = {}  # node -> its topological root, while states hold still
        # down targets whose parents are not all down and that no open incident explains yet: the
        # failures the monitor cannot tell apart from its own view breaking (see _blind_cause)
        self._unexplained: set[str] = set()
        self._ignored: dict[str, str] = {}  # down target -> the incident staff resolved leaving it alone
        self._dirty: set[str] = set()  # incidents whose affected set changed (since: Incident.pending_since)
        self._forced: set[str] = set()  # kind changed: announce without waiting for update_interval
        self._queue: list[IncidentEvent | Incident] = []  # Incident = "opened", rendered at flush
        self.member_log: list[MemberOp] = []
        self.changed: set[str] = set()  # incident ids whose row (timers, kind) changed
        self.window_events: list[WindowEvent] = []
        self._windows: list[Window] = []
        self._active: dict[int, Window] = {}
        self._covered: dict[str, int] = {}  # node -> number of active windows on it
        # nodes whose own polls show loss (DEGRADED by loss; kept while down, until they answer cleanly
        # again) -> since: failures below are theirs
        self.lossy: dict[str, float] = {}
        self._fading: dict[str, float] = {}  # root of a degraded incident whose loss ended -> grace_from
        self._loss_why: dict[str, str] = {}  # lossy node -> its DEGRADED reason ("loss 60% > 20%")
        # independent failures (resolved singles) per subtree and hour of day: the burst rule's normal rate
        self.rates = FailureRates(
            topo.ancestors, topo.endpoints_below, history=settings.burst_history, prior=settings.burst_prior,
            start=start or None,
        )
        self._burst: Burst | None = None  # why the last _desired chose a burst (for the incident's detail)

    # ---------------------------------------------------------------- input

    def on_state_changes(self, changes: Sequence[StateChange]) -> list[IncidentEvent]:
        """Apply changes (time advances with them) and return the events due by the last one."""
        self.apply_many(changes)
        return self.tick(max((c.ts for c in changes), default=self.now))

    def apply(self, c: StateChange) -> None:
        """Fold one confirmed transition in. Decisions wait for ``tick``; timers due earlier fire first."""
        self.apply_many((c,))

    def apply_many(self, changes: Iterable[StateChange], *, until_output: bool = False) -> int:  # noqa: C901 - the burst hot loop, one frame on purpose (benchmarked)
        """Fold confirmed transitions in, in order, exactly as ``apply`` one at a time would.

        The daemon hands over a poll cycle's transitions as one batch (100k in a core failure), so
        this is the hot path: one loop over locals, a timer check only when time advances, and the
        common "endpoint went down" case inlined. Everything rarer goes through the methods.
        ``until_output`` stops right after a change that leaves something to announce (replay
        announces as it goes); returns how many changes were applied.
        """
        info = self.topo.info
        down, unexplained, ignored, root_cache = self.down, self._unexplained, self._ignored, self._root_cache
        recent, in_window, rc = self._recent, self._in_window, self._recent_count
        settle_q, settle_for = self._settle, self.s.settle
        vantage, incidents, blind_quiet = self._vantage, self.incidents, self._blind_quiet
        lossy = self.lossy  # kept while such a node is down: its last answers showed loss
        degraded, member, n_targets, top_set = self.degraded, self.member, self._n_targets, self._top_set
        flat, causes = self._flat, self.cause
        DOWN, DEGRADED = State.DOWN, State.DEGRADED
        next_due = self._next_due()
        n = 0
        for c in changes:
            if until_output and n and (self._queue or self._forced):
                break  # the change before left something to announce
            n += 1
            ts = c.ts
            if ts > self.now:
                if ts >= next_due:
                    self._run_timers(ts)
                    next_due = self._next_due()
                else:
                    self.now = ts  # the common case in a burst: nothing due yet
            tid = c.target
            rec = info.get(tid)
            if rec is None:
                continue
            if c.new is DOWN:
                if tid not in down:
                    # went down (inlined: 100k times in a core failure)
                    ps, kids, ancestors, is_endpoint = rec
                    now = self.now
                    if root_cache:
                        root_cache.clear()
                    down[tid] = now
                    if tid in ignored:
                        del ignored[tid]
                    if degraded:
                        degraded.discard(tid)
                    if c.cause is not None:
                        causes[tid] = c.cause
                    if not (ps[0] in down if len(ps) == 1 else ps and all(p in down for p in ps)):
                        unexplained.add(tid)
                    if kids:
                        self._parent_down(tid, now)
                        next_due = self._next_due()
                    elif flat and tid in top_set:
                        self._tops_flag = self._tops_bad()
                    if is_endpoint:
                        recent.append((now, tid))
                        in_window.add(tid)
                        for a in ancestors:
                            rc[a] += 1
                    if tid not in vantage:
                        due = now + settle_for
                        settle_q.append((due, tid, now))
                        if due < next_due:
                            next_due = due
                    if tid in incidents:
                        self._keep_open(incidents[tid])  # its root failed again within the hold-down
            else:
                if c.old is DOWN or tid in down:
                    if rec[1] and (c.new is DEGRADED or lossy):
                        self._loss_changed(c)
                    self._came_back(tid)
                    next_due = self._next_due()
                elif rec[1] and (c.new is DEGRADED or lossy):
                    self._loss_changed(c)
                    next_due = self._next_due()
                if c.new is DEGRADED:
                    degraded.add(tid)
                elif degraded:
                    degraded.discard(tid)
                if tid in top_set:
                    self._tops_flag = self._tops_bad()
            if (
                self.blind is not None
                or (
                    self._tops_flag  # the share and nothing-answers rules need every top down or lossy
                    and (len(down) == n_targets or len(down) + len(degraded) - len(member) > blind_quiet)
                )
                or (vantage and self._vantage_down())
            ):
                self._check_blind()
                next_due = self._next_due()
        return n

    def _next_due(self) -> float:
        """The earliest timer (-inf with maintenance windows: those are checked at every step)."""
        if self._windows:
            return -_INF
        heads = [q[0][0] for q in (self._settle, self._grace, self._hold, self._blind_timer, self._after_blind) if q]
        return min(heads, default=_INF)

    def _vantage_down(self) -> bool:
        return any(v in self.down for v in self.s.vantage)

    def tick(self, now: float) -> list[IncidentEvent]:
        """Let time pass: fire settle, grace, hold-down and maintenance timers; emit due updates."""
        self._run_timers(now)
        self._flush()
        out = [e for e in self._queue if isinstance(e, IncidentEvent)]
        self._queue.clear()
        return out

    def has_output(self) -> bool:
        """Something to announce at the current time (so a replay flushes before time moves on)."""
        return bool(self._queue or self._forced)

    def set_windows(self, windows: Iterable[Window]) -> None:
        """Replace the maintenance windows (from config, CLI or store); takes effect at the next tick."""
        self._windows = sorted(windows, key=lambda w: (w.start, w.id))
        for wid in sorted(set(self._active) - {w.id for w in self._windows}):
            self._end_window(self._active[wid])
        self._sync_windows()

    def resolve(self, inc_id: str, now: float) -> bool:
        """Staff resolved it by hand: close it; its targets are left alone until they change again.

        A ``blind`` alert closed this way is silenced, not ended: the monitor still cannot see, so the
        blindness holds back customer incidents until its cause clears (``self.blind`` stays).
        """
        inc = self.by_id.get(inc_id)
        if inc is None:
            return False
        self._run_timers(now)
        left = sorted(inc.members, key=self.topo.sort_key)
        self._ignored.update(dict.fromkeys(left, inc.id))
        self._resolve(inc)
        self.member_log.extend((inc.id, t, LEFT_DOWN) for t in left)
        return True

    def restore(  # noqa: C901 - to be split into its steps (issue 11, engine item)
        self, incidents: Sequence[tuple[Incident, Kind, set[str]]], down: dict[str, float], now: float,
        left_down: Mapping[str, tuple[str, float]] | None = None, closed_blind: Incident | None = None,
        back: Mapping[str, float] | None = None, blind_ended: float | None = None,
    ) -> None:
        """Resume after a restart: open incidents (with basis and everyone affected) and who is down.

        Reconciles instead of trusting either side: members no longer down are recovered, down
        targets in no incident wait out their settle period as if just confirmed (so a change
        logged but not yet correlated when the process died is correlated now, once).
        ``left_down``: target -> (incident, when) staff resolved while it was down; one still down
        since then is left alone until it changes or is attached again, as without the restart.
        ``closed_blind``: a blindness whose alert staff resolved while it went on; it still holds back
        customer incidents until it ends, as without the restart, and no new blind alert opens.
        ``back``: node -> when it last came back (the state-change log), for the grace of the members
        below it (see ``_grace_check``).
        ``blind_ended``: a blindness ended this recently (within grace): what it left down waits out
        the grace after its parent's return, as without the restart (see ``_recovery_due``).
        """
        topo, s = self.topo, self.s
        self.now = max(self.now, now)
        for t, ts in (back or {}).items():
            if t in topo.parents and topo.children[t]:
                self.back[t] = max(ts, self.back.get(t, ts))
        for t, since in sorted(down.items(), key=lambda kv: (kv[1], topo.order.get(kv[0], 0))):
            if t in topo.parents:
                self.down[t] = since
                if t in topo.endpoint and since > self.now - s.window:
                    self._recent.append((since, t))
                    self._in_window.add(t)
                    for a in topo.ancestors[t]:
                        self._recent_count[a] += 1
        for t in self.down:
            ps = topo.parents[t]
            if not ps or not all(p in self.down for p in ps):
                self._unexplained.add(t)
        grace: list[tuple[float, str, float]] = []
        hold: list[tuple[float, str, float]] = []
        for inc, basis, ever in sorted(incidents, key=lambda x: x[0].seq):
            self.next_seq = max(self.next_seq, inc.seq + 1)
            self.by_id[inc.id] = inc
            self.ever[inc.id] = set(ever)
            self.basis[inc.id] = basis
            if basis == "blind":
                self.blind = inc
                continue
            self.incidents[inc.root] = inc
            if inc.pending_since is not None:
                self._dirty.add(inc.id)
            elif self._lists(inc.members)[:2] != inc.emitted:
                self._touch(inc)  # a store written before pending_since was kept: announce the difference
            for m in sorted(inc.members, key=topo.sort_key):
                if m in self.down and m not in self.member:
                    self.member[m] = inc.root
                else:
                    inc.members.discard(m)
                    self.member_log.append((inc.id, m, RECOVERED))
                    self._touch(inc)
            if inc.grace_from is not None:
                grace.append((inc.grace_from + s.grace, inc.id, inc.grace_from))
                if basis == "degraded":
                    self._fading[inc.root] = inc.grace_from
            if inc.clear_since is not None:
                hold.append((inc.clear_since + s.hold_down, inc.id, inc.clear_since))
        self._unexplained.difference_update(self.member)  # explained by their incidents
        for t, (left_by, resolved_at) in sorted((left_down or {}).items()):
            if t in self.down and self.down[t] <= resolved_at:
                if t in self.member:  # attached again, in a store written before _unleave cleared the row
                    self.member_log.append((left_by, t, RECOVERED))
                else:
                    self._ignored[t] = left_by
        if closed_blind is not None and self.blind is None:
            self.blind = closed_blind  # not in by_id: its alert is closed, it only ends (see _end_blind)
            self.next_seq = max(self.next_seq, closed_blind.seq + 1)
        self._grace.extend(sorted(grace))
        self._hold.extend(sorted(hold))
        for inc in sorted(self.incidents.values(), key=lambda i: i.seq):
            self._shrunk(inc)
        pending = [
            (max(since + s.settle, self.now), t, since)
            for t, since in self.down.items()
            if t not in self.member and t not in self._vantage and t not in self._ignored
        ]
        if blind_ended is not None and self.blind is None:
            later = [(due, t, since) for _, t, since in pending if (due := self._recovery_due(t)) is not None]
            if later:
                waiting = {t for _, t, _ in later}
                pending = [p for p in pending if p[1] not in waiting]
                self._after_blind.extend(sorted(later))
        pending += self._lossy_rejudge()
        self._settle.extend(sorted(pending, key=lambda p: (p[0], topo.order.get(p[1], 0))))
        blind = self.blind
        if blind is not None and blind.clear_since is not None and self._blind_cause() is None:
            # its cause cleared before the restart: it ends when it would have without the restart
            self._blind_timer.append((blind.clear_since + s.blind_recovery, blind.id, blind.clear_since))
        self._tops_flag = self._tops_bad()
        self._check_blind()

    # ---------------------------------------------------------------- state

    def _parent_down(self, tid: str, ts: float) -> None:
        """A node went down: children whose every uplink is now down are explained by it."""
        topo, down, unexplained = self.topo, self.down, self._unexplained
        if tid in self._top_set:
            self._tops_flag = self._tops_bad()
        sole = topo.sole_children[tid]
        if unexplained:
            unexplained.difference_update(down.keys() & sole)
        if len(sole) == len(topo.children[tid]):
            return
        parents = topo.parents
        for c in topo.children[tid]:
            if c not in sole and c in down and all(p in down for p in parents[c]):
                unexplained.discard(c)
                if c not in self._vantage:
                    # its last uplink just failed: judge it again (it may belong to an outage now)
                    self._settle.append((ts + self.s.settle, c, down[c]))

    def _keep_open(self, inc: Incident) -> None:
        """Something of the incident (or its root) is down again: cancel its hold-down, and its grace
        period unless that is still due (it starts again when the root is back)."""
        if inc.clear_since is not None:
            inc.clear_since = None
            self.changed.add(inc.id)
        if inc.grace_from is not None and not self._grace_due(inc):
            inc.grace_from = None
            self.changed.add(inc.id)

    def _upgrade(self, inc: Incident) -> None:
        """The answering node behind a mass incident went down itself: same incident, now an outage."""
        self.basis[inc.id] = "outage"
        inc.was_outage = True
        self.changed.add(inc.id)  # persisted: after a restart it must still be judged as a mass incident
        self._set_kind(inc, "planned" if inc.kind == "planned" else "outage")
        self._absorb(inc, self._down_subtree(inc.root))

    def _came_back(self, tid: str) -> None:
        topo, down = self.topo, self.down
        inc = self.incidents.get(tid)
        if inc is not None and tid in down and self.basis[inc.id] in MASS and inc.root not in topo.endpoint:
            self._upgrade(inc)  # its node was down for less than the settle period: it still failed
        if self._root_cache:
            self._root_cache.clear()
        down.pop(tid, None)
        if self.cause:
            self.cause.pop(tid, None)
        self._ignored.pop(tid, None)
        self._unexplained.discard(tid)
        kids = topo.children[tid]
        if kids:
            self.back[tid] = self.now
        for c in kids:
            if c in down:
                key = self.member.get(c)
                if key is None:
                    self._unexplained.add(c)  # in no incident (a single explains it too): independent again
                elif key != c and (held := self.incidents[key]).grace_from is not None:
                    # held: not an independent failure before its grace ends, which starts now
                    self._grace_at(self.now + self.s.grace, held)
        if tid in self._in_window:
            self._in_window.discard(tid)
            rc = self._recent_count
            for a in topo.ancestors[tid]:
                rc[a] -= 1
        key = self.member.pop(tid, None)
        if key is None:
            inc = self.incidents.get(tid)
            if inc is not None:
                self._shrunk(inc)  # a root that failed again only briefly (never re-attached) is back
            return
        inc = self.incidents[key]
        inc.members.discard(tid)
        self.member_log.append((inc.id, tid, RECOVERED))
        self._shrunk(inc)
        own = self.incidents.get(tid)
        if own is not None and own is not inc:
            # its own incident, in its hold-down when it failed again with its parent (attached to the
            # parent's outage then): its hold-down starts again now, or it stayed open for ever
            self._shrunk(own)

    def _shrunk(self, inc: Incident) -> None:
        """Fewer targets down: maybe start the grace period, maybe start the hold-down."""
        self._touch(inc)
        if inc.grace_from is None and self._grace_due(inc):
            inc.grace_from = self.now
            self._grace.append((self.now + self.s.grace, inc.id, self.now))
            self.changed.add(inc.id)
        self._check_clear(inc)

    def _grace_due(self, inc: Incident) -> bool:
        basis = self.basis[inc.id]
        if basis == "outage":
            if inc.was_outage and len(inc.members) >= self.s.min_endpoints:
                return False  # a mass incident whose node failed too: still a mass incident while it is back
            # a root answering with loss again (a lossy link that stopped, then came back): its grace
            # waits for the loss to end, as a degraded incident's does (rain_fade_stop_then_lossy)
            return inc.root not in self.down and inc.root not in self.lossy
        if basis in MASS:
            # (a power incident at an endpoint is its customer's own power: no grace, like a single)
            return len(inc.members) < self.s.min_endpoints and inc.root not in self.topo.endpoint
        if basis == "degraded":
            return inc.root not in self.lossy and inc.root not in self.down
        return False

    def _check_clear(self, inc: Incident) -> None:
        # a lossy root holds its incident open (the loss explains what flickers below), but not a power
        # cut's: the ONUs' power is back, whatever the rain does to the links
        if (
            not inc.members and inc.root not in self.down and inc.clear_since is None
            and (inc.root not in self.lossy or self.basis.get(inc.id) == "power")
        ):
            inc.clear_since = self.now
            self._hold.append((self.now + self.s.hold_down, inc.id, self.now))
            self.changed.add(inc.id)

    def _prune_window(self) -> None:
        horizon = self.now - self.s.window
        recent, in_window, down, rc = self._recent, self._in_window, self.down, self._recent_count
        while recent and recent[0][0] < horizon:  # exactly W apart is still within W (as together.py)
            ts, e = recent.popleft()
            if e in in_window and down.get(e) == ts:
                in_window.discard(e)
                for a in self.topo.ancestors[e]:
                    rc[a] -= 1

    # ---------------------------------------------------------------- timers

    def _run_timers(self, now: float) -> None:
        if now < self.now:
            now = self.now  # clocks may step back a little; time here never does
        settle, grace, hold, blind = self._settle, self._grace, self._hold, self._blind_timer
        after = self._after_blind
        if not (
            self._windows
            or (settle and settle[0][0] <= now)
            or (grace and grace[0][0] <= now)
            or (hold and hold[0][0] <= now)
            or (blind and blind[0][0] <= now)
            or (after and after[0][0] <= now)
        ):
            self.now = now  # the common case in a burst: nothing due yet
            return
        queues = (settle, grace, hold, blind, after)
        while True:
            best: deque[tuple[float, str, float]] | None = None
            for q in queues:
                if q and q[0][0] <= now and (best is None or q[0][0] < best[0][0]):
                    best = q
            wdue = self._next_window_change()
            if best is None and (wdue is None or wdue > now):
                break
            if best is None or (wdue is not None and wdue <= best[0][0]):
                assert wdue is not None
                self.now = max(self.now, wdue)
                self._sync_windows()
                continue
            if best is settle:
                # drain settle timers in one tight loop up to the next other timer (100k in a burst)
                others = [q[0][0] for q in queues[1:] if q]
                self._drain_settle(min([now, *others, *([wdue] if wdue is not None else [])]))
                continue
            if best is after:
                self._judge_after_blind()
                continue
            due, key, stamp = best.popleft()
            self.now = max(self.now, due)
            if best is self._grace:
                inc = self.by_id.get(key)
                if inc is not None and inc.grace_from == stamp:
                    self._grace_check(inc)
            elif best is self._hold:
                inc = self.by_id.get(key)
                if inc is not None and inc.clear_since == stamp:
                    self._resolve(inc)
            elif self.blind is not None and self.blind.clear_since == stamp:
                self._end_blind()
        self.now = now

    def _drain_settle(self, limit: float) -> None:
        """Judge every target whose settle period ends by ``limit``, in order.

        Most of a burst is already attached to the outage its root walk leads to (the root's own
        walk over its subtree took it), so that case is checked here without a call to ``_evaluate``;
        the clock is moved only where a decision is taken, and to the last due time at the end.
        """
        settle, down, ignored, evaluate = self._settle, self.down, self._ignored, self._evaluate
        member, incidents, basis, topo_root = self.member, self.incidents, self.basis, self._topo_root
        parents, root_cache = self.topo.parents, self._root_cache
        last = self.now
        while settle and settle[0][0] <= limit:
            due, key, stamp = settle.popleft()
            last = due
            if down.get(key) == stamp and key not in ignored:
                m = member.get(key)
                if m is not None and m != key:
                    # is m still what _topo_root(key) gives? (its cache inlined: the common case)
                    ps = parents[key]
                    if ps and ps[0] in down and (len(ps) == 1 or all(p in down for p in ps)):
                        root = root_cache.get(ps[0]) or topo_root(key)
                        if root == m and basis[incidents[m].id] == "outage":
                            continue  # nothing to decide
                if due > self.now:
                    self.now = due
                evaluate(key)
        if last > self.now:
            self.now = last

    def _grace_at(self, due: float, inc: Incident) -> None:
        """One more grace check of ``inc`` at ``due`` (kept in order; no later than now + grace, so the
        FIFO appends elsewhere stay ordered)."""
        assert inc.grace_from is not None
        entry = (due, inc.id, inc.grace_from)
        q = self._grace
        i = bisect_left(q, entry)
        if i == len(q) or q[i] != entry:
            q.insert(i, entry)

    def _parent_back(self, tid: str) -> float | None:
        """Since when ``tid``'s own parent (the first of its uplinks back) answers; None while all are down."""
        down, back = self.down, self.back
        since: float | None = None
        for p in self.topo.parents[tid]:
            if p not in down:
                b = back.get(p, -_INF)
                if since is None or b < since:
                    since = b
        return since

    def _grace_check(self, inc: Incident) -> None:
        """The root is back: what is still down once its OWN parent has been back for ``grace`` is judged
        again, on its own.

        After a tower outage the APs boot a few minutes later and their CPEs re-associate a few minutes
        after that; counted from the root's return, those slow ones became singles though nothing was
        wrong with them (scenario tower_slow_recovery). A member whose parent is still down stays
        (explained by it; its grace starts when that parent is back, see ``_came_back``); the others
        are checked again when the earliest of their periods ends.
        """
        start = inc.grace_from
        assert start is not None
        grace, now = self.s.grace, self.now
        rest: list[str] = []
        wait = _INF
        for t in sorted(inc.members, key=self.topo.sort_key):
            back = self._parent_back(t)
            if back is None:
                continue  # its parent is still down: explained by it
            due = max(start, back) + grace
            if due <= now:
                rest.append(t)
            elif due < wait:
                wait = due
        if wait < _INF:
            self._grace_at(wait, inc)
        if len(rest) < len(inc.members):
            if rest:
                self._judge_again(inc, rest)
            return
        self._grace_expired(inc)

    def _grace_expired(self, inc: Incident) -> None:
        """Targets still down after the root came back: each is judged again, on its own."""
        inc.grace_from = None
        self.changed.add(inc.id)
        self._judge_again(inc, sorted(inc.members, key=self.topo.sort_key))
        self._check_clear(inc)

    def _judge_again(self, inc: Incident, rest: list[str]) -> None:
        """Detach ``rest`` (still down, grace over) from ``inc`` and judge each again, on its own."""
        lossy_over = self.basis[inc.id] == "degraded"  # a lossy link's incident: what failed together stays so
        if rest and lossy_over and self._stays_mass(inc, rest):
            return
        for t in rest:
            del self.member[t]
            inc.members.discard(t)
            self.ever[inc.id].discard(t)
            self.member_log.append((inc.id, t, DROP))
        if rest:
            self._touch(inc)
        parents, down = self.topo.parents, self.down
        for t in rest:
            ps = parents[t]
            if not ps or not all(p in down for p in ps):
                self._unexplained.add(t)  # no longer held by the recovered root
        if lossy_over:
            self._together(rest)
        else:
            # failed well before the root was confirmed (more than an interval before its settle): an
            # independent failure the outage took over, not the root's straggler (those are singles)
            before = inc.opened_at - self.s.settle - self.s.interval
            self._together([t for t in rest if self.down.get(t, _INF) < before])
        for t in rest:
            if t not in self.member:  # an earlier one may have gathered it already
                self._evaluate(t)

    # ---------------------------------------------------------------- judged afresh (see together.py)

    def _mass_groups(self, rest: Sequence[str], answers: Callable[[str], bool]) -> list[tuple[str, list[str]]]:
        topo, down, s = self.topo, self.down, self.s
        eps = [t for t in rest if t in topo.endpoint and t in down and self._topo_root(t) == t]
        if len(eps) < s.min_endpoints:
            return []
        return failed_together(eps, down, topo.ancestors, answers, topo.endpoints_below,
                               k=s.min_endpoints, share=s.min_share, window=s.window)

    def _together(self, rest: Sequence[str]) -> None:
        """Endpoints a blindness or a lossy link's incident no longer explains that failed together
        below a node that answers: one suspected incident there (or the suspected one open there),
        not a single each (issue 19). Nothing opens while blind (its end judges them again).
        Grouped per cause as rule 13 groups them: ONUs that reported dying gasp are a ``power``
        incident there, those that reported LOS an ``outage`` (a fibre cut), the rest suspected."""
        if self.blind is not None:
            return
        down, vantage, causes = self.down, self._vantage, self.cause
        parts: list[tuple[Kind, Sequence[str]]] = [("suspected", rest)]
        if causes:
            parts = [
                ("suspected", [t for t in rest if causes.get(t) not in (DYING_GASP, LOS)]),
                ("power", [t for t in rest if causes.get(t) == DYING_GASP]),
                ("outage", [t for t in rest if causes.get(t) == LOS]),
            ]
        for kind, part in parts:
            for node, group in self._mass_groups(part, lambda a: a not in down and a not in vantage):
                inc = self.incidents.get(node)
                if inc is None:
                    inc = self._open(node, kind)
                    inc.was_outage = kind == "outage"  # a fibre cut at a node that answers: a mass incident
                elif self.basis[inc.id] != kind or (kind == "outage" and not inc.was_outage):
                    continue  # judged one by one, as before
                self._absorb(inc, group)

    def _stays_mass(self, inc: Incident, rest: list[str]) -> bool:
        """A lossy link's incident whose loss is over while K of its endpoints that failed together
        below its (answering) node are still down: it goes on as a suspected incident there (same id,
        kind announced) instead of a single each; the others are judged again. True if so."""
        root = inc.root
        if root in self.down:
            return False
        groups = self._mass_groups(rest, lambda a: a == root)
        if not groups:
            return False
        kept = set(groups[0][1])
        self.basis[inc.id] = "suspected"
        self._set_kind(inc, "planned" if inc.kind == "planned" else "suspected")
        inc.grace_from = None
        self.changed.add(inc.id)
        self._judge_again(inc, [t for t in rest if t not in kept])
        return True

    # ---------------------------------------------------------------- decisions

    def _topo_root(self, tid: str) -> str:
        """Walk up while every parent is down (following the first parent): the failure's origin.

        Siblings share the answer for their parent, cached until the next state change.
        """
        ps = self.topo.parents[tid]
        if not ps:
            return tid
        down = self.down
        for p in ps:
            if p not in down:
                return tid
        cache = self._root_cache
        root = cache.get(ps[0])
        if root is None:
            root = cache[ps[0]] = self._walk_up(ps[0])
        return root

    def _walk_up(self, tid: str) -> str:
        parents, down = self.topo.parents, self.down
        cur = tid
        while True:
            ps = parents[cur]
            if not ps:
                return cur
            for p in ps:
                if p not in down:
                    return cur
            cur = ps[0]

    def _desired(self, tid: str) -> tuple[str, Kind]:  # noqa: C901 - one decision table of the rules
        topo = self.topo
        root = self._topo_root(tid)
        if (self.lossy or self._fading) and not (root == tid and self.cause.get(tid) in (DYING_GASP, LOS)):
            # (an ONU whose OLT reports dying gasp or LOS failed for that reason, whatever the loss on
            # the links above: the OLT's table answered; scenario power_cut_beyond_rain_fade)
            top = self._loss_top(root)
            if top is not None:
                return top, "degraded"
        if root != tid or tid not in topo.endpoint:
            return root, "outage"
        since = self.down[tid]
        cause = self.cause.get(tid) if self.cause else None
        for a in topo.ancestors[tid]:
            inc = self.incidents.get(a)
            if inc is None or a in self.down:
                continue
            basis = self.basis[inc.id]
            if basis == "suspected":
                return a, "suspected"  # an open mass incident above takes it
            if cause is not None and (
                (basis == "power" and cause == DYING_GASP) or (basis == "outage" and cause == LOS and inc.was_outage)
            ):
                return a, basis  # an open power cut, or fibre cut at an answering port, takes the same cause
            if basis == "outage" and self.member.get(tid) == a:
                # taken while its node was down (a flap shorter than the settle period): the node
                # failed, so the incident stays a mass incident with it until its grace ends
                return a, "outage"
            if basis == "outage" and inc.grace_from is not None and since <= inc.grace_from + self.s.interval:
                # it failed while that root was down (or was confirmed just after it came back):
                # part of that outage until its grace period ends, not an independent failure
                return a, "outage"
        self._prune_window()
        if cause is not None and cause in (DYING_GASP, LOS):
            node = self._cause_mass(tid, cause)
            if node is not None:
                return node, "power" if cause == DYING_GASP else "outage"
            if cause == DYING_GASP:
                return tid, "power"  # the customer's own power: no network failure
        k, share = self.s.min_endpoints, self.s.min_share
        rc, below = self._recent_count, topo.endpoints_below
        # rc counts every endpoint failed inside W: a cheap upper bound; the exact count is needed
        # only where that bound already meets the rule
        # (with the burst rule on, the share is no bound: a burst under a big node may be far below P)
        bursts = self.s.burst_odds > 0
        nodes = [
            a for a in topo.ancestors[tid]
            if rc[a] >= k and a not in self.down and a not in self._vantage
            and (bursts or rc[a] * 100.0 >= share * below[a])
        ]
        if not nodes:
            return tid, "single"
        counts = self._unexplained_counts(nodes)
        choice: str | None = None
        self._burst = None
        for a in nodes:
            n = counts[a]
            if n < k:
                continue
            burst = None
            if n * 100.0 < share * below[a]:
                if not bursts:
                    continue
                # under P: a mass incident only if that many independent failures are improbable
                burst = self.rates.judge(a, n, self.s.window, self.now)
                if burst.odds >= self.s.burst_odds or not self._burst_beyond(a, n, choice, counts):
                    continue
            # the deepest node meeting the rule, raised only to a node that explains more failures
            if choice is None or n > counts[choice]:
                choice = a
                self._burst = burst
        if choice is not None:
            return choice, "suspected"
        return tid, "single"

    def _cause_mass(self, tid: str, cause: str) -> str | None:
        """The node a failure with ``cause`` (dying gasp or LOS) is a mass event of, or None.

        K and P over the failures inside W with the *same* cause below each answering node above
        ``tid`` that no open incident explains, the deepest node meeting them, raised only to a node
        explaining more (rule 4's choice). Counted per cause, because a power cut in half an OLT's
        area and a fibre cut on one of its ports at the same time are two causes: counted together
        they were one suspected incident that sent a crew to a blackout and told nobody about the cut.
        """
        topo, down, member, causes = self.topo, self.down, self.member, self.cause
        parents, ancestors, below = topo.parents, topo.ancestors, topo.endpoints_below
        k, share = self.s.min_endpoints, self.s.min_share
        above = [a for a in ancestors[tid] if a not in down and a not in self._vantage]
        if not above:
            return None
        wanted = set(above)
        counts = dict.fromkeys(above, 0)
        for t in self._in_window:
            if causes.get(t) != cause:
                continue
            key = member.get(t)
            if (key is not None and key != t) or all(p in down for p in parents[t]):
                continue  # explained: by an incident above it, or by a node down above it
            for a in ancestors[t]:
                if a in wanted:
                    counts[a] += 1
        choice: str | None = None
        for a in above:
            n = counts[a]
            if n >= k and n * 100.0 >= share * below[a] and (choice is None or n > counts[choice]):
                choice = a
        return choice

    def _burst_beyond(self, node: str, n: int, deeper: str | None, counts: Mapping[str, int]) -> bool:
        """A burst at ``node`` above the ``deeper`` node already chosen must stand without that group.

        The deeper group is one cause (its own suspected incident), so it counts as one failure: four
        of an AP's six CPEs plus one churn CPE elsewhere are two events below the core, not five
        improbable independent ones (the bundled demo told the churn subscriber of a core failure).
        """
        events = self._independent_events(node, deeper)
        return self.rates.judge(node, min(n, events), self.s.window, self.now).odds < self.s.burst_odds

    def _independent_events(self, node: str, deeper: str | None) -> int:
        """Unexplained failures below ``node`` inside W, each group below it meeting K and P counted once.

        Whatever endpoint is judged first: one CPE elsewhere judged before three of ap-3's four had
        their own group chosen must not make them four independent failures below the core.
        """
        k, share, below = self.s.min_endpoints, self.s.min_share, self.topo.endpoints_below
        parents, ancestors, down, member = self.topo.parents, self.topo.ancestors, self.down, self.member
        causes = self.cause
        failed: list[tuple[str, ...]] = []
        cnt: dict[str, int] = {}
        for t in self._in_window:
            anc = ancestors[t]
            if node not in anc:
                continue
            key = member.get(t)
            if (key is not None and key != t) or all(p in down for p in parents[t]) or causes.get(t) == DYING_GASP:
                continue
            inner = anc[: anc.index(node)]
            failed.append(inner)
            for a in inner:
                cnt[a] = cnt.get(a, 0) + 1
        groups: set[str] = set()
        singles = 0
        for inner in failed:
            g = deeper if deeper in inner else next(
                (a for a in inner if a not in down and cnt[a] >= k and cnt[a] * 100.0 >= share * below[a]), None,
            )
            if g is None:
                singles += 1
            else:
                groups.add(g)
        return singles + len(groups)

    def _unexplained_counts(self, nodes: list[str]) -> dict[str, int]:
        """Endpoints failed inside W below each of ``nodes`` that no open incident explains yet.

        An endpoint behind a down node, or attached to an outage or suspected incident, is already
        explained: counted toward a mass incident higher up, a tower outage plus one churn CPE would
        make half of the core's customers "fail together" (scenario outage_explains_mass). So is one
        that reported dying gasp: its power, not the network (``_cause_mass``).
        """
        counts = {a: self._recent_count[a] for a in nodes}
        wanted = counts.keys()
        parents, ancestors, down, member = self.topo.parents, self.topo.ancestors, self.down, self.member
        causes = self.cause
        for t in self._in_window:
            key = member.get(t)
            if (key is not None and key != t) or all(p in down for p in parents[t]) or (
                    causes and causes.get(t) == DYING_GASP):
                for a in wanted & set(ancestors[t]):
                    counts[a] -= 1
        return counts

    def _evaluate(self, tid: str) -> None:  # noqa: C901 - one decision table of the rules
        if self.blind is not None or tid in self._vantage or tid not in self.down:
            return
        root, basis = self._desired(tid)
        if root in self._vantage:
            return
        if basis == "outage" and root in self.lossy and self.now - self.down[root] < self.s.degraded_settle:
            basis = "degraded"  # its last answers showed loss: an outage only once it stays down
            if tid == root:
                self._settle.append((self.now + self.s.settle, tid, self.down[tid]))  # judge it again then
        inc = self.incidents.get(root)
        if inc is None:
            inc = self._open_degraded(root) if basis == "degraded" else self._open(root, basis)
            if basis == "outage" and root in self.down:
                self._absorb(inc, self._down_subtree(root))
            elif basis == "outage":
                self._fibre_cut(inc)  # K and P of the ONUs below an answering port report LOS
            elif basis == "suspected":
                if self._burst is not None and self._burst.node == root:
                    inc.detail = self._burst.describe()  # the learned rate and the odds, for staff and replay
                self._absorb(inc, self._mass_members(root))
            elif basis == "power" and root not in self.topo.endpoint:
                self._absorb(inc, self._mass_members(root, DYING_GASP))
        elif basis == "outage" and self.basis[inc.id] in MASS and root in self.down:
            self._upgrade(inc)
        elif basis == "outage" and self.basis[inc.id] == "power" and root not in self.down:
            # a fibre cut where a power cut is open at the same node (ONUs directly below an OLT: the
            # two causes have one node): one incident, an outage, since the fibre needs the crew
            self.basis[inc.id] = "outage"
            self._set_kind(inc, "planned" if inc.kind == "planned" else "outage")
            self._fibre_cut(inc)
        elif basis == "outage" and tid == root and self.basis[inc.id] == "degraded":
            self._upgrade_degraded(inc)  # the lossy link really stopped: an outage now
        elif tid == root and basis == "outage" and self.member.get(tid) != root:
            self._absorb(inc, self._down_subtree(root))  # the root failed again within its hold-down
        if basis == "degraded":
            self._attach_lossy(inc, tid)
            return
        if self.member.get(tid) == root:
            return  # already attached (typically by the root's own walk over its subtree)
        if tid in self.topo.endpoint:
            self._absorb(inc, (tid,))
        elif tid != root:
            self._absorb(inc, self._down_subtree(tid))  # a node below the root, with what it explains

    def _down_subtree(self, node: str) -> list[str]:
        """``node`` and every down target below whose path (first parent, all parents down) leads here."""
        info, down = self.topo.info, self.down
        out = [node]
        frontier = [node]
        while frontier:
            nxt: list[str] = []
            for n in frontier:
                for c in info[n][1]:
                    if c in down:
                        ps, kids, _, _ = info[c]
                        if ps[0] == n and (len(ps) == 1 or all(p in down for p in ps)):
                            out.append(c)
                            if kids:
                                nxt.append(c)
            frontier = nxt
        return out

    def _fibre_cut(self, inc: Incident) -> None:
        """An outage at an answering node for the LOS failures below it: a mass incident (``was_outage``:
        one incident while K of its endpoints are down; fewer, and the rest are judged again after
        ``grace``), the ONUs reporting LOS inside W attached."""
        inc.was_outage = True
        self.changed.add(inc.id)
        self._absorb(inc, self._mass_members(inc.root, LOS))

    def _mass_members(self, node: str, cause: str | None = None) -> list[str]:
        """Endpoints below ``node`` that failed inside W (alone, or as a single), or sit in a mass incident
        further down; not those an outage holds. ``cause``: only those reporting it (and a power
        incident's further down); None: only those not reporting dying gasp (their power)."""
        out = []
        causes = self.cause
        below: Kind = "suspected" if cause is None else "power" if cause == DYING_GASP else "outage"
        for t in self.topo.descendants(node):
            if t in self.down and t in self.topo.endpoint and t not in self._ignored and self._topo_root(t) == t:
                why = causes.get(t) if causes else None
                if (why != cause) if cause is not None else (why == DYING_GASP):
                    continue
                key = self.member.get(t)
                if key is None or key == t:
                    if t in self._in_window:
                        out.append(t)
                elif below != "outage" and self.basis[self.incidents[key].id] == below:
                    out.append(t)  # held by an outage: explained there, it stays
        return out

    def _absorb(self, inc: Incident, targets: Sequence[str]) -> None:
        """Attach (distinct) targets to ``inc``; incidents below that lose their root or all members merge into it."""
        member, incidents = self.member, self.incidents
        donors: dict[str, list[str]] = {}
        added = False
        log = self.member_log
        ever = self.ever[inc.id]
        unexplained = self._unexplained
        if member.keys().isdisjoint(targets):
            # nobody attached anywhere yet (an outage opening over 100k targets): set operations
            member.update(zip(targets, repeat(inc.root)))
            inc.members.update(targets)
            if unexplained:  # explained now: no longer counts toward blindness
                unexplained.difference_update(unexplained.intersection(inc.members))
            ever.update(targets)
            log.append((inc.id, tuple(targets), ADD))
            if self._ignored:
                self._unleave(targets)
            added = bool(targets)
            targets = ()
        for t in targets:
            key = member.get(t)
            if key == inc.root:
                continue
            if key is not None:
                old = incidents[key]
                old.members.discard(t)
                self.ever[old.id].discard(t)
                log.append((old.id, t, DROP))
                donors.setdefault(key, []).append(t)
            member[t] = inc.root
            inc.members.add(t)
            unexplained.discard(t)
            ever.add(t)
            log.append((inc.id, t, ADD))
            if t in self._ignored:
                self._unleave((t,))
            added = True
        if not added:
            return
        self._touch(inc)
        self._keep_open(inc)
        ancestors = self.topo.ancestors
        for key in sorted(donors, key=lambda k: incidents[k].seq):
            old = incidents[key]
            below = inc.root in ancestors.get(old.root, ())
            if below and (old.root in donors[key] or not old.members):
                self._merge(old, inc, donors[key])
            else:
                self._shrunk(old)
        if self.lossy or self._fading:
            self._fold_lossy_roots(inc)

    def _unleave(self, targets: Iterable[str]) -> None:
        """Targets a staff resolve left alone are attached again: no longer left alone, also after a
        restart (their ``down = 2`` row on the resolved incident is cleared), should they be dropped
        again without a change of state (an incident folded into a blindness)."""
        ignored, log = self._ignored, self.member_log
        for t in targets:
            left_by = ignored.pop(t, None)
            if left_by is not None:
                log.append((left_by, t, RECOVERED))

    def _merge(self, child: Incident, into: Incident, moved: list[str]) -> None:
        self._render_pending(child)
        rest = sorted(child.members, key=self.topo.sort_key)
        for t in rest:
            self.member[t] = into.root
            into.members.add(t)
            self.member_log.append((child.id, t, DROP))
            self.member_log.append((into.id, t, ADD))
        for t in sorted(self.ever[child.id] - child.members, key=self.topo.sort_key):
            self.member_log.append((child.id, t, DROP))
            self.member_log.append((into.id, t, ADD))
            self.member_log.append((into.id, t, RECOVERED))
        self.ever[into.id] |= self.ever[child.id]
        eps, custs, nodes = self._lists(set(moved) | child.members)
        child.members.clear()
        self._close(child)
        self._queue.append(
            IncidentEvent(self.now, "merged", child.id, child.kind, child.root, eps, custs, nodes, into=into.id)
        )
        self._touch(into)

    def _open(self, root: str, basis: Kind) -> Incident:
        seq = self.next_seq
        self.next_seq += 1
        kind: Kind = "planned" if basis != "blind" and self._is_covered(root) else basis
        inc = Incident(id=incident_id(seq), seq=seq, kind=kind, root=root, opened_at=self.now)
        inc.last_update = self.now
        self.by_id[inc.id] = inc
        self.ever[inc.id] = set()
        self.basis[inc.id] = basis
        if basis != "blind":
            self.incidents[root] = inc
        self.changed.add(inc.id)
        self._queue.append(inc)
        return inc

    def _close(self, inc: Incident) -> None:
        if self.incidents.get(inc.root) is inc:
            del self.incidents[inc.root]
        del self.by_id[inc.id]
        self.ever.pop(inc.id, None)
        self.basis.pop(inc.id, None)
        self._dirty.discard(inc.id)
        self._forced.discard(inc.id)
        self.changed.add(inc.id)

    def _resolve(self, inc: Incident) -> None:
        self._render_pending(inc)
        for t in sorted(inc.members, key=self.topo.sort_key):
            del self.member[t]
            self.member_log.append((inc.id, t, RECOVERED))
        inc.members.clear()
        eps, custs, nodes = self._lists(self.ever[inc.id])
        self._close(inc)
        self._queue.append(IncidentEvent(self.now, "resolved", inc.id, inc.kind, inc.root, eps, custs, nodes))
        if inc.kind == "single":
            self.rates.add(inc.opened_at, inc.root)  # an independent failure: what the burst rule learns from

    def _touch(self, inc: Incident) -> None:
        if inc.pending_since is None:
            inc.pending_since = self.now
            self._dirty.add(inc.id)
            self.changed.add(inc.id)  # persisted: a restart must still announce the change

    def _set_kind(self, inc: Incident, kind: Kind) -> None:
        if inc.kind != kind:
            inc.kind = kind
            self._touch(inc)
            self._forced.add(inc.id)
            self.changed.add(inc.id)

    # ---------------------------------------------------------------- lossy links (see degraded.py)

    def restore_loss(self, last_answers: Mapping[str, tuple[float, str]]) -> None:
        """Before ``restore``: nodes down or degraded whose last answers (ts, reason) showed loss."""
        for t, (ts, reason) in sorted(last_answers.items()):
            if t in self.topo and shows_loss(reason):
                self.lossy[t] = ts
                self._loss_why[t] = reason

    def _lossy_rejudge(self) -> list[tuple[float, str, float]]:
        """On restore: lossy nodes down at the root of their degraded incident are judged again every
        settle period until they have been down ``degraded_settle`` (see ``_evaluate``): resume that
        chain where it would be without the restart (the same float steps, so the same times)."""
        out = []
        for t, since in self.down.items():
            inc = self.incidents.get(t)
            if inc is not None and t in self.lossy and self.member.get(t) == t and self.basis[inc.id] == "degraded":
                due = since + self.s.settle
                while due < self.now:
                    due += self.s.settle
                out.append((due, t, since))
        return out

    def _loss_changed(self, c: StateChange) -> None:
        """A node's own polls started or stopped showing loss (its DEGRADED state, by loss)."""
        tid, lossy = c.target, self.lossy
        inc = self.incidents.get(tid)
        if c.new is State.DEGRADED and shows_loss(c.reason):
            if tid in lossy:
                return
            lossy[tid] = c.ts
            self._loss_why[tid] = c.reason
            self._fading.pop(tid, None)
            if inc is not None and self.basis[inc.id] != "power":
                self._keep_open(inc)  # the loss is back: no grace, no hold-down while it lasts (a power cut's aside)
            self._fold_below(tid)
        elif lossy.pop(tid, None) is not None and inc is not None and tid not in self.down:
            self._shrunk(inc)  # loss over: grace for what is still down below, then the hold-down
            if self.basis[inc.id] == "degraded" and inc.grace_from is not None:
                self._fading[tid] = inc.grace_from

    def _open_degraded(self, node: str) -> Incident:
        """A ``degraded`` incident at a lossy node, saying in its detail what its polls show."""
        inc = self._open(node, "degraded")
        since = self.lossy.get(node)
        if since is not None:
            why = self._loss_why.get(node, "loss").removeprefix("answering again but ")
            inc.detail = f"lossy link: {node} answering with {why} since {format_ts(since)}; the failures below are its"
        return inc

    def _loss_top(self, root: str) -> str | None:
        fading = self._fading
        for a in [a for a, since in fading.items() if (i := self.incidents.get(a)) is None or i.grace_from != since]:
            del fading[a]  # its grace period ended or the incident closed
        return loss_top(self.topo.ancestors.get(root, ()), self.lossy, fading)

    def _attach_lossy(self, inc: Incident, tid: str) -> None:
        """A failure below a lossy node joins its incident, with the down subtree it explains."""
        if self.member.get(tid) == inc.root:
            return
        origin = self._topo_root(tid)
        targets = (tid,) if self.member.get(origin) == inc.root else self._down_subtree(origin)
        self._absorb(inc, targets)
        self._unexplained.difference_update(targets)  # explained by the lossy link (not blindness)

    def _upgrade_degraded(self, inc: Incident) -> None:
        """The lossy node itself stayed down for its settle period: the link stopped, same incident."""
        self.basis[inc.id] = "outage"
        self._fading.pop(inc.root, None)
        self.changed.add(inc.id)
        self._set_kind(inc, "planned" if inc.kind == "planned" else "outage")
        self._absorb(inc, self._down_subtree(inc.root))

    def _fold_lossy_roots(self, inc: Incident) -> None:
        """A lossy node attached to ``inc``, or below the root of an outage or degraded incident ``inc``
        (down or lossy itself: what fails below is its failure, and loss adds up along the path), no
        longer explains anything itself. Its degraded incident, members or not, is folded into ``inc``
        (as rule 3 folds incidents below a newly found root), and so is its outage (a lossy link that
        stopped for a while below a loss confirmed later: scenario rain_fade_outage_below); not into a
        suspected one (a mass event above a rain fade is judged on its own)."""
        incidents, ancestors = self.incidents, self.topo.ancestors
        above = self.basis[inc.id] in ("outage", "degraded")
        for node in sorted({*self.lossy, *self._fading}, key=self.topo.sort_key):
            old = incidents.get(node)
            if (
                old is not None and old is not inc and self.basis[old.id] in ("degraded", "outage")
                and (self.member.get(node) == inc.root or (above and inc.root in ancestors.get(node, ())))
            ):
                self._merge(old, inc, [])

    def _fold_below(self, node: str) -> None:
        """Incidents opened below a node just before its loss was confirmed are its: merge them in.

        A loss is confirmed after ``degraded_after`` polls in a row that answer with loss (3 by
        default), and a poll lost whole starts that count again, while a target beyond it can be
        confirmed down, settled and judged earlier; incidents opened below within ``settle +
        3 × interval + hold_down`` are folded into the node's ``degraded`` incident (``merged``,
        ``into`` it), as blindness folds its early ones (a flicker's single waits out its hold-down).
        """
        if self.blind is not None:
            return
        top = self._loss_top(node) or node
        horizon = self.now - self.s.settle - 3 * self.s.interval - self.s.hold_down
        ancestors = self.topo.ancestors
        recent = [
            i for i in self.incidents.values()
            if i.opened_at >= horizon and i.root != top and top in ancestors.get(i.root, ())
            and self.basis[i.id] in ("single", "outage", "suspected", "degraded")
        ]
        if not recent:
            return
        into = self.incidents.get(top) or self._open_degraded(top)
        for old in sorted(recent, key=lambda i: i.seq):
            if old.id not in self.by_id:
                continue  # merged already by an earlier one's move
            moved = sorted(old.members, key=self.topo.sort_key)
            self._absorb(into, moved)
            self._unexplained.difference_update(moved)
            if old.id in self.by_id:
                self._merge(old, into, [])
        self._check_clear(into)

    # ---------------------------------------------------------------- blindness

    def _check_blind(self) -> None:
        cause = self._blind_cause()
        blind = self.blind
        if cause is not None:
            if blind is None:
                self.blind = self._open(cause, "blind")
                self._fold_into_blind(self.blind)
            elif blind.clear_since is not None:
                blind.clear_since = None  # the cause is back: recovery starts over once it clears
                self.changed.add(blind.id)
            return
        if blind is not None and blind.clear_since is None:
            blind.clear_since = self.now
            self.changed.add(blind.id)  # persisted: a restart must not end the blindness later
            self._blind_timer.append((self.now + self.s.blind_recovery, blind.id, self.now))

    def _fold_into_blind(self, blind: Incident) -> None:
        """Incidents opened shortly before the blindness was declared are explained by it: merge them in.

        Targets that lose connectivity together are confirmed up to one poll interval apart (plus
        differences in poll duration), so the vantage node may be confirmed after the settle period
        of the first endpoints has opened incidents. Those opened within ``settle + interval`` of now
        are folded into the blind incident (``merged``, into it; it attaches no one); what is still
        down when the blindness ends is judged afresh.
        """
        horizon = self.now - self.s.settle - self.s.interval
        for inc in sorted(self.incidents.values(), key=lambda i: i.seq):
            if inc.opened_at < horizon:
                continue
            self._render_pending(inc)
            parents, down = self.topo.parents, self.down
            for t in sorted(inc.members, key=self.topo.sort_key):
                del self.member[t]
                self.member_log.append((inc.id, t, DROP))
                if not all(p in down for p in parents[t]):
                    self._unexplained.add(t)  # unexplained again: judged afresh when the blindness ends
            eps, custs, nodes = self._lists(self.ever[inc.id])
            inc.members.clear()
            self._close(inc)
            self._queue.append(
                IncidentEvent(self.now, "merged", inc.id, inc.kind, inc.root, eps, custs, nodes, into=blind.id)
            )

    def _blind_cause(self) -> str | None:
        """Why the monitor cannot trust what it sees now, or None.

        * a vantage node (the daemon's own uplink) is down;
        * nothing answers (no vantage configured): every target is down, every top-level node
          confirmed within ``settle + interval``, so it all failed at once; kept while all stay down;
        * its view is broken everywhere: every top-level node (every branch hangs off one) is down or
          lossy (DEGRADED), and more than ``blind_share`` (at least ``blind_min``) of all targets are
          down or lossy and not explained by an open incident, and no node above any failure
          answers cleanly (a node that answers proves the path to it works): failures and
          loss everywhere at once, as the monitor's own link degrading shows. Declared only then;
          kept while the tops and the share hold.

        A share of failing endpoints below nodes that answer is never blindness (three towns dark
        on mains power while their towers answer on battery: suspected incidents, issue 19).
        """
        down = self.down
        for v in self.s.vantage:
            if v in down:
                return v
        blind = self.blind
        if not self._vantage and len(down) == self._n_targets and (blind is not None or self._at_once()):
            return BLIND_ROOT
        bad = self.degraded
        if not self._tops_bad():
            return None
        n = len(down) + len(bad) - len(self.member)  # attached targets are all down or degraded
        if n < self.s.blind_min or n <= self.s.blind_share * self._n_targets:
            return None
        if blind is not None and blind.root == BLIND_ROOT:
            return BLIND_ROOT
        ancestors = self.topo.ancestors
        for t in down:  # explained or not: a clean answer above any failure shows the path works
            for a in ancestors[t]:
                if a not in down and a not in bad:
                    return None  # something above a failure answers: the monitor sees that far
        return BLIND_ROOT

    def _tops_bad(self) -> bool:
        """Every top-level node is down or lossy: the monitor's view is broken at its very start."""
        down, bad = self.down, self.degraded
        return all(t in down or t in bad for t in self._tops)

    def _at_once(self) -> bool:
        """The top-level nodes were all confirmed down within ``settle + interval`` (with everything else)."""
        horizon = self.now - self.s.settle - self.s.interval
        return all(self.down[t] >= horizon for t in self._tops)

    def _end_blind(self) -> None:
        assert self.blind is not None
        blind, self.blind = self.blind, None
        if blind.id in self.by_id:  # staff may have closed the alert already; the blindness ends only now
            self._resolve(blind)
        self.blind_ended.append((blind.id, self.now))  # the end of the period reports exclude, either way
        # what is still down now was hidden by the blindness: judge it afresh, what failed together first;
        # but what is still coming back with the rest gets its grace first (see _recovery_due)
        rest: list[str] = []
        later: list[tuple[float, str, float]] = []
        for t in sorted(self.down, key=self.topo.sort_key):
            if t in self.member or t in self._ignored:
                continue
            due = self._recovery_due(t)
            if due is None:
                rest.append(t)
            else:
                later.append((due, t, self.down[t]))
        if later:
            merged = sorted([*self._after_blind, *later])
            self._after_blind.clear()
            self._after_blind.extend(merged)
        self._judge_afresh(rest)

    def _judge_afresh(self, rest: list[str]) -> None:
        """Targets a blindness hid, still down: what failed together first, then each on its own."""
        self._together(rest)
        for t in rest:
            if t not in self.member:
                self._evaluate(t)

    def _recovery_due(self, tid: str) -> float | None:
        """When ``tid``, still down as a blindness ends, is judged: ``grace`` after its own parent's return.

        Everything came back when the monitor's view did, but not all at once: an AP boots or
        re-associates a little later than its tower (the lab saw one back 27 ms after the blindness
        ended, judged an outage at once). Like the members of an outage whose root is back (see
        ``_grace_check``), a target below a parent that came back after it failed (the parent was
        down with it, hidden by the blindness) gets ``grace`` from that parent's return; one below
        a down parent waits for the first answering node above. None: judge it now (its parent never
        failed after it, it failed on its own, or nothing above it answers).
        """
        down, parents = self.down, self.topo.parents
        t = tid
        while (back := self._parent_back(t)) is None:
            ps = parents[t]
            if not ps:
                return None  # a top-level node: nothing above it to wait for
            t = ps[0]  # every parent down: the first one's recovery decides
        if back <= down[t]:
            return None
        due = back + self.s.grace
        return due if due > self.now else None

    def _judge_after_blind(self) -> None:
        """The grace after a blindness of the targets due now is over: judge those still down together."""
        q, down = self._after_blind, self.down
        due = q[0][0]
        self.now = max(self.now, due)
        rest: list[str] = []
        while q and q[0][0] <= due:
            _, t, since = q.popleft()
            if down.get(t) == since and t not in self.member and t not in self._ignored:
                rest.append(t)
        if self.blind is not None:
            return  # blind again: the next end judges them
        self._judge_afresh(sorted(rest, key=self.topo.sort_key))

    # ---------------------------------------------------------------- maintenance

    def _next_window_change(self) -> float | None:
        best: float | None = None
        for w in self._windows:
            edge = w.end if w.id in self._active else w.start
            if (w.id in self._active or w.end > self.now) and (best is None or edge < best):
                best = edge
        return best

    def _sync_windows(self) -> None:
        for w in self._windows:
            if w.id in self._active:
                if w.end <= self.now:
                    self._end_window(w)
            elif w.start <= self.now < w.end:
                self._active[w.id] = w
                self._covered[w.node] = self._covered.get(w.node, 0) + 1
                self.window_events.append(WindowEvent(max(w.start, self.now), w.id, w.node, "started"))

    def _end_window(self, w: Window) -> None:
        del self._active[w.id]
        n = self._covered[w.node] - 1
        if n:
            self._covered[w.node] = n
        else:
            del self._covered[w.node]
        self.window_events.append(WindowEvent(self.now, w.id, w.node, "ended"))
        for inc in sorted(self.by_id.values(), key=lambda i: i.seq):
            if inc.kind != "planned" or inc.id not in self.by_id or self._is_covered(inc.root):
                continue
            if not self._grace_due(inc) and (inc.members or inc.root in self.down):
                self._set_kind(inc, self.basis[inc.id])  # still failing after the window: a real alarm
            elif inc.members:
                self._grace_expired(inc)  # the planned failure is over: what is still down is judged afresh
            # else: all over, it resolves as planned after its hold-down (no alarm)

    def _is_covered(self, tid: str) -> bool:
        cov = self._covered
        if not cov:
            return False
        if tid in cov:
            return True
        return any(a in cov for a in self.topo.ancestors.get(tid, ()))

    # ---------------------------------------------------------------- output

    def _lists(self, targets: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        topo = self.topo
        endpoint, customer = topo.endpoint, topo.customer
        members = targets if isinstance(targets, set | frozenset) else set(targets)
        nodes = sorted(members.difference(endpoint))
        if len(members) * 8 > len(endpoint):
            # a mass incident: filtering the presorted lists beats sorting 100k strings
            eps = tuple(filter(members.__contains__, topo.sorted_endpoints))
            custs = tuple(compress(topo.sorted_customers, map(not_, map(members.isdisjoint, topo.customer_endpoints))))
            return eps, custs, tuple(nodes)
        eps_list = sorted(t for t in members if t in endpoint)
        custs_set = {customer[t] for t in eps_list if t in customer}
        return tuple(eps_list), tuple(sorted(custs_set)), tuple(nodes)

    def _render_pending(self, inc: Incident) -> None:
        """An incident opened in this tick is announced with what it held before it merged/resolved."""
        for i, item in enumerate(self._queue):
            if item is inc:
                self._queue[i] = self._render_open(inc)

    def _render_open(self, inc: Incident) -> IncidentEvent:
        eps, custs, nodes = self._lists(inc.members)
        inc.emitted = (eps, custs)
        inc.last_update = inc.opened_at
        return IncidentEvent(inc.opened_at, "opened", inc.id, inc.kind, inc.root, eps, custs, nodes, detail=inc.detail)

    def _flush(self) -> None:
        opened: set[str] = set()
        for i, item in enumerate(self._queue):
            if isinstance(item, Incident):
                self._queue[i] = self._render_open(item)
                opened.add(item.id)
        if not self._dirty:
            return
        every = self.s.update_interval
        for inc_id in sorted(self._dirty):
            inc = self.by_id.get(inc_id)
            if inc is None or inc_id in opened:
                self._dirty.discard(inc_id)
                self._forced.discard(inc_id)
                if inc is not None:
                    inc.pending_since = None
                continue
            forced = inc_id in self._forced
            since = inc.pending_since if inc.pending_since is not None else self.now
            if not forced and self.now < max(since, inc.last_update) + every:
                continue  # changes gather for an interval, then go out as one update
            self._dirty.discard(inc_id)
            self._forced.discard(inc_id)
            inc.pending_since = None
            self.changed.add(inc_id)
            eps, custs, nodes = self._lists(inc.members)
            if not forced and (eps, custs) == inc.emitted:
                continue
            inc.emitted = (eps, custs)
            inc.last_update = self.now
            self._queue.append(IncidentEvent(self.now, "updated", inc.id, inc.kind, inc.root, eps, custs, nodes))
