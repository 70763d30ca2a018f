"""The end-to-end benchmark's checks after a run, its report, and the daemon's /metrics read.

A benchmark that only timed the happy path would hide the defects that matter at scale (a second
ticket, a repeated notice, a customer never told, a CPE of another tower falsely DOWN while 10,000
mails go out on the same event loop), so every run checks them and reports what it found.
"""

from __future__ import annotations

import math
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from bench.e2e.network import TECHNICIAN, Network
from bench.e2e.observe import Mailbox, Store
from tests.servers.rt import RequestTracker

CUSTOMER_KINDS = ("outage", "suspected", "single")


@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    scheduler: dict[str, float] = field(default_factory=dict)
    stop: tuple[float, int | None] = (0.0, None)

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def report(self) -> None:
        for name, value in self.facts.items():
            print(f"  {name:<34} {value}")
        for name, pct in self.cpu.items():
            print(f"  CPU % of one core, {name:<15} {pct:6.1f}")
        for name, mb in self.rss.items():
            print(f"  RSS {name:<30} {mb:6.0f} MB")
        for name, v in self.scheduler.items():
            print(f"  {name:<34} {v:g}")
        print(f"  daemon stop (SIGTERM)              {self.stop[0]:.2f} s, exit {self.stop[1]}")
        print("  checks: " + ("all passed" if not self.problems else "FAILED"))
        for problem in self.problems:
            print(f"    - {problem}")


def check_run(store: Store, mail: Mailbox, net: Network, incident: str, cut: float, warm: float,
              rt: RequestTracker | None) -> Outcome:
    out = Outcome()
    incidents = store.incidents(cut)
    customer = [r for r in incidents if r["kind"] in CUSTOMER_KINDS]
    out.facts["incidents since the cut"] = ", ".join(f"{r['id']} {r['kind']}@{r['root']} {r['status']}"
                                                     for r in incidents)
    out.expect(len(customer) == 1 and customer[0]["id"] == incident, f"customer-affecting incidents: {customer}")
    out.expect(bool(customer) and customer[0]["kind"] == "outage" and customer[0]["root"] == net.cut_tower,
               f"the incident is not an outage at {net.cut_tower}: {customer[:1]}")

    changes = store.changes(warm)
    outside = [c for c in changes if c[1] not in net.cut_targets and c[2] in ("down", "degraded")]
    inside = Counter(c[2] for c in changes if c[1] in net.cut_targets)
    out.facts["state changes below the tower"] = dict(inside)
    out.expect(not outside, f"{len(outside)} DOWN/DEGRADED outside the cut subtree, e.g. {outside[:3]}")
    out.expect(inside["degraded"] == 0, f"{inside['degraded']} DEGRADED below the tower")

    rows = store.outbox()
    ours = [r for r in rows if r["incident"] == incident]
    out.facts["outbox rows of the incident"] = dict(Counter(r["action"] for r in ours))
    bad = [r for r in rows if r["status"] != "delivered"]
    out.expect(not bad, f"{len(bad)} outbox rows not delivered: {Counter((r['action'], r['status']) for r in bad)}")
    retried = [r for r in rows if int(r["attempts"]) > 1]
    out.facts["outbox rows retried"] = len(retried)
    tickets = [r for r in ours if r["action"] == "ticket_open"]
    out.expect(len(tickets) == 1, f"{len(tickets)} ticket_open rows")
    if rt is not None:
        found = rt.tickets(f"Subject LIKE '{incident}'")
        out.facts["RT tickets"] = len(found)
        out.expect(len(found) == 1, f"{len(found)} RT tickets for {incident}")
    else:
        files = sorted(p.name for p in net.tickets.iterdir()) if net.tickets.exists() else []
        out.facts["folder desk tickets"] = files
        out.expect(files == [f"{incident}.txt"], f"ticket files: {files}")

    mail.refresh()
    unknown = [m for m in mail.mails if m.action == "?"]
    out.expect(not unknown, f"{len(unknown)} mails that match no outbox row")
    ids = Counter(m.message_id for m in mail.mails)
    repeated = {k: n for k, n in ids.items() if n > 1}
    out.facts["mails received / distinct Message-IDs"] = f"{len(mail.mails)} / {len(ids)}"
    out.expect(not repeated, f"{len(repeated)} Message-IDs received more than once")
    alerts = mail.of(incident, "tech_alert")
    out.expect([m.to for m in alerts] == [TECHNICIAN], f"technician alerts: {[m.to for m in alerts]}")
    for action in ("customer_opened", "customer_restored"):
        got = mail.of(incident, action)
        to = Counter(m.to for m in got)
        out.expect(set(to) == net.cut_customers and max(to.values(), default=0) == 1,
                   f"{action}: {len(got)} mails to {len(to)} customers (expected {len(net.cut_customers)}, one each)")
        out.expect(len({m.message_id for m in got}) == len(got), f"{action}: repeated Message-IDs")
    return out


def scrape(port: int) -> dict[str, float]:
    """Skipped polls and the scheduler lag's p99 bucket from the daemon's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {"skipped": 0.0}
    buckets: list[tuple[float, float]] = []  # (le, cumulative count)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "monitor_polls_skipped_total":
                out["skipped"] += s.value
            elif s.name == "monitor_scheduler_lag_seconds_bucket":
                buckets.append((float(s.labels["le"]), s.value))
    if buckets:
        total = buckets[-1][1]
        out["lag_p99"] = next((le for le, n in buckets if n >= 0.99 * total), math.inf)
        out.update({f"lag_le_{le:g}": n for le, n in buckets})
    return out


def lag_max(before: dict[str, float], after: dict[str, float]) -> float:
    """The upper bound of the largest scheduler lag between two scrapes (the bucket holding the last poll)."""
    total = after.get("lag_le_inf", 0.0) - before.get("lag_le_inf", 0.0)
    for key in sorted((k for k in after if k.startswith("lag_le_")), key=lambda k: float(k[7:])):
        if after[key] - before.get(key, 0.0) >= total:
            return float(key[7:])
    return math.nan
