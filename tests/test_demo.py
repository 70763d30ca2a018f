"""``monitor demo``: the bundled story played once through the real daemon, judged by its files.

The run (about 35 s at speed 1) is shared by the module's tests. Each asserts what a newcomer is
promised: one ticket for the tower outage (opened … resolved), a suspected incident for the partial
AP failure, nothing but single incidents from churn, a planned incident without any alarm, one
opened and one restored mail per customer of the tower in their language, RFC 5322 mail files
whose Message-IDs are the ones the SMTP sender would use.
"""

from __future__ import annotations

import asyncio
import io
import json
import mailbox
from collections import Counter
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main as cli_main
from monitor.correlate.store import IncidentRow, IncidentStore
from monitor.delivery.config import MaildirSettings
from monitor.delivery.outbox import Outbox, Row
from monitor.demo import run as demo_run
from monitor.demo import scenario
from monitor.demo.console import mails
from monitor.desk.base import Ref
from monitor.desk.folder import FolderDesk
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.notify.email import message_id
from monitor.notify.maildir import MaildirSender

TOWER_APS = ("ap-centro-1", "ap-centro-2")
CHURN = ("cpe-1027", "cpe-1036", "cpe-1039")


@dataclass
class Played:
    rc: int
    output: str
    folder: Path
    inv: Inventory
    incidents: list[IncidentRow]
    events: list[dict[str, Any]]
    delivered: list[dict[str, Any]]

    def opened_with(self, incident: str) -> list[str]:
        """The customers an incident's ``opened`` event listed."""
        return next(e["affected_customers"] for e in self.events if e["incident"] == incident
                    and e["event"] == "opened")

    def one(self, kind: str) -> IncidentRow:
        found = [r for r in self.incidents if r.kind == kind]
        assert len(found) == 1, [(r.id, r.kind, r.root) for r in self.incidents]
        return found[0]

    def emails(self, action: str, incident: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.delivered if r["channel"] == "email" and r["action"] == action
                and (incident is None or r["incident"] == incident)]


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Played:
    folder = tmp_path_factory.mktemp("demo") / "out"
    out = io.StringIO()
    rc = asyncio.run(demo_run.Demo(folder, speed=1.0, out=out).run())
    db = folder / "config" / "state" / "monitor.db"
    store, outbox = IncidentStore(db), Outbox(db)
    try:
        incidents = store.incidents(status=None, limit=1000)
        events = list(store.events())
        delivered = outbox.rows(status="delivered")
    finally:
        store.close()
        outbox.close()
    return Played(rc, out.getvalue(), folder, load_inventory(folder / "config" / "sites.yaml"), incidents, events,
                  delivered)


def test_the_story_completes_and_says_what_happened(played: Played) -> None:
    assert played.rc == 0, played.output
    assert "What is about to happen" in played.output
    assert "The story is over after" in played.output
    assert "answered while it ran" in played.output  # /metrics was scraped
    assert all(r.status == "resolved" for r in played.incidents), played.incidents
    summary = json.loads((played.folder / "summary.json").read_text())
    assert summary["incidents_by_kind"]["outage"] == {"resolved": 1}
    assert summary["mails"] == len(list((played.folder / "mail" / "new").iterdir()))


def test_the_tower_outage_is_one_incident_with_one_ticket_opened_then_resolved(played: Played) -> None:
    outage = played.one("outage")
    assert outage.root == "twr-centro" and len(played.opened_with(outage.id)) == 20
    ticket = played.folder / "tickets" / f"{outage.id}.txt"
    text = ticket.read_text()
    sections = [line.split(" · ")[1].rstrip(" -") for line in text.splitlines() if line.startswith("--- ")]
    assert sections[0] == "opened" and sections[-1] == "resolved" and sections.count("opened") == 1
    assert f"[{outage.id}] CAÍDA Torre Centro" in text and "Clientes afectados: 20" in text
    others = [p for p in (played.folder / "tickets").iterdir() if p != ticket]
    assert not any("twr-centro" in p.read_text() for p in others)
    assert [r["recipient"] for r in played.emails("tech_alert", outage.id)] == ["ana.gomez@isp.example"]


def test_each_tower_customer_gets_one_opened_and_one_restored_mail_in_their_language(played: Played) -> None:
    outage = played.one("outage")
    customers = {t.customer for t in played.inv.targets.values() if t.parents and t.parents[0] in TOWER_APS}
    assert customers == set(played.opened_with(outage.id)) and len(customers) == 20
    by_id = {str(m["Message-ID"]): m for m in mails(played.folder / "mail")}
    for action, word in (("customer_opened", {"es": "Falla de servicio", "en": "Service outage"}),
                         ("customer_restored", {"es": "Servicio restablecido", "en": "Service restored"})):
        rows = played.emails(action, outage.id)
        assert Counter(r["recipient"] for r in rows) == Counter(
            played.inv.customers[c].email for c in customers if c)  # each exactly once
        for r in rows:
            msg = by_id[r["result"]]  # the file with the Message-ID the worker recorded
            lang = next(c.language for c in played.inv.customers.values() if c.email == r["recipient"])
            assert msg["Content-Language"] == lang and word[lang] in str(msg["Subject"])
            assert msg["X-Monitor-Incident"] == outage.id and msg["To"] == r["recipient"]
    assert {m["Content-Language"] for m in by_id.values()} == {"es", "en"}


def test_the_partial_ap_failure_is_a_suspected_incident_at_the_ap(played: Played) -> None:
    suspected = played.one("suspected")
    assert suspected.root == "ap-brisas-1" and len(played.opened_with(suspected.id)) == 4
    assert (played.folder / "tickets" / f"{suspected.id}.txt").exists()
    assert len(played.emails("customer_opened", suspected.id)) == 4


def test_churn_opens_no_mass_incident_and_tells_nobody(played: Played) -> None:
    churn = [r for r in played.incidents if r.root in CHURN]
    assert sorted(r.root for r in churn) == sorted(CHURN)
    assert {r.kind for r in churn} == {"single"}
    assert {r.kind for r in played.incidents} == {"outage", "suspected", "single", "planned"}
    assert not [r for r in played.delivered if r["incident"] in {c.id for c in churn}]


def test_the_maintenance_window_gives_a_planned_incident_and_no_alarm(played: Played) -> None:
    planned = played.one("planned")
    assert planned.root == "ap-tame-1"
    assert not (played.folder / "tickets" / f"{planned.id}.txt").exists()
    assert not [r for r in played.delivered if r["incident"] == planned.id]  # no alert, no outage notice
    below = {played.inv.customers[t.customer].email for t in played.inv.targets.values()
             if t.parents == ("ap-tame-1",) and t.customer}
    for phase in ("advance", "start", "end"):
        assert {r["recipient"] for r in played.emails(f"maintenance_{phase}")} == below


def test_the_maildir_holds_rfc5322_messages_with_the_smtp_senders_message_ids(played: Played) -> None:
    box = mailbox.Maildir(played.folder / "mail", create=False)
    keys = list(box.keys())
    emailed = [r for r in played.delivered if r["channel"] == "email"]
    assert len(keys) == len(emailed) > 40
    ids = set()
    for key in keys:
        msg = box[key]
        for header in ("From", "To", "Subject", "Date", "Message-ID"):
            assert msg[header], (key, header)
        parsedate_to_datetime(msg["Date"])
        ids.add(msg["Message-ID"])
    assert ids == {message_id(r["key"], "NOC Llanos Net <noc@isp.example>") for r in emailed}


# ---------------------------------------------------------------- the pieces, without a run


async def test_a_repeated_mail_overwrites_its_own_file(tmp_path: Path) -> None:
    sender = MaildirSender(MaildirSettings(str(tmp_path / "mail"), "noc@isp.example"))
    row = Row(key="INC-1/customer_opened/a@example.com/1", incident="INC-1", action="customer_opened",
              recipient="a@example.com", channel="email", group="", id=1, attempts=0, uncertain=True,
              created_at=1_795_000_000.0,
              payload={"to": "a@example.com", "subject": "Falla", "body": "texto", "language": "es"})
    first = await sender.send(row)
    assert await sender.send(row) == first  # a crash between send and record repeats the item
    assert len(list((tmp_path / "mail" / "new").iterdir())) == 1


async def test_a_folder_ticket_is_opened_once_and_appended_to(tmp_path: Path) -> None:
    desk = FolderDesk(tmp_path)
    assert await desk.find("INC-000001") is None
    assert await desk.open("INC-000001", "[INC-000001] OUTAGE", "body") == "INC-000001"
    await desk.open("INC-000001", "[INC-000001] OUTAGE", "body")  # repeated after a crash
    await desk.comment("INC-000001", "20 back")
    await desk.resolve("INC-000001", "done")
    text = (tmp_path / "INC-000001.txt").read_text()
    assert text.count("· opened ---") == 1 and text.index("· comment ---") < text.index("· resolved ---")
    assert await desk.find("INC-000001") == "INC-000001"


async def test_a_folder_note_repeated_after_a_crash_is_appended_once(tmp_path: Path) -> None:
    desk = FolderDesk(tmp_path)
    await desk.open("INC-000001", "[INC-000001] OUTAGE", "body")
    ref = Ref("INC-000001", Ref.marker_of("INC-000001/ticket_resolve/folder/1"))
    await desk.resolve("INC-000001", "done", ref)
    await desk.resolve("INC-000001", "done", replace(ref, repeat=True))
    text = (tmp_path / "INC-000001.txt").read_text()
    assert text.count("· resolved ---") == 1 and text.rstrip().endswith(f"done\nmonitor-ref: {ref.marker}")


def test_the_scripted_probe_follows_the_timeline() -> None:
    story = scenario.load()
    probe = scenario.ScriptedProbe({"twr-centro": [(3.0, 11.0)]}, lambda: 0.0)
    assert probe.answers("twr-centro", 2.9) and not probe.answers("twr-centro", 3.0)
    assert probe.answers("twr-centro", 11.0) and probe.answers("cpe-0001", 5.0)
    assert story.steps[0].below and story.end >= max(s.end for s in story.steps)


def test_output_folder_is_new_or_empty(tmp_path: Path) -> None:
    (tmp_path / demo_run.DEFAULT_OUTPUT).mkdir()
    assert demo_run.output_folder(None, tmp_path) == tmp_path / f"{demo_run.DEFAULT_OUTPUT}-2"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(Exception, match="exists and is not an empty folder"):
        demo_run.output_folder(tmp_path / "full")


def test_cli_refuses_a_bad_speed(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo", "--speed", "10"]) == 2
    assert "--speed: expected a number from 0.25 to 4, got 10" in capsys.readouterr().err
