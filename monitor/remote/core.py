"""The core's side of remote pollers: what a poller confirmed is stored and correlated like the core's own.

``monitor run`` with zones polled by remote pollers (``pollers:`` with a zone listing pollers) polls
none of those targets itself (:func:`core_inventory` is what its polling stage gets). Their state
changes arrive through :class:`~monitor.remote.link.CoreFeed`; :meth:`RemoteIntake.on_changes`
appends them to the event log and the current states, with the poller's own timestamps, and only
then hands them to the same sink as the core's own (correlation, delivery). If the store refuses
the write it raises, the feed does not acknowledge, and the poller sends the message again.

Exactly once across a core crash: the per-poller numbering (:class:`~monitor.remote.sequence.Sequences`)
is kept in ``<state_dir>/remote-sequences.json``, written after each stored message and before its
acknowledgement. A crash between the store write and that file brings the message again; its
changes are then already the targets' current states (same state, same time) and are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from monitor import selfmetrics
from monitor.correlate.incidents import format_ts
from monitor.inventory.model import Inventory
from monitor.inventory.pollers import PollersSettings
from monitor.logs import Episode, event
from monitor.polling.stage import REMOVED
from monitor.remote.link import Broker, CoreFeed, Listener
from monitor.remote.sequence import Sequences
from monitor.remote.silence import ZoneNews, ZoneWatch
from monitor.state import State, StateChange, TargetState, restored
from monitor.store import EventStore

log = logging.getLogger("monitor.remote")

SEQUENCES_FILE = "remote-sequences.json"
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
                 note: Callable[[StateChange], None], state_dir: Path) -> None:
        self.store, self.states, self.note = store, states, note
        self.path = state_dir / SEQUENCES_FILE
        self._saving = Episode(log, "remote poller numbering not saved (a core restart may ask for repeats)",
                               "remote poller numbering saved again")
        self.remote: frozenset[str] = frozenset()
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
        gone = [StateChange(tid, self.states.pop(tid).state, State.UNKNOWN, now, REMOVED)
                for tid in sorted(old - self.remote) if tid not in inv.targets and tid in self.states]
        if gone:
            self.store.append(gone)

    def feed(self, inv: Inventory, watch: Listener | None = None) -> CoreFeed:
        """The MQTT feed of every poller of ``inv``, resuming their numbering from the state directory;
        ``watch`` hears of every poller heard and every last will."""
        p = inv.pollers
        assert p is not None
        return CoreFeed(brokers(p), p.poller_zones(), p.zone_of, self.on_changes, prefix=p.prefix,
                        sequences=self.load_sequences(), on_taken=self.save_sequences, watch=watch)

    async def on_changes(self, poller: str, changes: Sequence[StateChange]) -> None:
        """Store, then correlate. StorageError (the store refuses writes) propagates: not acknowledged."""
        fresh = [c for c in changes if c.target in self.remote and not self._repeat(c)]
        if not fresh:
            return
        self.store.append(fresh)
        for c in fresh:
            self.states[c.target] = restored(c.new, c.ts)
            selfmetrics.STATE_CHANGES.labels(c.new.value).inc()
            selfmetrics.TARGETS.labels(c.old.value).dec()
            selfmetrics.TARGETS.labels(c.new.value).inc()
            if c.new in (State.DOWN, State.DEGRADED):
                event(log, logging.WARNING, f"target {c.new.value}", target=c.target, poller=poller,
                      old=c.old.value, new=c.new.value, reason=c.reason)
            self.note(c)

    def _repeat(self, c: StateChange) -> bool:
        """Already the target's current state, from the same moment: a message stored before a crash."""
        cur = self.states.get(c.target)
        return cur is not None and cur.state is c.new and cur.since == c.ts

    # -- numbering across restarts ----------------------------------------------------------

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
    ``monitor_remote_zone_blind{zone}`` say so. Correlation and the event log are told nothing: no
    outage opens, no customer hears a word, and what the zone's pollers confirmed meanwhile arrives
    from their spools, with its real times, once they are back. Then the live states are the
    stored ones again.
    """

    def __init__(self, inv: Inventory, watch: ZoneWatch, store: EventStore, states: dict[str, TargetState]) -> None:
        self.watch, self.store, self.states = watch, store, states
        self.zone_of = dict(inv.pollers.zone_of) if inv.pollers is not None else {}

    @classmethod
    def watching(cls, inv: Inventory, store: EventStore, states: dict[str, TargetState], now: float) -> BlindZones:
        p = inv.pollers
        assert p is not None
        return cls(inv, ZoneWatch(p.zone_pollers(), p.silent_after, now), store, states)

    def configure(self, inv: Inventory, now: float) -> None:
        """A (re)loaded inventory: zones gone or without pollers now are visible again."""
        p = inv.pollers
        self._apply(self.watch.configure(p.zone_pollers() if p is not None else {},
                                         p.silent_after if p is not None else self.watch.timeout, now))
        self.zone_of = dict(p.zone_of) if p is not None else {}

    def heard(self, poller: str, at: float) -> None:
        """A word from ``poller`` (the feed's, before it stores what the message carries): a blind zone
        it covers is back at once, so its stored states are restored before the new changes land."""
        self.watch.heard(poller, at)
        if self.watch.covers_blind(poller):
            self.step(max(at, self.watch.last_step))

    def gone(self, poller: str) -> None:
        self.watch.gone(poller)

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
                event(log, logging.WARNING, "zone blind: none of its pollers heard, its targets are unknown",
                      zone=n.zone, pollers=",".join(n.pollers), last_heard=format_ts(n.last_heard),
                      silent_after=self.watch.timeout, targets=len(targets))
            else:
                event(log, logging.INFO, "zone visible again: a poller is heard", zone=n.zone,
                      targets=len(targets))
