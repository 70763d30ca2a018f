"""The issue's headline: a replayed tower outage with 40 affected customers, delivered for real.

Probe outcomes go through the correlation engine (``monitor.replay``), the lifecycle events through
the delivery service, and out to a real RT 5, a real SMTP server and a real mosquitto: exactly one
ticket (opened, commented, resolved), the on-call technician's email and MQTT alert, 40 opened and
40 restored notices in each customer's language with their class's response commitment.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path

import pytest

from monitor.clock import ManualClock
from monitor.correlate.staff import Staff
from monitor.correlate.store import IncidentStore
from monitor.delivery.service import DeliveryService
from monitor.inventory.model import Inventory
from monitor.replay import replay, settings_for
from tests.delivery_support import SECRETS, T0, Running, delivery_with, ev, ids, load
from tests.servers.common import until
from tests.servers.mosquitto import Mosquitto
from tests.servers.rt import RequestTracker, texts
from tests.servers.smtp import SmtpServer
from tests.test_notify_mqtt import Watcher

pytestmark = pytest.mark.servers

BACK_LATE = ("cpe-0010", "cpe-0011", "cpe-0012", "cpe-0013")  # back 3 minutes after the tower


def outcomes(inv: Inventory) -> list[str]:
    """Polls every 60 s: the tower (and all below it) down from minute 5 to 60, four CPEs until 63."""
    lines = []
    for k in range(90):
        ts = datetime.fromtimestamp(T0 + 60 * k, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for tid in inv.targets:
            below = tid in ("twr-1", "ap-1") or tid.startswith("cpe-0")
            down = (below and 5 <= k < 60) or (tid in BACK_LATE and 60 <= k < 63)
            lines.append(json.dumps({"ts": ts, "target": tid, "ok": not down}))
    return lines


async def test_tower_outage_with_40_customers(tmp_path: Path) -> None:
    for d in ("rt", "smtp", "mqtt"):
        (tmp_path / d).mkdir()
    rt = RequestTracker(tmp_path / "rt")
    smtp = SmtpServer(tmp_path / "smtp")
    broker = Mosquitto(tmp_path / "mqtt")
    for server in (rt, smtp, broker):
        server.start(60)
    try:
        inv = load(tmp_path, 40, delivery_with(
            smtp={"host": "127.0.0.1", "port": smtp.port, "security": "none", "from": "NOC <noc@isp.example>"},
            mqtt={"host": "127.0.0.1", "port": broker.port, "prefix": "isp"},
            desk={"kind": "rt", "url": rt.url, "username": "root", "password": {"env": "RT_PASS"}},
            escalation={"after": "24h"},
        ))
        events = list(replay(inv, settings_for(inv), outcomes(inv)))
        assert events[0].event == "opened"
        assert {e.incident for e in events} == {"INC-000001"}  # one incident, no singles
        clock = ManualClock(T0)
        assert inv.delivery is not None
        svc = DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, clock)
        async with Running(svc) as run, Watcher(broker) as watcher:
            # this test is about the fan-out; reconnecting to the broker is test_notify_mqtt's subject
            await until(lambda: svc.senders["mqtt"].connected.is_set(), 30, "the MQTT connection")  # type: ignore[attr-defined]
            for ts, batch in groupby(events, key=lambda e: e.ts):
                clock.set(ts)
                svc.enqueue(list(batch))
                await run.drained(60)
            await until(lambda: len(watcher.topic("isp/incidents/INC-000001")) == len(events), 30, "MQTT events")
        mails = smtp.messages()
        tickets = rt.tickets("Subject LIKE 'INC-0000'")
        body = texts(rt, str(tickets[0]["id"])) if tickets else []
        history = Counter(str(h["Type"]) for h in rt.history(str(tickets[0]["id"]))) if tickets else Counter()
        status = rt.ticket(str(tickets[0]["id"]))["Status"] if tickets else ""
    finally:
        for server in (rt, smtp, broker):
            server.stop()
    # exactly one ticket: opened, commented, resolved
    assert len(tickets) == 1 and status == "resolved"
    assert history["Create"] == 1 and history["Comment"] >= 2  # update(s) + the resolution note
    assert "Clientes afectados: 41" in body[0]  # the opted-out customer is still in the desk's record
    # the on-call technician (night shift) by email and MQTT
    tech = [m for m in mails if m["To"] == "juan@isp.example"]
    assert [m["Subject"].split(" ")[1] for m in tech] == ["ALERTA", "RESUELTO:"]
    assert [a["technician"] for a in watcher.topic("isp/technicians/arauca") if a["event"] == "alert"] == ["juan"]
    # 40 opened + 40 restored customer notices, each customer once each, in their language, with their SLA
    customer = [m for m in mails if m["To"].startswith("c")]
    kinds = Counter(("opened" if "Falla" in m["Subject"] or "outage" in m["Subject"] else "restored", m["To"])
                    for m in customer)
    assert len(kinds) == 80 and set(kinds.values()) == {1}
    assert {to for _, to in kinds} == {f"c{i}@example.com" for i in range(1, 41)}
    for m in customer:
        i = int(m["To"][1:].split("@")[0])
        text = m.get_content()
        if i % 2 == 0:
            assert m["Content-Language"] == "en" and ("Service" in m["Subject"])
        else:
            assert m["Content-Language"] == "es" and ("servicio" in m["Subject"].lower())
        if "Falla" in m["Subject"] or "outage" in m["Subject"]:
            hours = 12 if i <= 5 else 24
            assert (f"es de {hours} horas" in text) if i % 2 else (f"commitment is {hours} hours" in text)
    late = next(m for m in customer if m["To"] == "c10@example.com" and "restored" in m["Subject"])
    early = next(m for m in customer if m["To"] == "c8@example.com" and "restored" in m["Subject"])
    # the outage was confirmed at 06:14 (Bogotá); most customers were back at 07:08 (restored as the
    # affected set shrank), the last four CPEs at 07:11
    assert "restored at 2026-11-18 07:08 (Colombia time). The outage lasted 54 min." in early.get_content()
    assert "restored at 2026-11-18 07:11 (Colombia time). The outage lasted 57 min." in late.get_content()
    everything = b"".join(m.as_bytes() for m in mails) + "".join(body).encode()
    for value in SECRETS.values():
        assert value.encode() not in everything


async def test_eta_set_through_the_api_reaches_each_notified_customer_once(tmp_path: Path) -> None:
    (tmp_path / "smtp").mkdir()
    smtp = SmtpServer(tmp_path / "smtp")
    smtp.start(60)
    try:
        inv = load(tmp_path, 4, delivery_with(
            smtp={"host": "127.0.0.1", "port": smtp.port, "security": "none", "from": "NOC <noc@isp.example>"},
            mqtt=None, desk={"kind": "folder", "path": str(tmp_path / "desk")}))
        db = tmp_path / "monitor.db"
        clock = ManualClock(T0)
        assert inv.delivery is not None
        svc = DeliveryService(inv, db, inv.delivery, clock)
        opened = ev("opened", T0, ids(4))  # C-0005 opted out
        store = IncidentStore(db)
        store.save([opened], {}, set(), [])
        store.close()
        api = Staff.open(db)
        async with Running(svc) as run:
            svc.enqueue([opened])
            await run.drained()
            clock.set(T0 + 600)
            api.eta("INC-000001", "ana", T0 + 3 * 3600, now=T0 + 600)  # 09:06 in Bogotá
            # the service's 1 s timer picks it up
            await until(lambda: sum("Update" in m["Subject"] or "Actualiz" in m["Subject"]
                                    for m in smtp.messages()) == 4, 30, "4 update notices")
            await run.drained()
            api.eta("INC-000001", "ana", T0 + 3 * 3600 + 60, now=T0 + 700)  # one minute later: not meaningful
            clock.set(T0 + 700)
            svc.tick()
            await run.drained()
        api.close()
        mails = smtp.messages()
    finally:
        smtp.stop()
    updates = [m for m in mails if "Update" in m["Subject"] or "Actualiz" in m["Subject"]]
    assert sorted(m["To"] for m in updates) == [f"c{i}@example.com" for i in range(1, 5)]
    for m in updates:
        text = m.get_content()
        if int(m["To"][1:].split("@")[0]) % 2 == 0:
            assert m["Content-Language"] == "en" and "We expect your service to be back by 2026-11-18 09:06" in text
        else:
            assert m["Content-Language"] == "es" and "a más tardar a las 2026-11-18 09:06" in text
    ticket = (tmp_path / "desk" / "INC-000001.txt").read_text(encoding="utf-8")
    assert ticket.count("Restablecimiento estimado: 2026-11-18 09:06 (hora de Colombia)") == 1
