"""What ``monitor demo`` prints: the timeline header, one line per happening, the closing summary.

Kept apart from the runner so the wording can change without touching the orchestration. Lines
start with the seconds since the story began, so a reader can follow cause (▶ fault injected) to
effect (incident opened, ticket written, mails written) to recovery.
"""

from __future__ import annotations

import email
import email.policy
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.store import IncidentRow
from monitor.demo.scenario import Scenario
from monitor.inventory.model import Inventory


def header(out: TextIO, scenario: Scenario, speed: float, folder: Path, metrics_url: str) -> None:
    def p(text: str = "") -> None:
        print(text, file=out)

    p(f"monitor demo — {scenario.title}")
    p(f"The real daemon pipeline on a scripted network: nothing is probed, no server is needed (speed {speed:g}).")
    p(f"  output   {folder}")
    p(f"  metrics  {metrics_url}")
    p()
    p("What is about to happen (seconds from now):")
    plan = [(s.at, s.say, s.expect) for s in scenario.steps]
    plan += [(w.start, f"Maintenance window on {w.node} opens (until {w.end / speed:.0f}s): {w.reason}",
              "customers below it were told in advance; start and end notices") for w in scenario.maintenance]
    for at, say, expect in sorted(plan, key=lambda x: x[0]):
        p(f"  {at / speed:5.1f}s  {say}")
        if expect:
            p(f"          → expect {expect}")
    p()


@dataclass
class Printer:
    """Prints happenings as they occur; ``elapsed()`` gives real seconds since the story began."""

    out: TextIO
    inv: Inventory
    elapsed: Callable[[], float]
    seen_rows: int = 0
    tickets_seen: set[str] = field(default_factory=set)

    def line(self, text: str) -> None:
        print(f"[{self.elapsed():5.1f}s] {text}", file=self.out, flush=True)

    def incident_events(self, events: list[IncidentEvent]) -> None:
        """An incident sink of the daemon: one readable line per lifecycle event."""
        for e in events:
            where = self._where(e.root)
            if e.event == "merged":
                self.line(f"incident {e.incident} merged into {e.into}")
                continue
            eps, cus = len(e.affected_endpoints), len(e.affected_customers)
            counts = f"{eps} endpoint{'s' * (eps != 1)}, {cus} customer{'s' * (cus != 1)}"
            if e.event == "updated" and not eps:
                counts = "everything is back; resolves after the hold-down"
            self.line(f"incident {e.incident} {e.event.upper():8} {e.kind:9} at {where}: {counts}")

    def _where(self, node: str) -> str:
        t = self.inv.targets.get(node)
        if t is None:
            return node
        muni = self.inv.municipalities.get(t.municipality or "")
        return f"{node} ({t.name or t.kind}{', ' + muni.name if muni else ''})"

    def deliveries(self, rows: list[dict[str, Any]], mail_dir: Path, ticket_dir: Path) -> None:
        """Newly delivered outbox rows, summed per incident and action (rows come in id order)."""
        new = [r for r in rows if r["id"] > self.seen_rows]
        if not new:
            return
        self.seen_rows = max(r["id"] for r in new)
        groups: Counter[tuple[str, str, str]] = Counter((r["incident"], r["action"], r["channel"]) for r in new)
        for (incident, action, channel), n in groups.items():
            if channel == "desk":
                self.line(f"  ticket {incident}: {action.removeprefix('ticket_')} → {ticket_dir}/{incident}.txt")
            else:
                self.line(f"  mail   {n} × {action} ({incident}) → {mail_dir}/new/")


def mails(mail_dir: Path) -> list[email.message.EmailMessage]:
    """Every message in the Maildir, parsed (RFC 5322)."""
    out = []
    for path in sorted((mail_dir / "new").glob("*")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        out.append(msg)
    return out


def summary(incidents: Iterable[IncidentRow], delivered: list[dict[str, Any]], mail_dir: Path, ticket_dir: Path,
            state: Path, config: Path, log: Path) -> dict[str, Any]:
    """The closing numbers, as a dict (also written to summary.json for scripts and tests)."""
    rows = list(incidents)
    kinds: dict[str, Counter[str]] = {}
    for r in rows:
        kinds.setdefault(r.kind, Counter())[r.status] += 1
    msgs = mails(mail_dir)
    return {
        "incidents": [{"id": r.id, "kind": r.kind, "root": r.root, "status": r.status,
                       "endpoints": r.affected_endpoints, "customers": r.affected_customers} for r in rows],
        "incidents_by_kind": {k: dict(v) for k, v in sorted(kinds.items())},
        "tickets": sorted(p.name for p in ticket_dir.glob("*.txt")),
        "mails": len(msgs),
        "mails_by_language": dict(sorted(Counter(str(m["Content-Language"] or "-") for m in msgs).items())),
        "mails_by_action": dict(sorted(Counter(r["action"] for r in delivered if r["channel"] == "email").items())),
        "folders": {"mail": str(mail_dir), "tickets": str(ticket_dir), "state": str(state), "config": str(config),
                    "log": str(log)},
    }


def print_summary(out: TextIO, s: dict[str, Any], took: float, metrics: str) -> None:
    def p(text: str = "") -> None:
        print(text, file=out)

    f = s["folders"]
    p()
    p(f"The story is over after {took:.1f} s. What the monitor did:")
    kinds = ", ".join(f"{k} {sum(v.values())} ({', '.join(f'{n} {st}' for st, n in v.items())})"
                      for k, v in s["incidents_by_kind"].items())
    p(f"  incidents  {kinds or 'none'}")
    p(f"  tickets    {len(s['tickets'])} in {f['tickets']}: {', '.join(s['tickets']) or '-'}")
    langs = ", ".join(f"{k} {v}" for k, v in s["mails_by_language"].items())
    p(f"  mails      {s['mails']} in {f['mail']} (Maildir; {langs or 'none'})")
    for action, n in s["mails_by_action"].items():
        p(f"               {n:3} {action}")
    p(f"  metrics    {metrics}")
    p(f"  config     {f['config']}")
    p(f"  state      {f['state']}   (try: monitor incidents list --all --db {f['state']})")
    p(f"  daemon log {f['log']}")
    p(f"  summary    {Path(f['mail']).parent / 'summary.json'}")


def write_summary(path: Path, s: dict[str, Any]) -> None:
    path.write_text(json.dumps(s, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
