"""The staff board on the API's listener: login (bcrypt, throttled), sessions (expiry), CSRF, roles on
every action, the audit log, and the actions reaching the store through Staff like the CLI's."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.correlate.incidents import parse_ts
from monitor.correlate.staff import Staff
from monitor.correlate.store import IncidentStore
from monitor.inventory.api import BCRYPT_RE
from monitor.web.board import SESSION_TTL
from monitor.web.users import User, check_password, hash_password, load_users, save_users
from tests.api_support import AUTH, Env, acked_by, make_env
from tests.cdp import Browser
from tests.servers.common import free_port
from tests.test_daemon import write_config

PASSWORD = "correct horse battery"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in make_env(tmp_path):
        save_users(e.db.parent / "users.json", {
            "ana": User("ana", "operator", hash_password(PASSWORD, cost=4)),
            "vera": User("vera", "viewer", hash_password(PASSWORD, cost=4)),
        })
        yield e


async def login(env: Env, user: str, password: str = PASSWORD) -> tuple[int, str]:
    """(status, session cookie or '') after the login form, as a browser fills it."""
    async with env.http.get(f"{env.base}/board/login") as r:
        form = await r.text()
        pre = r.cookies["board_login"].value
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    async with env.http.post(f"{env.base}/board/login", data={"user": user, "password": password,
                                                               "csrf": csrf.group(1)},
                             headers={"Cookie": f"board_login={pre}"}, allow_redirects=False) as r:
        cookie = r.cookies.get("board_session")
        if cookie is not None:
            assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/board"
        return r.status, cookie.value if cookie is not None else ""


async def board(env: Env, session: str) -> tuple[int, str, dict[str, str]]:
    async with env.http.get(f"{env.base}/board", headers={"Cookie": f"board_session={session}"},
                            allow_redirects=False) as r:
        return r.status, await r.text(), dict(r.headers)


async def act(env: Env, session: str, action: str, text: str = "", csrf: str | None = None) -> int:
    if csrf is None:
        _, html, _ = await board(env, session)
        m = re.search(r'name="csrf" value="([^"]+)"', html)
        assert m is not None
        csrf = m.group(1)
    async with env.http.post(f"{env.base}/board/incidents/INC-000001/{action}", data={"csrf": csrf, "text": text},
                             headers={"Cookie": f"board_session={session}"}, allow_redirects=False) as r:
        return r.status


def audit(env: Env) -> list[dict[str, object]]:
    path = env.db.parent / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_operator_logs_in_acknowledges_and_sets_an_estimate(env: Env) -> None:
    status, _, headers = await board(env, "")
    assert status == 303 and headers["Location"] == "/board/login"
    status, session = await login(env, "ana")
    assert status == 303 and session
    status, html, headers = await board(env, session)
    assert status == 200 and "INC-000001" in html and "ana (operator)" in html
    assert headers["Cache-Control"] == "no-store" and headers["X-Frame-Options"] == "DENY"
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp and "default-src 'none'" in csp
    assert html.count("<script") == 1 and '<script src="/board/live.js" defer>' in html  # no inline script
    assert await act(env, session, "ack", "voy en camino") == 303
    assert acked_by(env) == "ana"
    assert await act(env, session, "eta", "2026-11-18T16:00:00-05:00") == 303
    store = IncidentStore(env.db)
    assert store.etas()["INC-000001"] == parse_ts("2026-11-18T16:00:00-05:00")
    assert [a[1:3] for a in store.actions("INC-000001")] == [("ack", "ana"), ("eta", "ana")]
    store.close()
    assert [(a["user"], a["action"], a["target"]) for a in audit(env)] == [
        ("ana", "login", ""), ("ana", "ack", "INC-000001"), ("ana", "eta", "INC-000001")]
    assert await act(env, session, "eta", "tomorrow") == 409  # a bad value is an answer, not a crash
    # the bearer-token API keeps working beside the board
    async with env.http.get(f"{env.base}/api/v1/incidents", headers=AUTH) as r:
        assert r.status == 200 and (await r.json())[0]["acked_by"] == "ana"


async def test_csrf_and_roles_are_checked_on_every_action(env: Env) -> None:
    _, ana = await login(env, "ana")
    assert await act(env, ana, "ack", csrf="forged") == 403
    assert await act(env, ana, "ack", csrf="") == 403
    _, vera = await login(env, "vera")
    status, html, _ = await board(env, vera)
    assert status == 200 and "/board/incidents/INC-000001/ack" not in html  # no action forms for a viewer
    for action in ("ack", "note", "eta", "resolve"):
        assert await act(env, vera, action, "x") == 403
    assert acked_by(env) is None
    assert ("vera", "ack refused (role)") in [(a["user"], a["action"]) for a in audit(env)]
    async with env.http.post(f"{env.base}/board/login", data={"user": "ana", "password": PASSWORD}) as r:
        assert r.status == 403  # a login without the form's token (login CSRF)


async def test_wrong_passwords_are_throttled_and_unknown_users_look_the_same(env: Env) -> None:
    assert (await login(env, "ana", "wrong password!"))[0] == 401
    assert (await login(env, "nobody", PASSWORD))[0] == 401
    results = [(await login(env, "ana", f"guess number {i}"))[0] for i in range(5)]
    assert results[-1] == 429 and 401 in results
    assert (await login(env, "ana"))[0] == 429  # even the right password waits


async def test_sessions_expire_and_logout_ends_them(env: Env) -> None:
    _, session = await login(env, "ana")
    assert (await board(env, session))[0] == 200
    env.clock.advance(SESSION_TTL + 1)
    assert (await board(env, session))[0] == 303
    _, session = await login(env, "ana")
    _, html, _ = await board(env, session)
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf is not None
    async with env.http.post(f"{env.base}/board/logout", data={"csrf": csrf.group(1)},
                             headers={"Cookie": f"board_session={session}"}, allow_redirects=False) as r:
        assert r.status == 303
    assert (await board(env, session))[0] == 303


def test_users_command_hashes_into_a_private_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, free_port())
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["users", "--config", str(cfg), "add", "ana", "--role", "operator", "--password-stdin"]) == 0
    path = tmp_path / "var" / "users.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and PASSWORD not in path.read_text()
    assert load_users(path)["ana"].role == "operator"
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "--config", str(cfg), "add", "bob", "--role", "viewer", "--password-stdin"]) == 2
    assert main(["users", "--config", str(cfg), "list"]) == 0
    assert "ana\toperator" in capsys.readouterr().out
    assert main(["users", "--config", str(cfg), "remove", "ana"]) == 0 and load_users(path) == {}
    # the hash for the config's api.users (no config needed); the password is never printed
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["users", "hash", "--password-stdin"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert BCRYPT_RE.fullmatch(printed) and PASSWORD not in printed
    assert check_password(User("x", "viewer", printed.encode()), PASSWORD)


async def test_board_in_a_real_browser_login_acknowledge_and_estimate(env: Env, tmp_path: Path) -> None:
    """Headless Chromium over DevTools: the login form, the board, the ack and estimate forms clicked
    as a technician would; the estimate reaches the customers' update like one from the CLI."""
    async with Browser(tmp_path / "chromium") as chrome:
        text = await chrome.open(f"{env.base}/board?lang=en")
        assert "Log in" in text and await chrome.evaluate("location.pathname") == "/board/login"
        text = await chrome.submit("form.lookup", {"user": "ana", "password": PASSWORD})
        assert "Open incidents (1)" in text and "INC-000001" in text and "ana (operator)" in text
        text = await chrome.submit('form[action$="/ack"]', {"ack-INC-000001": "on my way"})
        assert "Acknowledged\nana" in text
        text = await chrome.submit('form[action$="/eta"]', {"eta-INC-000001": "2026-11-18T09:06:40-05:00"})
        assert "2026-11-18 14:06" in text  # the estimate, shown in UTC
        cookie = await chrome.evaluate("document.cookie")
        assert "board_session" not in str(cookie)  # HttpOnly: no script can read the session
        # live: an estimate moved from the command line shows up without anyone pressing reload
        cli = Staff.open(env.db)
        cli.eta("INC-000001", "luis", parse_ts("2026-11-18T10:30:00-05:00"), now=env.clock.now())
        cli.close()
        deadline = time.monotonic() + 5
        while True:
            with contextlib.suppress(AssertionError):  # asked while the page was reloading
                if "2026-11-18 15:30" in await chrome.text():
                    break
            assert time.monotonic() < deadline, "the board did not update itself within 5 s"
            await asyncio.sleep(0.2)
    assert acked_by(env) == "ana"
    env.clock.set(env.clock.now() + 3600)
    env.delivery.tick()
    updates = env.rows("customer_updated")
    assert sorted(r["recipient"] for r in updates) == [f"c{i}@example.com" for i in range(1, 5)]
    assert [(a["user"], a["action"]) for a in audit(env)] == [("ana", "login"), ("ana", "ack"), ("ana", "eta")]


async def test_operator_plans_and_cancels_maintenance_and_a_viewer_cannot(env: Env) -> None:
    _, ana = await login(env, "ana")
    _, html, _ = await board(env, ana)
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m is not None
    form = {"csrf": m.group(1), "node": "ap-1", "start": "2026-11-20T02:00:00-05:00",
            "end": "2026-11-20T04:00:00-05:00", "reason": "cambio de radio"}
    cookie = {"Cookie": f"board_session={ana}"}
    async with env.http.post(f"{env.base}/board/maintenance", data=form, headers=cookie, allow_redirects=False) as r:
        assert r.status == 303
    store = IncidentStore(env.db)
    [w] = store.maintenance()
    assert (w.node, w.author, w.reason) == ("ap-1", "ana", "cambio de radio") and len(w.customers) == 5
    store.close()
    async with env.http.post(f"{env.base}/board/maintenance", data={**form, "node": "nope"}, headers=cookie,
                             allow_redirects=False) as r:
        assert r.status == 400 and "no node or endpoint with id &#39;nope&#39;" in await r.text()
    _, vera = await login(env, "vera")
    _, html, _ = await board(env, vera)
    m2 = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m2 is not None and "MW-1 ap-1" in html and 'id="add-window"' not in html
    async with env.http.post(f"{env.base}/board/maintenance/{w.id}/remove", data={"csrf": m2.group(1)},
                             headers={"Cookie": f"board_session={vera}"}, allow_redirects=False) as r:
        assert r.status == 403
    async with env.http.post(f"{env.base}/board/maintenance/{w.id}/remove", data={"csrf": m.group(1)},
                             headers=cookie, allow_redirects=False) as r:
        assert r.status == 303
    store = IncidentStore(env.db)
    assert store.maintenance() == []
    store.close()
    assert [a["action"] for a in audit(env) if a["user"] == "ana"][-2:] == ["maintenance add", "maintenance remove"]


async def test_live_updates_stream_a_change_and_end_when_the_server_stops(env: Env) -> None:
    _, session = await login(env, "ana")
    async with env.http.get(f"{env.base}/board/events") as r:
        assert r.status == 401  # no session, no stream
    async with env.http.get(f"{env.base}/board/live.js") as r:
        assert r.status == 200 and "EventSource" in await r.text()
    stream = await env.http.get(f"{env.base}/board/events", headers={"Cookie": f"board_session={session}"})
    assert stream.status == 200 and stream.headers["Content-Type"] == "text/event-stream"
    assert await asyncio.wait_for(stream.content.readline(), 30) == b"retry: 3000\n"
    store = IncidentStore(env.db)
    t0 = time.monotonic()
    store.add_action("INC-000001", "note", "cli", "from the command line", env.clock.now())
    store.close()
    lines = []
    while b"event: changed\n" not in lines:
        lines.append(await asyncio.wait_for(stream.content.readline(), 5))
    assert time.monotonic() - t0 < 5.0
    t1 = time.monotonic()
    await env.server.stop()  # an open stream must not hold the shutdown
    assert time.monotonic() - t1 < 5.0
    stream.close()


async def test_a_change_before_the_live_stream_opened_still_reloads_the_page(env: Env) -> None:
    """The race a loaded machine showed: the estimate was set after the page was drawn but before its
    stream opened, and the page never updated. The page names the revision it shows; the stream
    compares against that, not against the store when it opens."""
    _, session = await login(env, "ana")
    _, html, _ = await board(env, session)
    m = re.search(r'<meta name="board-revision" content="([0-9a-f]{16})">', html)
    assert m is not None
    cookie = {"Cookie": f"board_session={session}"}
    async with env.http.get(f"{env.base}/board/events?since={m.group(1)}", headers=cookie) as r:
        assert await asyncio.wait_for(r.content.readline(), 30) == b"retry: 3000\n"
        assert await asyncio.wait_for(r.content.readline(), 30) == b"\n"
        assert await asyncio.wait_for(r.content.readline(), 30) == b": still here\n"  # nothing changed yet
    store = IncidentStore(env.db)
    store.add_action("INC-000001", "note", "cli", "while the browser was slow", env.clock.now())
    store.close()
    async with env.http.get(f"{env.base}/board/events?since={m.group(1)}", headers=cookie) as r:
        assert await asyncio.wait_for(r.content.readline(), 30) == b"retry: 3000\n"
        assert await asyncio.wait_for(r.content.readline(), 30) == b"\n"
        assert await asyncio.wait_for(r.content.readline(), 30) == b"event: changed\n"


async def test_board_draws_the_sites_and_the_down_tree(env: Env) -> None:
    _, session = await login(env, "ana")
    _, html, _ = await board(env, session)
    if "<svg" in html:  # only when the sites have coordinates
        svg = html[html.index("<svg"):html.index("</svg>")]
        assert 'fill="#c62828"' in svg and "<script" not in svg and "href" not in svg  # self-contained
    tree = html[html.index('<ul class="tree">'):]
    assert "<li>twr-1 (twr-1)<ul>    <li>ap-1 (ap-1): 5 extremos afectados debajo</li>" in tree


def test_down_tree_and_map_of_the_example_network() -> None:
    from monitor.web.sitemap import TreeNode, down_tree, site_severity, svg
    from tests.web_support import below, example

    inv = example()
    eps = [t for t in below(inv, "sw-centro") if inv.targets[t].role == "endpoint"]
    nodes = [t for t in below(inv, "sw-centro") if inv.targets[t].role == "node"]
    [top] = down_tree(inv, "sw-centro", nodes, eps)
    assert top.id == "sw-centro" and {c.id for c in top.children} >= {"ap-centro-1"}
    def count(n: TreeNode) -> int:
        return n.endpoints + sum(count(c) for c in n.children)

    assert count(top) == len(eps)
    severity = site_severity(inv, [("outage", ["sw-centro", *nodes]), ("suspected", ["ap-saravena-1"])])
    assert severity["twr-centro"] == 3 and severity["twr-saravena"] == 2 and "twr-tame" not in severity
    drawing = svg(inv, severity, "map")
    assert drawing.count("<circle") == len(inv.sites) and drawing.count('fill="#c62828"') >= 1
    assert "Torre Tame" in drawing and 'fill="#f9a825"' in drawing


async def test_window_ids_and_times_that_are_not_a_window_are_refused_not_a_server_error(env: Env) -> None:
    """'²' and '٣' are digits to str.isdigit(), and int('²') raises ValueError: the board answered 500
    with a traceback in the log. A window outside the years 1 to 9999 is refused like any bad time."""
    _, ana = await login(env, "ana")
    _, html, _ = await board(env, ana)
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m is not None
    cookie = {"Cookie": f"board_session={ana}"}
    for wid in ("%C2%B2", "%D9%A3", "99999999999999999999999", "-1", "x"):
        async with env.http.post(f"{env.base}/board/maintenance/{wid}/remove", data={"csrf": m.group(1)},
                                 headers=cookie, allow_redirects=False) as r:
            assert r.status == 404, wid
            assert "no active maintenance window" in await r.text()
    form = {"csrf": m.group(1), "node": "ap-1", "start": "0001-01-01T00:00:00+05:00",
            "end": "2026-11-20T04:00:00-05:00", "reason": ""}
    async with env.http.post(f"{env.base}/board/maintenance", data=form, headers=cookie, allow_redirects=False) as r:
        assert r.status == 400 and "the start is not between the years 1 and 9999 (UTC)" in await r.text()
    store = IncidentStore(env.db)
    assert store.maintenance(include_removed=True) == []
    store.close()


async def test_users_from_the_config_log_in_and_win_over_the_users_file(tmp_path: Path) -> None:
    """Issue 15 "users and roles from config": ``api.users`` with bcrypt hashes; the same name in
    users.json (a stale entry) has neither its role nor its password any more."""
    hashed = hash_password(PASSWORD, cost=4).decode()
    users = [{"name": "ana", "role": "viewer", "password_hash": hashed},
             {"name": "olga", "role": "operator", "password_hash": hashed}]
    async for env in make_env(tmp_path, users=users):
        save_users(env.db.parent / "users.json", {"ana": User("ana", "operator", hash_password("old password 123",
                                                                                                cost=4))})
        assert (await login(env, "ana", "old password 123"))[0] == 401
        status, ana = await login(env, "ana")
        assert status == 303 and ana
        assert await act(env, ana, "ack", "x") == 403  # the config says viewer
        status, olga = await login(env, "olga")
        assert status == 303 and await act(env, olga, "ack", "en camino") == 303
        assert acked_by(env) == "olga"
        assert [(a["user"], a["action"]) for a in audit(env)][-1] == ("olga", "ack")
