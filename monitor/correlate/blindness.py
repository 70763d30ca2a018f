"""Blindness in the correlation engine (rule 8): when the monitor cannot trust what it sees, one
internal ``blind`` incident and no customer incidents until it has been over ``blind_recovery``;
then what it hid is judged afresh, after the grace of what is still coming back."""

from __future__ import annotations

from monitor.correlate.engine_state import BLIND_ROOT, DROP
from monitor.correlate.incidents import Incident, IncidentEvent
from monitor.correlate.recovery import Recovery


class Blindness(Recovery):
    """Declaring a blindness, folding what it explains into it, and its end."""

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
            for t in sorted(inc.members, key=self.topo.sort_key):
                del self.member[t]
                self.member_log.append((inc.id, t, DROP))
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

    def _vantage_down(self) -> bool:
        return any(v in self.down for v in self.s.vantage)

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
