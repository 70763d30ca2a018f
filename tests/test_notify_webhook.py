"""Webhook delivery (SMS/WhatsApp gateway and the webhook desk) against a real local HTTP receiver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.clock import SystemClock
from monitor.correlate.incidents import IncidentEvent
from monitor.delivery.service import DeliveryService
from monitor.desk.base import Ref
from monitor.notify.webhook import SIGNATURE, TIMESTAMP, sign, verify
from tests.delivery_support import SECRETS, T0, Running, delivery_with, ev, ids, load
from tests.servers.http_receiver import HttpReceiver

pytestmark = pytest.mark.servers


def make(tmp_path: Path, hook: HttpReceiver) -> DeliveryService:
    signed = {"url": hook.url, "secret": {"env": "HOOK_SECRET"}}
    inv = load(tmp_path, 3, delivery_with(
        smtp=None, mqtt=None, sms={**signed, "token": {"env": "SMS_TOKEN"}},
        desk={"kind": "webhook", "webhook": signed}, customers={"channels": ["sms"], "company": "Llanos Net"},
        retry={"initial": "0.1s", "maximum": "0.3s"},
    ))
    assert inv.delivery is not None
    return DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, SystemClock())


async def deliver(tmp_path: Path, hook: HttpReceiver, *batches: list[IncidentEvent]) -> list[dict[str, Any]]:
    """Run the service against the receiver until each batch is delivered; the outbox rows."""
    await hook.start()
    try:
        svc = make(tmp_path, hook)
        async with Running(svc) as run:
            for batch in batches:
                svc.enqueue(batch)
                await run.drained()
            return svc.outbox.rows()
    finally:
        await hook.stop()


async def test_signed_json_to_the_gateway_and_the_desk_with_retries(tmp_path: Path) -> None:
    hook = HttpReceiver(SECRETS["HOOK_SECRET"].encode(), fail_next=2, fail_status=503)
    rows = await deliver(tmp_path, hook, [ev("opened", T0, ids(3, 0))], [ev("resolved", T0 + 600, ids(3, 0))])
    assert all(r["status"] == "delivered" for r in rows)
    assert {r["reason"] for r in rows if r["reason"]} == {"http_503"}  # the two refused attempts, retried
    assert all(r.signed_ok for r in hook.requests)
    docs = [r.doc for r in hook.unique().values()]
    sms = [d for d in docs if "to" in d]
    assert sorted((d["event"], d["to"]) for d in sms) == sorted(
        [(e, f"+57300{i:07d}") for e in ("customer_opened", "customer_restored") for i in (1, 2, 3)])
    by = {(d["event"], d["to"]): d for d in sms}
    assert by[("customer_opened", "+573000000002")]["language"] == "en"
    assert "Response within 12 h" in by[("customer_opened", "+573000000002")]["text"]
    assert "Respuesta en 12 h" in by[("customer_opened", "+573000000001")]["text"]
    desk = [d for d in docs if "op" in d]
    assert [(d["op"], d["ticket"]) for d in desk] == [("open", "INC-000001"), ("resolve", "INC-000001")]
    assert desk[0]["subject"].startswith("[INC-000001] CAÍDA")
    # the resolve note carries the same reference RT would store, also in its Idempotency-Key
    (resolve,) = [r["key"] for r in rows if r["action"] == "ticket_resolve"]
    assert "ref" not in desk[0] and desk[1]["ref"] == Ref.marker_of(resolve)
    assert f"INC-000001/resolve/{desk[1]['ref']}" in hook.unique()
    gateway = [r for r in hook.requests if "to" in r.doc]
    assert all(r.headers["Authorization"] == f"Bearer {SECRETS['SMS_TOKEN']}" for r in gateway)
    for r in hook.requests:  # the secrets travel only as the signature and the auth header
        assert SECRETS["HOOK_SECRET"].encode() not in r.body and SECRETS["SMS_TOKEN"].encode() not in r.body


async def test_a_permanent_refusal_is_not_retried(tmp_path: Path) -> None:
    hook = HttpReceiver(SECRETS["HOOK_SECRET"].encode(), fail_next=10_000, fail_status=400)
    rows = await deliver(tmp_path, hook, [ev("opened", T0, ids(1, 0))])
    assert {(r["status"], r["attempts"], r["reason"]) for r in rows} == {("failed", 1, "http_400")}


def test_signature_covers_timestamp_and_body() -> None:
    sig = sign(b"k", "1700000000", b'{"a":1}')
    assert verify(b"k", "1700000000", b'{"a":1}', sig)
    assert not verify(b"k", "1700000001", b'{"a":1}', sig)
    assert not verify(b"k", "1700000000", b'{"a":2}', sig)
    assert not verify(b"other", "1700000000", b'{"a":1}', sig)
    assert SIGNATURE.startswith("X-") and TIMESTAMP.startswith("X-")
