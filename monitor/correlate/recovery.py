"""Recoveries in the correlation engine (rules 6 and 7): the affected set shrinks, each member gets
its grace from its own parent's return, and what is still down after it is judged again, what
failed together first (``together.py``)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence

from monitor.correlate.engine_state import _INF, DROP, DYING_GASP, LOS, MASS, RECOVERED
from monitor.correlate.incidents import Incident, Kind
from monitor.correlate.judge import Judgement
from monitor.correlate.together import failed_together


class Recovery(Judgement):
    """A target back up, the grace periods after a root's return, and judging what is left again."""

    def _came_back(self, tid: str) -> None:
        topo, down = self.topo, self.down
        inc = self.incidents.get(tid)
        if inc is not None and tid in down and self.basis[inc.id] in MASS and inc.root not in topo.endpoint:
            self._upgrade(inc)  # its node was down for less than the settle period: it still failed
        if self._root_cache:
            self._root_cache.clear()
        since = down.pop(tid, None)
        if self.cause:
            self.cause.pop(tid, None)
        if self.late and self.late.pop(tid, None) is not None:
            self.late_changed = True  # judged or not, its real start no longer matters
        self._ignored.pop(tid, None)
        kids = topo.children[tid]
        if kids:
            self.back[tid] = self.now
        for c in kids:
            if c in down:
                key = self.member.get(c)
                if key is not None and key != c and (held := self.incidents[key]).grace_from is not None:
                    # held: not an independent failure before its grace ends, which starts now
                    self._grace_at(self.now + self.s.grace, held)
        if since is not None and since >= self._window_from and tid in topo.endpoint:  # (_windowed)
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

    def _grace_at(self, due: float, inc: Incident) -> None:
        """One more grace check of ``inc`` at ``due`` (kept in order; no later than now + grace, so the
        FIFO appends elsewhere stay ordered)."""
        assert inc.grace_from is not None
        entry = (due, inc.id, inc.grace_from)
        q = self._grace
        i = bisect_left(q, entry)
        if i == len(q) or q[i] != entry:
            q.insert(i, entry)

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
