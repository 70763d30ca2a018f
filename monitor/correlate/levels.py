"""Weak levels: one technician-only ``degraded`` incident per PON port or AP (issue 17, rule 14).

An ONU whose optical rx power drifted below its threshold, or a station whose signal or CCQ fell,
is confirmed DEGRADED by the state machine with reasons that name those levels
(:func:`monitor.correlate.degraded.shows_levels`). It still has service, so it is no failure: it is
never attached to an outage, a suspected incident or a single (those take DOWN targets). Its parent
(the PON port node its ONU hangs from, the AP its station is registered with) gets one ``degraded``
incident listing every weak endpoint below it with its values; endpoints join and leave it as their
levels cross the thresholds, and it resolves after ``levels_hold_down`` with none left (levels
hover around a threshold for hours: a shorter calm would reopen it all day).

Kept apart from the engine's root-keyed incidents (``Engine.incidents``): a port can have a weak-
levels incident *and* an outage or a lossy link's degraded incident at once, each about its own
cause, and none of the engine's rules for down targets (grace, mass, folding) touch these. Their
stored basis is ``levels`` (:data:`monitor.correlate.degraded.LEVELS_BASIS`), which is how delivery,
the status page and the report tell them from a lossy link's (kind ``degraded`` for both); the
service routes them to :meth:`WeakLevels.restore` after a restart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from monitor.correlate.degraded import levels_detail, shows_levels
from monitor.correlate.incidents import Incident, IncidentEvent, incident_id

if TYPE_CHECKING:
    from monitor.correlate.engine_state import EngineState

ADD, RECOVERED, LEFT_DOWN = "add", "recovered", "left_down"  # engine_state's member log operations


class WeakLevels:
    """The weak endpoints and their incidents, driven by the engine (its clock, ids, queue and store log)."""

    def __init__(self, engine: EngineState) -> None:
        self.e = engine
        self.weak: dict[str, str] = {}  # endpoint confirmed DEGRADED by its levels -> that reason
        self.open: dict[str, Incident] = {}  # parent -> its open weak-levels incident
        self.ids: set[str] = set()  # ids of those incidents (the service stores their basis as ``levels``)
        self.hold: deque[tuple[float, str, float]] = deque()  # (due, incident id, clear_since), in order
        self._left: dict[str, str] = {}  # weak endpoint -> the incident staff resolved leaving it weak

    # ------------------------------------------------------------ input (Engine.apply_many)

    def changed(self, tid: str, degraded: bool, reason: str) -> None:
        """An endpoint's confirmed state changed: weak now (DEGRADED with levels in ``reason``) or not."""
        if degraded and shows_levels(reason):
            if tid in self.weak:
                self.weak[tid] = reason
                return
            self.weak[tid] = reason
            self._join(tid)
        elif tid in self.weak:
            del self.weak[tid]
            self._left.pop(tid, None)
            self._leave(tid)

    def _parent(self, tid: str) -> str:
        ps = self.e.topo.parents.get(tid, ())
        return ps[0] if ps else tid

    def _join(self, tid: str) -> None:
        e = self.e
        parent = self._parent(tid)
        inc = self.open.get(parent)
        if inc is None:
            inc = self._open(parent)
        elif tid in inc.members:
            return
        inc.members.add(tid)
        e.ever[inc.id].add(tid)
        e.member_log.append((inc.id, tid, ADD))
        if inc.clear_since is not None:
            inc.clear_since = None  # weak again within the hold-down: the same incident goes on
            e.changed.add(inc.id)
        self._describe(inc)
        e._touch(inc)

    def _leave(self, tid: str) -> None:
        e = self.e
        inc = self.open.get(self._parent(tid))
        if inc is None or tid not in inc.members:
            return
        inc.members.discard(tid)
        e.member_log.append((inc.id, tid, RECOVERED))
        self._describe(inc)
        e._touch(inc)
        self._check_clear(inc)

    def _check_clear(self, inc: Incident) -> None:
        if not inc.members and inc.clear_since is None:
            now = self.e.now
            inc.clear_since = now
            self.hold.append((now + self.e.s.levels_hold_down, inc.id, now))
            self.e.changed.add(inc.id)

    def _open(self, parent: str) -> Incident:
        e = self.e
        seq = e.next_seq
        e.next_seq += 1
        inc = Incident(id=incident_id(seq), seq=seq, kind="degraded", root=parent, opened_at=e.now)
        inc.last_update = e.now
        e.by_id[inc.id] = inc
        e.ever[inc.id] = set()
        e.basis[inc.id] = "degraded"
        e.changed.add(inc.id)
        e._queue.append(inc)  # rendered "opened" (with its detail) at the engine's flush
        self.open[parent] = inc
        self.ids.add(inc.id)
        return inc

    def _describe(self, inc: Incident) -> None:
        """The incident's detail: each weak endpoint below its parent, its customer and its values."""
        inc.detail = levels_detail(inc.root, {t: self.weak[t] for t in inc.members if t in self.weak},
                                   self.e.topo.customer)

    # ------------------------------------------------------------ timers and staff

    def next_due(self) -> float:
        return self.hold[0][0] if self.hold else float("inf")

    def expire(self, inc_id: str, stamp: float) -> None:
        """A hold-down ended (``Engine._run_timers``): resolve the incident if it stayed clear since then."""
        inc = self.e.by_id.get(inc_id)
        if inc is not None and inc_id in self.ids and inc.clear_since == stamp and not inc.members:
            self._resolve(inc)

    def resolve(self, inc: Incident) -> None:
        """Staff resolved it: closed; its weak endpoints are left alone until their levels change."""
        e = self.e
        left = sorted(inc.members)
        for t in left:
            self._left[t] = inc.id
        self._resolve(inc)
        e.member_log.extend((inc.id, t, LEFT_DOWN) for t in left)

    def _resolve(self, inc: Incident) -> None:
        e = self.e
        e._render_pending(inc)
        for t in sorted(inc.members):
            e.member_log.append((inc.id, t, RECOVERED))
        inc.members.clear()
        eps, custs, nodes = e._lists(e.ever[inc.id])
        e._close(inc)
        self.ids.discard(inc.id)
        if self.open.get(inc.root) is inc:
            del self.open[inc.root]
        e._queue.append(IncidentEvent(e.now, "resolved", inc.id, inc.kind, inc.root, eps, custs, nodes))

    def annotate(self, events: Iterable[IncidentEvent]) -> list[IncidentEvent]:
        """Updates of weak-levels incidents carry the values too (the engine's updates carry no detail)."""
        out = []
        for ev in events:
            if ev.event == "updated" and ev.incident in self.ids and (inc := self.e.by_id.get(ev.incident)):
                ev = IncidentEvent(ev.ts, ev.event, ev.incident, ev.kind, ev.root, ev.affected_endpoints,
                                   ev.affected_customers, ev.affected_nodes, ev.into, inc.detail)
            out.append(ev)
        return out

    # ------------------------------------------------------------ restart

    def restore(self, incidents: Sequence[tuple[Incident, set[str]]], weak: Mapping[str, tuple[float, str]],
                left: Mapping[str, tuple[str, float]]) -> None:
        """Resume after a restart, after ``Engine.restore``: the open weak-levels incidents (with everyone
        they listed), and the endpoints DEGRADED now with their reasons and since when (the state-change
        log). Members no longer weak leave; weak endpoints in no incident join as if just confirmed;
        one staff resolved while weak (``left``: target -> (incident, when)) and weak since before that
        stays left alone, as without the restart."""
        e = self.e
        topo = e.topo
        self.weak.update((t, why) for t, (_, why) in sorted(weak.items())
                         if t in topo.endpoint and shows_levels(why))
        for t, (inc_id, resolved_at) in sorted(left.items()):
            if t in self.weak and weak[t][0] <= resolved_at:
                self._left[t] = inc_id
        hold: list[tuple[float, str, float]] = []
        for inc, ever in sorted(incidents, key=lambda x: x[0].seq):
            e.next_seq = max(e.next_seq, inc.seq + 1)
            e.by_id[inc.id] = inc
            e.ever[inc.id] = set(ever)
            e.basis[inc.id] = "degraded"
            self.ids.add(inc.id)
            self.open[inc.root] = inc
            if inc.pending_since is not None:
                e._dirty.add(inc.id)
            elif e._lists(inc.members)[:2] != inc.emitted:
                e._touch(inc)
            for m in sorted(inc.members):
                if m not in self.weak or self._parent(m) != inc.root:  # (a reload may have moved it)
                    inc.members.discard(m)
                    e.member_log.append((inc.id, m, RECOVERED))
                    e._touch(inc)
            self._describe(inc)
            if inc.clear_since is not None:
                hold.append((inc.clear_since + e.s.levels_hold_down, inc.id, inc.clear_since))
        self.hold.extend(sorted(hold))
        for t in sorted(self.weak, key=topo.sort_key):
            held = self.open.get(self._parent(t))
            if t not in self._left and (held is None or t not in held.members):
                self._join(t)
        for inc in sorted(self.open.values(), key=lambda i: i.seq):
            self._check_clear(inc)
