"""Invariants every scenario must keep, whatever its own expectations say (issue 19).

A scenario file states what one situation must give; these state what no situation may ever give.
Each check is a small function ``check(run)`` that raises AssertionError naming the scenario, the
time and the targets; :data:`CHECKS` lists them and ``tests/test_scenarios.py`` runs every one over
every scenario. To add an invariant, write one more function here and append it to ``CHECKS``.

What a check sees is what the engine's outputs and inputs tell: the incident events, and the
confirmed state changes the state machine derives from the scenario's outcomes (the same ones the
engine was fed), so "what was down when" is known without looking inside the engine.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any

from monitor.correlate.degraded import weak_levels
from monitor.correlate.incidents import IncidentEvent, parse_ts
from monitor.correlate.topology import Topology
from monitor.replay import _levels, _reasons
from monitor.replay_input import Metrics
from monitor.state import Confirmation, Observation, State, StateChange, TargetState, step
from tests.scenario_runner import Combined, Scenario


@dataclass
class Run:
    """One scenario's outcome: its events (as dicts) and the confirmed changes behind them."""

    sc: Scenario
    events: list[dict[str, Any]]
    changes: list[StateChange] = field(default_factory=list)

    @cached_property
    def topo(self) -> Topology:
        return Topology.from_inventory(self.sc.inventory)

    @cached_property
    def history(self) -> dict[str, list[tuple[float, State]]]:
        """target -> [(since, confirmed state)], in time order."""
        out: dict[str, list[tuple[float, State]]] = {}
        for c in self.changes:
            out.setdefault(c.target, []).append((c.ts, c.new))
        return out

    def state_at(self, target: str, ts: float) -> State:
        """The confirmed state of ``target`` at ``ts`` (changes at ``ts`` included)."""
        hist = self.history.get(target, [])
        i = bisect_right(hist, ts, key=lambda h: h[0])
        return hist[i - 1][1] if i else State.UNKNOWN

    @cached_property
    def causes(self) -> dict[str, list[tuple[float, str | None]]]:
        """target -> [(since, cause of that DOWN)], in time order (a subscriber table's dying_gasp, los ...)."""
        out: dict[str, list[tuple[float, str | None]]] = {}
        for c in self.changes:
            if c.new is State.DOWN:
                out.setdefault(c.target, []).append((c.ts, c.cause))
        return out

    def cause_at(self, target: str, ts: float) -> str | None:
        """The cause of ``target``'s last DOWN at or before ``ts`` (None: none, or it never failed)."""
        seen = [w for since, w in self.causes.get(target, ()) if since <= ts]
        return seen[-1] if seen else None

    def label(self, ts: float) -> str:
        return f"{self.sc.name} at {ts - _epoch():.3f}"


def _epoch() -> float:
    from tests.scenario_runner import EPOCH

    return EPOCH


def confirmed_changes(sc: Scenario) -> list[StateChange]:
    """The transitions the state machine confirms from the scenario's outcomes, as replay's rules do."""
    rules: dict[str, Confirmation] = {}
    states: dict[str | tuple[str, str], TargetState] = {}  # a target's, or (poller, target): that poller's view
    combined = Combined(sc.inventory)  # tagged outcomes: the pollers' views combined as the core does
    out: list[StateChange] = []
    for line in sc.lines:
        rec = json.loads(line)
        tid = rec["target"]
        target = sc.inventory.targets[tid]
        rule = rules.get(tid)
        if rule is None:
            p = target.polling
            rule = rules[tid] = Confirmation(
                sc.settings.down_after or p.down_after, sc.settings.up_after or p.up_after, p.degraded_after
            )
        if rec["ok"]:
            reasons = _reasons(target, rec.get("rtt_ms"), rec.get("loss"), sc.name, 0)
            if rec.get("metrics"):  # an ONU's or station's levels, as replay judges them
                reasons += _levels(target, Metrics(**rec["metrics"]))
            obs = Observation(reachable=True, degraded_reasons=reasons)
        else:
            why = rec.get("cause")
            obs = Observation(reachable=False, detail=f"last down cause {why}" if why else "no reply", cause=why)
        key = tid if rec.get("poller") is None else (rec["poller"], tid)
        new, change = step(states.get(key, TargetState()), obs, parse_ts(rec["ts"]), rule, tid)
        states[key] = new
        if change is not None:
            out += combined(rec.get("poller"), change)
    return out


def _ts(e: dict[str, Any]) -> float:
    return datetime.fromisoformat(e["ts"]).timestamp()


# ---------------------------------------------------------------- the invariants


def not_blind_while_a_node_above_answers(run: Run) -> None:
    """While a node above a failing endpoint answers, the monitor is not blind.

    Checked where a blindness is declared from what the monitor sees (share, loss, nothing
    answering); a configured vantage node that fails is blindness by definition. At that moment no
    endpoint confirmed DOWN, explained by an incident or not, may have a node above it that is
    confirmed UP (answering, and cleanly: a lossy node does not count as a clear view).
    """
    vantage = set(run.sc.settings.vantage)
    topo = run.topo
    for e in run.events:
        if e["event"] != "opened" or e["kind"] != "blind" or e["root"] in vantage:
            continue
        ts = _ts(e)
        for t in sorted(topo.endpoint):
            if run.state_at(t, ts) is not State.DOWN:
                continue
            answering = [a for a in topo.ancestors[t] if run.state_at(a, ts) is State.UP]
            assert not answering, (
                f"{run.label(ts)}: blind ({e['incident']}) while {t} is down below {answering} that answer"
            )


def never_counted_twice(run: Run) -> None:
    """A failure explained by an open incident never counts again: no endpoint is announced as
    affected by two open customer incidents at once for longer than one update interval (a move
    from one incident to another is announced by the donor within ``update_interval``; a merge at
    once), so no endpoint is the basis of two incidents."""
    slack = run.sc.settings.update_interval + 1e-6
    current: dict[str, set[str]] = {}  # open incident -> endpoints it last announced
    since: dict[tuple[str, str, str], float] = {}  # (incident, incident, endpoint) -> both announce it since
    for e in run.events:
        ts = _ts(e)
        for (a, b, t), first in sorted(since.items()):  # still both, up to this moment
            assert ts - first <= slack, f"{run.label(ts)}: {t} affected by both {a} and {b} since {run.label(first)}"
        if e["event"] in ("opened", "updated") and e["kind"] != "blind":
            current[e["incident"]] = set(e["affected_endpoints"])
        elif e["event"] in ("merged", "resolved"):
            current.pop(e["incident"], None)
        now: dict[tuple[str, str, str], float] = {}
        ids = sorted(current)
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                for t in sorted(current[a] & current[b]):
                    now[(a, b, t)] = since.get((a, b, t), ts)
        since = now
    end = _epoch() + float(run.sc.raw.get("duration", 0))
    for (a, b, t), first in sorted(since.items()):
        assert end - first <= slack, f"{run.label(end)}: {t} affected by both {a} and {b} since {run.label(first)}"


def many_failing_together_are_not_singles(run: Run) -> None:
    """Many endpoints below one answering node failing within one interval are never left as singles.

    "Many" is the mass-outage rule's K and P (at least K endpoints and P % of those below the node);
    "together" is confirmed DOWN within one poll interval while every node above them answered
    (failures behind a down node are that node's outage, and stragglers after it are h-weather2's
    rule). An endpoint counts as left a single when a ``single`` incident opens for it while it is
    still down from that failure.
    """
    _not_left_alone(run, "single")


def many_dying_gasps_together_are_a_power_cut(run: Run) -> None:
    """The same for ONUs reporting dying gasp (rule 13): many below one answering node within one
    interval are a power cut there, never each its customer's own power (a ``power`` incident rooted
    at the ONU)."""
    _not_left_alone(run, "power")


def _not_left_alone(run: Run, kind: str) -> None:
    """No K and P of the endpoints below a node that answers, failed within one interval, each left in
    an incident of ``kind`` rooted at itself."""
    s, topo = run.sc.settings, run.topo
    alone = "singles" if kind == "single" else f"{kind} incidents of their own"
    singles: dict[str, list[float]] = {}
    for e in run.events:
        if e["event"] == "opened" and e["kind"] == kind and e["root"] in topo.endpoint:
            singles.setdefault(e["root"], []).append(_ts(e))
    if not singles:
        return
    fails: list[tuple[float, str, float]] = []  # (down since, endpoint, up again)
    for t in sorted(topo.endpoint):
        hist = run.history.get(t, [])
        for i, (since, state) in enumerate(hist):
            if state is not State.DOWN:
                continue
            # behind a down node: also one confirmed DOWN within the settle period after (polls are not
            # ordered by topology, so a tower's CPEs are often confirmed before it; their stragglers
            # after the outage are judged on their own, tests/test_recovery_properties.py)
            if any(run.state_at(a, since) is State.DOWN or run.state_at(a, since + s.settle) is State.DOWN
                   for a in topo.ancestors[t]):
                continue
            until = next((ts for ts, st in hist[i + 1:] if st is not State.DOWN), float("inf"))
            fails.append((since, t, until))
    fails.sort()
    left = [
        (since, t) for since, t, until in fails if any(since <= ts < until for ts in singles.get(t, ()))
    ]
    for i, (since, t) in enumerate(left):
        together = [u for ts, u in left[i:] if ts - since <= s.interval]
        for node in topo.ancestors[t]:
            group = [u for u in together if node in topo.ancestors[u]]
            below = topo.endpoints_below[node]
            assert len(group) < s.min_endpoints or len(group) * 100.0 < s.min_share * below, (
                f"{run.label(since)}: {len(group)} of {below} endpoints below {node} failed within one "
                f"interval and were left as {alone}: {group}"
            )


def one_incident_per_cause(run: Run) -> None:
    """The number of incidents opened for one physical cause is one (the root), whatever the loss
    pattern below it. Checked where a scenario declares its cause (``expect: {cause: node}``): every
    incident it opens stands at that node, except ones folded into it (``merged`` into the root's
    incident, directly or through others: decided early, then explained), and exactly one stands
    there."""
    cause = run.sc.expect.get("cause")
    if not cause:
        return
    opened = {e["incident"]: e for e in run.events if e["event"] == "opened" and e["kind"] != "blind"}
    folded = {e["incident"]: e["into"] for e in run.events if e["event"] == "merged"}
    standing = sorted(i for i in opened if i not in folded)
    assert [opened[i]["root"] for i in standing] == [cause], (
        f"{run.sc.name}: one cause ({cause}), incidents standing at "
        f"{[(i, opened[i]['kind'], opened[i]['root']) for i in standing]}"
    )
    for child, into in sorted(folded.items()):
        final = into
        while final in folded:  # folded in turn (a single into its AP's outage, that into the link's)
            final = folded[final]
        assert final in standing, f"{run.sc.name}: {child} folded into {into}, not into the cause's incident"


def a_power_cut_is_never_a_network_incident(run: Run) -> None:
    """ONUs that reported dying gasp (their mains power) are never what an ``outage``, ``suspected``
    or ``single`` incident opens for: every endpoint such an incident opens with having failed with
    dying gasp means a power cut (or one customer's own power) was taken for the network's failure,
    and a crew sent to a blackout (issue 17). A topological outage (its root node down) is exempt:
    the node's own failure is the cause then."""
    for e in run.events:
        if e["event"] != "opened" or e["kind"] not in ("outage", "suspected", "single"):
            continue
        ts, eps = _ts(e), e["affected_endpoints"]
        if e["root"] in run.topo.endpoint or run.state_at(e["root"], ts) is not State.DOWN:
            assert not eps or any(run.cause_at(t, ts) != "dying_gasp" for t in eps), (
                f"{run.label(ts)}: {e['incident']} opened as {e['kind']} at {e['root']} for dying gasps only: {eps}"
            )


#: every invariant, run over every scenario (append yours)
CHECKS: list[Callable[[Run], None]] = [
    not_blind_while_a_node_above_answers,
    never_counted_twice,
    many_failing_together_are_not_singles,
    many_dying_gasps_together_are_a_power_cut,
    one_incident_per_cause,
    a_power_cut_is_never_a_network_incident,
]


def check_all(sc: Scenario, events: list[dict[str, Any]]) -> None:
    run = Run(sc, events, confirmed_changes(sc))
    for check in CHECKS:
        check(run)


# ---------------------------------------------------------------- what customers are told (delivery)


@dataclass
class Told:
    """The customer notices the planner gives for a run's events: (when, incident, action, customer)."""

    notices: list[tuple[float, str, str, str]]
    still_open: set[str]  # incidents open at the end of the scenario


def customer_notices(run: Run, kinds: tuple[str, ...] = ("outage", "suspected")) -> Told:
    """Feed the run's events through the delivery planner as the daemon does, with what is down at each
    moment taken from the confirmed changes, and its 1 s timer after every change (restores of cases
    that went on individually). At the scenario's restarts the planner's memory goes through JSON, as
    the service stores it. Every customer has an email address; the defaults otherwise (customer
    notices for outage and suspected incidents; ``kinds``: those ``customers.kinds`` lists)."""
    from monitor.delivery import planner
    from monitor.delivery.config import CustomerNotices, DeliveryConfig, MaildirSettings

    inv = run.sc.inventory
    customers = {cid: replace(c, email=f"{cid.lower()}@example.invalid") for cid, c in inv.customers.items()}
    ctx = planner.Context(replace(inv, customers=customers), DeliveryConfig(
        maildir=MaildirSettings("/nonexistent"), customers=CustomerNotices(kinds=kinds)))
    by_email = {c.email: cid for cid, c in customers.items()}
    mem: dict[str, planner.IncidentMemory] = {}
    glob = planner.GlobalMemory()
    told: list[tuple[float, str, str, str]] = []
    restarts = sorted(run.sc.restarts)

    def down_at(ts: float) -> planner.DownOf:
        return lambda eps: {e for e in eps if run.state_at(e, ts) is State.DOWN}

    def keep(p: planner.Plan, ts: float) -> None:
        mem.update(p.memories)
        told.extend((ts, i.incident, i.action, by_email[i.recipient]) for i in p.items
                    if i.action.startswith("customer_") and i.recipient in by_email)

    steps = sorted([(_ts(e), 0, i) for i, e in enumerate(run.events)] + [(c.ts, 1, 0) for c in run.changes])
    for ts, is_change, i in steps:
        while restarts and ts >= restarts[0]:
            restarts.pop(0)
            mem = {k: planner.IncidentMemory.from_dict(json.loads(json.dumps(m.to_dict()))) for k, m in mem.items()}
            glob = planner.GlobalMemory.from_dict(json.loads(json.dumps(glob.to_dict())))
        if is_change:
            keep(planner.tick(list(mem.values()), glob, ctx, ts, set(), None, down_at(ts)), ts)
        else:
            keep(planner.plan([_event(run.events[i])], dict(mem), glob, ctx, ts, down_at(ts)), ts)
    return Told(told, {k for k, m in mem.items() if m.status == "open"})


def _event(e: dict[str, Any]) -> IncidentEvent:
    return IncidentEvent(_ts(e), e["event"], e["incident"], e["kind"], e["root"], tuple(e["affected_endpoints"]),
                         tuple(e["affected_customers"]), tuple(e.get("affected_nodes", ())), e.get("into"),
                         e.get("detail", ""))


def restored_only_while_every_endpoint_answers(run: Run) -> None:
    """A customer is told "restored" only while all their endpoints answer, and everyone told "opened"
    ends with "restored" or with an update handing them to an individual case (``customer_continues``),
    unless an incident that told them is still open when the scenario ends.

    Before: at resolve the planner told every notified customer "restored", also those whose CPE
    stayed dead after the outage (handed to a single incident of its own).
    """
    told = customer_notices(run)
    endpoints = {cid: c.endpoints for cid, c in run.sc.inventory.customers.items()}
    last: dict[tuple[str, str], str] = {}
    opened: dict[str, set[str]] = {}
    for ts, inc, action, cid in told.notices:
        if action == "customer_restored":
            dead = [e for e in endpoints[cid] if run.state_at(e, ts) is State.DOWN]
            assert not dead, f"{run.label(ts)}: {cid} told restored ({inc}) while {dead} are down"
        if action == "customer_opened":
            opened.setdefault(cid, set()).add(inc)
        last[(inc, cid)] = action
    for cid, incs in sorted(opened.items()):
        if incs & told.still_open:
            continue
        for inc in sorted(incs):
            restored = any(a == "customer_restored" and c == cid for _, _, a, c in told.notices)
            assert restored or last[(inc, cid)] == "customer_continues", (
                f"{run.sc.name}: {cid} was told {inc} opened and never restored nor handed to an individual case"
            )


CHECKS.append(restored_only_while_every_endpoint_answers)


def weak_levels_are_never_told_to_customers(run: Run) -> None:
    """A ``degraded`` incident for weak levels (an ONU's optical power, a station's signal or CCQ below
    the thresholds: the customers still have service) reaches technicians only: no customer notice of
    it, even with ``degraded`` in ``customers.kinds`` (a lossy link's "degraded service"), and it never
    lists an endpoint that is down when it opens (issue 17)."""
    weak = {e["incident"] for e in run.events if e["event"] == "opened" and e["kind"] == "degraded"
            and weak_levels(e.get("detail", ""))}
    if not weak:
        return
    for e in run.events:
        if e["incident"] in weak and e["event"] == "opened":
            ts = _ts(e)
            down = [t for t in e["affected_endpoints"] if run.state_at(t, ts) is State.DOWN]
            assert not down, f"{run.label(ts)}: {e['incident']} (weak levels) opened listing {down}, which are down"
    told = customer_notices(run, kinds=("outage", "suspected", "degraded"))
    assert not [n for n in told.notices if n[1] in weak], (
        f"{run.sc.name}: customers told of weak levels: {[n for n in told.notices if n[1] in weak][:5]}")


CHECKS.append(weak_levels_are_never_told_to_customers)
