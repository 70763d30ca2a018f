"""Several vantage points per zone (issue 14): what the core believes of a target several pollers watch.

A zone may have up to four pollers, e.g. one in the town and one in the NOC. Each reports what *it*
sees (its confirmed states, :class:`~monitor.state.StateChange`); :class:`Vantages` keeps each
poller's view of each target and combines them into the one *effective* state that correlation,
the event log and delivery get. Pure: no I/O, no clock of its own (times come with the changes, or
as ``now``); the core (:mod:`monitor.remote.core`) and ``monitor replay`` run this same code, so a
scenario file shows exactly what the core would decide.

The rule (``docs/correlation.md``, "Several vantage points"):

- A poller *votes* on a target when it is live (heard within ``pollers.silent_after``), not blind,
  and has a view of the target (it confirmed a state; after a core restart every poller is assumed
  to see what the core last concluded).
- The effective state is the best vote: UP if any voter sees the target up, else DEGRADED if any
  sees it degraded, DOWN only when every voter sees it down.
- A poller is *blind*, and its view set aside, while its declared vantage node (``vantage:`` in its
  zone: the node it sees the zone through) is down, as it sees that node itself when the node is in
  its own zone, else as the core polls it; or, while another poller of its zone is live too, while
  every target it sees is down (at least :data:`MIN_ALL_DOWN`) and no other live poller of the zone
  sees everything down too. A poller whose own uplink fails sees everything fail together; when
  another vantage point agrees that nothing answers, the zone is down as far as anyone can tell and
  correlation judges it as in single-daemon mode. With no other live poller (a zone of one poller, or
  the others silent) there is no second view to compare with, so only the declared vantage node
  makes it blind: a tower's backhaul that fails cuts the town's poller behind it from the broker, and
  once that one is silent the NOC's poller, seeing the whole zone down, reports the outage the single
  daemon would.
- A silent poller is set aside while another poller of its zone is live. When every poller of a
  zone is silent nothing changes here: the zone is blind (:mod:`.silence`), the core shows its
  targets as unknown, and the pollers' spools bring what happened meanwhile.
- A poller heard again after its silence is *catching up*, and still set aside, while another
  poller of its zone is current: its view is stale until its spool's backlog has arrived (its
  heartbeat's number is taken: :meth:`Vantages.caught_up`). Counted at once, its old view would
  undo what the current poller saw meanwhile, and its spool would redo it a moment later. With no
  current poller to rule meanwhile, it counts at once and its spool replays its changes at their
  real times.
- A target whose every viewing poller is set aside becomes UNKNOWN: no one can see it, so an outage
  opened on a view that turned out blind is withdrawn (within the settle, nobody was told).
- Around a blindness by its vantage node (``windows``: per poller, how long the node's DOWN may come
  after the first DOWN it causes, and how long re-confirming the zone takes; :func:`windows`):
  a poller back from a silence (until a fresh heartbeat of it is current) holds each DOWN it
  reports (but its vantage node's) until its news (its reports, its current heartbeats) has gone
  ``hold`` past it: its spool brings the zone's targets down in
  poll order, some before its vantage node, and held, those turn out part of the blindness instead
  of a DOWN the blindness withdraws a moment later. News that arrives live is not held (it would
  delay every real failure). And once its vantage node is back, a DOWN it saw before the return is
  stale and set aside until the poller confirms that target again, or its news has gone
  ``recover`` past the return (a target still down then counts down again): without it, each CPE
  the poller had not yet re-confirmed was DOWN again between its vantage node's return and its own
  (namespace lab Z2).

One effective change per real change: a change is emitted only when the effective state moves, so
a second poller's report of the same failure, arriving later, changes nothing (or completes the
"every voter sees it down"); the final effective states do not depend on the order in which the
pollers' reports arrive (``tests/test_remote_vantage.py``, property-tested). The time of an
effective change is when it became true: the later of the report's time and the voters' own.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor.state import State, StateChange

if TYPE_CHECKING:
    from monitor.inventory.model import Inventory, PollingSettings

MIN_ALL_DOWN = 2  # targets a poller must see, all down, before "everything fails together" means blind
MAX_REASON = 500
_RANK = {State.DOWN: 0, State.DEGRADED: 1, State.UP: 2}  # a better view outvotes a worse one
_NO_VIEW = (State.UNKNOWN, 0.0)
_INF = float("inf")


def windows(inv: Inventory) -> dict[str, tuple[float, float]]:
    """Per poller with a vantage node: (hold, recover), from its zone's polling settings. ``hold``: the
    longest its vantage node can take from a failure to its confirmed DOWN (``down_after`` polls and
    the last one's probes), the most a DOWN the same failure caused can precede it; ``recover``:
    the longest a target of the zone takes to be confirmed again once the path is back (``up_after``
    polls, two more of slack for a loaded poller, and the probes)."""
    p = inv.pollers
    if p is None:
        return {}
    out = {}
    for zone in p.zones.values():
        members = [t for tid, t in inv.targets.items() if p.zone_of.get(tid) == zone.id]
        for poller, node in zone.vantage.items():
            v = inv.targets.get(node)
            if v is None or not members:
                continue
            hold = v.polling.down_after * v.polling.interval + _poll_time(v.polling)
            recover = max((t.polling.up_after + 2) * t.polling.interval + _poll_time(t.polling) for t in members)
            out[poller] = (hold, recover)
    return out


def _poll_time(p: PollingSettings) -> float:
    return p.icmp_count * (p.icmp_timeout + p.icmp_spacing)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A target's effective state as combined now (``None``: no poller has said a word of it since the
    core started: keep what the core had)."""

    state: State | None
    voters: tuple[str, ...] = ()  # the pollers whose view decided
    aside: tuple[tuple[str, str], ...] = ()  # (poller, why) of those set aside that see the target


class Vantages:
    """Each poller's view per target in, effective changes out (see the module's docstring)."""

    def __init__(self, zone_pollers: Mapping[str, Sequence[str]], zone_of: Mapping[str, str],
                 vantage: Mapping[str, str] | None = None, seed: Mapping[str, tuple[State, float]] | None = None,
                 windows: Mapping[str, tuple[float, float]] | None = None, fresh: float = 1.0) -> None:
        """``zone_pollers``: zone -> its pollers (zones without pollers are none of our business);
        ``zone_of``: target -> zone; ``vantage``: poller -> its declared vantage node; ``seed``:
        target -> (state, since) the core last concluded (a restart): every poller starts seeing that;
        ``windows``: poller with a vantage node -> (hold, recover) in seconds (module docstring; none:
        neither applies); ``fresh``: a heartbeat that took longer than this to arrive is old news (the
        core passes half of ``pollers.silent_after``: one sent before a cut long enough to make the
        zone blind took longer)."""
        self.zone_pollers = {z: tuple(ps) for z, ps in zone_pollers.items() if ps}
        self.poller_zone = {p: z for z, ps in self.zone_pollers.items() for p in ps}
        self.zone_of = {t: z for t, z in zone_of.items() if z in self.zone_pollers}
        self.targets: dict[str, list[str]] = {z: [] for z in self.zone_pollers}
        for t, z in sorted(self.zone_of.items()):
            self.targets[z].append(t)
        self.vantage = {p: v for p, v in (vantage or {}).items() if p in self.poller_zone}
        self.watched_by: dict[str, list[str]] = {}  # vantage node -> the pollers it can blind
        for p, v in sorted(self.vantage.items()):
            self.watched_by.setdefault(v, []).append(p)
        self.views: dict[str, dict[str, tuple[State, float]]] = {p: {} for p in self.poller_zone}
        #: zones of one poller that declared no vantage node: nothing to combine, its changes pass
        #: through (the hot path when every zone has one poller: a burst of 100,000)
        self.alone = {z for z, ps in self.zone_pollers.items() if len(ps) == 1 and ps[0] not in self.vantage}
        self.known = dict.fromkeys(self.poller_zone, 0)  # targets each poller has a view of
        self.down = dict.fromkeys(self.poller_zone, 0)  # ... and sees down
        self.effective: dict[str, tuple[State, float]] = {}
        self.silent: set[str] = set()
        self.catching: set[str] = set()  # heard again after a silence, backlog not all taken yet
        self.changed = False  # a view changed since differences() was last read
        self.elsewhere: dict[str, State] = {}  # vantage nodes outside their poller's zone: as the core knows them
        self.blind: dict[str, dict[str, str]] = {z: {} for z in self.zone_pollers}  # zone -> poller -> why
        self.windows = {p: w for p, w in (windows or {}).items() if p in self.vantage}
        self.fresh = fresh
        self.clock: dict[str, float] = {}  # poller -> how far its news has come (its reports, its heartbeats)
        self.draining: set[str] = set()  # back from a silence, backlog not all in: its DOWNs are held
        self.held: dict[str, dict[str, StateChange]] = {}  # poller -> target -> a DOWN held (in order)
        self.recovering: dict[str, float] = {}  # poller -> when its vantage node came back
        self.stale: dict[str, int] = {}  # poller recovering -> its DOWN views from before that return
        for t, (state, since) in sorted((seed or {}).items()):
            if t in self.zone_of and state is not State.UNKNOWN:
                self.effective[t] = (state, since)
                if self.zone_of[t] not in self.alone:
                    for p in self.zone_pollers[self.zone_of[t]]:
                        self._set_view(p, t, state, since)
        for z in self.zone_pollers:
            self.blind[z] = self._blind(z)
        self.changed = False

    def reconfigured(self, zone_pollers: Mapping[str, Sequence[str]], zone_of: Mapping[str, str],
                     vantage: Mapping[str, str], seed: Mapping[str, tuple[State, float]],
                     windows: Mapping[str, tuple[float, float]] | None = None, fresh: float = 1.0) -> Vantages:
        """The same beliefs under a reloaded config: what a poller saw of a target still in its zone
        is kept, what the core concluded seeds the rest. Emits nothing: the next report settles."""
        new = Vantages(zone_pollers, zone_of, vantage, {**seed, **self.effective}, windows, fresh)
        for p, views in self.views.items():
            zone = new.poller_zone.get(p)
            if zone is not None and zone == self.poller_zone[p] and zone not in new.alone:
                for t, (state, since) in views.items():
                    if new.zone_of.get(t) == zone:
                        new._set_view(p, t, state, since)
        new.silent = {p for p in self.silent if p in new.poller_zone}
        new.catching = {p for p in self.catching if p in new.poller_zone}
        new.elsewhere = dict(self.elsewhere)
        new.clock = {p: ts for p, ts in self.clock.items() if p in new.poller_zone}
        new.draining = {p for p in self.draining if p in new.windows}
        for p, held in self.held.items():  # what was held is judged now (the next report settles)
            for c in held.values():
                if new.zone_of.get(c.target) == new.poller_zone.get(p) and new.poller_zone.get(p) not in new.alone:
                    new._set_view(p, c.target, c.new, c.ts)
        for p, at in self.recovering.items():
            if p in new.poller_zone:
                new._recovers(p, at)
        new.blind = {z: new._blind(z) for z in new.zone_pollers}
        return new

    def differences(self) -> dict[str, dict[str, tuple[State, float]]]:
        """Each poller's views that differ from the effective state: what a restart could not guess
        (kept across restarts by :mod:`.views`); clears :attr:`changed`."""
        self.changed = False
        out = {}
        for p, views in self.views.items():
            mine = {t: v for t, v in views.items() if v[0] is not self.effective.get(t, _NO_VIEW)[0]}
            # a DOWN held is its view too: a restart restores it as one (judged then without the hold)
            mine.update((t, (c.new, c.ts)) for t, c in self.held.get(p, {}).items())
            if mine:
                out[p] = mine
        return out

    def restore(self, saved: Mapping[str, Mapping[str, tuple[State, float]]]) -> None:
        """Views kept before a restart (:meth:`differences`), for pollers and targets still in one zone."""
        for p, views in saved.items():
            zone = self.poller_zone.get(p)
            for t, (state, since) in views.items():
                if zone is not None and zone not in self.alone and self.zone_of.get(t) == zone:
                    self._set_view(p, t, state, since)
        self.blind = {z: self._blind(z) for z in self.zone_pollers}
        self.changed = False

    # -- what comes in --------------------------------------------------------------------------

    def report(self, poller: str, change: StateChange) -> list[StateChange]:
        """``poller`` confirmed ``change`` (its own view): the effective changes it makes."""
        zone = self.poller_zone.get(poller)
        t = change.target
        if zone is None or self.zone_of.get(t) != zone:
            return []  # checked before (the feed's decode, replay's input): not this poller's to say
        if zone in self.alone:  # one poller, no vantage node: its view is the effective state (no copy)
            old = self.effective.get(t)
            if old is not None and old[0] is change.new:
                return []  # a repeat (QoS 1, a core restart)
            self.silent.discard(poller)
            at = change.ts if old is None else max(change.ts, old[1])
            self.effective[t] = (change.new, at)
            if old is None or (old[0] is change.old and at == change.ts):
                return [change]
            return [StateChange(t, old[0], change.new, at, change.reason, change.cause)]
        held = self.held.get(poller)
        if held is not None and t in held:
            if held[t].new is change.new:
                return []  # a repeat of a DOWN held
        elif self.views[poller].get(t, _NO_VIEW)[0] is change.new:
            return []  # a repeat (QoS 1, a core restart): the view is already that
        back = poller in self.silent  # a report is a sign of life
        if back:
            self._returns(poller)
        out = self._release(poller, change.ts) if self.held.get(poller) else []
        if held is not None and t in held:
            out += self._take_held(poller, [held.pop(t)])  # its own next word: the DOWN held goes first
        if (poller in self.draining and change.new is State.DOWN and t != self.vantage[poller]
                and poller not in self.blind[zone]):
            self.held.setdefault(poller, {})[t] = change  # part of a blindness, if its vantage node follows
            self.changed = True  # kept across a restart (differences)
            return out + (self._settle(zone, [], change.ts, force=True) if back else [])
        self._set_view(poller, t, change.new, change.ts)
        out += self._settle(zone, [t], change.ts, change, poller, force=back)  # t may be a vantage node: _blind sees it
        if self.held.get(poller) and poller in self.blind[zone]:
            out += self._take_held(poller, list(self.held.pop(poller).values()))  # blind: set aside with the rest
        if poller in self.recovering:  # after the report: a target confirmed now is no longer stale
            out += self._news(poller, change.ts)
        return out

    def report_many(self, poller: str, changes: Iterable[StateChange]) -> list[StateChange]:
        """:meth:`report` of each change in order, the effective changes together. A zone of one
        poller without a vantage node takes them in one loop here (a zone's burst is 25,000 changes,
        and a call of :meth:`report` each cost a tenth of the core's intake)."""
        zone = self.poller_zone.get(poller)
        if zone is None or zone not in self.alone:
            return [e for c in changes for e in self.report(poller, c)]
        out: list[StateChange] = []
        effective, zone_of = self.effective, self.zone_of
        for change in changes:
            t = change.target
            if zone_of.get(t) != zone:
                continue
            old = effective.get(t)
            if old is not None and old[0] is change.new:
                continue  # a repeat (QoS 1, a core restart)
            at = change.ts if old is None or change.ts >= old[1] else old[1]
            effective[t] = (change.new, at)
            if old is None or (old[0] is change.old and at == change.ts):
                out.append(change)
            else:
                out.append(StateChange(t, old[0], change.new, at, change.reason, change.cause))
        if out:
            self.silent.discard(poller)
        return out

    def set_silent(self, silent: Collection[str], now: float) -> list[StateChange]:
        """The pollers not heard within ``silent_after`` now (all the others are live)."""
        new = {p for p in silent if p in self.poller_zone}
        if new == self.silent:
            return []
        zones = sorted({self.poller_zone[p] for p in new ^ self.silent})
        back, self.silent = self.silent - new, new
        self.catching -= new
        for p in sorted(back):
            self._returns(p)
        for z in zones:
            self._no_one_current(z)
        out: list[StateChange] = []
        for z in zones:
            out += self._settle(z, [], now, force=True)
        return out

    def caught_up(self, poller: str, now: float, sent: float | None = None) -> list[StateChange]:
        """The core holds every change ``poller`` had published when it sent a heartbeat (``sent``,
        bounded by the core's clock; ``now`` without one): its news has come as far as then. A poller
        catching up after its silence counts again; one back from a silence stops holding its DOWNs
        once such a heartbeat is fresh (sent within ``fresh`` of ``now``: the old ones that waited in
        its TCP connection while it was cut off are not); what it holds then counts at once (its
        whole backlog is in, and a vantage node's DOWN not in it would be news on time)."""
        news = now if sent is None else min(sent, now)
        out: list[StateChange] = []
        if poller in self.windows:
            if poller in self.draining and now - news <= self.fresh:
                self.draining.discard(poller)
                held = self.held.pop(poller, None)
                if held:
                    out += self._take_held(poller, list(held.values()))
            out += self._news(poller, news)
        if poller not in self.catching:
            return out
        self.catching.discard(poller)
        return out + self._settle(self.poller_zone[poller], [], now, force=True)

    def advance(self, now: float) -> list[StateChange]:
        """Every poller's news has come as far as ``now`` (``monitor replay``: every poller is live and
        current): the DOWNs held and the recoveries that ``now`` ends."""
        out: list[StateChange] = []
        for p in sorted({*self.held, *self.recovering}):
            out += self._news(p, now)
        return out

    def node_state(self, node: str, state: State, now: float) -> list[StateChange]:
        """A node outside the remote zones (the core polls it) changed: it may be a poller's vantage node."""
        if node not in self.watched_by or node in self.zone_of:
            return []
        was = self.elsewhere.get(node, State.UNKNOWN)
        if was is state:
            return []
        self.elsewhere[node] = state
        if was is State.DOWN:
            for p in self.watched_by[node]:
                self._recovers(p, now)
        out: list[StateChange] = []
        for z in sorted({self.poller_zone[p] for p in self.watched_by[node]}):
            out += self._settle(z, [], now)
        return out

    # -- what is believed -----------------------------------------------------------------------

    def state(self, target: str) -> State:
        return self.effective.get(target, _NO_VIEW)[0]

    def frozen(self, zone: str) -> bool:
        """Every poller of ``zone`` is silent: it is blind, and nothing changes here until one is heard."""
        return all(p in self.silent for p in self.zone_pollers.get(zone, ()))

    def aside(self, zone: str) -> dict[str, str]:
        """Pollers of ``zone`` whose view is set aside now, and why."""
        out = dict(self.blind.get(zone, {}))
        for p in self.zone_pollers.get(zone, ()):
            if p in self.silent or p in self.catching:
                out[p] = "silent" if p in self.silent else "catching up after its silence"
        return out

    def verdict(self, target: str, aside: Mapping[str, str] | None = None) -> Verdict:
        """The combination of the views of ``target`` (see the module's docstring), from scratch."""
        zone = self.zone_of[target]
        aside = self.aside(zone) if aside is None else aside
        best: State | None = None
        voters: list[str] = []
        away: list[tuple[str, str]] = []
        heard = False  # some poller has said something of it (if only "I do not know any more")
        for p in self.zone_pollers[zone]:
            view = self.views[p].get(target)
            if view is None:
                continue
            heard = True
            seen = view[0]
            if seen is State.UNKNOWN:
                continue
            if p in aside:
                away.append((p, aside[p]))
            elif seen is State.DOWN and view[1] < self.recovering.get(p, -_INF):
                away.append((p, "down before its vantage node came back, not confirmed since"))
            elif best is None or _RANK[seen] > _RANK[best]:
                best, voters = seen, [p]
            elif seen is best:
                voters.append(p)
        if best is None:
            return Verdict(State.UNKNOWN if heard else None, (), tuple(away))
        return Verdict(best, tuple(voters), tuple(away))

    # -- inside ---------------------------------------------------------------------------------

    def _returns(self, p: str) -> None:
        """``p`` is heard again: catching up while another poller of its zone is current."""
        self.silent.discard(p)
        if p in self.windows:
            self.draining.add(p)
        zone = self.poller_zone[p]
        if any(q != p and q not in self.silent and q not in self.catching for q in self.zone_pollers[zone]):
            self.catching.add(p)

    def _no_one_current(self, zone: str) -> None:
        """Nobody current left to rule while they catch up: the pollers catching up count at once."""
        pollers = self.zone_pollers[zone]
        if all(p in self.silent or p in self.catching for p in pollers):
            self.catching -= set(pollers)

    def _set_view(self, p: str, t: str, state: State, since: float) -> None:
        self.changed = True
        old, was = self.views[p].get(t, _NO_VIEW)
        self.known[p] += (state is not State.UNKNOWN) - (old is not State.UNKNOWN)
        self.down[p] += (state is State.DOWN) - (old is State.DOWN)
        self.views[p][t] = (state, since)
        if self.recovering:
            back = self.recovering.get(p)
            if back is not None and old is State.DOWN and was < back:
                self.stale[p] -= 1  # confirmed again since its vantage node's return
                if self.stale[p] <= 0:
                    del self.recovering[p], self.stale[p]  # its whole zone confirmed again
        if old is State.DOWN and state is not State.DOWN and t == self.vantage.get(p):
            self._recovers(p, since)

    def _recovers(self, p: str, at: float) -> None:
        """``p``'s vantage node is back at ``at``: its DOWNs from before are stale until confirmed again."""
        if p not in self.windows:
            return
        stale = sum(1 for s, since in self.views[p].values() if s is State.DOWN and since < at)
        if stale:
            self.recovering[p], self.stale[p] = at, stale

    def _news(self, p: str, now: float) -> list[StateChange]:
        """``p``'s news has come as far as ``now``: DOWNs held that long without a blindness count, a
        recovery past ``recover`` ends (its stale DOWNs count again)."""
        out = self._release(p, now)
        back = self.recovering.get(p)
        if back is not None and back + self.windows[p][1] <= self.clock[p]:
            del self.recovering[p], self.stale[p]
            out += self._settle(self.poller_zone[p], [], max(now, back), force=True)
        return out

    def _release(self, p: str, now: float) -> list[StateChange]:
        """The DOWNs ``p`` holds that its news (as far as ``now``) has gone ``hold`` past."""
        clock = self.clock[p] = max(now, self.clock.get(p, -_INF))
        held = self.held.get(p)
        if not held:
            return []
        hold = self.windows[p][0]
        due = [c for c in held.values() if c.ts + hold <= clock]
        for c in due:
            del held[c.target]
        return self._take_held(p, due)

    def _take_held(self, p: str, changes: list[StateChange]) -> list[StateChange]:
        """DOWNs held, now taken as ``p``'s view at their own times, in order."""
        zone, out = self.poller_zone[p], []
        for c in changes:
            self._set_view(p, c.target, c.new, c.ts)
            out += self._settle(zone, [c.target], c.ts, c, p)
        return out

    def _blind(self, zone: str) -> dict[str, str]:
        """Pollers of ``zone`` that cannot see it now, and why (silent ones are not judged)."""
        pollers = self.zone_pollers[zone]
        live = [p for p in pollers if p not in self.silent and p not in self.catching]
        all_down = [p for p in live if self.known[p] >= MIN_ALL_DOWN and self.down[p] == self.known[p]]
        out = {}
        for p in live:
            v = self.vantage.get(p)
            if v is not None:
                seen = self.views[p].get(v, _NO_VIEW)[0] if self.zone_of.get(v) == zone else self.elsewhere.get(v)
                if seen is State.DOWN:
                    out[p] = f"blind: its vantage node {v} is down"
                    continue
            if len(live) > 1 and all_down == [p]:
                out[p] = f"blind: all {self.known[p]} targets it sees are down"
        return out

    def _settle(self, zone: str, touched: Iterable[str], ts: float, trigger: StateChange | None = None,
                by: str | None = None, force: bool = False) -> list[StateChange]:
        """Recompute the touched targets, or the whole zone when who is set aside changed."""
        blind = self._blind(zone)
        if self.frozen(zone):
            self.blind[zone] = blind
            return []
        if force or blind != self.blind[zone]:
            self.blind[zone] = blind
            touched = self.targets[zone]
        aside = self.aside(zone)
        out = []
        for t in touched:
            c = self._recompute(t, aside, ts, trigger if trigger is not None and trigger.target == t else None, by)
            if c is not None:
                out.append(c)
        return out

    def _recompute(self, t: str, aside: Mapping[str, str], ts: float, trigger: StateChange | None,
                   by: str | None) -> StateChange | None:
        v = self.verdict(t, aside)
        had = t in self.effective
        old, since = self.effective.get(t, _NO_VIEW)
        if v.state is None or v.state is old:
            return None
        at = max([ts, since, *(self.views[p][t][1] for p in v.voters)])
        self.effective[t] = (v.state, at)
        direct = trigger is not None and trigger.new is v.state and by in v.voters
        cause = trigger.cause if direct and trigger is not None and v.state is State.DOWN else None
        if direct and trigger is not None and len(self.zone_pollers[self.zone_of[t]]) == 1:
            # one poller: its own change, as without vantage points (its old state if the core had none)
            return StateChange(t, old if had else trigger.old, v.state, at, trigger.reason, cause)
        reason = _words(v, trigger.reason if direct and trigger is not None else "")
        return StateChange(t, old, v.state, at, reason[:MAX_REASON], cause)


def _words(v: Verdict, base: str) -> str:
    """Why the effective state is what it is, for the event log and the incident's detail."""
    parts = [base] if base else []
    if v.state is State.UNKNOWN:
        parts.append("no poller can see it")
    elif v.state is State.DOWN:
        parts.append(f"down from every vantage point: {', '.join(v.voters)}")
    elif v.state is not None:
        parts.append(f"{v.state.value} as seen by {', '.join(v.voters)}")
    if v.aside:
        parts.append("set aside: " + ", ".join(f"{p} ({why})" for p, why in v.aside))
    return "; ".join(parts)
