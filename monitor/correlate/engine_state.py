"""The correlation engine's state, and the incident bookkeeping every decision area shares.

``EngineState`` holds everything the engine knows (who is down, the open incidents and their members,
the timer queues, what is to be announced) and the operations on it that every rule uses: open,
attach (``_absorb``), merge, resolve and close an incident, keep it open or let it shrink toward
its grace period and hold-down, the topological root walk, and rendering the events. The decision
areas build on it, each in its own module, each using only the ones listed before it:

* ``lossy.py`` (``LossyLinks``): nodes whose polls show loss explain the failures below (rule 11);
* ``judge.py`` (``Judgement``): what a settled failure is (rules 2-5, 12, 13);
* ``recovery.py`` (``Recovery``): recoveries, grace, what is judged again (rules 6, 7);
* ``blindness.py`` (``Blindness``) and ``planned.py`` (``Maintenance``): rules 8 and 9;
* ``restore.py`` (``Restoring``): resuming after a restart;
* ``engine.py`` (``Engine``): the input (the burst hot path) and the timers.

The two calls from here up into a later area (``_is_covered``, ``_fold_lossy_roots``) are declared
for the type checker at the end of the class.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Sequence
from itertools import compress
from operator import not_
from typing import TYPE_CHECKING

from monitor.correlate.burst import Burst, FailureRates
from monitor.correlate.incidents import Incident, IncidentEvent, Kind, incident_id
from monitor.correlate.levels import WeakLevels
from monitor.correlate.maintenance import Window, WindowEvent
from monitor.correlate.settings import CorrelationSettings
from monitor.correlate.topology import Topology

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


class EngineState:
    """What the engine knows, and the incident bookkeeping shared by its decision areas."""

    def __init__(
        self, topo: Topology, settings: CorrelationSettings, *, start: float = 0.0, next_seq: int = 1
    ) -> None:
        self.topo = topo
        self.s = settings
        self.now = start
        self.next_seq = next_seq
        self.down: dict[str, float] = {}  # target -> confirmed down since
        # target -> (its stamp in ``down``, when it really went down): a DOWN that arrived after its
        # settle period would have ended (a remote poller's spool after a partition); see _real_start
        self.late: dict[str, tuple[float, float]] = {}
        self.late_changed = False  # ``late`` changed since the store last kept it (a restart resumes it)
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
        # W's start as last pruned: an endpoint down since then (its DOWN still in _recent) failed inside
        # W (``_windowed``); no set of them is kept, a burst would insert 100k strings in random order
        self._window_from = -_INF
        self._recent_count: dict[str, int] = dict.fromkeys(topo.endpoints_below, 0)
        # ancestors of endpoints gone down, not yet in _recent_count: counted when a count is read
        # (``_counts``), in one pass over a burst's shared tuples instead of one per endpoint
        self._uncounted: list[tuple[str, ...]] = []
        self._root_cache: dict[str, str] = {}  # node -> its topological root, while states hold still
        # the burst's settle shortcut (Engine._settled): _era counts everything but an endpoint going
        # down; _calm = (root, era) of an outage just opened over its root's down subtree
        self._era = 0
        self._calm: tuple[str, int] | None = None
        self._bulk = 0  # settle entries at the queue's front all members of _calm's outage (-1: not known yet)
        # a parents tuple (shared by siblings) with one parent -> that parent (Engine._settled)
        self._sole_parent = {ps: ps[0] for ps in set(topo.parents.values()) if len(ps) == 1}
        self._with_kids = frozenset(t for t, kids in topo.children.items() if kids)  # (_down_subtree)
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
        # weak levels below a PON port or AP: technician-only degraded incidents of their own (rule 14)
        self.levels = WeakLevels(self)

    # ---------------------------------------------------------------- incident bookkeeping

    def _keep_open(self, inc: Incident) -> None:
        """Something of the incident (or its root) is down again: cancel its hold-down, and its grace
        period unless that is still due (it starts again when the root is back)."""
        if inc.clear_since is not None:
            inc.clear_since = None
            self.changed.add(inc.id)
        if inc.grace_from is not None and not self._grace_due(inc):
            inc.grace_from = None
            self.changed.add(inc.id)

    def _shrunk(self, inc: Incident) -> None:
        """Fewer targets down: maybe start the grace period, maybe start the hold-down."""
        self._touch(inc)
        if inc.grace_from is None and self._grace_due(inc):
            inc.grace_from = self.now
            self._grace.append((self.now + self.s.grace, inc.id, self.now))
            self.changed.add(inc.id)
            if self.basis[inc.id] == "degraded":
                # its loss is over (rule 11): it explains the flicker below it until the grace ends, also
                # when its node came back from DOWN (as Restoring rebuilds it from grace_from)
                self._fading[inc.root] = self.now
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

    def _absorb(self, inc: Incident, targets: Sequence[str]) -> None:
        """Attach (distinct) targets to ``inc``; incidents below that lose their root or all members merge into it."""
        member, incidents = self.member, self.incidents
        donors: dict[str, list[str]] = {}
        added = False
        log = self.member_log
        ever = self.ever[inc.id]
        if not member or member.keys().isdisjoint(targets):
            # nobody attached anywhere yet (an outage opening over 100k targets): set operations
            fresh = not inc.members
            inc.members.update(targets)
            # from a set, these copy its stored hashes instead of reading each string again
            member.update(dict.fromkeys(inc.members if fresh else targets, inc.root))
            ever.update(inc.members if fresh else targets)
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

    # ---------------------------------------------------------------- the topology as it stands

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

    def _down_subtree(self, node: str) -> list[str]:
        """``node`` and every down target below whose path (first parent, all parents down) leads here."""
        info, down, sole, with_kids = self.topo.info, self.down, self.topo.sole_children, self._with_kids
        nodes = self.topo.endpoints_below  # (its keys: every target that is not an endpoint)
        # every endpoint below failed inside W and is still down (a core failure): then only the nodes
        # among the children are looked up in ``down``, not 100k endpoints in random places
        every = node in nodes and self._counts()[node] == nodes[node]
        out = [node]
        frontier = [node]
        while frontier:
            nxt: list[str] = []
            for n in frontier:
                kids = info[n][1]
                if len(sole.get(n, ())) == len(kids):
                    # each child's one parent is n (down): those down are on the path (filtered in C)
                    if every and all(map(down.__contains__, filter(nodes.__contains__, kids))):
                        out += kids
                        nxt += filter(with_kids.__contains__, kids)
                        continue
                    gone = list(filter(down.__contains__, kids))
                    out += gone
                    nxt += filter(with_kids.__contains__, gone)
                    continue
                for c in kids:
                    if c in down:
                        ps, grandkids, _, _ = info[c]
                        if ps[0] == n and (len(ps) == 1 or all(p in down for p in ps)):
                            out.append(c)
                            if grandkids:
                                nxt.append(c)
            frontier = nxt
        return out

    def _counts(self) -> dict[str, int]:
        """Endpoints failed inside W per node (``_recent_count``), with the burst's ancestors counted in."""
        uncounted = self._uncounted
        if uncounted:
            rc = self._recent_count
            groups = Counter(uncounted).items() if len(uncounted) > 16 else [(a, 1) for a in uncounted]
            for ancestors, n in groups:  # siblings share one ancestors tuple: a burst is a few hundred here
                for a in ancestors:
                    rc[a] += n
            uncounted.clear()
        return self._recent_count

    def _windowed(self, t: str) -> bool:
        """Endpoint ``t`` failed inside W and is still down (its DOWN is in ``_recent``)."""
        since = self.down.get(t)
        return since is not None and since >= self._window_from

    def _window(self) -> set[str]:
        """The endpoints failed inside W and still down (``_windowed``), each once."""
        down, start = self.down, self._window_from
        return {t for ts, t in self._recent if ts >= start and down.get(t) == ts}

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

    # ---------------------------------------------------------------- output

    def _lists(self, targets: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        topo = self.topo
        endpoint, customer = topo.endpoint, topo.customer
        members = targets if isinstance(targets, set | frozenset) else set(targets)
        nodes = sorted(members.difference(endpoint))
        if len(members) - len(nodes) == len(endpoint):
            # every endpoint (the rest of members is endpoints): a core failure
            return topo.sorted_endpoints, topo.sorted_customers, tuple(nodes)
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
        inc.last_update = inc.opened_at  # updates gather from when it was judged
        if self.late:
            inc.opened_at = self._real_start(inc)
        return IncidentEvent(inc.opened_at, "opened", inc.id, inc.kind, inc.root, eps, custs, nodes, detail=inc.detail)

    def _real_start(self, inc: Incident) -> float:
        """When an incident opened from late news really began: its root's confirmed DOWN, or (a root
        that still answers) its earliest member's, as the changes carried it; never later than now.

        Settle timers, grace and the rest still count from the news' arrival (``down``): a batch
        arriving in parts is judged once all of it is in, and nothing of it alone (test_correlate_late).
        """
        down, late = self.down, self.late
        if inc.root in down:
            who: Iterable[str] = (inc.root,)
        else:
            who = inc.members if len(inc.members) < len(late) else [t for t in late if t in inc.members]
        start = inc.opened_at
        for t in who:
            stamp = late.get(t)
            if stamp is not None and down.get(t) == stamp[0] and stamp[1] < start:
                start = stamp[1]
        return start

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

    if TYPE_CHECKING:  # defined by the areas built on this state (planned.py, lossy.py)

        def _is_covered(self, tid: str) -> bool: ...

        def _fold_lossy_roots(self, inc: Incident) -> None: ...
