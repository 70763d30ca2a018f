"""Scenario tests as data: a topology, a timeline of outcomes, the incident events expected.

A scenario YAML names nodes and endpoints, when targets stop or start answering, maintenance
windows (``maintenance:`` added at run time like ``monitor maintenance add``; ``config_maintenance:``
the config's list, which the daemon syncs into its store and replay plans itself), restarts and
staff resolving an incident (``{at: 400, resolve: INC-000001}``: the service only, ``monitor
replay`` takes no staff actions); the runner turns that into the probe outcomes a
poller would record (every target polled once per interval at its own offset, so children are
often confirmed before their parents, exactly as in production) and feeds them through
``monitor replay``'s pipeline or through the daemon's CorrelationService (which also proves
persistence and restart).

Several vantage points (remote pollers, issue 14): ``pollers: [{id: p-town, vantage: gw}, {id: p-noc,
sees: [gw, twr]}]`` puts every target in one zone ``town`` with those pollers, except the ids under
``core_polls:`` (zone ``noc``, polled by the core itself). Each poller polls what it ``sees`` (default:
everything of the zone) and its outcomes are tagged with it; a timeline step with ``seen_by: [p-town]``
is seen by those pollers only (``core`` for the core's own polls). The views are combined as the core
combines them (monitor.remote.vantage), in replay, in the service path and in the invariants.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from monitor.correlate.incidents import format_ts
from monitor.correlate.maintenance import Window
from monitor.correlate.settings import CorrelationSettings
from monitor.db import Where
from monitor.inventory.model import Customer, Inventory, MaintenanceSpec, PollingSettings, ServiceClass, Target
from monitor.inventory.pollers import PollersSettings, Zone
from monitor.remote.vantage import Vantages
from monitor.state import State, StateChange

EPOCH = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
SCENARIOS = Path(__file__).parent / "scenarios"


@dataclass
class Scenario:
    name: str
    inventory: Inventory
    settings: CorrelationSettings
    lines: list[str]
    windows: list[Window]
    restarts: list[float]  # absolute times
    expect: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict)
    resolves: list[tuple[float, str]] = field(default_factory=list)  # (absolute time, incident) by staff


def load(path: Path) -> Scenario:
    return from_raw(yaml.safe_load(path.read_text()), path.stem)


def from_raw(raw: dict[str, Any], name: str) -> Scenario:
    """A scenario from its parsed YAML (property tests generate these)."""
    interval = float(raw.get("interval", 60))
    inv = _inventory(raw["topology"], interval, f"{name}.yaml")
    inv = _own_intervals(inv, raw["topology"].get("intervals") or {})
    config_windows = tuple(  # the config's ``maintenance:`` list (the daemon syncs it into the store)
        MaintenanceSpec(w["node"], EPOCH + w["start"], EPOCH + w["end"], w.get("reason", ""))
        for w in raw.get("config_maintenance") or []
    )
    inv = dataclasses.replace(inv, maintenance=config_windows, pollers=_pollers(raw, inv))
    overrides = {str(k): _text(v) for k, v in (raw.get("settings") or {}).items()}
    settings = CorrelationSettings.for_interval(interval).with_overrides(overrides)
    lines = _outcomes(raw, inv, interval)
    windows = [
        Window(i + 1, w["node"], EPOCH + w["start"], EPOCH + w["end"], w.get("reason", ""))
        for i, w in enumerate(raw.get("maintenance") or [])
    ]
    restarts = [EPOCH + s["at"] for s in raw.get("timeline", []) if s.get("restart")]
    resolves = [(EPOCH + s["at"], s["resolve"]) for s in raw.get("timeline", []) if s.get("resolve")]
    return Scenario(name, inv, settings, lines, windows, restarts, raw.get("expect") or {}, raw, resolves)


def _pollers(raw: dict[str, Any], inv: Inventory) -> PollersSettings | None:
    """The scenario's ``pollers:`` as a config's section: zone ``town`` (every target but ``core_polls``)."""
    if not raw.get("pollers"):
        return None
    core = set(raw.get("core_polls") or [])
    ids = tuple(p["id"] for p in raw["pollers"])
    vantage = {p["id"]: p["vantage"] for p in raw["pollers"] if p.get("vantage")}
    zones = {"town": Zone("town", ids, vantage), "noc": Zone("noc")}
    return PollersSettings((), zones, {t: "noc" if t in core else "town" for t in inv.targets})


class Combined:
    """The confirmed changes of tagged outcomes combined as the core does (untagged: the core's own)."""

    def __init__(self, inv: Inventory, seed: dict[str, tuple[State, float]] | None = None) -> None:
        p = inv.pollers
        self.vantage = Vantages(p.zone_pollers(), p.zone_of, p.vantage_of(), seed) if p is not None else None

    def __call__(self, poller: str | None, change: StateChange) -> list[StateChange]:
        v = self.vantage
        if v is None:
            return [change]
        if poller is not None:
            return v.report(poller, change)
        return [change, *v.node_state(change.target, change.new, change.ts)]


def _text(v: object) -> str:
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def _inventory(topo: dict[str, Any], interval: float, source: str) -> Inventory:
    polling = PollingSettings(interval=interval)
    targets: dict[str, Target] = {}
    customers: dict[str, Customer] = {}
    for n in topo.get("nodes", []):
        parents = tuple(n.get("parents") or ([n["parent"]] if n.get("parent") else []))
        targets[n["id"]] = Target(n["id"], n.get("kind", "router"), "node", "127.0.0.1", parents, polling=polling)
    for e in topo.get("endpoints", []):
        ids = [f"{e['prefix']}{i + 1:02d}" for i in range(e["count"])] if "count" in e else [e["id"]]
        for tid in ids:
            cls = e.get("class", "residencial")
            cust = e.get("customer") or f"C-{tid}"
            targets[tid] = Target(
                tid, "cpe", "endpoint", "127.0.0.1", (e["parent"],), customer=cust, service_class=cls, polling=polling
            )
            prev = customers.get(cust)
            customers[cust] = Customer(cust, cust, cls, endpoints=(*(prev.endpoints if prev else ()), tid))
    classes = {
        "residencial": ServiceClass("residencial", 24, 98.0),
        "corporativo": ServiceClass("corporativo", 12, 99.5, ticket_single=True),
    }
    return Inventory(source, {}, {}, classes, {}, targets, customers, polling=polling)


def _matching(pattern: str, ids: list[str]) -> list[str]:
    """Target ids a scenario key names: an id, or a prefix ending in ``*``."""
    return [t for t in ids if t == pattern or (pattern.endswith("*") and t.startswith(pattern[:-1]))]


def _own_intervals(inv: Inventory, intervals: dict[str, float]) -> Inventory:
    """``intervals: {twr-*: 2}``: those targets are polled at their own interval (``polling_by_kind``
    in a config: the end-to-end benchmark polls its network every 2 s and its CPEs every 10 s)."""
    if not intervals:
        return inv
    targets = dict(inv.targets)
    for pattern, every in intervals.items():
        for t in _matching(pattern, list(targets)):
            own = dataclasses.replace(targets[t].polling, interval=float(every))
            targets[t] = dataclasses.replace(targets[t], polling=own)
    return dataclasses.replace(inv, targets=targets)


def below(inv: Inventory, ids: list[str]) -> set[str]:
    kids: dict[str, list[str]] = {}
    for t in inv.targets.values():
        for p in t.parents:
            kids.setdefault(p, []).append(t.id)
    out, todo = set(), list(ids)
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo.extend(kids.get(n, []))
    return out


def _outcomes(raw: dict[str, Any], inv: Inventory, interval: float) -> list[str]:
    """Probe outcomes: each target polled every interval at its offset; failing while in the failing set."""
    duration = float(raw["duration"])
    order = list(inv.targets)
    offsets = {t: (i * interval / len(order)) % inv.targets[t].polling.interval for i, t in enumerate(order)}
    for tid, off in (raw["topology"].get("offsets") or {}).items():
        for t in _matching(tid, order):
            offsets[t] = float(off)
    fail, cause = _fail_spans(raw, inv, duration + interval)
    churns = raw.get("churn") or []
    for churn in churns if isinstance(churns, list) else [churns]:  # a list: one block per night
        rng = random.Random(churn.get("seed", 1))
        pool = [t.id for t in inv.targets.values() if t.role == "endpoint" and t.service_class == "residencial"]
        for t in rng.sample(pool, round(len(pool) * churn["share"])):
            start = rng.uniform(churn["from"], churn["to"])
            # ``back_after``: seconds until it answers again (the default: never; "off" reads as False in YAML)
            fail.setdefault(t, []).append([start, start + churn.get("back_after", duration)])
    lossy = _lossy_links(raw, inv)
    levels = _levels(raw)
    # who polls each target: the core (None), or every poller that sees it (several vantage points)
    pollers = [p["id"] for p in raw.get("pollers") or []]
    core = set(raw.get("core_polls") or [])
    sees = {p["id"]: set(p["sees"]) for p in raw.get("pollers") or [] if "sees" in p}
    viewers: dict[str, list[str | None]] = {
        t: [None] if not pollers or t in core else [p for p in pollers if p not in sees or t in sees[p]]
        for t in order}
    seen: dict[str | None, tuple[dict[str, list[list[float]]], dict[tuple[str, float], str]]] = {
        v: _fail_spans(raw, inv, duration + interval, v) for vs in viewers.values() for v in vs if v}
    seen[None] = (fail, cause) if not pollers else _fail_spans(raw, inv, duration + interval, "core")
    polls: list[tuple[float, int, int, str, bool, float | None, str | None, dict[str, float] | None, str | None]] = []
    for i, tid in enumerate(order):
        every = inv.targets[tid].polling.interval
        for j, viewer in enumerate(viewers[tid]):
            fails, causes = seen[viewer]
            spans = fails.get(tid, [])
            links = lossy.get(tid, [])
            steps = levels.get(tid, [])
            k = 0
            while (when := k * every + offsets[tid]) < duration:
                span = next((a for a, b in spans if a <= when < b), None)
                ok = span is None
                loss = None
                for link in links:
                    if ok and link.start <= when < link.end:
                        loss = link.loss
                        ok = link.rng.random() >= link.drop
                metrics = next((m for at, m in reversed(steps) if at <= when), None)
                why = None if span is None else causes.get((tid, span))
                polls.append((when, i, j, tid, ok, loss, why, metrics, viewer))
                k += 1
    polls.sort(key=lambda p: p[:3])
    return [
        json.dumps({"ts": format_ts(EPOCH + t), "target": tid, "ok": ok, **({"loss": loss} if ok and loss else {}),
                    **({"cause": why} if why else {}), **({"metrics": m} if ok and m else {}),
                    **({"poller": viewer} if viewer else {})})
        + "\n"
        for t, _, _, tid, ok, loss, why, m, viewer in polls
    ]


def _levels(raw: dict[str, Any]) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """Levels a subscriber table reports: ``{at, levels: [ids], metrics: {onu_rx_dbm: -28.5}}`` in the
    timeline; those targets' answered polls carry these metrics from then on (``metrics: {}``: none)."""
    out: dict[str, list[tuple[float, dict[str, float]]]] = {}
    for step in raw.get("timeline", []):
        for tid in step.get("levels") or []:
            out.setdefault(tid, []).append((float(step["at"]), dict(step.get("metrics") or {})))
    return out


def _fail_spans(
    raw: dict[str, Any], inv: Inventory, end: float, viewer: str | None = None
) -> tuple[dict[str, list[list[float]]], dict[tuple[str, float], str]]:
    """The timeline's intervals of failure per target ([from, to]) and the cause a failure step gives
    (``cause: dying_gasp``: what the parent's subscriber table reports), by (target, from); as
    ``viewer`` (a poller, or ``core``) sees them: a step with ``seen_by`` is seen by those only."""
    fail: dict[str, list[list[float]]] = {}
    cause: dict[tuple[str, float], str] = {}  # (target, span start) -> what its parent's table reports
    for step in raw.get("timeline", []):
        if viewer is not None and "seen_by" in step and viewer not in step["seen_by"]:
            continue
        at = float(step["at"])
        ids = step.get("fail") or step.get("recover") or []
        if step.get("cascade"):
            ids = sorted(below(inv, ids))
        for t in ids:
            spans = fail.setdefault(t, [])
            still_failing = bool(spans) and spans[-1][1] > at
            if "fail" in step and not still_failing:
                spans.append([at, end])
                if step.get("cause"):  # a subscriber table's last down cause (dying_gasp, los, ...)
                    cause[(t, at)] = str(step["cause"])
            elif "recover" in step and still_failing:
                spans[-1][1] = at
    return fail, cause


@dataclass
class _Lossy:
    start: float
    end: float
    loss: float  # fraction every answered poll reports
    drop: float  # probability that a poll loses all its pings (no reply at all)
    rng: random.Random


def _lossy_links(raw: dict[str, Any], inv: Inventory) -> dict[str, list[_Lossy]]:
    """Rain fade: ``{at, until, lossy: node, loss, drop, drop_root, seed}`` in the timeline.

    The node and everything below it answer with ``loss``; each poll of a target below the node
    loses all its pings with probability ``drop`` (a number, or ``[lo, hi]``: each target draws its
    own, so the loss below the root varies), the node's own polls with ``drop_root`` (default 0).
    """
    out: dict[str, list[_Lossy]] = {}
    for step in raw.get("timeline", []):
        node = step.get("lossy")
        if not node:
            continue
        seed = step.get("seed", 1)
        for tid in sorted(below(inv, [node])):
            pick = random.Random(f"{seed}:pick:{tid}")
            drop = step.get("drop", 0.0) if tid != node else step.get("drop_root", 0.0)
            if isinstance(drop, list):
                drop = pick.uniform(float(drop[0]), float(drop[1]))
            link = _Lossy(
                float(step["at"]), float(step["until"]), float(step["loss"]), float(drop),
                random.Random(f"{seed}:{tid}"),
            )
            out.setdefault(tid, []).append(link)
    return out


def check(sc: Scenario, events: list[dict[str, Any]]) -> None:
    """Compare actual events with the expectation: exact sequence (given keys only) and counts."""
    ignore = set(sc.expect.get("ignore_kinds", []))
    actual = [e for e in events if e["kind"] not in ignore]
    if "events" in sc.expect:
        want = sc.expect["events"]
        got = []
        for i, e in enumerate(actual):
            keys = want[i].keys() if i < len(want) else ("event", "kind", "root", "incident")
            got.append({k: _rel(e, k) for k in keys})
        assert got == want, "\n" + "\n".join(json.dumps(e) for e in actual)
    for kind, n in (sc.expect.get("opened") or {}).items():
        seen = sum(1 for e in events if e["event"] == "opened" and e["kind"] == kind)
        assert seen == n, f"{seen} {kind} incidents opened, expected {n}"
    if "merged" in sc.expect:  # how many incidents were folded into another
        seen = sum(1 for e in events if e["event"] == "merged")
        assert seen == sc.expect["merged"], f"{seen} incidents merged, expected {sc.expect['merged']}"


def _rel(e: dict[str, Any], key: str) -> Any:
    if key == "at":
        return round(datetime.fromisoformat(e["ts"]).timestamp() - EPOCH, 3)
    return e.get(key)


def down_since(states: dict[Any, Any], poller: str | None) -> Any:
    """Since when a target is confirmed DOWN in ``states`` (None: it is not), in ``poller``'s view
    (None: the core's own polls), for monitor/cutoff.py."""
    def since(t: str) -> float | None:
        st = states.get(t if poller is None else (poller, t))
        return st.since if st is not None and st.state.value == "down" else None
    return since


def run_service(sc: Scenario, db: Where) -> list[dict[str, Any]]:
    """Drive the scenario like the daemon: state machine, EventStore, CorrelationService, restarts."""
    from monitor.clock import ManualClock
    from monitor.correlate.incidents import parse_ts
    from monitor.correlate.service import CorrelationService
    from monitor.correlate.store import IncidentStore
    from monitor.cutoff import CutOff, confirm_cut_off
    from monitor.replay import _levels, _reasons
    from monitor.replay_input import Metrics
    from monitor.state import Confirmation, Observation, State, TargetState, restored, step
    from monitor.store import EventStore

    store = IncidentStore(db)
    for w in sc.windows:
        store.add_window(w.node, w.start, w.end, w.reason, "test", [], EPOCH)
    store.close()
    clock = ManualClock(EPOCH - 1)
    rules = {
        tid: Confirmation(
            sc.settings.down_after or t.polling.down_after, sc.settings.up_after or t.polling.up_after,
            t.polling.degraded_after,
        )
        for tid, t in sc.inventory.targets.items()
    }
    events = []
    log = EventStore(db)
    poll_every = 0.0 if sc.resolves else 5.0  # staff actions taken at once: the same time with or without restarts
    svc = CorrelationService(sc.inventory, db, sc.settings, clock, poll_every=poll_every)
    svc.sync_config_windows(sc.inventory.maintenance)  # as the daemon's pipeline does at start
    states: dict[str | tuple[str, str], TargetState] = {}  # a target's, or (poller, target): that poller's view
    combined = Combined(sc.inventory)
    targets = sc.inventory.targets
    lead = {tid: (rules[tid].down_after - 1) * t.polling.interval for tid, t in targets.items()}
    cutoff = CutOff({tid: t.parents for tid, t in targets.items()}, lead, sc.settings.vantage)
    restarts = sorted(sc.restarts)
    resolves = sorted(sc.resolves)
    now: float | None = None
    for line in sc.lines:
        rec = json.loads(line)
        ts = parse_ts(rec["ts"])
        if now is None or ts > now:
            if restarts and ts >= restarts[0]:
                restarts.pop(0)
                svc.close()
                log.close()
                log = EventStore(db)
                stored_states = log.load_states()
                # the core restarts, its pollers do not: their own states go on, their views are re-seeded
                states = {k: v for k, v in states.items() if isinstance(k, tuple)}
                states.update((t, restored(st, since)) for t, (st, since) in stored_states.items())
                combined = Combined(sc.inventory, stored_states)
                clock.set(ts)
                svc = CorrelationService(sc.inventory, db, sc.settings, clock, poll_every=poll_every)
                svc.sync_config_windows(sc.inventory.maintenance)  # every start, as the daemon's pipeline
                events += svc.startup_events  # what resuming decided is delivered like any other event
            clock.set(ts)
            while resolves and ts >= resolves[0][0]:
                svc.store.add_action(resolves.pop(0)[1], "resolve", "staff", "", ts)  # as `monitor incidents resolve`
            events += svc.tick(ts)
            now = ts
        tid = rec["target"]
        loss = rec.get("loss")
        target = sc.inventory.targets[tid]
        reasons = _reasons(target, None, loss, "scenario", 0) if rec["ok"] and loss else ()
        if rec.get("metrics"):  # as replay and the daemon's table walk judge a row's levels
            reasons += _levels(target, Metrics(**rec["metrics"]))
        why = rec.get("cause")  # as replay and the daemon's table walk word it
        obs = Observation(reachable=rec["ok"], degraded_reasons=reasons,
                          detail="" if rec["ok"] else f"last down cause {why}" if why else "no reply", cause=why)
        poller = rec.get("poller")
        key = tid if poller is None else (poller, tid)
        prev = states.get(key, TargetState())
        new, change = step(prev, obs, ts, rules[tid], tid)
        if change is None and not obs.reachable and new.state is not State.DOWN:
            answered = ts - new.fail_streak * target.polling.interval
            node = cutoff.cut_by(tid, down_since(states, poller), answered)
            if node is not None:  # as the daemon's polling stage (monitor/cutoff.py), in that poller's view
                new, change = confirm_cut_off(prev, new, obs, ts, tid, node)
        states[key] = new
        if change is not None and (effective := combined(poller, change)):
            log.append(effective)
            events += svc.on_state_changes(effective)
    stored = list(svc.store.events())
    svc.close()
    log.close()
    assert [(e["incident"], e["event"]) for e in stored] == [(e.incident, e.event) for e in events]
    return [e.to_dict() for e in events]
