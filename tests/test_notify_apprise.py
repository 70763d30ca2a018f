"""The apprise channel against real HTTP receivers on loopback: ntfy, Gotify and generic JSON."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import string
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from monitor.clock import ManualClock
from monitor.delivery import planner
from monitor.delivery.outbox import ASSUMED, Outbox, Row
from monitor.delivery.service import DeliveryService
from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.inventory.summary import summarize
from monitor.notify.apprise import AppriseSender, check_url
from monitor.notify.gsm import parts
from monitor.secret import Secret
from monitor.selfmetrics import REGISTRY
from tests.delivery_support import SECRETS, T0, Running, delivery_with, ev, ids, sample, write_config
from tests.servers.push_receiver import PushReceiver

pytestmark = pytest.mark.servers

# tokens inside the URLs: none of them may show up anywhere but on the wire
NTFY_PASS, GOTIFY_TOKEN, JSON_PASS = "ntfy-pAss-7781", "AGotifyT0kenX9", "js0n-pw-4410"


def urls(rx: PushReceiver) -> dict[str, str]:
    return {
        "JUAN_NTFY": f"ntfy://juan:{NTFY_PASS}@127.0.0.1:{rx.port}/alertas-juan",
        "JUAN_JSON": f"json://noc:{JSON_PASS}@127.0.0.1:{rx.port}/sms-gw",
        "NOC_GOTIFY": f"gotify://127.0.0.1:{rx.port}/{GOTIFY_TOKEN}",
    }


def config(tmp_path: Path, rx: PushReceiver, **over: Any) -> tuple[Path, dict[str, str]]:
    d = delivery_with(**{"smtp": None, "mqtt": None, "desk": None, "customers": {"enabled": False},
                         "retry": {"initial": "0.2s", "maximum": "1s"}, **over})
    for t in d["technicians"]:
        if t["id"] == "juan":
            t["apprise"] = [{"env": "JUAN_NTFY"}, {"env": "JUAN_JSON"}]
        if t["id"] == "noc":
            t["apprise"] = [{"env": "NOC_GOTIFY"}]
    return write_config(tmp_path, 5, d), {**SECRETS, **urls(rx)}


def make(tmp_path: Path, rx: PushReceiver, **over: Any) -> tuple[DeliveryService, Inventory]:
    path, env = config(tmp_path, rx, **over)
    inv = load_inventory(path, env=env)
    assert inv.delivery is not None
    return DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, ManualClock(T0)), inv


def kind_of(push: Any) -> str:
    return "gotify" if push.path == "/message" else "json" if push.path == "/sms-gw" else "ntfy"


async def test_alert_escalation_and_resolution_reach_each_url_once(tmp_path: Path) -> None:
    rx = PushReceiver()
    await rx.start()
    try:
        svc, _ = make(tmp_path, rx)
        async with Running(svc) as run:
            svc.enqueue([ev("opened", T0, ids(5, 0))])  # night shift: juan, then noc
            await run.drained(advance=False)
            svc.tick(T0 + 901)  # not acknowledged in 15 min: noc's phone too
            await run.drained(advance=False)
            svc.enqueue([ev("resolved", T0 + 1800, ids(5, 0))])
            await run.drained(advance=False)
            rows = [r for r in svc.outbox.rows() if r["channel"] == "apprise"]
        got = [(kind_of(p), p.doc) for p in rx.received]
        assert sorted(k for k, _ in got) == ["gotify", "gotify", "json", "json", "ntfy", "ntfy"]
        ntfy = [d for k, d in got if k == "ntfy"]
        assert ntfy[0]["topic"] == "alertas-juan"
        assert ntfy[0]["message"].startswith("INC-000001 caída: ") and "5 clientes, desde " in ntfy[0]["message"]
        assert ntfy[1]["message"].startswith("INC-000001 RESUELTO: ")
        js = [d for k, d in got if k == "json"]
        assert [d["message"] for d in js] == [d["message"] for d in ntfy]  # the same text on both of juan's
        gotify = [d for k, d in got if k == "gotify"]
        assert gotify[0]["message"].startswith("INC-000001 ESCALADO (nivel 1), sin confirmar: caída ")
        assert all(len(d["message"]) <= 160 for _, d in got)  # one SMS each (no ack link configured here)
        (auth,) = {p.headers.get("X-Gotify-Key") for p in rx.received if kind_of(p) == "gotify"}
        assert auth == GOTIFY_TOKEN  # the token went where it belongs: the wire
        assert sorted((r["action"], r["recipient"]) for r in rows) == [
            ("tech_alert_apprise", "juan#1"), ("tech_alert_apprise", "juan#2"), ("tech_alert_apprise", "noc#1"),
            ("tech_resolved_apprise", "juan#1"), ("tech_resolved_apprise", "juan#2"),
            ("tech_resolved_apprise", "noc#1")]
        assert all(r["status"] == "delivered" and r["attempts"] == 1 for r in rows)
    finally:
        await rx.stop()


async def test_a_receiver_that_fails_and_times_out_is_retried_and_a_refusal_is_final(tmp_path: Path) -> None:
    rx = PushReceiver(script=[503, "hang"])  # juan#1's first two tries; then every request is answered
    await rx.start()
    try:
        svc, _ = make(tmp_path, rx, apprise={"timeout": "5s"})  # only juan's two URLs: noc is not escalated to
        retries = sample("monitor_delivery_retries_total", channel="apprise", reason="http_503")
        timeouts = sample("monitor_delivery_retries_total", channel="apprise", reason="unreachable")
        async with Running(svc) as run:
            svc.enqueue([ev("opened", T0, ids(5, 0))])
            await run.drained(60)
            rows = {r["recipient"]: r for r in svc.outbox.rows() if r["channel"] == "apprise"}
        assert rows["juan#1"]["status"] == rows["juan#2"]["status"] == "delivered"
        assert rows["juan#1"]["attempts"] + rows["juan#2"]["attempts"] == 4  # 503, no answer, then each once
        assert sorted(kind_of(p) for p in rx.received) == ["json", "ntfy"]  # each delivered once
        assert sample("monitor_delivery_retries_total", channel="apprise", reason="http_503") - retries == 1
        # no answer within the read timeout: retried as unreachable (Apprise reports no status for it)
        assert sample("monitor_delivery_retries_total", channel="apprise", reason="unreachable") - timeouts == 1
    finally:
        await rx.stop()
    refusing = PushReceiver(script=[400, 400])  # a revoked token: permanent, not retried
    await refusing.start()
    try:
        (tmp_path / "b").mkdir()
        svc, _ = make(tmp_path / "b", refusing)
        async with Running(svc) as run:
            svc.enqueue([ev("opened", T0, ids(5, 0))])
            await run.drained(30)
            rows = {r["recipient"]: r for r in svc.outbox.rows() if r["channel"] == "apprise"}
        assert [(r["status"], r["reason"], r["attempts"]) for r in rows.values()] == [("failed", "http_400", 1)] * 2
        assert refusing.received == []
    finally:
        await refusing.stop()


async def test_no_apprise_secret_in_logs_outbox_metrics_or_check_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    rx = PushReceiver(script=[503, 503, 503, 400, 400, 400])  # failures are what get logged
    await rx.start()
    try:
        svc, inv = make(tmp_path, rx)
        async with Running(svc) as run:
            svc.enqueue([ev("opened", T0, ids(5, 0))])
            await run.drained(60)
            svc.tick(T0 + 901)
            await run.drained(60)
            stored = json.dumps(svc.outbox.rows())
    finally:
        await rx.stop()
    summary = summarize(inv)
    assert "apprise 3 URLs of 2 technicians (gotify, json, ntfy)" in summary
    # a URL Apprise cannot use is a config error that names the reference, never the URL
    (tmp_path / "bad").mkdir()
    path, env = config(tmp_path / "bad", rx)
    env["JUAN_JSON"] = f"nosuchservice://{JSON_PASS}@127.0.0.1/x"
    with pytest.raises(ConfigError) as bad:
        load_inventory(path, env=env)
    assert "env:JUAN_JSON" in str(bad.value) and "names no service Apprise knows" in str(bad.value)
    seen = {"logs": caplog.text, "outbox": stored, "metrics": generate_latest(REGISTRY).decode(),
            "check-config": summary, "config error": str(bad.value), "stdout": capsys.readouterr().out}
    for where, text in seen.items():
        for secret in (NTFY_PASS, GOTIFY_TOKEN, JSON_PASS):
            assert secret not in text, f"{secret} in {where}"
    assert "delivery failing, will retry" in caplog.text and "delivery given up" in caplog.text


@settings(max_examples=200, deadline=None, derandomize=True)
@given(scheme=st.sampled_from(["ntfy", "ntfys", "gotify", "json", "form", "tgram", "bogus", "http", ""]),
       token=st.text(alphabet=string.ascii_letters + string.digits, min_size=12, max_size=40),
       rest=st.text(max_size=60))
def test_a_hostile_apprise_url_is_refused_or_accepted_without_showing_its_token(
    scheme: str, token: str, rest: str,
) -> None:
    for value in (f"{scheme}://{token}@127.0.0.1/{rest}", f"{scheme}://127.0.0.1/{token}{rest}", token + rest):
        problem = check_url(Secret(value, "env:TECH_URL"))  # never raises
        assert problem is None or (token not in problem and "env:TECH_URL" in problem)


def test_apprise_urls_must_be_references_to_usable_urls(tmp_path: Path) -> None:
    rx = PushReceiver()
    cases: list[tuple[Any, str]] = [
        ("ntfy://127.0.0.1/inline", "secrets cannot be written inline"),
        ([], "expected a list of 1 to 5 secret references"),
        ([{"env": "JUAN_NTFY"}] * 6, "expected a list of 1 to 5 secret references"),
        ([{"env": "NOT_SET"}], "item 1: environment variable NOT_SET is not set"),
    ]
    for i, (value, message) in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        path, env = config(tmp_path / str(i), rx)
        doc = yaml.safe_load(path.read_text())
        for t in doc["delivery"]["technicians"]:
            if t["id"] == "juan":
                t["apprise"] = value
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))
        with pytest.raises(ConfigError) as err:
            load_inventory(path, env=env)
        assert message in str(err.value) and "technicians" in str(err.value), (value, str(err.value))


async def kill_then_restart(tmp_path: Path, die: str) -> tuple[Counter[str], list[dict[str, Any]], list[Any]]:
    """Fan one alert out to five of juan's json:// phones in a child that SIGKILLs itself at ``die``,
    then run it again to the end. Returns what the receiver took (per path), the apprise rows and
    the pushes themselves."""
    rx = PushReceiver()
    await rx.start()
    try:
        path, env = config(tmp_path, rx)
        doc = yaml.safe_load(path.read_text())
        for t in doc["delivery"]["technicians"]:
            if t["id"] == "juan":  # five phones and chats: a fan-out of five rows on four lanes
                t["apprise"] = [{"env": f"JUAN_{i}"} for i in range(5)]
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))
        env.update({f"JUAN_{i}": f"json://127.0.0.1:{rx.port}/phone-{i}" for i in range(5)})
        events = tmp_path / "events.jsonl"
        events.write_text(json.dumps(dataclasses.asdict(ev("opened", T0, ids(5, 0)))) + "\n")
        argv = [sys.executable, "-m", "tests.delivery_child", str(path), str(tmp_path / "monitor.db")]
        t0_at = f"--t0-at={time.time()!r}"
        root = Path(__file__).parents[1]
        first = await asyncio.create_subprocess_exec(*argv, str(events), die, t0_at, cwd=root,
                                                     env={**os.environ, **env}, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(first.communicate(), 120)
        assert first.returncode == -9, err.decode()[-2000:]
        second = await asyncio.create_subprocess_exec(*argv, "-", t0_at, cwd=root, env={**os.environ, **env},
                                                      stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(second.communicate(), 120)
        assert second.returncode == 0, err.decode()[-2000:]
        outbox = Outbox(tmp_path / "monitor.db")
        try:
            rows = [r for r in outbox.rows() if r["channel"] == "apprise"]
        finally:
            outbox.close()
    finally:
        await rx.stop()
    return Counter(p.path for p in rx.received), rows, rx.received


async def test_sigkill_mid_fan_out_neither_loses_nor_repeats_a_notice(tmp_path: Path) -> None:
    """A request's last byte is its point of no return (monitor/notify/handover.py): sent on the event
    loop in the step that records the row as handed over. Killed after the 1st, 2nd or 4th notice
    was answered and before its record (the other lanes mid-request): every notice arrives once,
    and what the dead process had handed over counts as delivered at the restart."""
    for n in (1, 2, 4):
        (tmp_path / str(n)).mkdir()
        got, rows, pushes = await kill_then_restart(tmp_path / str(n), f"--die-on-record={n}")
        assert got == Counter({f"/phone-{i}": 1 for i in range(5)}), (n, got)  # none lost, none twice
        assert len(rows) == 5 and all(r["status"] == "delivered" for r in rows)
        assert sum(r["result"] == ASSUMED for r in rows) >= 1  # the one answered but not recorded
        assert len({p.doc["message"] for p in pushes}) == 1
        keys = {p.headers["Idempotency-Key"] for p in pushes}  # json://: the outbox key as a header too
        assert keys == {f"INC-000001/tech_alert_apprise/juan#{i + 1}/1" for i in range(5)}


async def test_killed_before_a_requests_last_byte_the_receiver_drops_it_and_the_restart_sends_it_once(
    tmp_path: Path,
) -> None:
    got, rows, _ = await kill_then_restart(tmp_path, "--die-before-last-byte=3")
    assert got == Counter({f"/phone-{i}": 1 for i in range(5)}), got
    assert all(r["status"] == "delivered" for r in rows)
    # the cut request (and those waiting for the loop on the other lanes) went out again, unassumed
    assert sum(r["result"] == ASSUMED for r in rows) <= 2


async def test_killed_after_the_hand_over_and_before_the_answer_the_restart_counts_it_delivered(
    tmp_path: Path,
) -> None:
    got, rows, _ = await kill_then_restart(tmp_path, "--die-after-handover=2")
    assert got == Counter({f"/phone-{i}": 1 for i in range(5)}), got
    assert all(r["status"] == "delivered" for r in rows)
    assert 1 <= sum(r["result"] == ASSUMED for r in rows) <= 2  # the 2nd, and the 1st if not yet recorded


async def test_only_a_single_request_notice_gets_a_point_of_no_return(tmp_path: Path) -> None:
    """A URL with several targets (one request each) or a service that may make several requests
    (Telegram without a chat id looks it up, or with ?image=yes sends the image first; Matrix logs
    in) is sent at least once, unarmed. Telegram with one chat sends one request, its hand-over
    recorded before the answer (its API pointed at a receiver on loopback)."""
    rx = PushReceiver()
    path, env = config(tmp_path, rx)
    inv = load_inventory(path, env=env)
    assert inv.delivery is not None
    juan = inv.delivery.technicians["juan"]
    sender = AppriseSender(inv.delivery.apprise, inv.delivery.technicians)
    row = Row("k", "INC-000001", "tech_alert_apprise", "juan#1", "apprise", "", {"body": "caída twr-1"}, id=1,
              attempts=0, uncertain=False, created_at=0.0)

    def service(url: str) -> tuple[Any, bool]:
        sender._services.clear()
        sender.technicians = {"juan": dataclasses.replace(juan, apprise=(Secret(url, "env:X"),))}
        return sender._service(row)

    def armed(url: str) -> bool:
        return service(url)[1]

    assert armed(f"json://127.0.0.1:{rx.port}/x") and armed(f"ntfy://127.0.0.1:{rx.port}/one")
    assert armed(f"gotify://127.0.0.1:{rx.port}/{GOTIFY_TOKEN}")
    assert not armed(f"ntfy://127.0.0.1:{rx.port}/one/two")  # two topics: two requests
    bot = "123456789:abcdefg_hijklmnop"
    assert not armed(f"tgram://{bot}/")  # no chat id: it asks getUpdates first
    assert not armed(f"tgram://{bot}/1231/4567") and not armed(f"tgram://{bot}/1231/?image=yes")
    assert not armed("matrix://user:pass@127.0.0.1/#room")
    tgram, one = service(f"tgram://{bot}/12315544/")
    assert one
    tgram[0].notify_url = f"http://127.0.0.1:{rx.port}/bot"  # never api.telegram.org from a test
    await rx.start()
    try:
        recorded: list[int] = []
        assert await sender.send(row, lambda: recorded.append(len(rx.received))) == "sent"
    finally:
        await rx.stop()
    assert recorded == [0]  # recorded once, before the receiver (on this loop) could even read it
    assert [(p.path, p.doc["chat_id"], p.doc["text"]) for p in rx.received] == [
        (f"/bot{bot}/sendMessage", 12315544, "caída twr-1")]


async def test_customers_get_short_notices_through_the_gateway_url_with_their_number(tmp_path: Path) -> None:
    rx = PushReceiver()
    await rx.start()
    try:
        path, env = config(tmp_path, rx, apprise={"customers": {"env": "CUSTOMER_SMS"}},
                           customers={"channels": ["email", "apprise"], "company": "Llanos Net"})
        env["CUSTOMER_SMS"] = f"json://gw:{JSON_PASS}@127.0.0.1:{rx.port}/sms/{{phone}}"
        inv = load_inventory(path, env=env)
        assert inv.delivery is not None
        assert "customers by json" in summarize(inv) and JSON_PASS not in summarize(inv)
        svc = DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, ManualClock(T0))
        async with Running(svc) as run:
            svc.enqueue([ev("opened", T0, ids(3, 0))])
            await run.drained(advance=False)
            svc.enqueue([ev("resolved", T0 + 600, ids(3, 0))])
            await run.drained(advance=False)
            rows = [r for r in svc.outbox.rows() if r["channel"] == "apprise" and r["action"].startswith("customer")]
    finally:
        await rx.stop()
    sms = sorted((p.path, p.doc["message"]) for p in rx.received if p.path.startswith("/sms/"))
    assert [p for p, _ in sms] == sorted(f"/sms/+57300{i:07d}" for i in (1, 2, 3) for _ in range(2))
    texts = {path: [t for p, t in sms if p == path] for path, _ in sms}
    assert any(t.startswith("Llanos Net: falla en su zona (Arauca)") for t in texts["/sms/+573000000001"])
    assert any(t.startswith("Llanos Net: outage in your area (Arauca)") for t in texts["/sms/+573000000002"])
    assert sorted((r["action"], r["recipient"]) for r in rows) == sorted(
        (a, f"+57300{i:07d}") for a in ("customer_opened_apprise", "customer_restored_apprise") for i in (1, 2, 3))
    assert all(len(t) <= 160 for _, t in sms)
    # in GSM-7 for the SMS gateway: "duración" would have made each "restored" three UCS-2 parts
    restored = [t for p, t in sms if p == "/sms/+573000000001" and "restablecido" in t]
    assert len(restored) == 1 and "(duracion " in restored[0] and parts(restored[0]) == 1


def test_the_customers_gateway_url_must_say_where_the_number_goes(tmp_path: Path) -> None:
    rx = PushReceiver()
    path, env = config(tmp_path, rx, apprise={"customers": {"env": "CUSTOMER_SMS"}})
    env["CUSTOMER_SMS"] = f"json://gw:{JSON_PASS}@127.0.0.1:{rx.port}/sms"
    with pytest.raises(ConfigError) as err:
        load_inventory(path, env=env)
    assert "delivery.apprise.customers: the URL from env:CUSTOMER_SMS has no {phone}" in str(err.value)
    assert JSON_PASS not in str(err.value)


def test_the_phone_waits_per_rota_step_for_an_acknowledgement_of_the_email(tmp_path: Path) -> None:
    """``escalation.phone_after: [5m, 0s]``: tier 0's phones only if its e-mail alert is not acknowledged
    within 5 min; tier 1 (the escalation) by phone at once; "resolved" by phone only to those phoned."""
    rx = PushReceiver()
    path, env = config(tmp_path, rx, escalation={"after": "15m", "phone_after": ["5m", "0s"]},
                       smtp={"host": "127.0.0.1", "port": 9, "security": "none", "from": "noc@isp.example"})
    inv = load_inventory(path, env=env)
    assert inv.delivery is not None and inv.delivery.escalation.phone_after == (300.0, 0.0)
    ctx = planner.Context(inv, inv.delivery)

    def run(acked_at: float | None) -> list[tuple[float, str, str, str]]:
        mem: dict[str, planner.IncidentMemory] = {}
        glob = planner.GlobalMemory()
        seen: list[tuple[float, str, str, str]] = []

        def keep(now: float, p: planner.Plan) -> None:
            mem.update(p.memories)
            seen.extend((now, i.action, i.recipient, i.channel) for i in p.items if i.action.startswith("tech_"))

        keep(T0, planner.plan([ev("opened", T0, ids(3, 0))], dict(mem), glob, ctx, T0, None))
        for now in (T0 + 299, T0 + 300, T0 + 301, T0 + 900, T0 + 1000):
            acked = {"INC-000001"} if acked_at is not None and now >= acked_at else set()
            keep(now, planner.tick(list(mem.values()), glob, ctx, now, acked))
        keep(T0 + 1800, planner.plan([ev("resolved", T0 + 1800, ids(3, 0))], dict(mem), glob, ctx, T0 + 1800, None))
        return seen

    assert run(acked_at=None) == [
        (T0, "tech_alert", "juan@isp.example", "email"),
        (T0 + 300, "tech_alert_apprise", "juan#1", "apprise"), (T0 + 300, "tech_alert_apprise", "juan#2", "apprise"),
        (T0 + 900, "tech_alert", "noc-lead@isp.example", "email"),
        (T0 + 900, "tech_alert_apprise", "noc#1", "apprise"),
        (T0 + 1800, "tech_resolved", "juan@isp.example", "email"),
        (T0 + 1800, "tech_resolved_apprise", "juan#1", "apprise"),
        (T0 + 1800, "tech_resolved_apprise", "juan#2", "apprise"),
        (T0 + 1800, "tech_resolved", "noc-lead@isp.example", "email"),
        (T0 + 1800, "tech_resolved_apprise", "noc#1", "apprise"),
    ]
    # acknowledged by e-mail within the 5 minutes: no phone, no escalation, no "resolved" by phone
    assert run(acked_at=T0 + 120) == [
        (T0, "tech_alert", "juan@isp.example", "email"),
        (T0 + 1800, "tech_resolved", "juan@isp.example", "email"),
    ]


async def test_each_service_keeps_its_own_rate(tmp_path: Path) -> None:
    """``apprise.rates: {json: 2}``: a burst of five to a JSON gateway waits 0.5 s for each beyond the
    bucket's two, in virtual time; the ntfy URL beside it is not held back."""
    rx = PushReceiver()
    await rx.start()
    try:
        path, env = config(tmp_path, rx, apprise={"rates": {"json": 2}})
        inv = load_inventory(path, env=env)
        assert inv.delivery is not None and inv.delivery.apprise.rates == {"json": 2.0}
        clock = ManualClock(0.0)
        waited: list[float] = []

        async def sleep(seconds: float) -> None:
            waited.append(seconds)
            clock.advance(seconds)

        sender = AppriseSender(inv.delivery.apprise, inv.delivery.technicians, now=clock.monotonic, sleep=sleep)

        def row(i: int, recipient: str) -> Row:
            return Row(f"k{i}", "INC-000001", "tech_alert_apprise", recipient, "apprise", "",
                       {"to": recipient, "subject": "", "body": f"n{i}"}, id=i, attempts=0, uncertain=False,
                       created_at=0.0)

        for i in range(5):
            await sender.send(row(i, "juan#2"))  # juan's json:// URL
        assert waited == [0.5, 0.5, 0.5]
        await sender.send(row(5, "juan#1"))  # his ntfy:// URL: its own service, no wait
        assert waited == [0.5, 0.5, 0.5]
        await sender.close()
    finally:
        await rx.stop()
    assert sorted(kind_of(p) for p in rx.received) == ["json"] * 5 + ["ntfy"]
    (tmp_path / "bad").mkdir()
    path, env = config(tmp_path / "bad", rx, apprise={"rates": {"carrierpigeon": 1, "json": 0}})
    with pytest.raises(ConfigError) as err:
        load_inventory(path, env=env)
    assert "unknown Apprise service 'carrierpigeon'" in str(err.value)
    assert "delivery.apprise.rates.json: must be greater than 0" in str(err.value)


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30) | st.sampled_from(["5m", "0s", "-1s", "ntfy://x/y", {"env": "JUAN_NTFY"}]),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(where=st.sampled_from(["tech", "phone_after", "rates", "customers", "gsm7", "timeout"]), value=_VALUES)
def test_hostile_apprise_settings_are_a_config_error_or_accepted(tmp_path_factory: pytest.TempPathFactory,
                                                                 where: str, value: Any) -> None:
    rx = PushReceiver()
    root = tmp_path_factory.mktemp("hostile")
    path, env = config(root, rx)
    doc = yaml.safe_load(path.read_text())
    d = doc["delivery"]
    if where == "tech":
        d["technicians"][0]["apprise"] = value
    elif where == "phone_after":
        d["escalation"]["phone_after"] = value
    else:
        d["apprise"] = {where: value}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        inv = load_inventory(path, env=env)
    except ConfigError as exc:
        assert NTFY_PASS not in str(exc) and JSON_PASS not in str(exc) and GOTIFY_TOKEN not in str(exc)
        return
    assert inv.delivery is not None
    assert all(isinstance(x, float) and 0 <= x <= 86_400 for x in inv.delivery.escalation.phone_after)
    assert all(0 < r <= 1000 for r in inv.delivery.apprise.rates.values())
