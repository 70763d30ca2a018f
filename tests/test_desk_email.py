"""Email-to-ticket: desk messages carry a stable subject tag and thread into the first one."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.clock import SystemClock
from monitor.delivery import metrics
from monitor.delivery.service import DeliveryService
from tests.delivery_support import T0, Running, delivery_with, ev, ids, load
from tests.servers.smtp import SmtpServer

pytestmark = pytest.mark.servers


def counter(c: object, channel: str) -> float:
    return float(c.labels(channel)._value.get())  # type: ignore[attr-defined]


async def test_ticket_mails_thread_by_tag_and_message_id(tmp_path: Path) -> None:
    (tmp_path / "smtp").mkdir()
    server = SmtpServer(tmp_path / "smtp")
    server.start()
    try:
        inv = load(tmp_path, 4, delivery_with(
            smtp={"host": "127.0.0.1", "port": server.port, "security": "none", "from": "NOC <noc@isp.example>"},
            mqtt=None, desk={"kind": "email", "address": "soporte@isp.example", "comment_min_interval": 0},
            customers={"enabled": False}))
        assert inv.delivery is not None
        svc = DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, SystemClock())
        queued, delivered = counter(metrics.QUEUED, "email"), counter(metrics.DELIVERED, "email")
        async with Running(svc) as run:
            svc.enqueue([ev("opened", T0, ids(2, 0))])
            svc.enqueue([ev("updated", T0 + 60, ids(4, 0))])
            svc.enqueue([ev("resolved", T0 + 600, ids(4, 0))])
            await run.drained()
        desk = [m for m in server.messages() if m["To"] == "soporte@isp.example"]
    finally:
        server.stop()
    assert [m["Subject"].split(" ")[0] for m in desk] == ["[INC-000001]"] * 3
    first = desk[0]["Message-ID"]
    assert first.endswith("@isp.example>") and desk[0]["In-Reply-To"] is None
    assert [m["In-Reply-To"] for m in desk[1:]] == [first, first]
    assert "Clientes afectados: 2" in desk[0].get_content()
    assert "Nuevos afectados (2): C-0003, C-0004" in desk[1].get_content()
    assert not [m for m in server.messages() if m["To"].startswith("c")]  # customer notices disabled
    # metrics: everything queued was delivered (3 desk mails + technician alert and resolution)
    assert counter(metrics.QUEUED, "email") - queued == 5
    assert counter(metrics.DELIVERED, "email") - delivered == 5
