"""The core's side of remote pollers: what a poller confirmed is stored and correlated like the core's own.

``monitor run`` with zones polled by remote pollers (``pollers:`` with a zone listing pollers) polls
none of those targets itself (:func:`core_inventory` is what its polling stage gets). Their state
changes arrive through :class:`~monitor.remote.link.CoreFeed`; :meth:`RemoteIntake.on_changes`
appends them to the event log and the current states, with the poller's own timestamps, and only
then hands them to the same sink as the core's own (correlation, delivery). If the store refuses
the write it raises, the feed does not acknowledge, and the poller sends the message again.

Several vantage points: what a poller reports is its *view*; :class:`~monitor.remote.vantage.Vantages`
combines the views of a zone's pollers into the effective state that is stored and correlated
(DOWN only when every live, non-blind poller that sees the target sees it down). With one poller
per zone a view is passed on unchanged. Silent pollers are set aside (:meth:`RemoteIntake.silence`,
once a second) and, back, count again once caught up (:meth:`RemoteIntake.caught_up`, from the
feed's heartbeats); a poller's vantage node the core polls itself is followed
(:meth:`RemoteIntake.core_change`, a sink of the core's polling stage).

Exactly once across a core crash: the per-poller numbering (:class:`~monitor.remote.sequence.Sequences`)
is kept in ``<state_dir>/remote-sequences.json``, written after each stored message and before its
acknowledgement. A crash between the store write and that file brings the message again; every
poller's view starts from the stored states after a restart (where it saw otherwise, from
``remote-views.json``, :mod:`.views`), so its changes are then already that view and make no
effective change. Effective changes the store refused are kept in order and
stored before anything newer (the message is not acknowledged, and its resend finds its view taken).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import islice
from operator import le
from pathlib import Path

from monitor import selfmetrics
from monitor.correlate.incidents import format_ts
from monitor.errors import MonitorError
from monitor.inventory.model import Inventory
from monitor.inventory.pollers import PollersSettings
from monitor.logs import Episode, event
from monitor.polling.stage import REMOVED
from monitor.remote import views
from monitor.remote.link import Broker, CoreFeed, Listener
from monitor.remote.sequence import Sequences
from monitor.remote.silence import ZoneNews, ZoneWatch
from monitor.remote.vantage import Vantages, windows
from monitor.state import State, StateChange, TargetState, restored
from monitor.store import EventStore

log = logging.getLogger("monitor.remote")

SEQUENCES_FILE = "remote-sequences.json"
LOG_EACH = 20  # changes to down, degraded or unknown logged one by one per batch (the rest counted in one line)
MAX_SEQUENCES_FILE = 64 << 20  # bytes; 4 pollers × 10,000 missing numbers is well under 1 MB


def remote_targets(inv: Inventory) -> frozenset[str]:
    """Targets a remote poller polls (none without a ``pollers:`` section)."""
    p = inv.pollers
    return frozenset() if p is None else frozenset(t for t in inv.targets if p.remote(t))


def core_inventory(inv: Inventory) -> Inventory:
    """``inv`` without the targets remote pollers cover: what the core's polling stage polls."""
    remote = remote_targets(inv)
    if not remote:
        return inv
    return dataclasses.replace(inv, targets={tid: t for tid, t in inv.targets.items() if tid not in remote})


def brokers(p: PollersSettings) -> list[Broker]:
    """The core's broker list (its own credentials from the config)."""
    return [Broker(b.host, b.port, b.username, b.password.reveal() if b.password is not None else None, b.tls,
                   b.ca_file) for b in p.brokers]


class RemoteIntake:
    """Stores remote pollers' changes in the core's event log and passes them on to ``note``."""

    def __init__(self, inv: Inventory, store: EventStore, states: dict[str, TargetState],
                 note: Callable[[StateChange], None], state_dir: Path, now: Callable[[], float] = time.time) -> None:
        self.store, self.states, self.note, self.now = store, states, note, now
        self.path = state_dir / SEQUENCES_FILE
        self.views_path = state_dir / views.VIEWS_FILE
        self._saving_views = Episode(log, "remote pollers' views not saved (a core restart would guess them)",
                                     "remote pollers' views saved again")
        self._saving = Episode(log, "remote poller numbering not saved (a core restart may ask for repeats)",
                               "remote poller numbering saved again")
        self.remote: frozenset[str] = frozenset()
        self.vantage: Vantages | None = None
        self._unstored: list[StateChange] = []  # effective changes the store refused, in order
        self._held = Episode(log, "remote changes not stored, held in order", "remote changes stored again")
        self._blind: dict[str, str] = {}  # poller -> why its view is set aside (logged on change)
        self._latest = -math.inf  # the newest time of a remote change taken (see _bounded)
        self._silent: set[str] = set()  # pollers not heard within silent_after (logged on change)
        self.configure(inv)

    def configure(self, inv: Inventory, now: float = 0.0) -> None:
        """Take the (re)loaded inventory: which targets are remote, their states restored from the store;
        a remote target gone from the inventory ends its life in the log as the core's own do (UNKNOWN)."""
        old = self.remote
        self.remote = remote_targets(inv)
        stored = self.store.load_states() if self.remote - old else {}
        for tid in sorted(self.remote - old):
            if tid not in self.states:
                st = stored.get(tid)
                self.states[tid] = restored(*st) if st is not None else TargetState()
        # the newest time any remote target's state has: a batch at or after it needs no bounding
        self._latest = max([self._latest, *(cur.since for t in self.remote if (cur := self.states.get(t)))])
        gone = [StateChange(tid, self.states.pop(tid).state, State.UNKNOWN, now, REMOVED)
                for tid in sorted(old - self.remote) if tid not in inv.targets and tid in self.states]
        if gone:
            self.store.append(gone)
        p = inv.pollers
        zones, zone_of = (p.zone_pollers(), p.zone_of) if p is not None else ({}, {})
        vantage_of = p.vantage_of() if p is not None else {}
        seed = {t: (cur.state, cur.since) for t in self.remote if (cur := self.states.get(t)) is not None}
        fresh = p.silent_after / 2 if p is not None else 1.0  # a heartbeat older than that waited out a cut
        if self.vantage is None:  # the start: every poller sees what the store says, but where it said otherwise
            self.vantage = Vantages(zones, zone_of, vantage_of, seed, windows(inv), fresh)
            self.vantage.restore(self._load_views())
        else:
            self.vantage = self.vantage.reconfigured(zones, zone_of, vantage_of, seed, windows(inv), fresh)
        for node in sorted(self.vantage.watched_by):  # vantage nodes the core polls: as it holds them now
            if node in self.states and node not in self.remote:
                self._take_quietly(self.vantage.node_state(node, self.states[node].state, now))

    def feed(self, inv: Inventory, watch: Listener | None = None) -> CoreFeed:
        """The MQTT feed of every poller of ``inv``, resuming their numbering from the state directory;
        ``watch`` hears of every poller heard and every last will."""
        p = inv.pollers
        assert p is not None
        return CoreFeed(brokers(p), p.poller_zones(), p.zone_of, self.on_changes, prefix=p.prefix,
                        sequences=self.load_sequences(), on_taken=self.save_sequences, watch=watch,
                        on_current=self.caught_up)

    async def on_changes(self, poller: str, changes: Sequence[StateChange]) -> None:
        """The poller's view, combined with its zone's other pollers' (:mod:`.vantage`); the effective
        changes stored, then correlated. StorageError (the store refuses writes) propagates: not
        acknowledged, the effective changes wait in order for the next attempt."""
        assert self.vantage is not None
        self._take(self.vantage.report_many(poller, changes), poller)  # none of another zone: checked there

    def silence(self, silent: set[str], now: float) -> None:
        """Once a second: the pollers silent now (a silent poller's view is set aside while another
        poller of its zone is heard)."""
        if self.vantage is not None:
            self._log_silent(silent)
            self._take_quietly(self.vantage.set_silent(silent, now))
            if self.vantage.changed:
                self._save_views(self.vantage)

    def caught_up(self, poller: str, now: float, sent: float | None = None) -> None:
        """The feed: ``poller``'s heartbeat number is taken, its spool's backlog is here (a poller back
        from a silence counts again only then, while another poller of its zone rules meanwhile); its
        news has come as far as the heartbeat's ``sent`` (:meth:`Vantages.caught_up`)."""
        if self.vantage is not None:
            self._take_quietly(self.vantage.caught_up(poller, now, sent))

    def core_change(self, c: StateChange) -> None:
        """A sink of the core's own polling stage: a node the core polls may be a poller's vantage node."""
        if self.vantage is not None and c.target in self.vantage.watched_by:
            self._take_quietly(self.vantage.node_state(c.target, c.new, c.ts))

    def _take_quietly(self, effective: list[StateChange]) -> None:
        """:meth:`_take` where no poller waits for an acknowledgement: a refusing store is logged once and
        the changes are kept for the next attempt (a message or the next second's :meth:`silence`)."""
        try:
            self._take(effective)
        except MonitorError as exc:
            self._held.failed(held=len(self._unstored), error=exc)

    def _take(self, effective: list[StateChange], poller: str = "") -> None:
        self._unstored.extend(self._bounded(effective))
        self._log_blind()
        if not self._unstored:
            return
        batch = self._unstored
        self.store.append(batch)  # StorageError: kept, in order, for the next attempt
        self._unstored = []
        self._held.ok(stored=len(batch))
        states, note = self.states, self.note
        for c in batch:  # TargetState(state, since): restored()'s, without its keywords (a burst's 100,000)
            states[c.target] = TargetState(c.new, c.ts)
            note(c)
        # counted by the states' text: hashing the enum members is a Python call each
        for (old, new), n in Counter((c.old._value_, c.new._value_) for c in batch).items():
            selfmetrics.STATE_CHANGES.labels(new).inc(n)
            selfmetrics.TARGETS.labels(old).dec(n)
            selfmetrics.TARGETS.labels(new).inc(n)
        self._log(poller, batch)

    def _bounded(self, changes: list[StateChange]) -> list[StateChange]:
        """Each change's time within what the core knows: not before its target's previous state began
        (the event log stays in order per target) nor after the core's clock (a poller's clock ahead).

        Why: a late batch opens its incident at its real start (``EngineState._real_start``) and
        reports count the downtime from it, so a skewed or hostile time must not reach back past
        what the log already says, nor into the future."""
        if not changes:
            return changes
        now, stamps = self.now(), [c.ts for c in changes]
        if min(stamps) >= self._latest and max(stamps) <= now and (
                all(map(le, stamps, islice(stamps, 1, None))) or len({c.target for c in changes}) == len(changes)):
            self._latest = max(stamps)  # the usual batch, newer than anything before: as it came (C loops)
            return changes
        states = self.states
        last: dict[str, float] = {}
        out = []
        for c in changes:
            cur = states.get(c.target)
            floor = last.get(c.target, cur.since if cur is not None else c.ts)
            ts = min(max(c.ts, floor), now)
            if ts != c.ts:
                c = dataclasses.replace(c, ts=ts)
            last[c.target] = ts
            out.append(c)
        self._latest = max(self._latest, *(c.ts for c in out))
        return out

    @staticmethod
    def _log(poller: str, changes: Sequence[StateChange]) -> None:
        """A line per target gone down, degraded or unknown, as the core's own polls log them, up to
        LOG_EACH a batch; beyond, one line with the counts: a zone's burst is 25,000 of them (the
        poller's journal and the event log have each one), and their formatting alone took the core
        longer than the burst's 2 s goal (bench/pollers)."""
        up = State.UP
        bad = [c for c in changes if c.new is not up]  # down, degraded or unknown
        for c in bad[:LOG_EACH]:
            event(log, logging.WARNING, f"target {c.new.value}", target=c.target, poller=poller or "-",
                  old=c.old.value, new=c.new.value, reason=c.reason)
        if len(bad) > LOG_EACH:
            counts = Counter(c.new.value for c in bad[LOG_EACH:])
            event(log, logging.WARNING, "more targets down, degraded or unknown in the same batch",
                  poller=poller or "-", down=counts["down"], degraded=counts["degraded"], unknown=counts["unknown"],
                  first=format_ts(min(c.ts for c in bad)), last=format_ts(max(c.ts for c in bad)))

    def _log_silent(self, silent: set[str]) -> None:
        """One line when a poller falls silent, one when it is heard again: in a zone with another
        poller the zone is not blind (no zone line, no alert), and this says whose view is missing."""
        assert self.vantage is not None
        for p in sorted(silent - self._silent):
            event(log, logging.WARNING, "poller silent, its view set aside", poller=p,
                  zone=self.vantage.poller_zone.get(p, "-"))
        for p in sorted(self._silent - silent):
            event(log, logging.INFO, "poller heard again", poller=p, zone=self.vantage.poller_zone.get(p, "-"))
        self._silent = set(silent)

    def _log_blind(self) -> None:
        """One line when a poller's view is set aside as blind, one when it counts again."""
        assert self.vantage is not None
        now = {p: why for blind in self.vantage.blind.values() for p, why in blind.items()}
        if now == self._blind:
            return
        for p in sorted(now.keys() - self._blind.keys()):
            event(log, logging.WARNING, "poller blind, its view set aside", poller=p,
                  zone=self.vantage.poller_zone[p], why=now[p])
            selfmetrics.POLLER_BLIND.labels(p).set(1)
        for p in sorted(self._blind.keys() - now.keys()):
            event(log, logging.INFO, "poller sees its zone again, its view counts", poller=p)
            selfmetrics.POLLER_BLIND.labels(p).set(0)
        self._blind = now

    # -- views and numbering across restarts ------------------------------------------------

    def _load_views(self) -> views.Views:
        try:
            return views.load(self.views_path)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            event(log, logging.WARNING, "remote pollers' views unreadable, assuming they see the stored states",
                  file=self.views_path, error=exc)
            return {}

    def _save_views(self, vantage: Vantages) -> None:
        try:
            views.save(self.views_path, vantage.differences())
        except OSError as exc:
            self._saving_views.failed(file=self.views_path, error=exc)
            return
        self._saving_views.ok(file=self.views_path)

    def load_sequences(self) -> Sequences:
        try:
            if self.path.stat().st_size > MAX_SEQUENCES_FILE:
                raise ValueError(f"larger than {MAX_SEQUENCES_FILE} bytes")
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            state = {str(k): (int(v[0]), [int(n) for n in v[1]]) for k, v in raw.items()}
        except FileNotFoundError:
            return Sequences()
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            event(log, logging.WARNING, "remote poller numbering unreadable, starting afresh", file=self.path,
                  error=exc)
            return Sequences()
        return Sequences.from_state(state)

    def save_sequences(self, seqs: Sequences) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(seqs.state(), separators=(",", ":")), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            self._saving.failed(file=self.path, error=exc)
            return
        self._saving.ok(file=self.path)


class BlindZones:
    """What the core does while it cannot see a zone (:mod:`monitor.remote.silence`): its targets are
    neither down nor up until a poller of the zone is heard again.

    Their live states (what the daemon shows, the targets gauge) become UNKNOWN, one log line and
    ``monitor_remote_zone_blind{zone}`` say so, and the technician on call gets one alert per episode
    (the daemon hands :meth:`ZoneWatch.sight` to delivery: :mod:`monitor.delivery.zones`).
    Correlation and the event log are told nothing: no outage opens, no customer hears a word, and
    what the zone's pollers confirmed meanwhile arrives from their spools, with its real times, once
    they are back. Then the live states are the stored ones again. Each episode is kept in the store
    (``zone_blind``, from the pollers' last word until one is heard again): reports count the zone's
    time then as unknown, but for what its pollers handed over with real times (docs/reports.md),
    and the episode is cut back to nothing (or to the part before it started polling) once a poller
    that kept polling through it has handed over everything (:meth:`current`).
    """

    def __init__(self, inv: Inventory, watch: ZoneWatch, store: EventStore, states: dict[str, TargetState]) -> None:
        self.watch, self.store, self.states = watch, store, states
        self.zone_of = dict(inv.pollers.zone_of) if inv.pollers is not None else {}
        self._began: dict[str, float] = {}  # zone blind now -> its episode's start (its pollers' last word)
        self._unwatched: dict[str, tuple[float, float]] = {}  # zone -> (start, end) of its last episode, as stored

    @classmethod
    def watching(cls, inv: Inventory, store: EventStore, states: dict[str, TargetState], now: float) -> BlindZones:
        p = inv.pollers
        assert p is not None
        zones = cls(inv, ZoneWatch(p.zone_pollers(), p.silent_after, now), store, states)
        zones._record(lambda: store.zone_seen(None, now))  # a stopped core's open episode ends at this start
        return zones

    def configure(self, inv: Inventory, now: float) -> None:
        """A (re)loaded inventory: zones gone or without pollers now are visible again."""
        p = inv.pollers
        self._apply(self.watch.configure(p.zone_pollers() if p is not None else {},
                                         p.silent_after if p is not None else self.watch.timeout, now))
        self.zone_of = dict(p.zone_of) if p is not None else {}

    @staticmethod
    def _record(write: Callable[[], None]) -> None:
        """A blind episode's row for the reports; a store refusing it is logged and the core goes on
        (the zone's targets then count as the log says, which a report cannot tell from seen)."""
        try:
            write()
        except MonitorError as exc:
            event(log, logging.WARNING, "blind zone episode not recorded for the reports", error=exc)

    def heard(self, poller: str, at: float) -> None:
        """A word from ``poller`` (the feed's, before it stores what the message carries): a blind zone
        it covers is back at once, so its stored states are restored before the new changes land."""
        self.watch.heard(poller, at)
        if self.watch.covers_blind(poller):
            self.step(max(at, self.watch.last_step))

    def gone(self, poller: str) -> None:
        self.watch.gone(poller)

    def current(self, poller: str, sent: float, polling_since: float) -> None:
        """The feed: the core has every change ``poller`` had confirmed when it sent a heartbeat at
        ``sent``, and it has polled since ``polling_since``. A blind episode of its zone that ended
        by ``sent`` was watched after all from ``polling_since`` on (the poller was alive, only cut
        off from the core, and its spool has brought the real states with their times): the episode
        is cut back to what nobody watched, so reports count the zone's log there, not unknown."""
        for zone, pollers in self.watch.zones.items():
            ep = self._unwatched.get(zone)
            if ep is None or poller not in pollers or sent < ep[1] or polling_since >= ep[1]:
                continue
            started, ended = ep
            until = max(started, polling_since)
            if until > started:
                self._unwatched[zone] = (started, until)  # a poller that ran all along may still cover the rest
            else:
                del self._unwatched[zone]
            self._record(functools.partial(self.store.zone_watched, zone, started, ended, until))
            event(log, logging.INFO, "blind zone watched after all: its poller kept polling, its changes are in",
                  zone=zone, poller=poller, watched_from=format_ts(until), to=format_ts(ended),
                  unknown_s=round(until - started, 3))

    def step(self, now: float) -> list[ZoneNews]:
        """Called about once a second: zones that went blind or returned."""
        news = self.watch.step(now)
        self._apply(news)
        return news

    def _apply(self, news: list[ZoneNews]) -> None:
        for n in news:
            targets = sorted(t for t, z in self.zone_of.items() if z == n.zone)
            stored = {} if n.blind else self.store.load_states()
            for t in targets:
                old = self.states.get(t, TargetState()).state
                if n.blind:
                    self.states[t] = TargetState(State.UNKNOWN, n.at)
                else:
                    st = stored.get(t)
                    self.states[t] = restored(*st) if st is not None else TargetState()
                selfmetrics.TARGETS.labels(old.value).dec()
                selfmetrics.TARGETS.labels(self.states[t].state.value).inc()
            selfmetrics.ZONE_BLIND.labels(n.zone).set(1 if n.blind else 0)
            if n.blind:
                self._began[n.zone] = n.last_heard
                self._record(functools.partial(self.store.zone_blind, n.zone, n.last_heard))
            else:
                began = self._began.pop(n.zone, None)
                if began is not None:
                    self._unwatched[n.zone] = (began, max(began, n.at))
                self._record(functools.partial(self.store.zone_seen, n.zone, n.at))
            if n.blind:
                event(log, logging.WARNING, "zone blind: none of its pollers heard, its targets are unknown",
                      zone=n.zone, pollers=",".join(n.pollers), last_heard=format_ts(n.last_heard),
                      silent_after=self.watch.timeout, targets=len(targets))
            else:
                event(log, logging.INFO, "zone visible again: a poller is heard", zone=n.zone,
                      targets=len(targets))
