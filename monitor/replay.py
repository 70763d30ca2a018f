"""``monitor replay``: recorded probe outcomes through the real state machine and correlation engine.

A what-if tool (tune K, P, W, the hold-down ... on last month's data) and our test harness. Time is
virtual, taken from the input, so the same input and settings always give byte-identical output.

The hot loop is deliberately plain: most lines are "still up" or "still down" polls that cannot
change a confirmed state, and those skip the state machine entirely (see :func:`_no_change`): a
target's state is a shared :class:`Node` of the state machine's graph, so such a line costs one
lookup and a flag. The usual poll that does move a streak follows an edge remembered on the node
(``step`` decides it once per node); only actual transitions reach the engine, and the engine's
timers run only when time advances. Every line is still checked whole
(:mod:`monitor.replay_input`): msgspec decodes and checks types and ranges in one step, and the
standard library's full check decides, and names the error of, any line msgspec declines.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TextIO

from monitor.correlate.engine import Engine
from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.maintenance import Window, config_windows
from monitor.correlate.settings import CorrelationOverrides, CorrelationSettings, derive, parse_assignments
from monitor.correlate.topology import Topology
from monitor.cutoff import CutOff, confirm_cut_off
from monitor.errors import ConfigError
from monitor.inventory.model import Inventory, PollingSettings, Target
from monitor.remote.vantage import Vantages, windows
from monitor.replay_input import (
    MAX_LINE,
    RTT_MAX,
    UNSET,
    Metrics,
    ReplayError,
    check_measurements,
    parse_line,
    read_lines,
    record,
    record_decoder,
    timestamp,
)
from monitor.state import Confirmation, Observation, State, StateChange, TargetState, step

_FAIL = Observation(reachable=False, detail="no reply")
_OK = Observation(reachable=True)
_NO_TS = object()


def settings_for(inv: Inventory, overrides: dict[str, str] | None = None) -> CorrelationSettings:
    """The daemon's settings for ``inv`` (its ``correlation:`` section included), then ``overrides``.

    Why the config section too: a what-if must start from what the daemon really runs with.
    """
    return derive(inv.polling.interval, inv.correlation | CorrelationOverrides.parse(overrides or {}))


def replay(  # noqa: C901 - the replay hot loop, one frame on purpose (benchmarked: bench/correlate)
    inv: Inventory,
    settings: CorrelationSettings,
    lines: Iterable[str],
    *,
    source: str = "<input>",
    windows: Iterable[Window] = (),
    topology: Topology | None = None,
    engine: Engine | None = None,
) -> Iterator[IncidentEvent]:
    """Yield the incident events for JSON-lines probe outcomes, in order.

    ``engine``: a fresh one to use (the caller reads what it learned afterwards: ``--rates``).

    The config's ``maintenance:`` windows are planned as the daemon plans them (``config_windows``);
    ``windows`` adds others, as ``monitor maintenance add`` does in the daemon.
    """
    if engine is None:
        engine = Engine(topology or Topology.from_inventory(inv), settings)
    planned = config_windows(inv.maintenance)
    engine.set_windows([*planned, *(replace(w, id=len(planned) + i) for i, w in enumerate(windows, 1))])
    targets = inv.targets
    # target -> its node: confirmed state, streaks, rules and limits (see StepCache); a healthy reply
    # to a node that is ``calm`` changes nothing, and costs this lookup and the limits' tests
    nodes: dict[str, Node] = {}
    pending: list[StateChange] = []  # transitions at ``now``, correlated when time moves on
    # outcomes tagged with the poller that saw them (several vantage points per zone): each poller's
    # own confirmed states, combined as the core combines them (monitor.remote.vantage)
    seen = _Seen(inv, pending)
    tagged: dict[tuple[str, str], Node] = {}  # (poller, target) -> its node, as ``nodes``
    book: dict[Any, Node]
    key: Any  # a target id (the core's own outcomes) or (poller, target id)
    out: _Sink
    plain = seen.plain
    vantage = seen.vantage
    shared_rules: dict[tuple[int, int, int], Confirmation] = {}
    start: dict[int, tuple[Node, PollingSettings]] = {}  # id(polling settings) -> a new target's node
    decode = record_decoder()  # types and ranges checked in C while decoding (replay_input.Record)
    max_line, unset = MAX_LINE, UNSET  # locals: read per line
    graph = StepCache()
    change_of = _new_change
    last_ts_text: object = _NO_TS  # not None: a "ts": null on the first line must be checked too
    now: float | None = None
    # a failed poll below a node confirmed DOWN confirms DOWN (monitor/cutoff.py): since when each is
    # DOWN, by the key of ``book`` (each poller's own view, as its polling stage holds it)
    DOWN = State.DOWN
    cutoff = CutOff(engine.topo.parents, {
        tid: (_rules(t, settings, shared_rules).down_after - 1) * t.polling.interval for tid, t in targets.items()
    }, settings.vantage)
    down_since: dict[Any, float] = {}

    def cut_by(tid: str, poller: str | None, node: Node, fails: int) -> str | None:
        if node.state is DOWN or not down_since:
            return None
        assert now is not None
        since = down_since.get if poller is None else lambda p: down_since.get((poller, p))
        return cutoff.cut_by(tid, since, now - fails * targets[tid].polling.interval)

    for lineno, line in enumerate(lines, 1):
        try:  # the fast path for good lines; anything odd goes to parse_line for the exact error
            if len(line) > max_line:
                raise ValueError("too long")
            r = decode(line)
            if r.cause is not unset and r.ok:
                raise ValueError("bad cause")  # a cause only on a failed poll
        except ValueError:  # msgspec's errors are ValueErrors, and so is a str it cannot encode
            if not line.strip():
                continue
            r = record(parse_line(line, source, lineno))  # all else raises ReplayError
        ts_text = r.ts
        if ts_text != last_ts_text:
            ts = timestamp(ts_text, source, lineno)
            if now is not None and ts < now:
                raise ReplayError(f"{source}:{lineno}: ts {ts_text} is earlier than the line before (sort by time)")
            if now is None or ts > now:
                if now is None and engine.rates.start is None:
                    engine.rates.start = ts  # the burst rule's rates: per time observed, from the first line
                if vantage is not None and vantage.recovering and now is not None:
                    pending.extend(vantage.advance(now))  # every poller's news is in up to now
                if pending:
                    yield from _correlate(engine, pending, now)
                yield from engine.tick(ts)
            now = ts
            last_ts_text = ts_text
        tid = r.target
        poller = r.poller
        if poller is None:
            book, key, out = nodes, tid, plain
        else:
            book, key, out = tagged, (poller, tid), seen.via.get(poller, plain)
        node = book.get(key)
        if node is None:
            target = targets.get(tid)
            if target is None:
                raise ReplayError(f"{source}:{lineno}: unknown target {tid!r} (not a node or endpoint in {inv.source})")
            out = seen.sink(poller, tid, f"{source}:{lineno}", tid in nodes)
            first = start.get(id(target.polling))  # targets share their polling settings: one look-up
            if first is None:
                th = target.polling.thresholds
                limits = (RTT_MAX if th.rtt_ms is None else min(th.rtt_ms, RTT_MAX),
                          1.0 if th.loss_pct is None else min(1.0, th.loss_pct / 100))
                node = graph.node(TargetState(), _rules(target, settings, shared_rules), limits)
                first = start[id(target.polling)] = (node, target.polling)  # kept alive: its id stays its own
            node = book[key] = first[0]
        if r.ok:
            # within the target's limits? (types and ranges are the decoder's; NaN is not JSON)
            rtt, loss = r.rtt_ms, r.loss
            metrics = r.metrics  # an ONU's or station's levels from its parent's table: judged in full
            if metrics is None and (rtt is None or rtt <= node.rtt_max) and (loss is None or loss <= node.loss_max):
                if node.calm:
                    continue  # most lines: UP with nothing pending, a healthy reply changes nothing
                edge = node.ok or graph.edge(node, _OK)
            else:
                assert now is not None
                reasons = _reasons(targets[tid], rtt, loss, source, lineno)
                if metrics is not None:
                    reasons += _levels(targets[tid], metrics)
                obs = Observation(True, degraded_reasons=reasons)
                book[key], change = graph.follow(node, obs, now, tid)
                if change is not None:
                    out.append(change)
                    if change.old is DOWN:
                        down_since.pop(key, None)
                continue
        else:
            if r.metrics is not None:
                parse_line(line, source, lineno)  # metrics only on an answered poll: raises ReplayError
            if node.quiet:
                continue  # DOWN and nothing pending: another failure changes nothing
            if isinstance(cause := r.cause, str):
                assert now is not None
                obs = Observation(False, detail=f"last down cause {cause}", cause=cause)
                book[key], change = graph.follow(node, obs, now, tid)
                if change is None and (cut := cut_by(tid, poller, node, book[key].streaks[0])) is not None:
                    book[key], change = graph.cut_off(node, book[key], obs, now, tid, cut)
                if change is not None:
                    out.append(change)
                    if change.new is DOWN:
                        down_since[key] = now
                continue
            edge = node.fail or graph.edge(node, _FAIL)
            if edge[1] is None and (cut := cut_by(tid, poller, node, edge[0].streaks[0])) is not None:
                assert now is not None
                book[key], change = graph.cut_off(node, edge[0], _FAIL, now, tid, cut)
                out.append(change)
                down_since[key] = now
                continue
        book[key] = edge[0]
        if edge[1] is not None:
            assert now is not None
            out.append(change_of(tid, node.state, edge[1], now, edge[2]))
            if edge[1] is DOWN:
                down_since[key] = now
            elif node.state is DOWN:
                down_since.pop(key, None)
    if now is not None:
        yield from _correlate(engine, pending, now)
        yield from engine.tick(now)


class _Via:
    """A poller's confirmed changes (tagged outcomes): its view, combined with its zone's other pollers'."""

    __slots__ = ("pending", "poller", "vantage")

    def __init__(self, pending: list[StateChange], vantage: Vantages, poller: str) -> None:
        self.pending, self.vantage, self.poller = pending, vantage, poller

    def append(self, change: StateChange) -> None:
        self.pending.extend(self.vantage.report(self.poller, change))


class _CoreSeen:
    """The replay's own (untagged) changes, when some are a poller's vantage node the core polls."""

    __slots__ = ("pending", "vantage")

    def __init__(self, pending: list[StateChange], vantage: Vantages) -> None:
        self.pending, self.vantage = pending, vantage

    def append(self, change: StateChange) -> None:
        self.pending.append(change)
        if change.target in self.vantage.watched_by:
            self.pending.extend(self.vantage.node_state(change.target, change.new, change.ts))


_Sink = list[StateChange] | _Via | _CoreSeen


class _Seen:
    """Where the replay's confirmed changes go: an untagged outcome is the core's own, straight to
    correlation, as always; an outcome tagged with a ``poller`` is that poller's view, combined with
    the other pollers' of its zone exactly as the core combines them (:mod:`monitor.remote.vantage`;
    every poller counts as live: replay has no heartbeats)."""

    def __init__(self, inv: Inventory, pending: list[StateChange]) -> None:
        self.inv, self.pending = inv, pending
        p = inv.pollers
        self.vantage = (Vantages(p.zone_pollers(), p.zone_of, p.vantage_of(), windows=windows(inv))
                        if p is not None else None)
        self.via: dict[str, _Via] = {}
        self.tagged: set[str] = set()  # targets whose outcomes name their poller
        v = self.vantage
        core_watched = v is not None and any(n not in v.zone_of for n in v.watched_by)
        self.plain: _Sink = _CoreSeen(pending, v) if v is not None and core_watched else pending

    def sink(self, poller: str | None, tid: str, where: str, untagged: bool) -> _Sink:
        """The first outcome of ``tid`` (from ``poller``): checked, and where its changes go."""
        if (poller is None and tid in self.tagged) or (poller is not None and untagged):
            raise ReplayError(f"{where}: {tid!r} has outcomes with and without a poller (tag every outcome of a "
                              "target with the poller that saw it, or none)")
        if poller is None:
            return self.plain
        v = self.vantage
        if v is None:
            raise ReplayError(f"{where}: poller {poller!r}, but {self.inv.source} has no pollers: section")
        zone = v.poller_zone.get(poller)
        if zone is None:
            known = ", ".join(sorted(v.poller_zone)) or "none"
            raise ReplayError(f"{where}: unknown poller {poller!r} (the config's pollers: {known})")
        if v.zone_of.get(tid) != zone:
            assert self.inv.pollers is not None
            home = self.inv.pollers.zone_of.get(tid)
            raise ReplayError(f"{where}: poller {poller!r} reports zone {zone!r}, and {tid!r} is in "
                              f"{'zone ' + repr(home) if home else 'no zone'}")
        self.tagged.add(tid)
        via = self.via.get(poller)
        if via is None:
            via = self.via[poller] = _Via(self.pending, v, poller)
        return via


def _correlate(engine: Engine, changes: list[StateChange], now: float | None) -> Iterator[IncidentEvent]:
    """The changes of one timestamp, announcing as soon as one leaves output (as applying each would).

    Batched because the engine's per-call setup costs more than most changes (a third of the
    replay's time when applied one by one); ``until_output`` keeps the events byte-identical.
    """
    done = 0
    while done < len(changes):
        done += engine.apply_many(changes[done:] if done else changes, until_output=True)
        if engine.has_output():
            assert now is not None
            yield from engine.tick(now)
    changes.clear()


def _change_maker() -> Callable[[str, State, State, float, str], StateChange]:
    """``StateChange(target, old, new, ts, reason)``, built in a third of the time.

    The frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (1.8 µs per
    change; a core failure and its recovery are 200,000 changes). Here the slots are filled by their
    descriptors. Only while the fields are exactly these (else the class itself is used); the
    replay's property test compares every change it makes with ``step``'s.
    """
    names = tuple(f.name for f in fields(StateChange))
    if names != ("target", "old", "new", "ts", "reason", "cause"):
        return StateChange
    new = object.__new__
    target, old, state, ts, reason, cause = (getattr(StateChange, name).__set__ for name in names)

    def make(tid: str, was: State, now_is: State, at: float, why: str) -> StateChange:
        c = new(StateChange)
        target(c, tid)
        old(c, was)
        state(c, now_is)
        ts(c, at)
        reason(c, why)
        cause(c, None)
        return c

    return make


_new_change = _change_maker()


Edge = tuple["Node", State | None, str]  # where a poll leads: the next node, the new state (None: no change), why


class Node:
    """A confirmed state with its four streaks under one set of rules: one node of ``step``'s graph.

    ``step`` is pure, and what it decides depends only on the confirmed state, the streaks, the
    observation and the rules; ``since``, the time and the target id are only copied into the result.
    So targets in the same situation share one node, and the edges for the two shared observations
    ("healthy reply", "no reply") are worked out once, by ``step``, and kept on the node: a poll
    that changes something costs one attribute read instead of ``step``'s dataclasses. The node
    also carries the limits (rtt in ms, loss as a fraction) beyond which a reply is degraded, so the
    replay loop finds all it needs about a target in one lookup.
    """

    __slots__ = ("calm", "fail", "loss_max", "ok", "quiet", "rtt_max", "rules", "state", "streaks")

    def __init__(self, state: State, streaks: tuple[int, int, int, int], rules: Confirmation,
                 limits: tuple[float, float]) -> None:
        self.state, self.streaks, self.rules = state, streaks, rules
        self.rtt_max, self.loss_max = limits
        fail, reach, _, degraded = streaks
        self.calm = state is State.UP and fail == 0 and degraded == 0  # a healthy reply changes nothing: _no_change
        self.quiet = state is State.DOWN and reach == 0  # no reply changes nothing: _no_change
        self.ok: Edge | None = None  # filled in by StepCache.edge
        self.fail: Edge | None = None

    def target_state(self, since: float) -> TargetState:
        return TargetState(self.state, since, *self.streaks)


class StepCache:
    """``step`` with its decisions remembered: the same answers for a fraction of the cost.

    Holds the :class:`Node` of every (state, streaks, rules) seen, so a target's state is one
    reference and the usual poll follows a remembered edge; observations with their own text
    (degraded reasons, a down cause) go to ``step`` itself. ``tests/test_replay.py`` checks
    ``__call__`` (the same interface as ``step``) against ``step``.
    """

    def __init__(self) -> None:
        self.memo: dict[tuple[object, ...], Node] = {}

    def node(self, st: TargetState, rules: Confirmation, limits: tuple[float, float] = (RTT_MAX, 1.0)) -> Node:
        """The shared node for ``st`` under ``rules`` and ``limits``."""
        streaks = (st.fail_streak, st.reach_streak, st.ok_streak, st.degraded_streak)
        key = (st.state, *streaks, rules, limits)
        found = self.memo.get(key)
        if found is None:
            if len(self.memo) > 10_000:  # small in practice: streaks stop mattering past the rules' counts,
                self.memo.clear()  # but a long degraded spell counts on; never let odd input grow it
            found = self.memo[key] = Node(st.state, streaks, rules, limits)
        return found

    def _next(self, node: Node, st: TargetState) -> Node:
        return self.node(st, node.rules, (node.rtt_max, node.loss_max))

    def edge(self, node: Node, obs: Observation) -> Edge:
        """Where ``obs`` (``_OK`` or ``_FAIL``) leads from ``node``, worked out by ``step`` once."""
        cur, change = step(node.target_state(0.0), obs, 0.0, node.rules, "")
        edge: Edge = (self._next(node, cur), None if change is None else change.new,
                      "" if change is None else change.reason)
        if obs is _OK:
            node.ok = edge
        else:
            node.fail = edge
        return edge

    def follow(self, node: Node, obs: Observation, now: float, target: str) -> tuple[Node, StateChange | None]:
        """Any observation from ``node``: ``step`` itself, for those with their own words."""
        cur, change = step(node.target_state(0.0), obs, now, node.rules, target)
        return self._next(node, cur), change

    def cut_off(
        self, prev: Node, cur: Node, obs: Observation, now: float, target: str, node: str,
    ) -> tuple[Node, StateChange]:
        """The DOWN a failed poll confirms for a target ``node`` cuts off (``cur``: where ``step`` led)."""
        new, change = confirm_cut_off(prev.target_state(0.0), cur.target_state(0.0), obs, now, target, node)
        return self._next(prev, new), change

    def __call__(
        self, prev: TargetState, obs: Observation, now: float, rules: Confirmation, target: str
    ) -> tuple[TargetState, StateChange | None]:
        """``step(prev, obs, now, rules, target)``, by the graph."""
        node = self.node(prev, rules)
        if obs is not _FAIL and obs is not _OK:
            nxt, change = self.follow(node, obs, now, target)
        else:
            nxt, new, reason = (node.ok if obs is _OK else node.fail) or self.edge(node, obs)
            change = None if new is None else StateChange(target, prev.state, new, now, reason)
        return nxt.target_state(prev.since if change is None else now), change


def _no_change(st: TargetState, obs: Observation) -> bool:
    """True when ``step`` could not change the confirmed state nor any streak that matters later.

    UP + a healthy reply only grows ``reach_streak``/``ok_streak``, which are read only in DOWN and
    DEGRADED, and getting there resets them first; DOWN + another failure only grows ``fail_streak``,
    which matters only before DOWN is reached. The replay loop reads it from :class:`Node` (``calm``,
    ``quiet``); this copy is what the equivalence test checks against ``step``.
    """
    if obs.reachable:
        return (
            not obs.degraded_reasons and st.state is State.UP and st.fail_streak == 0 and st.degraded_streak == 0
        )
    return st.state is State.DOWN and st.reach_streak == 0


def _rules(
    target: Target, settings: CorrelationSettings, shared: dict[tuple[int, int, int], Confirmation]
) -> Confirmation:
    p = target.polling
    key = (settings.down_after or p.down_after, settings.up_after or p.up_after, p.degraded_after)
    rule = shared.get(key)
    if rule is None:
        rule = shared[key] = Confirmation(*key)
    return rule


def _reasons(target: Target, rtt: object, loss: object, source: str, lineno: int) -> tuple[str, ...]:
    """Judge the optional measurements like the daemon does (``loss`` is a fraction, 0.25 = 25 %)."""
    check_measurements(rtt, loss, source, lineno)
    th = target.polling.thresholds
    out = []
    if isinstance(loss, int | float) and th.loss_pct is not None and loss * 100 > th.loss_pct:
        out.append(f"loss {loss * 100:.0f}% > {th.loss_pct:g}%")
    if isinstance(rtt, int | float) and th.rtt_ms is not None and rtt > th.rtt_ms:
        out.append(f"rtt {rtt:.1f}ms > {th.rtt_ms:g}ms")
    return tuple(out)


def _levels(target: Target, m: Metrics) -> tuple[str, ...]:
    """An answered poll's ``metrics`` judged as the daemon's table walk judges a row's levels (imported
    here: a replay without levels does not load the polling package)."""
    from monitor.polling.table_watch import level_reasons

    def one(v: float | None) -> list[float]:
        return [] if v is None else [v]

    return tuple(level_reasons(one(m.onu_rx_dbm), one(m.wireless_signal_dbm), one(m.wireless_ccq_pct),
                               target.polling.thresholds))


def write_events(events: Iterable[IncidentEvent], out: TextIO) -> int:
    n = 0
    for e in events:
        out.write(e.to_json())
        out.write("\n")
        n += 1
    return n


# ---------------------------------------------------------------- command line


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="feed recorded probe outcomes through the state machine and correlation (what-if)",
        description="Replays outcomes.jsonl on a virtual clock and writes incident lifecycle events as JSON lines.",
    )
    p.add_argument("--config", required=True, type=Path, help="inventory (YAML)")
    p.add_argument("--input", required=True, type=Path, help="probe outcomes, one JSON object per line, by time")
    p.add_argument("--output", type=Path, help="incident events (default: stdout)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override a correlation setting (K, P, W, settle, hold_down, grace, down_after, vantage, ...)",
    )
    p.add_argument(
        "--rates", action="store_true",
        help="after the events, write the failure rates the burst rule learned, per node, to standard error",
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from monitor.inventory.loader import load_inventory

    overrides = parse_assignments(args.overrides)
    inv = load_inventory(args.config, secrets=False)  # sends nothing
    settings = settings_for(inv, overrides)
    try:
        src = args.input.open("rb")  # decoded line by line: a bad byte is named with its line
    except OSError as exc:
        raise ConfigError(f"{args.input}: cannot read: {exc.strerror}") from None
    try:
        engine = Engine(Topology.from_inventory(inv), settings)
        with src:
            events = replay(inv, settings, read_lines(src, str(args.input)), source=str(args.input), engine=engine)
            if args.output is None:
                write_events(events, sys.stdout)
            else:
                tmp = args.output.with_name(args.output.name + ".partial")
                try:
                    with tmp.open("w", encoding="utf-8") as out:
                        write_events(events, out)
                except BaseException:
                    tmp.unlink(missing_ok=True)  # bad input: no output at all, not half of it
                    raise
                tmp.replace(args.output)
    except ReplayError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:  # reading the input is ReplayError (read_lines): this is the output
        raise ConfigError(f"{args.output or '<stdout>'}: cannot write: {exc.strerror or exc}") from None
    if args.rates:
        write_rates(engine, sys.stderr)
    return 0


def write_rates(engine: Engine, out: TextIO) -> None:
    """The burst rule's learned rates at the end of the replay: nodes with failures below, busiest first."""
    rows = engine.rates.summary(engine.now)
    out.write("learned failure rates (independent failures per endpoint and day, burst rule):\n")
    for r in rows:
        out.write(
            f"  {r.node}: endpoints={r.endpoints} failures={r.failures} rate={r.rate_all:.3g}"
            f" peak={r.peak:.3g} at {r.peak_hour:02d}h UTC\n"
        )
    if not rows:
        out.write("  (no independent failures: every node at the prior)\n")
