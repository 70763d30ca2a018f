"""Customer and technician mail through a real SMTP server (aiosmtpd in its own process).

Covers: STARTTLS + AUTH and implicit TLS, language and SLA text per customer, the relay being down
during the outage and then up (every notice delivered once), and the delivery process killed
between "sent" and "recorded" (the repeat carries the same Message-ID: one logical message each).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.policy
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from monitor.delivery.outbox import ASSUMED, Outbox, Row
from monitor.delivery.retry import DeliveryError
from monitor.delivery.service import DeliveryService
from monitor.ha.gate import GATE, LeaseLapsed
from monitor.inventory.model import Inventory
from monitor.notify.email import EmailSender, build, wire
from tests.delivery_support import SECRETS, T0, ClockFrom, Running, delivery_with, ev, ids, load
from tests.servers.common import until
from tests.servers.smtp import SmtpServer
from tests.store_engines import Where, child_argument, pg_server_fixture, where_fixture  # noqa: F401

pytestmark = pytest.mark.servers


def smtp_section(server: SmtpServer, security: str = "starttls") -> dict[str, object]:
    d: dict[str, object] = {"host": "127.0.0.1", "port": server.port, "security": security,
                            "from": "NOC Llanos <noc@isp.example>", "pool_size": 2}
    if server.user:
        d.update(username=server.user, password={"env": "SMTP_PASS"})
    if security != "none":
        d["ca_file"] = str(server.cert)
    return d


def inventory(tmp_path: Path, server: SmtpServer, security: str = "starttls", n: int = 40) -> Inventory:
    return load(tmp_path, n, delivery_with(smtp=smtp_section(server, security), mqtt=None, desk=None))


def service(inv: Inventory, tmp_path: Path) -> DeliveryService:
    assert inv.delivery is not None
    return DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, ClockFrom(T0))


def make_server(tmp_path: Path, **kw: object) -> SmtpServer:
    root = tmp_path / "smtp"
    root.mkdir(exist_ok=True)
    return SmtpServer(root, **kw)  # type: ignore[arg-type]


async def test_outage_notices_over_starttls_with_auth_in_each_customers_language(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = make_server(tmp_path, user="noc", password=SECRETS["SMTP_PASS"], tls="starttls")
    server.start()
    try:
        inv = inventory(tmp_path, server)
        svc = service(inv, tmp_path)
        async with Running(svc) as run:
            svc.enqueue([ev("opened", T0, ids(40))])
            await run.drained()
            svc.enqueue([ev("resolved", T0 + 5400, ids(40))])
            await run.drained()
            rows = svc.outbox.rows()
        msgs = server.messages()
    finally:
        server.stop()
    assert all(r["status"] == "delivered" for r in rows)
    opened = [m for m in msgs if m["To"].startswith("c") and ("Falla" in m["Subject"] or "outage" in m["Subject"])]
    restored = [m for m in msgs if "restablecido" in m["Subject"] or "restored" in m["Subject"]]
    assert len(opened) == 40 and len(restored) == 40
    assert len({m["Message-ID"] for m in msgs}) == len(msgs)
    by_to = {m["To"]: m for m in opened}
    es, en = by_to["c1@example.com"], by_to["c8@example.com"]
    assert es["Subject"] == "[INC-000001] Falla de servicio en Arauca"
    assert "compromiso de respuesta es de 12 horas" in es.get_content()  # corporate
    assert en["Subject"] == "[INC-000001] Service outage in Arauca"
    assert "our response commitment is 24 hours" in en.get_content()  # residential
    assert "Torre Centro" in es.get_content() and "2026-11-18 06:06" in es.get_content()
    back = next(m for m in restored if m["To"] == "c3@example.com")
    assert "La interrupción duró 1 h 30 min" in back.get_content()
    tech = [m for m in msgs if m["To"] == "juan@isp.example"]
    assert [m["Subject"].split("]")[1].split(":")[0].strip() for m in tech] == ["ALERTA caída", "RESUELTO"]
    # RFC 3834: customers' vacation responders stay quiet; a technician's mail is not marked
    assert {m["Auto-Submitted"] for m in opened + restored} == {"auto-generated"}
    assert all(m["Auto-Submitted"] is None for m in tech)
    assert all(m["List-Unsubscribe"] is None for m in msgs)  # no opt-out address configured: no header
    # no secret anywhere: messages, outbox payloads, logs
    blob = b"".join(m.as_bytes() for m in msgs) + json.dumps(rows).encode() + caplog.text.encode()
    for value in SECRETS.values():
        assert value.encode() not in blob


async def test_implicit_tls_without_auth(tmp_path: Path) -> None:
    server = make_server(tmp_path, tls="implicit")
    server.start()
    try:
        svc = service(inventory(tmp_path, server, "tls", n=3), tmp_path)
        async with Running(svc) as run:
            svc.enqueue([ev("opened", T0, ids(3, 0))])
            await run.drained()
        assert sorted(m["To"] for m in server.messages() if m["To"].startswith("c")) == [
            "c1@example.com", "c2@example.com", "c3@example.com"]
    finally:
        server.stop()


async def test_maintenance_notices_are_auto_submitted_and_give_the_support_line(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start()
    try:
        svc = service(inventory(tmp_path, server, "none", n=2), tmp_path)
        svc.store.add_window("ap-1", T0 + 86400, T0 + 90000, "cambio de radio", "ana", (), T0)
        async with Running(svc) as run:
            svc.tick(T0)                                  # advance notices
            await run.drained(advance=False)
            svc.tick(T0 + 86400)                          # start notices
            await run.drained(advance=False)
        msgs = server.messages()
    finally:
        server.stop()
    assert sorted(m["To"] for m in msgs) == ["c1@example.com", "c1@example.com", "c2@example.com", "c2@example.com"]
    assert {m["Auto-Submitted"] for m in msgs} == {"auto-generated"}
    lines: dict[str, list[str]] = {m["To"]: [] for m in msgs}
    for m in msgs:
        lines[m["To"]] += m.get_content().splitlines()
    assert lines["c1@example.com"].count("Línea de atención: +57 607 885 0000") == 2     # es: advance and start
    assert lines["c2@example.com"].count("Support line: +57 607 885 0000") == 2         # en


@pytest.mark.parametrize(("unsubscribe", "one_click"), [
    ("https://isp.example/bajas?cliente={customer}", True),
    ("mailto:bajas@isp.example?subject=baja%20{customer}", False)])
async def test_customer_mails_say_where_to_opt_out(tmp_path: Path, unsubscribe: str, one_click: bool) -> None:
    """RFC 2369 List-Unsubscribe on outage and maintenance notices to customers (RFC 8058 one-click when the
    ISP's https: endpoint takes the POST); technicians' mails have none: they cannot opt out of their duty."""
    server = make_server(tmp_path)
    server.start()
    try:
        customers = {"company": "Llanos Net", "unsubscribe": unsubscribe, "unsubscribe_one_click": one_click}
        inv = load(tmp_path, 2, delivery_with(smtp=smtp_section(server, "none"), mqtt=None, desk=None,
                                              customers=customers))
        svc = service(inv, tmp_path)
        svc.store.add_window("ap-1", T0 + 86400, T0 + 90000, "cambio de radio", "ana", (), T0)
        async with Running(svc) as run:
            svc.enqueue([ev("opened", T0, ids(2, 0))])
            svc.tick(T0)                                  # maintenance advance notices
            await run.drained(advance=False)
        msgs = server.messages()
    finally:
        server.stop()
    customer = [m for m in msgs if m["To"] in ("c1@example.com", "c2@example.com")]
    assert sorted(m["Subject"].split(" ")[0] for m in customer) == ["Mantenimiento", "Planned", "[INC-000001]",
                                                                   "[INC-000001]"]  # outage and maintenance
    for m in customer:
        cid = "C-000" + m["To"][1]
        assert m["List-Unsubscribe"] == "<" + unsubscribe.replace("{customer}", cid) + ">"
        assert m["List-Unsubscribe-Post"] == ("List-Unsubscribe=One-Click" if one_click else None)
    tech = [m for m in msgs if m["To"] == "juan@isp.example"]
    assert len(tech) == 1 and tech[0]["List-Unsubscribe"] is None and tech[0]["List-Unsubscribe-Post"] is None


@pytest.mark.parametrize(("tls", "security"), [(None, "none"), ("starttls", "starttls"), ("implicit", "tls")])
async def test_each_mail_is_handed_over_once_its_final_dot_is_in_the_kernel(tmp_path: Path, tls: str | None,
                                                                             security: str) -> None:
    """Plain, STARTTLS and implicit TLS alike: else a kill could repeat mails under TLS."""
    server = make_server(tmp_path, **({"tls": tls} if tls else {}))
    server.start()
    try:
        inv = inventory(tmp_path, server, security, n=3)
        assert inv.delivery is not None and inv.delivery.smtp is not None
        sender = EmailSender(inv.delivery.smtp)
        seen: list[int] = []
        for i in range(3):
            row = Row(f"INC-1/customer_opened/c{i}@example.com/1", "INC-1", "customer_opened",
                      f"c{i}@example.com", "email", "", {"to": f"c{i}@example.com", "subject": "Falla",
                                                         "body": "Línea 1\n.\nÁrea: Arauca\n"},
                      id=i, attempts=0, uncertain=False, created_at=T0)
            await sender.send(row, lambda: seen.append(1))
        await sender.close()
        got = server.messages()
    finally:
        server.stop()
    assert len(seen) == 3
    assert [m["To"] for m in got] == ["c0@example.com", "c1@example.com", "c2@example.com"]
    assert got[0].get_content().replace("\r\n", "\n") == "Línea 1\n.\nÁrea: Arauca\n"  # dot-stuffed on the wire, intact


async def test_refusals_are_permanent_deferrals_retryable_and_the_connection_stays_usable(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.start()
    try:
        inv = inventory(tmp_path, server, "none", n=3)
        assert inv.delivery is not None and inv.delivery.smtp is not None
        sender = EmailSender(inv.delivery.smtp)  # pool of 2: errors and good mails share connections

        def row(to: str, body: str = "Falla en Arauca\n") -> Row:
            return Row(f"INC-1/customer_opened/{to}/1", "INC-1", "customer_opened", to, "email", "",
                       {"to": to, "subject": "Falla", "body": body}, id=1, attempts=0, uncertain=False,
                       created_at=T0)

        outcomes: list[tuple[str, str]] = []
        for r in [row("nosuch@example.com"), row("busy@example.com"), row("c1@example.com", "REJECT-AT-DOT\n"),
                  row("c2@example.com"), row("busy@example.com"), row("c3@example.com"), row("josé@example.com")]:
            try:
                await sender.send(r)
                outcomes.append((r.recipient, "sent"))
            except DeliveryError as exc:
                outcomes.append((r.recipient, f"{type(exc).__name__} {exc.reason}"))
        await sender.close()
        got = sorted(str(m["To"]) for m in server.messages())
    finally:
        server.stop()
    assert outcomes == [("nosuch@example.com", "DeliveryPermanent smtp_550"),
                        ("busy@example.com", "DeliveryRetryable smtp_451"),
                        ("c1@example.com", "DeliveryPermanent smtp_554"),
                        ("c2@example.com", "sent"), ("busy@example.com", "sent"), ("c3@example.com", "sent"),
                        ("josé@example.com", "sent")]  # SMTPUTF8
    assert got == ["busy@example.com", "c2@example.com", "c3@example.com", "josé@example.com"]


async def test_a_send_cancelled_mid_transaction_is_not_pooled_and_close_does_not_wait_on_it(tmp_path: Path) -> None:
    """A send cancelled after its final dot and before the relay's answer (a stop, an HA stand-down) leaves its
    connection mid-transaction. Put back in the pool, ``close()`` sent QUIT into it and waited for an answer
    the relay never gave: in the HA lab a deposed daemon hung so after standing down (docs/lab.md, H5)."""
    server = make_server(tmp_path)
    server.start()
    try:
        inv = inventory(tmp_path, server, "none", n=1)
        assert inv.delivery is not None and inv.delivery.smtp is not None
        sender = EmailSender(inv.delivery.smtp)
        row = Row("INC-1/customer_opened/c1@example.com/1", "INC-1", "customer_opened", "c1@example.com", "email",
                  "", {"to": "c1@example.com", "subject": "Falla", "body": "STALL-AT-DOT\n"}, id=1, attempts=0,
                  uncertain=False, created_at=T0)
        handed = asyncio.Event()
        task = asyncio.ensure_future(sender.send(row, handed.set))
        await until(handed.is_set, 30, "the final dot handed over")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        began = time.monotonic()
        await asyncio.wait_for(sender.close(), 30)  # (aiosmtplib's own timeout for the QUIT: 60 s)
        assert time.monotonic() - began < 5
    finally:
        server.stop()


async def test_relay_down_during_the_outage_then_up_delivers_every_notice_once(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    inv = inventory(tmp_path, server, "none")
    svc = service(inv, tmp_path)
    async with Running(svc) as run:
        svc.enqueue([ev("opened", T0, ids(40))])
        # the relay is down: every row fails and is rescheduled with back-off
        await until_attempted(svc, 41)
        assert server.count() == 0
        server.start()
        await run.drained(60)
        rows = svc.outbox.rows()
    server.stop()
    assert all(r["status"] == "delivered" for r in rows) and len(rows) == 41
    assert {r["reason"] for r in rows} == {"unreachable"}  # the recorded cause of the retries
    counts = server.repeats()
    assert len(counts) == 41 and set(counts.values()) == {1}


async def until_attempted(svc: DeliveryService, n: int) -> None:
    from tests.servers.common import until

    await until(lambda: sum(1 for r in svc.outbox.rows() if r["attempts"] >= 1) >= n, 20, "failed attempts")


def kill_then_restart(tmp_path: Path, server: SmtpServer, die: str,
                      where: Where) -> tuple[Counter[str], list[dict[str, Any]], str]:
    """Fan 41 mails out in a child process that SIGKILLs itself at ``die``, then run it again to the end, on
    the store ``where`` (SQLite or PostgreSQL).

    Returns what the server received (per Message-ID), the outbox rows, and the child's stderr.
    """
    inv = inventory(tmp_path, server, "none")
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(dataclasses.asdict(ev("opened", T0, ids(40)))) + "\n")
    db, env = child_argument(where)
    env = {**os.environ, **env}
    # both runs on one clock from T0 (the second's "now" goes on from the first's)
    argv = [sys.executable, "-m", "tests.delivery_child", inv.source, db]
    t0_at = f"--t0-at={time.time()!r}"
    first = subprocess.run([*argv, str(events), die, t0_at], cwd=Path(__file__).parents[1], capture_output=True,
                           timeout=60, env=env)
    assert first.returncode == -9, first.stderr.decode()[-2000:]
    assert 10 <= server.count() < 41  # killed in the middle of the fan-out
    second = subprocess.run([*argv, "-", t0_at], cwd=Path(__file__).parents[1], capture_output=True, timeout=60,
                            env=env)
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    outbox = Outbox(where)
    try:
        return server.repeats(), outbox.rows(), first.stderr.decode()
    finally:
        outbox.close()


def test_killed_after_a_mail_was_accepted_and_before_its_record_sends_no_mail_twice(tmp_path: Path,
                                                                                    where: Where) -> None:
    server = make_server(tmp_path)
    server.start()
    try:
        counts, rows, _ = kill_then_restart(tmp_path, server, "--die-on-record=15", where)
        per_customer = Counter(str(m["To"]) for m in server.messages())
    finally:
        server.stop()
    assert len(counts) == 41 and set(counts.values()) == {1}  # every mail once: none lost, none twice
    assert set(per_customer.values()) == {1}
    assert all(r["status"] == "delivered" for r in rows)
    # the 15th mail (and any other handed over when the process died) was counted, not sent again
    assert 1 <= sum(r["result"] == ASSUMED for r in rows) <= 2


def test_killed_before_the_final_dot_the_server_discards_it_and_the_restart_sends_it_once(tmp_path: Path,
                                                                                          where: Where) -> None:
    server = make_server(tmp_path)
    server.start()
    try:
        counts, rows, stderr = kill_then_restart(tmp_path, server, "--die-before-dot=20", where)
    finally:
        server.stop()
    cut = stderr.split("cut ", 1)[1].split()[0]
    # had the server kept the cut transaction, its Message-ID would have arrived twice
    assert len(counts) == 41 and set(counts.values()) == {1} and cut in counts
    assert all(r["status"] == "delivered" for r in rows)
    sent_again = [r for r in rows if r["result"] == cut]
    assert len(sent_again) == 1 and sent_again[0]["attempts"] == 1  # sent by the restart, not assumed


@pytest.mark.parametrize("eight_bit", [True, False])
@pytest.mark.parametrize(("to", "subject", "body", "thread"), [
    ("c1@example.com", "[INC-000001] Service outage in Arauca", "Dear customer,\nno service.\n", None),
    ("José Pérez <c2@example.com>", "[INC-000001] Falla de servicio en Arauquita", "Área: Torre Centro\n.\nFin",
     "INC-000001/ticket_open/desk/1"),
    ("c3@example.com", "Falla\r\nBcc: intruso@example.com", "x" * 2000 + "ñ\n", None),
])
def test_the_wire_form_reads_back_as_the_reference_message(eight_bit: bool, to: str, subject: str, body: str,
                                                          thread: str | None) -> None:
    """``wire`` writes MIME by hand for speed; any mail parser must read back what ``build`` means."""
    payload: dict[str, Any] = {"to": to, "subject": subject, "body": body, "language": "es"}
    if thread:
        payload["thread"] = thread
    row = Row("INC-000001/customer_opened/c/1", "INC-000001", "customer_opened", "c", "email", "", payload,
              id=1, attempts=0, uncertain=False, created_at=T0)
    sender = "NOC Llanos <noc@isp.example>"
    data = wire(row, sender, eight_bit=eight_bit)
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert eight_bit or data.isascii()
    got = email.message_from_bytes(data.replace(b"\r\n..", b"\r\n."), policy=email.policy.default)
    ref = build(row, sender)
    for name in ("From", "To", "Subject", "Date", "Message-ID", "X-Monitor-Incident", "In-Reply-To", "References",
                 "Content-Language", "Auto-Submitted"):
        assert str(got[name]) == str(ref[name]), name
    assert got["Auto-Submitted"] == "auto-generated"  # a customer notice
    assert "Bcc" not in got  # a line break in a value cannot start a header of its own
    assert got.get_content().replace("\r\n", "\n") == ref.get_content()


async def test_a_sender_frozen_mid_transaction_past_its_lease_sends_no_final_dot(tmp_path: Path) -> None:
    """Issue 13 (HA lab H5): a daemon frozen during MAIL/RCPT/DATA wakes past its lease's stand-down deadline;
    the final dot (the point of no return) is checked against it and not sent, and the connection, left
    mid-DATA, is dropped rather than pooled: the next send (lease back, here lifted) goes out on a fresh
    one and ``close()`` does not wait on the abandoned one."""
    server = make_server(tmp_path)
    server.start()
    checks = itertools.count()
    try:
        inv = inventory(tmp_path, server, "none", n=2)
        assert inv.delivery is not None and inv.delivery.smtp is not None
        sender = EmailSender(inv.delivery.smtp)

        def row(to: str) -> Row:
            return Row(f"INC-1/customer_opened/{to}/1", "INC-1", "customer_opened", to, "email", "",
                       {"to": to, "subject": "Falla", "body": "Falla en Arauca\n"}, id=1, attempts=0,
                       uncertain=False, created_at=T0)

        # the first check (before MAIL) passes; the freeze comes during the round trips: the next one is late
        GATE.hold(5.5, lambda: 0.0 if next(checks) == 0 else 60.0)
        try:
            with pytest.raises(LeaseLapsed, match="SMTP final dot"):
                await sender.send(row("c1@example.com"))
        finally:
            GATE.lift()
        await sender.send(row("c2@example.com"))
        began = time.monotonic()
        await asyncio.wait_for(sender.close(), 30)
        assert time.monotonic() - began < 5
        got = [str(m["To"]) for m in server.messages()]
    finally:
        GATE.lift()
        server.stop()
    assert next(checks) >= 2 and got == ["c2@example.com"]
