"""``monitor replay``: recorded probe outcomes through the real state machine and correlation engine.

A what-if tool (tune K, P, W, the hold-down ... on last month's data) and our test harness. Time is
virtual, taken from the input, so the same input and settings always give byte-identical output.

The hot loop is deliberately plain: most lines are "still up" or "still down" polls that cannot
change a confirmed state, and those skip the state machine entirely (see :func:`_no_change`; a
healthy reply from a target UP with nothing pending costs one lookup in ``calm``); only actual
transitions reach the engine, and the engine's timers run only when time advances. Every line is
still checked whole (:mod:`monitor.replay_input`), the usual record shapes by their lookups alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from monitor.correlate.engine import Engine
from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.maintenance import Window, config_windows
from monitor.correlate.settings import CorrelationOverrides, CorrelationSettings, derive, parse_assignments
from monitor.correlate.topology import Topology
from monitor.errors import ConfigError
from monitor.inventory.model import Inventory, Target
from monitor.replay_input import (
    CAUSES,
    KEYS,
    MAX_LINE,
    REAL,
    RTT_MAX,
    ReplayError,
    check_measurements,
    parse_line,
    read_lines,
    timestamp,
)
from monitor.state import Confirmation, Observation, State, StateChange, TargetState, step

_FAIL = Observation(reachable=False, detail="no reply")
_OK = Observation(reachable=True)
_NO_TS = object()
_ABSENT = object()  # a key not in the record (null is None)


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
    states: dict[str, TargetState] = {}
    rules: dict[str, Confirmation] = {}
    limits: dict[str, tuple[float, float]] = {}  # (rtt_ms, loss fraction) beyond which a reply is degraded
    # targets UP with no streak pending (see _no_change) -> their limits: a healthy reply from one
    # changes nothing, so the loop skips it after one lookup (added when such a reply is seen,
    # removed when any other line for it is)
    calm: dict[str, tuple[float, float]] = {}
    shared_rules: dict[tuple[int, int, int], Confirmation] = {}
    UP, DOWN = State.UP, State.DOWN
    # the C scanner itself (an instance attribute typeshed does not know): raw_decode is a Python
    # wrapper around it, one frame per line more; it raises StopIteration where raw_decode says
    # "Expecting value", and the slow path names the error either way
    scan: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]
    max_line, keys, causes, real, absent, rtt_cap = MAX_LINE, KEYS, CAUSES, REAL, _ABSENT, RTT_MAX  # per line
    cached = StepCache()
    last_ts_text: object = _NO_TS  # not None: a "ts": null on the first line must be checked too
    now: float | None = None
    pending: list[StateChange] = []  # transitions at ``now``, correlated when time moves on
    rtt: Any
    loss: Any
    cause: Any
    for lineno, line in enumerate(lines, 1):
        size = len(line)
        try:  # the fast path for good lines; anything odd goes to parse_line for the exact error
            if size > max_line:
                raise ValueError("too long")
            rec, end = scan(line, 0)
            if end < size - 1 and line[end:].strip():
                raise ValueError("extra data after the object")
            ts_text = rec["ts"]
            tid = rec["target"]
            ok = rec["ok"]
            # the keys beyond ts, target and ok: the usual shapes (rtt_ms; rtt_ms and loss) are known by
            # their lookups, others take the key-set test; every value is checked below either way
            n = len(rec)
            if n == 4 and (rtt := rec.get("rtt_ms", absent)) is not absent:
                loss = cause = None
            elif n == 5 and (rtt := rec.get("rtt_ms", absent)) is not absent and (
                    loss := rec.get("loss", absent)) is not absent:
                cause = None
            elif n == 3:
                rtt = loss = cause = None
            elif rec.keys() <= keys:
                rtt = rec.get("rtt_ms")
                loss = rec.get("loss")
                cause = rec.get("cause")
                if "cause" in rec and (ok is not False or cause not in causes):
                    raise ValueError("bad cause")  # a cause only on a failed poll, one of CAUSES
            else:
                raise KeyError("unknown key")
        except (ValueError, KeyError, TypeError, RecursionError, StopIteration):
            if not line.strip():
                continue
            rec = parse_line(line, source, lineno)  # leading whitespace is fine; all else raises ReplayError
            ts_text, tid, ok = rec["ts"], rec["target"], rec["ok"]
            rtt, loss, cause = rec.get("rtt_ms"), rec.get("loss"), rec.get("cause")
        if ts_text != last_ts_text:
            ts = timestamp(ts_text, source, lineno)
            if now is not None and ts < now:
                raise ReplayError(f"{source}:{lineno}: ts {ts_text} is earlier than the line before (sort by time)")
            if now is None or ts > now:
                if now is None and engine.rates.start is None:
                    engine.rates.start = ts  # the burst rule's rates: per time observed, from the first line
                if pending:
                    yield from _correlate(engine, pending, now)
                yield from engine.tick(ts)
            now = ts
            last_ts_text = ts_text
        try:
            lim = calm.get(tid)
        except TypeError:  # a list or an object as target: parse_line names it
            parse_line(line, source, lineno)
            raise
        if lim is not None:
            # most lines: a reply within the thresholds from a target UP with nothing pending, which
            # changes nothing (the type test first: True must not pass for 1; NaN fails the range)
            if ok is True and (rtt is None or (type(rtt) in real and 0 <= rtt <= lim[0])) and (
                    loss is None or (type(loss) in real and 0 <= loss <= lim[1])):
                continue
            del calm[tid]  # judged in full below; back in once it is UP and calm again
        st = states.get(tid)
        if st is None:
            target = targets.get(tid) if isinstance(tid, str) else None
            if target is None:
                parse_line(line, source, lineno)  # a target that is not a string is named as such
                raise ReplayError(f"{source}:{lineno}: unknown target {tid!r} (not a node or endpoint in {inv.source})")
            st = states[tid] = TargetState()
            rules[tid] = _rules(target, settings, shared_rules)
            th = target.polling.thresholds
            limits[tid] = (
                RTT_MAX if th.rtt_ms is None else min(th.rtt_ms, RTT_MAX),
                1.0 if th.loss_pct is None else min(1.0, th.loss_pct / 100),
            )
        if ok is True:
            if rtt is None and loss is None:
                healthy = True
            else:
                rtt_max, loss_max = limits[tid]
                healthy = (rtt is None or (type(rtt) in real and 0 <= rtt <= rtt_max)) and (
                    loss is None or (type(loss) in real and 0 <= loss <= loss_max))
            if healthy:
                if st.state is UP and st.fail_streak == 0 and st.degraded_streak == 0:
                    calm[tid] = limits[tid]  # see _no_change
                    continue
                obs = _OK
            else:
                obs = Observation(reachable=True, degraded_reasons=_reasons(targets[tid], rtt, loss, source, lineno))
        elif ok is False:
            # measurements of a failed poll are not used, but must be valid too (a valid rtt alone, the
            # usual case, passes here without a call)
            if loss is not None or (rtt is not None and not (type(rtt) in real and 0 <= rtt <= rtt_cap)):
                check_measurements(rtt, loss, source, lineno)
            if st.state is DOWN and st.reach_streak == 0:
                continue
            obs = _FAIL if cause is None else Observation(False, detail=f"last down cause {cause}", cause=cause)
        else:
            parse_line(line, source, lineno)  # raises: ok must be true or false
            raise AssertionError("parse_line accepted a bad ok")
        assert now is not None
        new, change = cached(st, obs, now, rules[tid], tid)
        states[tid] = new
        if change is not None:
            pending.append(change)
    if now is not None:
        yield from _correlate(engine, pending, now)
        yield from engine.tick(now)


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


Decision = tuple[int, int, int, int, State | None, str]  # streaks after the poll, new state, reason


class StepCache:
    """``step`` with its decisions remembered: the same answers for well under half the cost.

    ``step`` is pure, and what it decides depends only on the confirmed state, the four streaks,
    the observation and the rules; ``since``, the time and the target id are only copied into the
    result. So the decision is cached under those (for the two shared observations, "no reply" and
    "healthy reply": degraded ones carry their own reasons and go to ``step`` directly) and the
    result is rebuilt around it, without the ``dataclasses.replace`` calls that made the state
    machine half of the replay's time. ``tests/test_replay.py`` checks it against ``step``.

    The key names the observation and the rules by identity, not by value: hashing those frozen
    dataclasses ran a Python ``__hash__`` on every call. Every rules object a decision was stored for
    is kept (``self.rules``), so its id cannot be reused by another while the memo holds the decision.
    """

    def __init__(self) -> None:
        self.memo: dict[tuple[object, ...], Decision] = {}
        self.rules: dict[int, Confirmation] = {}

    def __call__(
        self, prev: TargetState, obs: Observation, now: float, rules: Confirmation, target: str
    ) -> tuple[TargetState, StateChange | None]:
        if obs is not _FAIL and obs is not _OK:
            return step(prev, obs, now, rules, target)
        key = (prev.state, prev.fail_streak, prev.reach_streak, prev.ok_streak, prev.degraded_streak, obs is _OK,
               id(rules))
        d = self.memo.get(key)
        if d is None:
            d = self._decide(prev, obs, rules, key)
        fail, reach, ok, degraded, new, reason = d
        if new is None:
            return TargetState(prev.state, prev.since, fail, reach, ok, degraded), None
        return TargetState(new, now, fail, reach, ok, degraded), StateChange(target, prev.state, new, now, reason)

    def _decide(self, prev: TargetState, obs: Observation, rules: Confirmation, key: tuple[object, ...]) -> Decision:
        cur, change = step(prev, obs, prev.since, rules, "")
        d: Decision = (cur.fail_streak, cur.reach_streak, cur.ok_streak, cur.degraded_streak,
                       None if change is None else change.new, "" if change is None else change.reason)
        if len(self.memo) > 10_000 or len(self.rules) > 1_000:  # small in practice; never let odd input grow them
            self.memo.clear()
            self.rules.clear()
        self.rules[id(rules)] = rules
        self.memo[key] = d
        return d


def _no_change(st: TargetState, obs: Observation) -> bool:
    """True when ``step`` could not change the confirmed state nor any streak that matters later.

    UP + a healthy reply only grows ``reach_streak``/``ok_streak``, which are read only in DOWN and
    DEGRADED, and getting there resets them first; DOWN + another failure only grows ``fail_streak``,
    which matters only before DOWN is reached. The replay loop inlines this test for speed; this
    copy is what the equivalence test checks against ``step``.
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
