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

Layout: ``Engine`` here is the input (``apply_many``, the burst hot path) and the timers; its state
and the incident bookkeeping are ``engine_state.py``, and each decision area is a mixin in its own
module, each using only the ones before it: ``lossy.py`` (lossy links), ``judge.py`` (what a failure
is), ``recovery.py`` (recoveries, grace), ``blindness.py``, ``planned.py`` (maintenance windows),
``restore.py`` (resuming after a restart, in steps).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat, starmap
from operator import and_, eq, itemgetter, ne
from typing import cast

from monitor.correlate.engine_state import _INF, LEFT_DOWN, MemberOp
from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.planned import Maintenance
from monitor.correlate.restore import Restoring
from monitor.state import State, StateChange

__all__ = ["Engine", "MemberOp"]  # MemberOp: the member log's entries (the constants: engine_state.py)

_CHUNK = 128  # settle entries checked together in C when at least this many are due (a burst)
_KEY, _STAMP = itemgetter(1), itemgetter(2)
#: at most this many endpoints gone down wait to have their ancestors counted (EngineState._counts)
_UNCOUNTED_MAX = 1 << 16


class Engine(Restoring, Maintenance):
    """The correlation engine: confirmed state changes and the passing of time in, incident events out."""

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
        down, ignored, root_cache = self.down, self._ignored, self._root_cache
        recent, uncounted = self._recent, self._uncounted.append
        settle_q, settle_for, late = self._settle, self.s.settle, self.late
        vantage, incidents, blind_quiet = self._vantage, self.incidents, self._blind_quiet
        lossy = self.lossy  # kept while such a node is down: its last answers showed loss
        degraded, member, n_targets, top_set = self.degraded, self.member, self._n_targets, self._top_set
        flat, causes = self._flat, self.cause
        weak = self.levels.weak  # endpoints DEGRADED by their levels (rule 14, levels.py)
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
                    _, kids, ancestors, is_endpoint = rec
                    now = self.now
                    if root_cache:
                        root_cache.clear()
                    down[tid] = now
                    if ts < now and ts < now - settle_for:  # (settle > 0: a change at now is not late)
                        late[tid] = (now, ts)  # news from the past (a poller's spool): its real start
                        self.late_changed = True
                    if ignored and tid in ignored:  # (the empty tests spare a lookup each: hot)
                        del ignored[tid]
                    if degraded:
                        degraded.discard(tid)
                        if weak and tid in weak:
                            self._era += 1
                            self.levels.changed(tid, False, "")  # down now, not weak: judged as any failure
                    if c.cause is not None:
                        causes[tid] = c.cause
                    if kids:
                        self._parent_down(tid, now)
                        next_due = self._next_due()
                    elif flat and tid in top_set:
                        self._tops_flag = self._tops_bad()
                    if is_endpoint:
                        recent.append((now, tid))  # inside W while down since now (_windowed)
                        uncounted(ancestors)  # counted when read (EngineState._counts)
                    if not vantage or tid not in vantage:
                        due = now + settle_for
                        settle_q.append((due, tid, now))
                        if due < next_due:
                            next_due = due
                    if incidents and tid in incidents:
                        self._era += 1
                        self._keep_open(incidents[tid])  # its root failed again within the hold-down
            else:
                self._era += 1  # anything but a failure may change what a settled failure is (_settled)
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
                if rec[3] and (c.new is DEGRADED or tid in weak):
                    self.levels.changed(tid, c.new is DEGRADED, c.reason)
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
                self._era += 1
                self._check_blind()
                next_due = self._next_due()
        if len(self._uncounted) > _UNCOUNTED_MAX:
            self._counts()  # bounded, whether or not anything reads the counts
        return n

    def _parent_down(self, tid: str, ts: float) -> None:
        """A node went down: children whose every uplink is now down are judged again."""
        topo, down = self.topo, self.down
        self._era += 1  # roots below change (_settled)
        if tid in self._top_set:
            self._tops_flag = self._tops_bad()
        sole = topo.sole_children[tid]
        if len(sole) == len(topo.children[tid]):
            return
        parents = topo.parents
        for c in topo.children[tid]:
            if c not in sole and c in down and c not in self._vantage and all(p in down for p in parents[c]):
                # its last uplink just failed: judge it again (it may belong to an outage now)
                self._settle.append((ts + self.s.settle, c, down[c]))

    def _next_due(self) -> float:
        """The earliest timer (-inf with maintenance windows: those are checked at every step)."""
        if self._windows:
            return -_INF
        heads = [q[0][0] for q in (self._settle, self._grace, self._hold, self._blind_timer, self._after_blind,
                                   self.levels.hold) if q]
        return min(heads, default=_INF)

    def tick(self, now: float) -> list[IncidentEvent]:
        """Let time pass: fire settle, grace, hold-down and maintenance timers; emit due updates."""
        self._run_timers(now)
        self._flush()
        out = [e for e in self._queue if isinstance(e, IncidentEvent)]
        self._queue.clear()
        return self.levels.annotate(out) if self.levels.ids else out

    def has_output(self) -> bool:
        """Something to announce at the current time (so a replay flushes before time moves on)."""
        return bool(self._queue or self._forced)

    def resolve(self, inc_id: str, now: float) -> bool:
        """Staff resolved it by hand: close it; its targets are left alone until they change again.

        A ``blind`` alert closed this way is silenced, not ended: the monitor still cannot see, so the
        blindness holds back customer incidents until its cause clears (``self.blind`` stays).
        """
        inc = self.by_id.get(inc_id)
        if inc is None:
            return False
        self._era += 1
        weak_levels = inc_id in self.levels.ids
        self._run_timers(now)
        if weak_levels:
            if inc_id in self.levels.ids:  # (not resolved by its hold-down meanwhile)
                self.levels.resolve(inc)
            return True
        left = sorted(inc.members, key=self.topo.sort_key)
        self._ignored.update(dict.fromkeys(left, inc.id))
        self._resolve(inc)
        self.member_log.extend((inc.id, t, LEFT_DOWN) for t in left)
        return True

    # ---------------------------------------------------------------- timers

    def _run_timers(self, now: float) -> None:  # noqa: C901 - one queue per timer kind, checked inline (hot: every tick)
        if now < self.now:
            now = self.now  # clocks may step back a little; time here never does
        settle, grace, hold, blind = self._settle, self._grace, self._hold, self._blind_timer
        after, weak_hold = self._after_blind, self.levels.hold
        if not (
            self._windows
            or (settle and settle[0][0] <= now)
            or (grace and grace[0][0] <= now)
            or (hold and hold[0][0] <= now)
            or (blind and blind[0][0] <= now)
            or (after and after[0][0] <= now)
            or (weak_hold and weak_hold[0][0] <= now)
        ):
            self.now = now  # the common case in a burst: nothing due yet
            return
        queues = (settle, grace, hold, blind, after, weak_hold)
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
                self._era += 1
                self.now = max(self.now, wdue)
                self._sync_windows()
                continue
            if best is settle:
                # drain settle timers in one tight loop up to the next other timer (100k in a burst)
                others = [q[0][0] for q in queues[1:] if q]
                self._drain_settle(min([now, *others, *([wdue] if wdue is not None else [])]))
                continue
            self._era += 1  # any other timer may change what a settled failure is (_settled)
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
            elif best is weak_hold:
                self.levels.expire(key, stamp)  # a weak-levels incident's own hold-down
            elif self.blind is not None and self.blind.clear_since == stamp:
                self._end_blind()
        self.now = now

    def _drain_settle(self, limit: float) -> None:
        """Judge every target whose settle period ends by ``limit``, in order.

        Most of a burst is already attached to the outage its root walk leads to (the root's own
        walk over its subtree took it), so that case is checked here without a call to ``_evaluate``;
        the clock is moved only where a decision is taken, and to the last due time at the end.
        A run of at least ``_CHUNK`` due entries is checked a chunk at a time in C (``_settled``):
        only the entries with something to decide take the per-entry steps below, and a decision
        puts the rest of its chunk back, since it may change what they lead to. Those are then taken
        one at a time: each entry goes through at most one chunk check, so a burst where most
        entries need a decision (failures below nodes that answer) does not pay a whole chunk's
        check per entry (it did: 100,000 endpoints with no cause, dying gasp or LOS 2.1-5.7 s
        instead of 1.1-1.4 s of CPU).
        """
        settle, down, ignored, evaluate = self._settle, self.down, self._ignored, self._judge
        member, incidents, basis, topo_root = self.member, self.incidents, self.basis, self._topo_root
        parents, root_cache = self.topo.parents, self._root_cache
        last = self.now
        solo = 0  # entries a decision put back: taken one at a time before the next chunk
        while settle and settle[0][0] <= limit:
            if not solo and len(settle) >= _CHUNK and not ignored and settle[_CHUNK - 1][0] <= limit:
                chunk = list(starmap(settle.popleft, repeat((), _CHUNK)))
                skip = self._settled(chunk)
                i = 0
                last = chunk[-1][0]
                while True:
                    try:
                        i = skip.index(False, i) + 1
                    except ValueError:
                        break
                    due, key, stamp = chunk[i - 1]
                    if down.get(key) != stamp or self._attached(key):
                        continue
                    last = due
                    if due > self.now:
                        self.now = due
                    evaluate(key)
                    if i < _CHUNK:
                        settle.extendleft(reversed(chunk[i:]))
                        solo = _CHUNK - i
                    break
                continue
            if solo:
                solo -= 1
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

    def _judge(self, key: str) -> None:
        """``_evaluate`` a settled failure; note an outage it opened over its root's down subtree.

        Right after such an opening every member of the outage is down with its root walk leading
        to the outage's root, so until anything but an endpoint going down happens (``_era``), a
        settle entry of a member needs no other check (``_settled``). A judgement that changed
        nothing (the root's own entry, typically) leaves that so.
        """
        calm = self._calm is not None and self._calm[1] == self._era
        seq, n_open, before = self.next_seq, len(self.by_id), self._mark()
        self._evaluate(key)
        self._era += 1
        if calm and self._mark() == before:
            assert self._calm is not None
            self._calm = (self._calm[0], self._era)
            return
        m = self.member.get(key)
        if (
            self.next_seq == seq + 1 and len(self.by_id) == n_open + 1  # one opened, nothing merged or closed
            and m is not None and m in self.down and not self.lossy and not self._fading
            and self._walk_up(m) == m  # m is where its members' root walks end (not a dark node's root)
        ):
            inc = self.incidents.get(m)
            if inc is not None and inc.seq == seq and self.basis[inc.id] == "outage":
                self._calm = (m, self._era)
                self._bulk = -1  # (worked out by the first _settled that reads it)

    def _pending_are_members(self, chunk: list[tuple[float, str, float]], m: str) -> int:
        """How many settle entries (``chunk`` and the queue) are skipped by the outage at ``m``, all
        or none (0): all when every down target is one of its members. Then an entry is stale (its
        key came back since: skipped anyway) or a member's; read while ``_calm`` holds."""
        return len(chunk) + len(self._settle) if len(self.down) == len(self.incidents[m].members) else 0

    def _mark(self) -> tuple[object, ...]:
        """What a judgement changes when it changes anything (members log every move)."""
        inc = self.incidents.get(self._calm[0]) if self._calm is not None else None
        return (
            self.next_seq, len(self.by_id), len(self.member_log), len(self._queue), len(self._settle),
            len(self.lossy), len(self._fading), len(self._ignored), self.blind, inc,
            None if inc is None else (self.basis.get(inc.id), inc.kind, len(inc.members)),
        )

    def _attached(self, key: str) -> bool:
        """``key`` (down) is attached to the outage its root walk leads to: nothing to decide."""
        m = self.member.get(key)
        if m is None or m == key:
            return False
        down, ps = self.down, self.topo.parents[key]
        if not (ps and ps[0] in down and (len(ps) == 1 or all(p in down for p in ps))):
            return False
        root = self._root_cache.get(ps[0]) or self._topo_root(key)
        return root == m and self.basis[self.incidents[m].id] == "outage"

    def _settled(self, chunk: list[tuple[float, str, float]]) -> list[bool]:
        """Per settle entry: still down since then and attached to the outage its (cached) root walk
        leads to, i.e. what the per-entry check would skip, worked out in C. False where unsure."""
        calm = self._calm
        if calm is not None and calm[1] == self._era and not self._windows:
            # nothing but endpoints going down since an outage at m took its root's down subtree
            # (``_judge``): its members are still down and attached, their roots at m; an entry of
            # one is skipped either way (a stale one too): one lookup per entry, not three
            m = calm[0]
            if self._bulk < 0:
                self._bulk = self._pending_are_members(chunk, m)
            if self._bulk >= len(chunk):
                # every entry here was pending when the outage took everything down: no key is read
                # (each costs a cache miss in a burst), only the root's own entries go the per-entry way
                self._bulk -= len(chunk)
                own = list(map(eq, map(_STAMP, chunk), repeat(self.down[m])))
                if not any(own):
                    return [True] * len(chunk)
                return [not (o and e[1] == m) for o, e in zip(own, chunk, strict=True)]
            self._bulk = 0
            keys = list(map(_KEY, chunk))
            return list(map(and_, map(ne, keys, repeat(m)), map(eq, map(self.member.get, keys), repeat(m))))
        keys = list(map(_KEY, chunk))
        alive = map(eq, map(self.down.get, keys), map(_STAMP, chunk))
        ms = list(map(self.member.get, keys))
        basis, incidents = self.basis, self.incidents
        ok = {(m, m) for m in set(ms) if m is not None and basis[incidents[m].id] == "outage"}
        if not ok:
            return [False] * len(chunk)
        first = cast(Callable[[tuple[str, ...]], str | None], self._sole_parent.get)
        cached = cast(Callable[[str | None], str | None], self._root_cache.get)
        roots = map(cached, map(first, map(self.topo.parents.__getitem__, keys)))
        return list(map(and_, alive, map(ok.__contains__, zip(roots, ms, strict=True))))
