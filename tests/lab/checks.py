"""Scenario assertions on what the outside world received, shared by the lab's scenarios.

Each helper waits for a condition with a deadline (never a fixed sleep) and then asserts. When the
daemon delivers (RT ticket, technician email + MQTT, customer notices), the per-incident delivery
assertions go into :func:`incident_delivered` / :func:`incident_closed_out`, so every scenario
that opens or resolves an incident checks them without being rewritten.
"""

from __future__ import annotations

import time

from monitor.correlate.store import IncidentRow
from tests.lab.config import MUNICIPALITY, customer_ids
from tests.lab.delivery import PREFIX, TECHNICIANS
from tests.lab.fixtures import IspRun
from tests.lab.observe import CUSTOMER_KINDS
from tests.servers.common import wait_for


def opened_since(run: IspRun, since: float, kinds: tuple[str, ...] | None = None) -> list[IncidentRow]:
    return [r for r in run.observe.incidents(since) if kinds is None or r.kind in kinds]


def wait_incident(run: IspRun, since: float, kind: str | tuple[str, ...], root: str,
                  timeout: float = 20.0) -> IncidentRow:
    """The first incident of ``kind`` (or one of several) at ``root`` opened since ``since``."""
    kinds = (kind,) if isinstance(kind, str) else kind

    def found() -> IncidentRow | None:
        return next((r for r in opened_since(run, since) if r.kind in kinds and r.root == root), None)

    try:
        wait_for(lambda: found() is not None, timeout, f"a {kind} incident at {root}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; incidents: {opened_since(run, since)}; states: {run.observe.states()}\n"
                             f"{run.daemon.log_tail()}") from exc
    row = found()
    assert row is not None
    return row


def cut_until_incident(run: IspRun, since: float, link: str, kind: str, root: str, aps: list[str],
                       scenario: str) -> tuple[IncidentRow, set[str]]:
    """Cut ``link``; wait for the one incident of ``kind`` at ``root`` listing exactly the endpoints and
    customers behind ``aps``, and no other incident since ``since`` (no AP or CPE incident of its own).
    Records the detection latency as ``scenario``; returns the incident and its customers."""
    fault = time.time()
    run.lab.cut(link)
    row = wait_incident(run, since, kind, root)
    run.record_latency(scenario, fault, row.opened_at)
    endpoints, customers = endpoints_behind(run, aps), customers_behind(run, aps)
    row = wait_affected(run, row.id, len(endpoints))
    assert last_affected(run, row.id) == (endpoints, customers)
    assert [r.id for r in opened_since(run, since)] == [row.id], timeline(run, since)
    return row, customers


def wait_affected(run: IspRun, incident: str, endpoints: int, timeout: float = 20.0) -> IncidentRow:
    """Wait until the incident's latest opened/updated event lists ``endpoints`` affected endpoints."""
    def row() -> IncidentRow:
        return next(r for r in run.observe.incidents() if r.id == incident)

    wait_for(lambda: row().affected_endpoints == endpoints, timeout,
             f"{incident} listing {endpoints} affected endpoints (has {row().affected_endpoints})")
    return row()


def wait_resolved(run: IspRun, incident: str, timeout: float = 30.0) -> IncidentRow:
    def row() -> IncidentRow:
        return next(r for r in run.observe.incidents() if r.id == incident)

    wait_for(lambda: row().status == "resolved", timeout, f"{incident} resolved")
    return row()


def lifecycle(run: IspRun, incident: str) -> list[str]:
    """The incident's lifecycle events in order, e.g. ``["opened", "updated", "resolved"]``."""
    return [e["event"] for e in run.observe.events(incident)]


def transitions(run: IspRun, since: float, target: str, new: str) -> int:
    """How many times the event log says ``target`` became ``new`` since ``since``."""
    return sum(1 for c in run.observe.changes(since) if c.target == target and c.new.value == new)


def customers_behind(run: IspRun, aps: list[str], addresses: list[str] | None = None) -> set[str]:
    """Customer ids of the CPEs behind these APs (or only of those addresses)."""
    return {cust for addr, (_cpe, cust, ap) in customer_ids(run.lab).items()
            if ap in aps and (addresses is None or addr in addresses)}


def endpoints_behind(run: IspRun, aps: list[str], addresses: list[str] | None = None) -> set[str]:
    return {cpe for addr, (cpe, _cust, ap) in customer_ids(run.lab).items()
            if ap in aps and (addresses is None or addr in addresses)}


def last_affected(run: IspRun, incident: str) -> tuple[set[str], set[str]]:
    """(endpoints, customers) of the incident's last opened/updated event."""
    evs = [e for e in run.observe.events(incident) if e["event"] in ("opened", "updated")]
    return set(evs[-1]["affected_endpoints"]), set(evs[-1]["affected_customers"])


def only_incident(run: IspRun, since: float, incident: str) -> None:
    """``incident`` is the one incident opened since ``since``; else the whole timeline."""
    ids = [r.id for r in opened_since(run, since)]
    assert ids == [incident], f"incidents since the fault: {ids}\n{timeline(run, since, everything=True)}"


def no_customer_incident(run: IspRun, since: float) -> None:
    """No outage/suspected/single incident opened since ``since``; else the timeline that led to one."""
    rows = opened_since(run, since, CUSTOMER_KINDS)
    assert rows == [], f"customer incidents opened: {[(r.id, r.kind, r.root) for r in rows]}\n{timeline(run, since)}"


def timeline(run: IspRun, since: float, everything: bool = False) -> str:
    """State changes (of infrastructure only, unless ``everything``) and incident events since ``since``."""
    nodes = set(run.lab.routers)
    lines = [(c.ts, f"{c.target} {c.old.value}->{c.new.value}") for c in run.observe.changes(since)
             if everything or c.target in nodes]
    for r in run.observe.incidents(since):
        lines += [(e["ts"], f"{e['event']} {r.id} {e['kind']} at {e['root']} ({len(e['affected_endpoints'])} eps)")
                  for e in run.observe.events(r.id)]
    return "\n".join(f"{ts - since:8.3f}  {text}" for ts, text in sorted(lines))


def municipality_of(run: IspRun, node: str) -> str:
    """The municipality of an infrastructure node: its tower's (the core's is Arauca, the NOC's)."""
    while node not in MUNICIPALITY and run.lab.routers[node].parent:
        node = str(run.lab.routers[node].parent)
    return MUNICIPALITY.get(node, "arauca")


def customer_emails(customers: set[str]) -> set[str]:
    return {f"{c.lower()}@clientes.example" for c in customers}


def incident_delivered(run: IspRun, row: IncidentRow, customers: set[str]) -> dict[str, float]:
    """Everything the world must have received for an opened incident; returns delivery latencies.

    Always: the incident in ``monitor incidents list`` and its annotation point in the time series.
    Once the daemon delivers: exactly one RT ticket, the municipality's on-call technician alerted by
    email and MQTT, exactly one "opened" notice per customer in ``customers`` (and to nobody else).
    The latencies (seconds after the incident was opened) are when the test saw the ticket and when
    the first customer notice reached the SMTP server.
    """
    cli = {r["id"]: r for r in run.observe.cli_incidents()}
    assert row.id in cli, f"{row.id} not in `monitor incidents list`: {list(cli)}"
    assert (cli[row.id]["kind"], cli[row.id]["root"]) == (row.kind, row.root)
    wait_for(lambda: bool(run.observe.series(
        f"SELECT \"open\" FROM incident WHERE incident = '{row.id}' AND event = 'opened'")), 10,
        f"the time-series annotation of {row.id}")
    world = run.receivers
    if world is None:
        return {}
    wait_for(lambda: len(world.tickets(row.id)) >= 1, 30, f"the RT ticket of {row.id}")
    ticket_s = time.time() - row.opened_at
    muni = municipality_of(run, row.root)
    tech = TECHNICIANS[muni]
    wait_for(lambda: any("ALERTA" in s for s in world.technician_mails(row.id, tech)), 30, f"{tech} alerted by email")
    wait_for(lambda: any(a.get("event") == "alert" for a in world.mqtt(f"{PREFIX}/technicians/{muni}")), 30,
             f"the MQTT alert on {PREFIX}/technicians/{muni}")
    wanted = customer_emails(customers)
    wait_for(lambda: set(world.customer_notices(row.id, "opened")) == wanted, 60, "one opened notice per customer")
    notices = world.customer_notices(row.id, "opened")
    assert set(notices.values()) == {1}, notices
    assert len(world.tickets(row.id)) == 1
    first = world.first_arrival(row.id, "opened")
    return {"ticket_s": round(ticket_s, 3), "first_notice_s": round(first - row.opened_at, 3)}


def incident_closed_out(run: IspRun, row: IncidentRow, customers: set[str]) -> None:
    """Everything the world must have received once an incident resolved: the resolved annotation,
    one ``resolved`` lifecycle event; once the daemon delivers: the ticket resolved (still one
    ticket), exactly one restored notice per customer and still one opened notice each."""
    wait_for(lambda: bool(run.observe.series(
        f"SELECT \"open\" FROM incident WHERE incident = '{row.id}' AND event = 'resolved'")), 10,
        f"the resolved annotation of {row.id}")
    assert lifecycle(run, row.id).count("resolved") == 1
    world = run.receivers
    if world is None:
        return
    wanted = customer_emails(customers)
    wait_for(lambda: set(world.customer_notices(row.id, "restored")) == wanted, 60, "one restored notice each")
    wait_for(lambda: [t["Status"] for t in world.tickets(row.id)] == ["resolved"], 30, "the ticket resolved")
    for event in ("opened", "restored"):
        notices = world.customer_notices(row.id, event)
        assert set(notices) == wanted and set(notices.values()) == {1}, (event, notices)


def no_storm(run: IspRun, row: IncidentRow) -> None:
    """A flapping root told each customer at most once that it failed and once that it is back."""
    wait_for(lambda: bool(run.observe.series(
        f"SELECT \"open\" FROM incident WHERE incident = '{row.id}' AND event = 'resolved'")), 10,
        f"the resolved annotation of {row.id}")
    world = run.receivers
    if world is None:
        return
    wait_for(lambda: [t["Status"] for t in world.tickets(row.id)] == ["resolved"], 30, "one ticket, resolved")
    for event in ("opened", "restored"):
        notices = world.customer_notices(row.id, event)
        assert set(notices.values()) <= {1}, (event, notices)


def customer_notice_count(run: IspRun) -> int:
    """Customer notices received so far (0 when the daemon does not deliver yet)."""
    world = run.receivers
    if world is None:
        return 0
    return sum(1 for m in world.smtp.messages() if str(m["To"]).endswith("@clientes.example"))


def maintenance_notified(run: IspRun, window: int, phase: str, customers: set[str]) -> float | None:
    """Wait until each of ``customers`` got exactly one ``phase`` notice of the window (advance, start,
    end) and nobody else did; returns when the first reached the SMTP server (None: no delivery)."""
    world = run.receivers
    if world is None:
        return None
    key, wanted = f"MW-{window}", customer_emails(customers)
    wait_for(lambda: set(world.customer_notices(key, f"maintenance_{phase}")) == wanted, 30,
             f"one maintenance {phase} notice per customer")
    notices = world.customer_notices(key, f"maintenance_{phase}")
    assert set(notices.values()) == {1}, notices
    return world.first_arrival(key, f"maintenance_{phase}")


def nothing_delivered(run: IspRun, row: IncidentRow) -> None:
    """A planned incident: no ticket, no technician alert (email or MQTT), no notice to anybody."""
    world = run.receivers
    if world is None:
        return
    assert world.tickets(row.id) == []
    assert [(m["To"], m["Subject"]) for m in world.mails(row.id)] == []
    alerts = [a for muni in TECHNICIANS for a in world.mqtt(f"{PREFIX}/technicians/{muni}")]
    assert [a for a in alerts if a.get("incident") == row.id] == []
