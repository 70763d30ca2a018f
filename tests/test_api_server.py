"""The HTTP API for real: aiohttp ClientSession against the server on a free loopback port, on a real
SQLite store with an open incident and a real delivery service (planner ticks on a ManualClock)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from tests.api_support import AUTH, PUBLIC, TOKEN, Env, acked_by, make_env
from tests.delivery_support import T0, ev, ids


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in make_env(tmp_path):
        yield e


# ---------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}])
async def test_api_needs_the_bearer_token(env: Env, headers: dict[str, str]) -> None:
    for method, path in (("GET", "/api/v1/incidents"), ("GET", "/api/v1/incidents/INC-000001"),
                         ("POST", "/api/v1/incidents/INC-000001/ack"), ("GET", "/api/v1/nothing-here")):
        async with env.http.request(method, env.base + path, headers=headers, json={"by": "eve"}) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="monitor"'
            assert await r.json() == {"error": "missing or wrong bearer token"}
    assert acked_by(env) is None


async def test_list_and_show_give_what_the_cli_gives(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    async with env.http.get(env.base + "/api/v1/incidents", headers=AUTH) as r:
        assert r.status == 200
        listed = await r.json()
    assert main(["incidents", "list", "--db", str(env.db), "--json"]) == 0
    assert listed == json.loads(capsys.readouterr().out) and listed[0]["id"] == "INC-000001"
    async with env.http.get(env.base + "/api/v1/incidents/INC-000001", headers=AUTH) as r:
        shown = await r.json()
    assert main(["incidents", "show", "INC-000001", "--db", str(env.db), "--json"]) == 0
    assert shown == json.loads(capsys.readouterr().out) and shown["incident"]["status"] == "open"
    async with env.http.get(env.base + "/api/v1/incidents?status=all", headers=AUTH) as r:
        assert [i["id"] for i in await r.json()] == ["INC-000001"]


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("method", "path", "body", "status", "error"), [
    ("GET", "/api/v1/incidents/INC-999999", None, 404, "no incident INC-999999"),
    ("POST", "/api/v1/incidents/INC-999999/ack", {"by": "ana"}, 404, "no incident INC-999999"),
    ("GET", "/api/v1/incidents?status=closed", None, 400, "status: bad value 'closed' (expected open or all)"),
    ("POST", "/api/v1/incidents/INC-000001/ack", "not json", 400, "the body is not JSON"),
    ("POST", "/api/v1/incidents/INC-000001/ack", ["ana"], 400, "expected a JSON object"),
    ("POST", "/api/v1/incidents/INC-000001/ack", {}, 400,
     "by: expected who does it, a name of 1 to 100 printable characters"),
    ("POST", "/api/v1/incidents/INC-000001/ack", {"by": "ana", "nota": "x"}, 400,
     "unknown key 'nota' (allowed: by, note)"),
    ("POST", "/api/v1/incidents/INC-000001/note", {"by": "ana"}, 400, "text: expected a non-empty string"),
    ("POST", "/api/v1/incidents/INC-000001/eta", {"by": "ana"}, 400,
     'expected {"at": ISO-8601 or epoch seconds} or {"clear": true}'),
    ("POST", "/api/v1/incidents/INC-000001/eta", {"by": "ana", "at": "tomorrow"}, 400,
     "at: expected ISO-8601 like 2026-11-24T15:00:00-05:00, or epoch seconds"),
    ("POST", "/api/v1/incidents/INC-000001/eta", {"by": "ana", "at": T0 - 60}, 400,
     "ETA 2026-11-18T11:05:40Z is not in the future"),
    ("POST", "/api/v1/incidents/INC-000001/eta", {"by": "ana", "clear": True}, 409,
     "INC-000001 has no restoration estimate to withdraw"),
])
async def test_each_error_has_its_code_and_a_json_message(env: Env, method: str, path: str, body: Any, status: int,
                                                          error: str) -> None:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, str) else {"json": body}
    async with env.http.request(method, env.base + path, headers=AUTH, **kwargs) as r:
        assert (r.status, await r.json()) == (status, {"error": error})
    assert acked_by(env) is None


async def test_actions_on_a_resolved_incident_are_a_conflict(env: Env) -> None:
    store = env.store()
    store.save([ev("resolved", T0 + 600, ids(4))], {}, set(), [])
    store.close()
    for action, body in (("ack", {"by": "ana"}), ("eta", {"by": "ana", "at": T0 + 7200})):
        async with env.http.post(f"{env.base}/api/v1/incidents/INC-000001/{action}", headers=AUTH, json=body) as r:
            assert (r.status, await r.json()) == (409, {"error": "INC-000001 is already resolved"})
    assert acked_by(env) is None


# ---------------------------------------------------------------------------------------------- actions


@pytest.mark.parametrize("ack", [True, False])
async def test_ack_through_the_api_stops_the_escalation(env: Env, ack: bool) -> None:
    assert [r["recipient"] for r in env.rows("tech_alert")] == ["juan@isp.example"]  # tier 0, night shift
    if ack:
        async with env.http.post(env.base + "/api/v1/incidents/INC-000001/ack", headers=AUTH,
                                 json={"by": "juan", "note": "on my way"}) as r:
            assert r.status == 200
            shown = await r.json()
        assert shown["incident"]["acked_by"] == "juan"
        assert shown["actions"][-1] == {"ts": "2026-11-18T11:06:40Z", "action": "ack", "by": "juan",
                                        "text": "on my way", "done": True}
    env.clock.set(T0 + 900)  # escalation.after: tier 1 is due unless someone acknowledged
    env.delivery.tick()
    escalated = [r["recipient"] for r in env.rows("tech_alert") if r["recipient"] != "juan@isp.example"]
    assert escalated == ([] if ack else ["noc-lead@isp.example"])


async def test_note_and_eta_through_the_api_reach_the_planner(env: Env) -> None:
    async with env.http.post(env.base + "/api/v1/incidents/INC-000001/note", headers=AUTH,
                             json={"by": "luis", "text": "breaker tripped"}) as r:
        assert r.status == 200 and (await r.json())["actions"][-1]["text"] == "breaker tripped"
    async with env.http.post(env.base + "/api/v1/incidents/INC-000001/eta", headers=AUTH,
                             json={"by": "ana", "at": "2026-11-18T09:06:40-05:00"}) as r:
        assert r.status == 200
    env.clock.set(T0 + 3600)  # customers' update throttle allows an update now
    env.delivery.tick()
    assert sorted(r["recipient"] for r in env.rows("customer_updated")) == [f"c{i}@example.com" for i in range(1, 5)]
    async with env.http.post(env.base + "/api/v1/incidents/INC-000001/eta", headers=AUTH,
                             json={"by": "ana", "clear": True}) as r:
        assert r.status == 200 and (await r.json())["actions"][-1]["text"] == "withdrawn"
    store = env.store()
    assert store.etas() == {"INC-000001": None}
    store.close()


# ---------------------------------------------------------------------------------------------- links


async def test_link_get_does_not_ack_post_does(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = env.link()
    sig = url.rsplit("sig=", 1)[1]
    assert f"exp={int(T0 + 86400)}" in url and "by=juan" in url
    for _ in range(3):  # a mail scanner prefetching the link, then the technician opening it
        async with env.http.get(url) as r:
            page = await r.text()
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
            assert r.headers["Referrer-Policy"] == "no-referrer"
    assert acked_by(env) is None
    assert "Confirmar como juan" in page and 'method="post"' in page and "<dd>twr-1</dd>" in page
    async with env.http.post(url) as r:  # the button posts the signed fields again
        assert r.status == 200 and "INC-000001 confirmado por juan" in await r.text()
    assert acked_by(env) == "juan"
    async with env.http.post(url) as r:  # a second tap changes nothing
        assert r.status == 200 and "ya fue confirmado por juan" in await r.text()
    store = env.store()
    assert [a[1:3] for a in store.actions("INC-000001")] == [("ack", "juan")]
    store.close()
    assert TOKEN not in caplog.text and sig not in caplog.text


async def test_link_form_fields_are_what_the_post_checks(env: Env) -> None:
    url = env.link()
    path, query = url.split("?", 1)
    fields = dict(p.split("=", 1) for p in query.split("&"))
    async with env.http.post(path, data=fields) as r:  # a browser posting the hidden fields
        assert r.status == 200
    assert acked_by(env) == "juan"


def tampered(url: str) -> list[str]:
    sig = url.rsplit("sig=", 1)[1]
    return [url.replace("by=juan", "by=ana"), url.replace("INC-000001", "INC-000002"),
            re.sub(r"exp=(\d+)", lambda m: f"exp={int(m.group(1)) + 86400}", url),
            url.replace(sig, sig[:-1] + ("0" if sig[-1] != "0" else "1")), url.split("&sig=")[0]]


async def test_tampered_or_expired_links_are_refused(env: Env) -> None:
    url = env.link()
    for bad in tampered(url):
        for method in ("GET", "POST"):
            async with env.http.request(method, bad) as r:
                assert r.status == 403, bad
                text = await r.text()
                # in the language of whoever the link names (by=ana: English); nothing about the incident
                assert ("enlace no es válido" in text or "this link is not valid" in text) and "twr-1" not in text
    env.clock.set(T0 + 86400 + 1)
    for method in ("GET", "POST"):
        async with env.http.request(method, url) as r:
            assert r.status == 403 and "este enlace expiró" in await r.text()
    assert acked_by(env) is None


async def test_english_technician_gets_an_english_link_and_page(tmp_path: Path) -> None:
    async for env in make_env(tmp_path, opened_at=T0 + 3600):  # 07:06 on a Wednesday: Ana's day shift
        row = next(r for r in env.rows("tech_alert") if r["channel"] == "email")
        assert row["recipient"] == "ana@isp.example"
        body = row["payload"]["body"]
        assert "Acknowledge from your phone (one tap, then confirm): " + PUBLIC + "/ack/INC-000001?by=ana" in body
        assert "monitor incidents ack" not in body  # the link is the instruction; the CLI only without one
        async with env.http.get(env.link()) as r:
            assert "Acknowledge as ana" in await r.text()
        async with env.http.post(env.link()) as r:
            assert "INC-000001 acknowledged by ana" in await r.text()
        assert acked_by(env) == "ana"


async def test_escalation_email_carries_a_link_for_the_next_tier(env: Env) -> None:
    env.clock.set(T0 + 900)
    env.delivery.tick()
    url = env.link(recipient="noc-lead")
    assert "by=noc&" in url and f"exp={int(T0 + 900 + 86400)}" in url  # valid from when it was planned
    async with env.http.post(url) as r:
        assert r.status == 200
    assert acked_by(env) == "noc"


async def test_spanish_alert_text_and_no_link_without_links_configured(tmp_path: Path) -> None:
    async for env in make_env(tmp_path / "with"):
        body = next(r for r in env.rows("tech_alert"))["payload"]["body"]
        assert "Confirme desde el teléfono (un toque y confirmar): " + PUBLIC + "/ack/INC-000001?by=juan&exp=" in body
        assert "monitor incidents ack" not in body  # a technician on a phone has no shell: the link only
    async for env in make_env(tmp_path / "without", public_url=None, link_key=None):
        body = next(r for r in env.rows("tech_alert"))["payload"]["body"]
        assert "/ack/" not in body and body.rstrip().endswith("Confirme con: monitor incidents ack INC-000001")
        async with env.http.get(f"{env.base}/ack/INC-000001?by=juan&exp=9999999999&sig=00") as r:
            assert r.status == 403  # links are off: nothing is accepted
