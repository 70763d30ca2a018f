"""The pure planner: which tickets, alerts and notices an incident's lifecycle produces (injected time)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.correlate.store import ActionRow, MaintenanceRow
from monitor.delivery import planner
from monitor.delivery.planner import Context, GlobalMemory, IncidentMemory, Item
from monitor.inventory.model import Inventory
from monitor.notify.render import Renderer
from tests.delivery_support import T0, base_delivery, ev, ids, load


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return load(tmp_path)


@pytest.fixture(scope="module")
def shared_ctx(tmp_path_factory: pytest.TempPathFactory) -> Context:
    """One context for a property test's many examples (a function-scoped fixture would be shared anyway)."""
    return ctx_of(load(tmp_path_factory.mktemp("planner")))


def ctx_of(inv: Inventory) -> Context:
    assert inv.delivery is not None
    return Context(inv, inv.delivery)


class Run:
    """Feeds events through the planner the way the service does: memory in, memory out."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.mem: dict[str, IncidentMemory] = {}
        self.glob = GlobalMemory()
        self.keys: set[str] = set()
        self.last: list[Item] = []  # everything the last call planned, repeats included
        self.dead: set[str] = set()  # endpoints confirmed down now (what the daemon reads from target_state)

    def down(self, endpoints: object) -> set[str]:
        return self.dead.intersection(endpoints)  # type: ignore[arg-type]

    def _keep(self, plan: planner.Plan) -> list[Item]:
        self.mem.update(plan.memories)
        self.last = plan.items
        new = [i for i in plan.items if i.key not in self.keys]
        self.keys |= {i.key for i in plan.items}
        return new

    def feed(self, *events: object, now: float | None = None) -> list[Item]:
        evs = list(events)
        t = now if now is not None else max(e.ts for e in evs)  # type: ignore[attr-defined]
        return self._keep(planner.plan(evs, dict(self.mem), self.glob, self.ctx, t, self.down))  # type: ignore[arg-type]

    def tick(self, now: float, acked: frozenset[str] = frozenset(), etas: dict[str, float | None] | None = None,
             eta_by: dict[str, str] | None = None) -> list[Item]:
        return self._keep(planner.tick(list(self.mem.values()), self.glob, self.ctx, now, set(acked), etas, self.down,
                                       eta_by))

    def maintenance(self, windows: list[MaintenanceRow], now: float) -> list[Item]:
        """The service's timer: the windows and the open incidents' memories."""
        open_ = [m for m in self.mem.values() if m.status == "open"]
        return self._keep(planner.plan_maintenance(windows, open_, self.glob, self.ctx, now))


def window(wid: int, node: str, start: float, end: float, reason: str = "",
           customers: tuple[str, ...] = ()) -> MaintenanceRow:
    return MaintenanceRow(wid, node, start, end, reason, "noc", customers, start - 86400 * 3, None)


def by_action(items: list[Item]) -> Counter[str]:
    return Counter(i.action for i in items)


def test_outage_opened_makes_one_ticket_the_oncall_alert_and_a_notice_per_customer(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    items = run.feed(ev("opened", T0, ids(40)))
    acts = by_action(items)
    assert acts["ticket_open"] == 1
    assert acts["customer_opened"] == 40  # the 41st customer opted out
    assert acts["tech_alert"] == 1 and acts["tech_alert_mqtt"] == 1
    alert = next(i for i in items if i.action == "tech_alert")
    assert alert.recipient == "juan@isp.example"  # Wednesday 06:06 in Bogotá: the night shift
    notices = {i.recipient: i for i in items if i.action == "customer_opened"}
    assert "c41@example.com" not in notices
    assert notices["c2@example.com"].language == "en" and notices["c3@example.com"].language == "es"
    assert notices["c1@example.com"].data["hours"] == 12 and notices["c7@example.com"].data["hours"] == 24
    ticket = next(i for i in items if i.action == "ticket_open")
    corporate_first = [c["id"] for c in ticket.data["customers"]][:5]
    assert corporate_first == ["C-0001", "C-0002", "C-0003", "C-0004", "C-0005"]
    assert ticket.data["municipality_name"] == "Arauca" and ticket.data["site_name"] == "Torre Centro"
    assert ticket.data["deadlines"] == {"corporativo": "2026-11-18 18:06", "residencial": "2026-11-19 06:06"}
    assert "INC-000001" in ticket.data["grafana"]
    # retained status per node and per municipality, and the lifecycle event
    topics = [i.data["topic"] for i in items if i.channel == "mqtt"]
    assert "isp/incidents/INC-000001" in topics and "isp/status/node/twr-1" in topics
    assert "isp/status/municipality/arauca" in topics and "isp/technicians/arauca" in topics


def test_daytime_routing_and_weekend_and_fallback_rota(inv: Inventory) -> None:
    ctx = ctx_of(inv)
    assert ctx.oncall("twr-1", T0) == ("juan", "noc")
    assert ctx.oncall("twr-1", T0 + 3600) == ("ana", "noc")  # 07:06 Wednesday
    assert ctx.oncall("twr-1", T0 + 3 * 86400 + 3600 * 5) == ("luis", "noc")  # Saturday 11:06
    assert ctx.oncall("core", T0) == ("noc",)  # a router: no kind-specific rule → the catch-all
    assert ctx.oncall("twr-t", T0) == ("noc",)  # Tame has no rule of its own


def test_no_customer_gets_two_opened_notices_and_restores_go_to_those_notified(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(10, 0)))
    items = run.feed(ev("updated", T0 + 60, ids(12, 0)))
    assert sorted(i.recipient for i in items if i.action == "customer_opened") == ["c11@example.com",
                                                                                   "c12@example.com"]
    assert by_action(run.feed(ev("opened", T0, ids(12, 0)), now=T0 + 70))["customer_opened"] == 0  # replayed
    # partial recovery: customers 11 and 12 are back before the incident ends
    items = run.feed(ev("updated", T0 + 120, ids(10, 0)))
    assert sorted(i.recipient for i in items if i.action == "customer_restored") == ["c11@example.com",
                                                                                     "c12@example.com"]
    # they fail again within the same incident: no second opened notice (one pair per incident)
    assert by_action(run.feed(ev("updated", T0 + 180, ids(12, 0))))["customer_opened"] == 0
    items = run.feed(ev("resolved", T0 + 3600, ids(12, 0)))
    acts = by_action(items)
    assert acts["customer_restored"] == 10 and acts["ticket_resolve"] == 1 and acts["tech_resolved"] == 1
    restored = next(i for i in items if i.action == "customer_restored")
    assert restored.data["duration"] == "1 h 00 min"


def _to(items: list[Item], action: str) -> list[str]:
    return sorted(i.recipient for i in items if i.action == action)


def _restart(run: Run) -> Run:
    """A new process: the memories as the service stores them (JSON), nothing else."""
    new = Run(run.ctx)
    new.mem = {k: IncidentMemory.from_dict(json.loads(json.dumps(m.to_dict()))) for k, m in run.mem.items()}
    new.glob = GlobalMemory.from_dict(json.loads(json.dumps(run.glob.to_dict())))
    new.keys, new.dead = set(run.keys), set(run.dead)
    return new


@pytest.mark.parametrize("restart", [False, True], ids=["", "restart"])
def test_stragglers_still_down_are_not_told_restored_their_case_goes_on_until_it_really_is(
        inv: Inventory, restart: bool) -> None:
    """Issue 19: surge-damaged CPEs stay dead after the tower is back. The engine hands them to singles
    (they leave the outage's affected set, then the outage resolves): "restored" went to every notified
    customer. Now they get one "your case continues individually" notice and "restored" only once
    their endpoint answers; everyone else is restored as before."""
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(10, 0)))
    run.dead = {"cpe-0009", "cpe-0010"}  # still down after the tower is back
    items = run.feed(ev("updated", T0 + 900, ids(10, 0)[8:]))  # 1-8 back
    assert _to(items, "customer_restored") == _emails(ids(8, 0))
    # grace over: 9 and 10 leave the outage for singles of their own while still down
    items = run.feed(ev("opened", T0 + 1200, ["C-0009"], incident="INC-000002", kind="single", root="cpe-0009"),
                     ev("opened", T0 + 1200, ["C-0010"], incident="INC-000003", kind="single", root="cpe-0010"),
                     ev("updated", T0 + 1260, []))
    assert _to(items, "customer_restored") == []
    assert _to(items, "customer_continues") == ["c10@example.com", "c9@example.com"]
    notice = next(i for i in items if i.action == "customer_continues" and i.recipient == "c9@example.com")
    assert notice.key == "INC-000001/customer_continues/c9@example.com/1" and notice.template == "customer_continues"
    items = run.feed(ev("resolved", T0 + 1560, ids(8, 0)))
    assert _to(items, "customer_restored") == [] and _to(items, "customer_continues") == []
    assert by_action(run.tick(T0 + 1600))["customer_restored"] == 0  # still down: nothing
    if restart:
        run = _restart(run)
    run.dead = {"cpe-0010"}  # 9 answers again
    items = run.tick(T0 + 3000)
    assert _to(items, "customer_restored") == ["c9@example.com"]
    assert next(i for i in items if i.action == "customer_restored").incident == "INC-000001"
    assert run.tick(T0 + 3001) == []
    items = run.feed(ev("resolved", T0 + 3100, ["C-0009"], incident="INC-000002", kind="single", root="cpe-0009"))
    assert _to(items, "customer_restored") == []  # the single told them nothing (singles: no notices here)
    run.dead = set()
    assert _to(run.tick(T0 + 5000), "customer_restored") == ["c10@example.com"]
    assert run.tick(T0 + 5001) == [] and run.glob.continuing == {}
    restored = Counter(k.split("/")[2] for k in run.keys if k.split("/")[1] == "customer_restored")
    assert restored == Counter(_emails(ids(10, 0)))  # each exactly once


def test_a_customer_is_restored_only_when_all_of_their_endpoints_answer(inv: Inventory) -> None:
    """Resolved (by staff here: its members still down) while the endpoint is down: no "restored"."""
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(3, 0)))
    run.dead = {"cpe-0002"}
    items = run.feed(ev("resolved", T0 + 600, ids(3, 0)))
    assert _to(items, "customer_restored") == ["c1@example.com", "c3@example.com"]
    assert _to(items, "customer_continues") == ["c2@example.com"]
    run.dead = set()
    assert _to(run.tick(T0 + 700), "customer_restored") == ["c2@example.com"]


def test_a_straggler_another_mass_incident_tells_of_is_restored_by_that_one(inv: Inventory) -> None:
    """Handed over while a second outage already told them: that one's "restored" is the only one."""
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(3, 0)))
    run.dead = {"cpe-0003"}
    run.feed(ev("updated", T0 + 900, []))
    run.feed(ev("opened", T0 + 950, ["C-0003"], incident="INC-000002", root="ap-1"))
    run.dead = set()
    items = run.feed(ev("resolved", T0 + 1200, ids(2, 0)))
    items += run.tick(T0 + 1201)
    items += run.feed(ev("resolved", T0 + 1300, ["C-0003"], incident="INC-000002", root="ap-1"))
    assert [(i.incident, i.recipient) for i in items if i.action == "customer_restored"] == [
        ("INC-000002", "c3@example.com")]


def test_desk_comments_only_on_meaningful_change_and_throttled(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(10, 0)))
    assert by_action(run.feed(ev("updated", T0 + 60, ids(12, 0))))["ticket_comment"] == 1
    # another change within comment_min_interval (10 min) waits ...
    assert by_action(run.feed(ev("updated", T0 + 120, ids(14, 0))))["ticket_comment"] == 0
    assert by_action(run.tick(T0 + 300))["ticket_comment"] == 0
    # ... and goes out as one comment once the interval has passed, listing what changed since the last
    items = run.tick(T0 + 60 + 600)
    (comment,) = [i for i in items if i.action == "ticket_comment"]
    assert comment.version == 2 and comment.data["added"] == ["C-0013", "C-0014"]
    # suspected → outage is meaningful at once (kind change)
    run2 = Run(ctx_of(inv))
    run2.feed(ev("opened", T0, ids(5, 0), kind="suspected"))
    assert by_action(run2.feed(ev("updated", T0 + 30, ids(5, 0))))["ticket_comment"] == 1


def test_nothing_for_customers_while_blind(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    items = run.feed(ev("opened", T0, [], incident="INC-000009", kind="blind", root="core"))
    assert by_action(items)["tech_alert"] == 1 and by_action(items)["ticket_open"] == 0
    items = run.feed(ev("opened", T0 + 10, ids(10, 0)))
    assert by_action(items)["customer_opened"] == 0
    run.feed(ev("resolved", T0 + 100, [], incident="INC-000009", kind="blind", root="core"))
    assert by_action(run.feed(ev("opened", T0 + 200, ids(3, 0), incident="INC-000010")))["customer_opened"] == 3


def test_single_incidents_ticket_only_for_their_class_and_notices_only_if_configured(tmp_path: Path) -> None:
    inv = load(tmp_path)
    run = Run(ctx_of(inv))
    acts = by_action(run.feed(ev("opened", T0, ["C-0007"], incident="INC-000002", kind="single", root="cpe-0007")))
    assert acts == Counter({"mqtt_opened": 1, "mqtt_status": 1, "mqtt_muni": 1})  # residential: no ticket
    acts = by_action(run.feed(ev("opened", T0, ["D-0001"], incident="INC-000003", kind="single", root="cpe-d1")))
    assert acts["ticket_open"] == 1 and acts["customer_opened"] == 0  # dedicated class asks for a ticket
    inv2 = load(tmp_path / "..", delivery=base_delivery(customers={"kinds": ["outage", "suspected", "single"]}))
    run2 = Run(ctx_of(inv2))
    acts = by_action(run2.feed(ev("opened", T0, ["C-0007"], incident="INC-000002", kind="single", root="cpe-0007")))
    assert acts["customer_opened"] == 1


def test_escalation_when_not_acknowledged(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(3, 0)))
    assert run.tick(T0 + 899) == []
    items = run.tick(T0 + 900)
    (esc,) = [i for i in items if i.action == "tech_alert" and i.channel == "email"]
    assert esc.recipient == "noc-lead@isp.example" and esc.template == "technician_escalation" and esc.version == 2
    assert run.tick(T0 + 5000) == []  # no tier beyond the chain
    acked = Run(ctx_of(inv))
    acked.feed(ev("opened", T0, ids(3, 0)))
    assert acked.tick(T0 + 900, frozenset({"INC-000001"})) == []


def test_a_late_incident_says_since_its_real_start_and_escalates_from_its_first_alert(inv: Inventory) -> None:
    """An incident opened from a remote poller's late batch (issue 14) began 20 minutes before the news
    came: its notices say since when it really began, and the first tier still gets the whole
    escalation.after (15 min) to acknowledge, counted from its alert, not from that start."""
    run = Run(ctx_of(inv))
    items = run.feed(ev("opened", T0, ids(3, 0)), now=T0 + 1200)
    since = run.ctx.local(T0)
    alert = next(i for i in items if i.action == "tech_alert" and i.channel == "email")
    assert alert.data["opened_at"] == since != run.ctx.local(T0 + 1200)
    assert [i.data["opened_at"] for i in items if i.action == "customer_opened"] == [since] * 3
    assert run.tick(T0 + 1200 + 899) == []
    (esc,) = [i for i in run.tick(T0 + 1200 + 900) if i.action == "tech_alert" and i.channel == "email"]
    assert esc.template == "technician_escalation" and esc.data["opened_at"] == since


def test_merged_child_customers_are_not_notified_again_by_the_parent(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(4, 0), incident="INC-000001", root="ap-1"))
    items = run.feed(
        ev("opened", T0 + 60, ids(6, 0), incident="INC-000002"),
        ev("merged", T0 + 60, ids(4, 0), incident="INC-000001", root="ap-1", into="INC-000002"),
    )
    assert sorted(i.recipient for i in items if i.action == "customer_opened") == ["c5@example.com",
                                                                                   "c6@example.com"]
    resolve = [i for i in items if i.action == "ticket_resolve"]
    assert [r.incident for r in resolve] == ["INC-000001"] and resolve[0].data["into"] == "INC-000002"
    items = run.feed(ev("resolved", T0 + 600, ids(6, 0), incident="INC-000002"))
    assert by_action(items)["customer_restored"] == 6


def test_a_customer_a_merged_child_told_is_restored_by_the_parent_that_had_let_them_go(inv: Inventory) -> None:
    """Issue 19 (found by a random rain-fade search): INC-1 hands C-0003 on while down ("continues"),
    the tower's INC-2 then tells them "opened" and merges into INC-1. They follow INC-1 again: its
    resolve tells them "restored" (before, INC-1 counted them as handed on and INC-2 was gone: never)."""
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(3, 0), root="bh"))
    run.dead = {"cpe-0003"}
    items = run.feed(ev("updated", T0 + 900, ids(2, 0), root="bh"))
    assert _to(items, "customer_continues") == ["c3@example.com"]
    items = run.feed(ev("opened", T0 + 950, ["C-0003"], incident="INC-000002", root="twr-1"))
    assert _to(items, "customer_opened") == ["c3@example.com"]
    run.feed(ev("merged", T0 + 1000, ["C-0003"], incident="INC-000002", root="twr-1", into="INC-000001"),
             ev("updated", T0 + 1000, ids(3, 0), root="bh"))
    run.dead = set()
    items = run.feed(ev("resolved", T0 + 1500, ids(3, 0), root="bh")) + run.tick(T0 + 1501)
    assert [(i.incident, i.recipient) for i in items if i.action == "customer_restored"] == [
        ("INC-000001", "c1@example.com"), ("INC-000001", "c2@example.com"), ("INC-000001", "c3@example.com")]


def test_incident_on_the_same_root_soon_after_reopens_the_ticket(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(3, 0)))
    run.feed(ev("resolved", T0 + 600, ids(3, 0)))
    items = run.feed(ev("opened", T0 + 1200, ids(3, 0), incident="INC-000005"))
    acts = by_action(items)
    assert acts["ticket_reopen"] == 1 and acts["ticket_open"] == 0
    reopen = next(i for i in items if i.action == "ticket_reopen")
    assert reopen.data["ticket_incident"] == "INC-000001" and reopen.group == "desk:INC-000001"
    later = run.feed(ev("resolved", T0 + 2000, ids(3, 0), incident="INC-000005"))
    assert next(i for i in later if i.action == "ticket_resolve").data["ticket_incident"] == "INC-000001"
    # much later: a new ticket
    fresh = run.feed(ev("opened", T0 + 90_000, ids(3, 0), incident="INC-000007"))
    assert by_action(fresh)["ticket_open"] == 1


def test_maintenance_notices_advance_start_end_once(inv: Inventory) -> None:
    ctx, glob = ctx_of(inv), GlobalMemory()
    w = [window(1, "ap-1", T0 + 86400, T0 + 90000, "cambio de radio")]
    assert planner.plan_maintenance(w, [], glob, ctx, T0 - 86401).items == []  # before the 48 h lead
    first = planner.plan_maintenance(w, [], glob, ctx, T0)
    assert {i.action for i in first.items} == {"maintenance_advance"} and len(first.items) == 40
    assert planner.plan_maintenance(w, [], glob, ctx, T0 + 60).items == []
    assert {i.action for i in planner.plan_maintenance(w, [], glob, ctx, T0 + 86400).items} == {"maintenance_start"}
    assert {i.action for i in planner.plan_maintenance(w, [], glob, ctx, T0 + 90000).items} == {"maintenance_end"}
    assert planner.plan_maintenance(w, [], glob, ctx, T0 + 99000).items == []
    only = [window(2, "ap-1", T0 + 10, T0 + 20, "", ("C-0003",))]
    assert [i.recipient for i in planner.plan_maintenance(only, [], glob, ctx, T0).items] == ["c3@example.com"]


# A window on ap-1 (40 customers who want notices) from START to END; the failure inside it takes
# down the first 10 (C-0001..C-0010, plus the opted-out C-0041's neighbours are not involved).
START, END = T0 + 86400, T0 + 90000
AP1 = [window(1, "ap-1", START, END, "cambio de radio")]
DOWN = ids(10, 0)


def _started(inv: Inventory) -> Run:
    run = Run(ctx_of(inv))
    run.maintenance(AP1, T0)
    run.maintenance(AP1, START)
    run.feed(ev("opened", START + 60, DOWN, kind="planned", root="ap-1"))
    return run


def _ended(items: list[Item]) -> list[str]:
    return sorted(i.recipient for i in items if i.action == "maintenance_end")


def _emails(customers: list[str]) -> list[str]:
    return sorted(f"c{int(c.split('-')[1])}@example.com" for c in customers)


def test_maintenance_end_notice_at_the_end_when_the_node_is_back(inv: Inventory) -> None:
    run = _started(inv)
    run.feed(ev("resolved", START + 600, DOWN, kind="planned", root="ap-1"))
    assert _ended(run.maintenance(AP1, END)) == _emails(ids(40, 0))
    assert run.glob.held == {}
    assert run.maintenance(AP1, END + 1) == []


def test_maintenance_end_notice_waits_for_the_node_still_down_at_the_end(inv: Inventory) -> None:
    """Back shortly after the window (resolved as planned): told "maintenance ended" then, not at the end."""
    run = _started(inv)
    held = set(_emails(DOWN))
    first = _ended(run.maintenance(AP1, END))
    assert first == sorted(set(_emails(ids(40, 0))) - held)
    assert run.glob.held == {"MW-1": DOWN}
    assert run.maintenance(AP1, END + 1) == []  # still down: still waiting
    run.feed(ev("resolved", END + 30, DOWN, kind="planned", root="ap-1"))
    assert by_action(run.last) == by_action([i for i in run.last if i.channel == "mqtt"])  # no alarm
    assert _ended(run.maintenance(AP1, END + 31)) == sorted(held)
    assert run.glob.held == {}
    assert run.maintenance(AP1, END + 32) == [] and run.maintenance(AP1, END + 9999) == []


@pytest.mark.parametrize("engine_first", [False, True], ids=["timer-first", "engine-first"])
def test_maintenance_becoming_an_outage_gets_outage_notices_and_no_end_notice(inv: Inventory,
                                                                               engine_first: bool) -> None:
    """The engine turns the planned incident into an outage when the window ends with the node down:
    those customers hear of it from the outage path (opened, then restored) and never "maintenance
    ended" — whether delivery's timer or the engine's upgrade comes first."""
    run = _started(inv)
    upgrade = ev("updated", END, DOWN, kind="outage", root="ap-1")
    ended = [*run.feed(upgrade, now=END)] if engine_first else []
    ended += run.maintenance(AP1, END)
    if not engine_first:
        ended += run.feed(upgrade, now=END + 1)
    ended += run.maintenance(AP1, END + 2)
    assert sorted(i.recipient for i in ended if i.action == "customer_opened") == _emails(DOWN)
    assert by_action(ended)["ticket_open"] == 1
    assert run.glob.held == {}
    restored = run.feed(ev("resolved", END + 900, DOWN, root="ap-1"))
    assert sorted(i.recipient for i in restored if i.action == "customer_restored") == _emails(DOWN)
    ended += run.maintenance(AP1, END + 901) + run.maintenance(AP1, END + 9999)
    assert _ended(ended) == sorted(set(_emails(ids(40, 0))) - set(_emails(DOWN)))


def test_an_outage_that_opened_and_resolved_between_two_timer_ticks_still_means_no_end_notice(
        inv: Inventory) -> None:
    """Its memory is no longer open at the next tick; the customer_opened notice is what stops the hold."""
    run = _started(inv)
    assert not set(_ended(run.maintenance(AP1, END))) & set(_emails(DOWN))
    assert by_action(run.feed(ev("updated", END + 0.2, DOWN, kind="outage", root="ap-1")))["customer_opened"] == 10
    assert by_action(run.feed(ev("resolved", END + 0.8, DOWN, root="ap-1")))["customer_restored"] == 10
    assert run.maintenance(AP1, END + 1) == [] and run.glob.held == {}


def test_held_customers_survive_a_restart_and_get_the_end_notice_once(inv: Inventory) -> None:
    import json

    run = _started(inv)
    run.maintenance(AP1, END)
    stored = json.loads(json.dumps(run.glob.to_dict()))
    again = Run(run.ctx)  # a restart: the memories come back from the store
    again.mem = {k: IncidentMemory.from_dict(json.loads(json.dumps(m.to_dict()))) for k, m in run.mem.items()}
    again.glob = GlobalMemory.from_dict(stored)
    assert again.glob == run.glob and again.glob.held == {"MW-1": DOWN}
    assert again.maintenance(AP1, END + 5) == []  # neither the 30 told at the end, nor the 10 held
    again.feed(ev("resolved", END + 30, DOWN, kind="planned", root="ap-1"))
    assert _ended(again.maintenance(AP1, END + 31)) == _emails(DOWN)
    assert again.maintenance(AP1, END + 32) == []
    # a memory stored before holding existed still loads (nothing held)
    old = {k: v for k, v in stored.items() if k != "held"}
    assert GlobalMemory.from_dict(old).held == {} and GlobalMemory.from_dict(old).maintenance == stored["maintenance"]


def test_planned_incidents_raise_no_alarm(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    items = run.feed(ev("opened", T0, ids(10, 0), kind="planned"))
    assert {i.channel for i in items} == {"mqtt"}
    status = next(i for i in items if i.action == "mqtt_status")
    assert status.data["payload"]["status"] == "maintenance"


def test_memory_round_trips_through_json(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(3, 0)))
    m = run.mem["INC-000001"]
    assert IncidentMemory.from_dict(m.to_dict()) == m
    assert GlobalMemory.from_dict(run.glob.to_dict()) == run.glob
    assert GlobalMemory.from_dict({**run.glob.to_dict(), "seq": 7}) == run.glob  # stored by an older version


def test_eta_set_makes_one_desk_comment_and_one_update_per_notified_customer(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, [*ids(6, 0), "C-0041"]))  # C-0041 opted out
    eta = T0 + 3 * 3600  # 09:06 in Bogotá
    items = run.tick(T0 + 600, etas={"INC-000001": eta})
    assert by_action(items) == Counter({"ticket_comment": 1, "customer_updated": 6})
    comment = next(i for i in items if i.action == "ticket_comment")
    assert comment.version == 1 and comment.data["reason"] == "eta" and comment.data["eta"] == "2026-11-18 09:06"
    updates = {i.recipient: i for i in items if i.action == "customer_updated"}
    assert set(updates) == {f"c{i}@example.com" for i in range(1, 7)}
    assert {i.version for i in updates.values()} == {1}
    renderer = Renderer()
    _, es = renderer.render("customer_updated", "email", "es", updates["c1@example.com"].data)
    _, en = renderer.render("customer_updated", "email", "en", updates["c2@example.com"].data)
    _, sms = renderer.render("customer_updated", "sms", "es", updates["c1@example.com"].data)
    _, desk = renderer.render("ticket_comment", "ticket", "es", comment.data)
    assert "restablecer su servicio a más tardar a las 2026-11-18 09:06" in es
    assert "We expect your service to be back by 2026-11-18 09:06" in en
    assert "Restablecimiento estimado: 2026-11-18 09:06 (hora de Colombia)." in sms  # whose clock (issue 18)
    assert "Restablecimiento estimado: 2026-11-18 09:06 (hora de Colombia)" in desk
    # the same ETA again, or one moved by less than delivery.eta_min_change (5 min): nothing at all
    assert run.tick(T0 + 601, etas={"INC-000001": eta}) == [] and run.last == []
    assert run.tick(T0 + 700, etas={"INC-000001": eta + 120}) == [] and run.last == []
    assert run.mem["INC-000001"].eta == eta


def test_eta_updates_to_customers_are_throttled_the_desk_is_told_at_once(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(4, 0)))
    tick = functools.partial(run.tick, acked=frozenset({"INC-000001"}))  # no escalation in between
    assert by_action(tick(T0 + 60, etas={"INC-000001": T0 + 7200}))["customer_updated"] == 4
    # moved by an hour 10 minutes later: the desk hears now, customers only after update_min_interval (1 h)
    items = tick(T0 + 660, etas={"INC-000001": T0 + 10_800})
    assert by_action(items) == Counter({"ticket_comment": 1})
    assert next(i for i in items if i.action == "ticket_comment").version == 2
    later = T0 + 14_400  # moved once more while waiting: customers get only the newest
    assert by_action(tick(T0 + 1200, etas={"INC-000001": later})) == Counter({"ticket_comment": 1})
    assert tick(T0 + 60 + 3599, etas={"INC-000001": later}) == []
    items = tick(T0 + 60 + 3600, etas={"INC-000001": later})
    assert by_action(items) == Counter({"customer_updated": 4})
    assert {i.version for i in items} == {2} and {i.data["eta"] for i in items} == {"2026-11-18 10:06"}
    assert tick(T0 + 9000, etas={"INC-000001": later}) == []


def test_eta_for_a_resolved_incident_tells_nobody(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(4, 0)))
    run.feed(ev("resolved", T0 + 300, ids(4, 0)))
    assert run.tick(T0 + 400, etas={"INC-000001": T0 + 7200}) == [] and run.last == []
    m = run.mem["INC-000001"]
    assert m.eta == 0.0 and not m.eta_due


def test_eta_withdrawn_one_desk_comment_and_one_throttled_update_to_those_told(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, [*ids(6, 0), "C-0041"]))  # C-0041 opted out
    tick = functools.partial(run.tick, acked=frozenset({"INC-000001"}))  # no escalation in between
    assert by_action(tick(T0 + 600, etas={"INC-000001": T0 + 3 * 3600}))["customer_updated"] == 6
    run.feed(ev("updated", T0 + 650, ids(5, 0)))  # C-0006 is back: restored, not told of the withdrawal
    items = tick(T0 + 700, etas={"INC-000001": None})
    (comment,) = items  # the desk at once; customers wait for update_min_interval (1 h)
    assert comment.action == "ticket_comment" and comment.data["reason"] == "eta_withdrawn"
    assert comment.data["eta"] == ""
    renderer = Renderer()
    _, desk_es = renderer.render("ticket_comment", "ticket", "es", comment.data)
    _, desk_en = renderer.render("ticket_comment", "ticket", "en", comment.data)
    assert "Estimación de restablecimiento retirada" in desk_es and "Restablecimiento estimado:" not in desk_es
    assert "Restoration estimate withdrawn" in desk_en
    assert tick(T0 + 701, etas={"INC-000001": None}) == [] and run.last == []
    assert tick(T0 + 702, etas={}) == [] and run.last == []  # no longer listed (e.g. just resolved): no news
    assert tick(T0 + 600 + 3599, etas={"INC-000001": None}) == []
    items = tick(T0 + 600 + 3600, etas={"INC-000001": None})
    updates = {i.recipient: i for i in items if i.action == "customer_updated"}
    assert set(updates) == {f"c{i}@example.com" for i in range(1, 6)} and {i.version for i in items} == {2}
    assert {(i.data["eta"], i.data["eta_withdrawn"]) for i in items} == {("", True)}
    _, es = renderer.render("customer_updated", "email", "es", updates["c1@example.com"].data)
    _, en = renderer.render("customer_updated", "email", "en", updates["c2@example.com"].data)
    _, sms = renderer.render("customer_updated", "sms", "en", updates["c2@example.com"].data)
    assert "Por ahora no tenemos una hora estimada de restablecimiento" in es and "más tardar" not in es
    assert "We have no estimated restoration time for now" in en and "No estimated restoration time" in sms
    assert tick(T0 + 9000, etas={"INC-000001": None}) == [] and run.last == []  # at most one
    m = run.mem["INC-000001"]
    assert set(m.eta_told) - set(m.restored) == set()  # nobody still down believes an estimate
    # a new estimate later goes to every notified customer still down again, without the withdrawal line
    items = tick(T0 + 12_000, etas={"INC-000001": T0 + 20_000})
    assert by_action(items) == Counter({"ticket_comment": 1, "customer_updated": 5})
    assert not any(i.data.get("eta_withdrawn") for i in items)
    m = run.mem["INC-000001"]
    assert set(m.eta_told) - set(m.restored) == set(ids(5, 0))


def test_eta_withdrawn_before_customers_heard_it_tells_only_the_desk(inv: Inventory) -> None:
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(4, 0), kind="suspected"))
    assert by_action(run.feed(ev("updated", T0 + 60, ids(4, 0))))["customer_updated"] == 4  # → outage
    tick = functools.partial(run.tick, acked=frozenset({"INC-000001"}))
    assert by_action(tick(T0 + 120, etas={"INC-000001": T0 + 7200})) == Counter({"ticket_comment": 1})
    items = tick(T0 + 600, etas={"INC-000001": None})
    assert [(i.action, i.data["reason"]) for i in items] == [("ticket_comment", "eta_withdrawn")]
    assert tick(T0 + 60 + 3600, etas={"INC-000001": None}) == [] and run.last == []
    m = run.mem["INC-000001"]
    assert m.eta == 0.0 and not m.eta_due and m.eta_told == []


def test_eta_min_change_comes_from_the_config(tmp_path: Path) -> None:
    run = Run(ctx_of(load(tmp_path, 4, base_delivery(eta_min_change="30m"))))
    run.feed(ev("opened", T0, ids(4, 0)))
    tick = functools.partial(run.tick, acked=frozenset({"INC-000001"}))
    eta = T0 + 7200
    assert by_action(tick(T0 + 60, etas={"INC-000001": eta}))["ticket_comment"] == 1
    assert tick(T0 + 120, etas={"INC-000001": eta + 1799}) == [] and run.last == []
    assert by_action(tick(T0 + 180, etas={"INC-000001": eta + 1800})) == Counter({"ticket_comment": 1})


def test_degraded_tells_the_technicians_once_and_customers_only_if_configured(tmp_path: Path) -> None:
    """A lossy link (rain fade): one ticket and one on-call alert for the whole incident, however its
    flickering endpoints come and go; customers hear nothing unless ``customers.kinds`` lists
    ``degraded``, and then a "degraded service" notice, not an outage notice."""
    inv = load(tmp_path)
    run = Run(ctx_of(inv))
    why = "lossy link: twr-1 answering with loss 60% > 20% since 2026-11-18T11:00:00Z; the failures below are its"
    items = run.feed(dataclasses.replace(ev("opened", T0, ids(3, 0), kind="degraded"), detail=why))
    acts = by_action(items)
    assert acts["ticket_open"] == 1 and acts["tech_alert"] == 1 and acts["customer_opened"] == 0
    alert = next(i for i in items if i.action == "tech_alert")
    ticket = next(i for i in items if i.action == "ticket_open")
    assert f"Por qué: {why}\n" in Renderer().render("technician_alert", "email", alert.language, alert.data)[1]
    assert f"Por qué: {why}\n" in Renderer().render("ticket_opened", "ticket", "es", ticket.data)[1]
    plain = run.feed(ev("opened", T0, ids(2, 0), incident="INC-000005", root="ap-1"))
    ticket = next(i for i in plain if i.action == "ticket_open")
    text = Renderer().render("ticket_opened", "ticket", "es", ticket.data)[1]
    assert "Por qué" not in text and "\n\n\n" not in text  # no detail: the ticket reads as before
    for k in range(1, 6):  # the flicker: the affected set changes every few minutes
        acts = by_action(run.feed(ev("updated", T0 + 120 * k, ids(1 + k % 3, 0), kind="degraded")))
        assert acts["tech_alert"] == 0 and acts["ticket_open"] == 0 and acts["customer_opened"] == 0
    inv2 = load(tmp_path / "..", delivery=base_delivery(customers={"kinds": ["outage", "suspected", "degraded"]}))
    run2 = Run(ctx_of(inv2))
    items = run2.feed(ev("opened", T0, ids(2, 0), kind="degraded"))
    notices = {i.recipient: i for i in items if i.action == "customer_opened"}
    assert set(notices) == {"c1@example.com", "c2@example.com"}
    renderer = Renderer()
    subject_es, es = renderer.render("customer_opened", "email", "es", notices["c1@example.com"].data)
    subject_en, en = renderer.render("customer_opened", "email", "en", notices["c2@example.com"].data)
    _, sms = renderer.render("customer_opened", "sms", "es", notices["c1@example.com"].data)
    assert "Servicio degradado" in subject_es and "lento o cortarse por momentos" in es and "Detectamos" not in es
    assert "Degraded service" in subject_en and "slow or drop now and then" in en and "outage" not in subject_en
    assert "servicio lento o con cortes en su zona" in sms and "Trabajamos en ello." in sms  # plain words, 160 chars


def test_an_event_planned_twice_makes_the_same_mqtt_keys(inv: Inventory) -> None:
    """An event decided while resuming is planned by delivery's catch-up and again when the start
    hands it over: MQTT keys (the message_id) derive from the event, so the second plan adds nothing
    (they came from a counter: a second row, a second publish, another message_id)."""
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(5, 0)))
    resolved = ev("resolved", T0 + 600, ids(5, 0))
    first = [i for i in run.feed(resolved) if i.action.startswith("mqtt_")]
    assert Counter(i.action for i in first) == Counter({"mqtt_resolved": 1, "mqtt_status": 2, "mqtt_muni": 1})
    assert run.feed(resolved) == []
    assert {i.key for i in run.last if i.action.startswith("mqtt_")} == {i.key for i in first}
    [event] = [i for i in first if i.action == "mqtt_resolved"]
    assert event.key.startswith(f"INC-000001/mqtt_resolved/incident/resolved-{round((T0 + 600) * 1000)}-")
    # two different updates of one incident in the same millisecond are two messages
    a, b = ev("updated", T0 + 60, ids(3, 0)), ev("updated", T0 + 60, ids(2, 0))
    other = Run(ctx_of(inv))
    other.feed(ev("opened", T0, ids(5, 0)))
    keys = [{i.key for i in other.feed(e) if i.action == "mqtt_updated"} for e in (a, b)]
    assert len(keys[0]) == len(keys[1]) == 1 and keys[0] != keys[1]


def test_the_desk_comment_names_who_set_or_withdrew_the_estimate(inv: Inventory) -> None:
    """The staff member (board, CLI or API user) is in the ticket, as in the board's audit log."""
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(3, 0)))
    items = run.tick(T0 + 600, etas={"INC-000001": T0 + 3 * 3600}, eta_by={"INC-000001": "ana"})
    comment = next(i for i in items if i.action == "ticket_comment")
    renderer = Renderer()
    _, es = renderer.render("ticket_comment", "ticket", "es", comment.data)
    _, en = renderer.render("ticket_comment", "ticket", "en", comment.data)
    assert "Restablecimiento estimado: 2026-11-18 09:06 (hora de Colombia), fijado por ana" in es
    assert "Estimated restoration: 2026-11-18 09:06 (Colombia time), set by ana" in en
    items = run.tick(T0 + 700, etas={"INC-000001": None}, eta_by={"INC-000001": "luis"})
    comment = next(i for i in items if i.action == "ticket_comment")
    _, en = renderer.render("ticket_comment", "ticket", "en", comment.data)
    assert "Restoration estimate withdrawn by luis: no estimate for now" in en


def staff_action(aid: int, action: str, author: str, text: str = "", inc: str = "INC-000001") -> ActionRow:
    return ActionRow(aid, inc, T0 + 60 * aid, action, author, text)


def test_acks_notes_and_resolves_reach_the_ticket_naming_who_once_each(inv: Inventory) -> None:
    """Issue 15: the desk's comment names the staff member, as the board's audit log does; machine
    notes, the desk's own acks (a taken ticket) and estimates (their own comment) are not repeated."""
    run = Run(ctx_of(inv))
    run.feed(ev("opened", T0, ids(3, 0)))
    actions = [staff_action(1, "note", "correlation", "burst: 5x the learned rate"),
               staff_action(2, "ack", "ana", "voy en camino"), staff_action(3, "ack", "rt", "ticket 7 taken"),
               staff_action(4, "eta", "ana", "2026-11-18T16:00:00-05:00"), staff_action(5, "note", "luis", "ONT"),
               staff_action(6, "resolve", "ana"), staff_action(7, "note", "ana", "elsewhere", inc="INC-000009")]
    items = run._keep(planner.plan_staff(actions, run.mem, run.glob, run.ctx))
    assert [(i.action, i.version, i.data["by"], i.data["op"]) for i in items] == [
        ("ticket_staff", 2, "ana", "comment"), ("ticket_staff", 5, "luis", "comment"),
        ("ticket_staff", 6, "ana", "comment")]
    assert all(i.group == "desk:INC-000001" for i in items) and run.glob.staff_cursor == 7
    assert GlobalMemory.from_dict(json.loads(json.dumps(run.glob.to_dict()))).staff_cursor == 7
    # planned again (a restart before the memory was stored): the same keys, nothing new
    assert run._keep(planner.plan_staff(actions, run.mem, GlobalMemory(), run.ctx)) == []
    renderer = Renderer()
    subject, es = renderer.render("ticket_staff", "ticket", "es", items[0].data)
    assert subject == "[INC-000001] Atendido por ana"
    assert es.strip() == ("Incidente INC-000001 atendido por ana a las 2026-11-18 06:08 (hora de Colombia):\n"
                          "voy en camino")
    subject, en = renderer.render("ticket_staff", "ticket", "en", items[2].data)
    assert subject == "[INC-000001] Resolved by ana"
    assert en.strip() == "Incident INC-000001 resolved by ana at 2026-11-18 06:12 (Colombia time)."


@settings(max_examples=60, deadline=None, derandomize=True)
@given(author=st.text(max_size=200), text=st.text(max_size=300), action=st.sampled_from(("ack", "note", "resolve")))
def test_any_staff_name_stays_on_the_subject_line(shared_ctx: Context, author: str, text: str, action: str) -> None:
    """A name with line breaks (an API caller's ``by``) cannot add lines to the ticket's (or mail's) header."""
    run = Run(shared_ctx)
    run.feed(ev("opened", T0, ids(3, 0)))
    items = planner.plan_staff([staff_action(1, action, "x" + author, text)], run.mem, run.glob, run.ctx).items
    assert len(items) == 1
    subject, body = Renderer().render("ticket_staff", "ticket", "es", items[0].data)
    assert "\n" not in subject and subject.startswith("[INC-000001] ")
    assert text.strip() in body
