"""The channel registry: config → channels, and a channel added by one entry runs like the others."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from monitor.clock import ManualClock
from monitor.delivery import channels
from monitor.delivery.config import CHANNELS
from monitor.delivery.outbox import HandedOver, NewRow, Row
from monitor.delivery.service import DeliveryService
from monitor.desk.base import DeskSender
from monitor.notify.email import EmailSender
from monitor.notify.maildir import MaildirSender
from monitor.notify.mqtt import MqttSender
from monitor.notify.webhook import WebhookSender
from tests.delivery_support import T0, Running, delivery_with, load, sample
from tests.servers.common import until

SMS = {"url": "http://127.0.0.1:9/sms", "token": {"env": "SMS_TOKEN"}}


def built(svc: DeliveryService) -> dict[str, channels.Channel]:
    env = channels.Env(svc.config, svc.outbox, svc.clock, channels.Hooks(ack=lambda i, b: None, ready=lambda c: None))
    return channels.build(env)


async def test_the_registry_builds_each_configured_channel_under_its_outbox_name(tmp_path: Path) -> None:
    assert tuple(channels.REGISTRY) == CHANNELS  # the names the config's rate_limits accept
    (tmp_path / "all").mkdir()
    (tmp_path / "few").mkdir()
    inv = load(tmp_path / "all", 3, delivery_with(sms=SMS))
    assert inv.delivery is not None
    svc = DeliveryService(inv, tmp_path / "all.db", inv.delivery, ManualClock(T0))
    try:
        got = built(svc)
        assert list(got) == ["email", "mqtt", "desk", "webhook"]
        assert all(ch.sender.channel == name for name, ch in got.items())
        assert isinstance(got["email"].sender, EmailSender) and got["email"].concurrency == 4
        assert isinstance(got["mqtt"].sender, MqttSender) and got["mqtt"].keeper is not None
        assert isinstance(got["desk"].sender, DeskSender) and got["desk"].acks is got["desk"].sender.desk
        assert isinstance(got["webhook"].sender, WebhookSender)
        assert [n for n, ch in got.items() if ch.keeper] == ["mqtt"]
        assert [n for n, ch in got.items() if ch.acks] == ["desk"]
        for ch in got.values():  # nothing was opened yet, closing is harmless
            await ch.sender.close()
    finally:
        await svc.close()
    inv = load(tmp_path / "few", 3, delivery_with(
        smtp=None, mqtt=None, desk=None, maildir={"path": str(tmp_path / "mail"), "from": "noc@isp.example"}))
    assert inv.delivery is not None
    svc = DeliveryService(inv, tmp_path / "few.db", inv.delivery, ManualClock(T0))
    try:
        got = built(svc)
        assert list(got) == ["email"] and isinstance(got["email"].sender, MaildirSender)
    finally:
        await svc.close()


class Pager:
    """A channel the service has never heard of: records what it is handed."""

    channel = "pager"

    def __init__(self) -> None:
        self.sent: list[Row] = []
        self.closed = False

    async def send(self, row: Row, handed_over: HandedOver | None = None) -> str | None:
        self.sent.append(row)
        return "ok"

    async def close(self) -> None:
        self.closed = True


async def test_a_channel_added_by_one_registry_entry_is_driven_with_its_keeper_and_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pager = Pager()
    kept = asyncio.Event()

    async def keep() -> None:
        kept.set()
        await asyncio.Event().wait()  # a connection held until the service stops

    entry = channels.Entry("pager", "sms", lambda env: channels.Channel(pager, batch=10, keeper=keep))
    monkeypatch.setitem(channels.REGISTRY, "pager", entry)
    inv = load(tmp_path, 3, delivery_with(mqtt=None, desk=None, smtp=None))
    assert inv.delivery is not None
    svc = DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, ManualClock(T0))
    delivered = sample("monitor_delivery_delivered_total", channel="pager")
    rows = [NewRow(f"k{i}", "INC-000001", "customer_outage", f"C-{i:04d}", "pager", f"g{i}", {"body": f"n{i}"})
            for i in range(25)]
    svc.outbox.add(rows, {}, {}, T0)
    async with Running(svc) as running:
        await running.drained(advance=False)
        await until(kept.is_set, 30, "the pager's keeper")
        assert sorted(r.key for r in pager.sent) == sorted(r.key for r in rows)  # each once
        assert sample("monitor_delivery_delivered_total", channel="pager") - delivered == 25
        svc.update_gauges()
        assert sample("monitor_delivery_pending", channel="pager") == 0
    assert pager.closed


class Stuck(Pager):
    """A channel whose connection cannot be released."""

    channel = "stuck"

    async def close(self) -> None:
        self.closed = True
        raise RuntimeError("pool already gone")


async def test_a_channel_that_fails_to_close_is_said_once_and_the_others_still_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """The failure was swallowed; now one warning naming the channel and the error."""
    caplog.set_level(logging.WARNING, logger="monitor")
    stuck, pager = Stuck(), Pager()
    monkeypatch.setitem(channels.REGISTRY, "stuck", channels.Entry("stuck", "sms", lambda env: channels.Channel(stuck)))
    monkeypatch.setitem(channels.REGISTRY, "pager", channels.Entry("pager", "sms", lambda env: channels.Channel(pager)))
    inv = load(tmp_path, 3, delivery_with(mqtt=None, desk=None, smtp=None))
    assert inv.delivery is not None
    svc = DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, ManualClock(T0))
    async with Running(svc) as running:
        await running.drained(advance=False)
        await until(lambda: bool(svc.senders), 30, "the channels built")
    said = [r for r in caplog.records if r.getMessage() == "channel not closed cleanly"]
    assert len(said) == 1, said
    kv = getattr(said[0], "kv", {})
    assert said[0].levelno == logging.WARNING and kv["channel"] == "stuck", kv
    assert "pool already gone" in str(kv["error"]), kv
    assert stuck.closed and pager.closed
