"""Resuming the correlation engine after a restart, in named steps (``Restoring.restore``).

The store says which incidents were open (with their basis and everyone affected), who is down and
since when, when nodes came back, what staff left alone and how a blindness stood. The engine
reconciles instead of trusting either side, so a restart (even ``kill -9``) changes nothing it
decides: the scenario tests restart the service and expect the events of the run without restarts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from monitor.correlate.blindness import Blindness
from monitor.correlate.engine_state import _INF, RECOVERED
from monitor.correlate.incidents import Incident, Kind

Timer = tuple[float, str, float]  # (due, incident id or target, stamp), as the engine's timer queues hold


class Restoring(Blindness):
    """``restore``: the store's view of the engine's state, folded in once at start."""

    def restore(
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
        self.now = max(self.now, now)
        self._restore_back(back or {})
        self._restore_down(down)
        self._restore_incidents(incidents)
        self._restore_left_down(left_down or {})
        if closed_blind is not None and self.blind is None:
            self.blind = closed_blind  # not in by_id: its alert is closed, it only ends (see _end_blind)
            self.next_seq = max(self.next_seq, closed_blind.seq + 1)
        self._restore_timers(blind_ended)
        self._restore_blindness()
        self._era += 1  # (Engine._settled)

    def _restore_back(self, back: Mapping[str, float]) -> None:
        """When each node last came back: the grace of the members below it counts from then."""
        topo = self.topo
        for t, ts in back.items():
            if t in topo.parents and topo.children[t]:
                self.back[t] = max(ts, self.back.get(t, ts))

    def _restore_down(self, down: dict[str, float]) -> None:
        """Who is down and since when; the failures inside W again; those no node down above explains."""
        topo, s = self.topo, self.s
        horizon = self.now - s.window
        self._window_from = max(self._window_from, math.nextafter(horizon, _INF))  # (_windowed: since > horizon)
        for t, since in sorted(down.items(), key=lambda kv: (kv[1], topo.order.get(kv[0], 0))):
            if t in topo.parents:
                self.down[t] = since
                if t in topo.endpoint and since > horizon:
                    self._recent.append((since, t))
                    for a in topo.ancestors[t]:
                        self._recent_count[a] += 1

    def _restore_incidents(self, incidents: Sequence[tuple[Incident, Kind, set[str]]]) -> None:
        """The open incidents, members no longer down recovered; their grace and hold-down timers."""
        grace: list[Timer] = []
        hold: list[Timer] = []
        for inc, basis, ever in sorted(incidents, key=lambda x: x[0].seq):
            self._restore_incident(inc, basis, ever, grace, hold)
        self._grace.extend(sorted(grace))
        self._hold.extend(sorted(hold))

    def _restore_incident(
        self, inc: Incident, basis: Kind, ever: set[str], grace: list[Timer], hold: list[Timer],
    ) -> None:
        topo, s = self.topo, self.s
        self.next_seq = max(self.next_seq, inc.seq + 1)
        self.by_id[inc.id] = inc
        self.ever[inc.id] = set(ever)
        self.basis[inc.id] = basis
        if basis == "blind":
            self.blind = inc
            return
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

    def _restore_left_down(self, left_down: Mapping[str, tuple[str, float]]) -> None:
        """Targets staff left alone (resolved while down) and still down since: left alone again."""
        for t, (left_by, resolved_at) in sorted(left_down.items()):
            if t in self.down and self.down[t] <= resolved_at:
                if t in self.member:  # attached again, in a store written before _unleave cleared the row
                    self.member_log.append((left_by, t, RECOVERED))
                else:
                    self._ignored[t] = left_by

    def _restore_timers(self, blind_ended: float | None) -> None:
        """Grace and hold-down for what recovered meanwhile; every unattached failure settles again
        (after the grace following a blindness that just ended, where that applies)."""
        topo, s = self.topo, self.s
        for inc in sorted(self.incidents.values(), key=lambda i: i.seq):
            quiet = inc.pending_since is None
            self._shrunk(inc)
            if quiet and self._lists(inc.members)[:2] == inc.emitted:
                # nothing to announce (as _restore_incident decides): no update pending from the restart
                # itself, or the next change went out sooner than without it (an update interval counted
                # from the restart, not from that change: rain_fade_stop_clear_tower_still_down)
                inc.pending_since = None
                self._dirty.discard(inc.id)
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

    def _restore_blindness(self) -> None:
        """A blindness whose cause cleared before the restart ends when it would have; is one on now?"""
        blind = self.blind
        if blind is not None and blind.clear_since is not None and self._blind_cause() is None:
            # its cause cleared before the restart: it ends when it would have without the restart
            self._blind_timer.append((blind.clear_since + self.s.blind_recovery, blind.id, blind.clear_since))
        self._tops_flag = self._tops_bad()
        self._check_blind()
