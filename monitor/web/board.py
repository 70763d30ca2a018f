"""The staff board: open incidents and the staff actions on them, in the browser, behind a login.

Served on the API's listener (``/board``), the staff side, never on the public status page's. Every
action goes through :class:`monitor.correlate.staff.Staff` — the same calls as ``monitor incidents`` and
``/api/v1`` — with the logged-in user's name as the author (so the desk's ticket comment and the
customers' update carry it), and is appended to ``<state_dir>/audit.log``.

Security: bcrypt passwords (:mod:`monitor.web.users`); failed logins throttled per client address and
per user name (5 a minute each), an unknown name costing the same bcrypt check; sessions are random 256-bit tokens in an
``HttpOnly; SameSite=Strict`` cookie (``Secure`` behind HTTPS), expiring after ``SESSION_TTL``;
every form carries the session's CSRF token (the login form a double-submit one); roles are checked
on every action; no script (CSP), no caching, no framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from monitor.clock import Clock
from monitor.correlate.incidents import parse_ts
from monitor.correlate.staff import Staff
from monitor.correlate.store import NotFound
from monitor.errors import ConfigError, MonitorError
from monitor.inventory.model import Inventory
from monitor.logs import event
from monitor.web import i18n
from monitor.web.lookup import RateLimiter, client_key
from monitor.web.render import TEMPLATES
from monitor.web.server import CSP, CSS
from monitor.web.sitemap import down_tree, site_severity, svg
from monitor.web.users import FILE, User, check_password, load_users, with_config

log = logging.getLogger("monitor.board")

SESSION_TTL = 12 * 3600.0
LIVE_EVERY = 1.0  # seconds between looks at the store for a live stream


def _token(revision: tuple[object, ...]) -> str:
    """The store's revision as a short opaque string (the page carries it; the live stream compares it)."""
    return hashlib.sha256(repr(revision).encode()).hexdigest()[:16]
MAX_STREAMS = 200
LIVE_JS = TEMPLATES.parent / "static" / "live.js"
#: the board's own policy: the public page's, plus its one script file and its event stream
BOARD_CSP = CSP + "; script-src 'self'; connect-src 'self'"
MAX_SESSIONS = 10_000
LOGIN_PER_MINUTE = 5
COOKIE, LOGIN_COOKIE = "board_session", "board_login"
ACTIONS = ("ack", "note", "eta", "resolve")  # on an incident; all need the operator role, as maintenance does



@dataclass(slots=True)
class Session:
    user: User
    csrf: str
    expires: float


class Board:
    def __init__(self, incidents: Callable[[], Staff], state_dir: Path, inventory: Inventory,
                 clock: Clock) -> None:
        self.incidents = incidents
        self.users_path = state_dir / FILE
        self.audit_path = state_dir / "audit.log"
        self.inventory = inventory
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self._streams = 0
        self._closing = asyncio.Event()
        self.by_address = RateLimiter(LOGIN_PER_MINUTE)
        self.by_name = RateLimiter(LOGIN_PER_MINUTE)
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/board", self.show), web.get("/board/login", self.login_form),
                web.post("/board/login", self.login), web.post("/board/logout", self.logout),
                web.post("/board/incidents/{id}/{action}", self.act), web.get("/board/style.css", self.style),
                web.post("/board/maintenance", self.add_window),
                web.post("/board/maintenance/{wid}/remove", self.remove_window),
                web.get("/board/events", self.events), web.get("/board/live.js", self.script)]

    # ------------------------------------------------------------ live updates (server-sent events)

    async def script(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=LIVE_JS.read_bytes(), content_type="text/javascript", charset="utf-8",
                            headers={"Cache-Control": "public, max-age=3600"})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``event: changed`` whenever the store changes (the page then reloads itself), a comment every
        15 s to keep proxies from closing the stream; ends with the session or the server."""
        s = self._session(request)
        if s is None:
            raise web.HTTPUnauthorized()
        if self._streams >= MAX_STREAMS:
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "10"})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        self._streams += 1
        try:
            await resp.prepare(request)
            last, quiet = self.incidents().revision(), 0.0
            await resp.write(b"retry: 3000\n\n")
            # the page says which revision it shows: a change made before this stream opened (a slow
            # browser, a reconnect) is news too, not only those made while it is open
            since = request.query.get("since", "")[:64]
            if since and since != _token(last):
                await resp.write(b"event: changed\ndata: 1\n\n")
            while not self._closing.is_set() and self.clock.monotonic() < s.expires:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), LIVE_EVERY)
                sig = self.incidents().revision()
                quiet += LIVE_EVERY
                if sig != last:
                    last, quiet = sig, 0.0
                    await resp.write(b"event: changed\ndata: 1\n\n")
                elif quiet >= 15.0:
                    quiet = 0.0
                    await resp.write(b": still here\n\n")
        except (ConnectionResetError, MonitorError):
            pass  # the browser went away, or the store is busy: the page reconnects (retry: 3000)
        finally:
            self._streams -= 1
        return resp

    async def shutdown(self, app: web.Application) -> None:
        """Ends the live streams, so that stopping the API does not wait for them."""
        self._closing.set()

    async def style(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=CSS.read_bytes(), content_type="text/css", charset="utf-8",
                            headers={"Cache-Control": "public, max-age=3600"})

    # ------------------------------------------------------------ plumbing

    def _page(self, request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
        lang = i18n.negotiate(request.query.get("lang"), request.headers.get("Accept-Language", ""))
        body = self.env.get_template(template).render(lang=lang, w=i18n.BOARD[lang], **ctx)
        return _headers(web.Response(text=body, status=status, content_type="text/html"))

    def _session(self, request: web.Request) -> Session | None:
        token = request.cookies.get(COOKIE, "")
        s = self.sessions.get(token)
        if s is None:
            return None
        if self.clock.monotonic() >= s.expires:
            del self.sessions[token]
            return None
        return s

    def _audit(self, request: web.Request, user: User, action: str, target: str, detail: str) -> None:
        line = {"ts": self.clock.now(), "user": user.name, "role": user.role, "action": action, "target": target,
                "detail": detail, "client": request.remote or ""}
        with self.audit_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
        event(log, logging.INFO, "staff action", user=user.name, action=action, target=target, via="board")

    # ------------------------------------------------------------ login

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        token = secrets.token_urlsafe(24)
        resp = self._page(request, "board_login.html.j2", csrf=token, error="")
        _cookie(request, resp, LOGIN_COOKIE, token, 600)
        return resp

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        name, password, csrf = (str(form.get(k, ""))[:200] for k in ("user", "password", "csrf"))
        if not csrf or not hmac.compare_digest(csrf, request.cookies.get(LOGIN_COOKIE, "")):
            return self._page(request, "board_login.html.j2", 403, csrf="", error="forbidden")
        now = self.clock.monotonic()
        address = client_key(request.remote, None, False)
        # only failed logins spend the budget: behind a proxy every member of staff has its address
        if self.by_address.blocked(address, now) or self.by_name.blocked(name.lower(), now):
            event(log, logging.WARNING, "board logins throttled", user=name[:40], client=address)
            return self._page(request, "board_login.html.j2", 429, csrf=csrf, error="throttled")
        try:
            users = load_users(self.users_path)
        except ConfigError as exc:
            event(log, logging.ERROR, "board: users file unreadable", error=exc)
            users = {}
        users = with_config(users, self.inventory.api.users if self.inventory.api is not None else ())
        user = users.get(name)
        if not await asyncio.to_thread(check_password, user, password) or user is None:
            self.by_address.spend(address, now)
            self.by_name.spend(name.lower(), now)
            event(log, logging.WARNING, "board login failed", user=name[:40], client=address)
            return self._page(request, "board_login.html.j2", 401, csrf=csrf, error="bad_login")
        if len(self.sessions) >= MAX_SESSIONS:
            self._expire()
        token = secrets.token_urlsafe(32)
        self.sessions[token] = Session(user, secrets.token_urlsafe(24), now + SESSION_TTL)
        self._audit(request, user, "login", "", "")
        resp = _redirect("/board")
        _cookie(request, resp, COOKIE, token, int(SESSION_TTL))
        resp.del_cookie(LOGIN_COOKIE, path="/board")
        return resp

    def _expire(self) -> None:
        now = self.clock.monotonic()
        for token in [t for t, s in self.sessions.items() if s.expires <= now][:MAX_SESSIONS]:
            del self.sessions[token]
        while len(self.sessions) >= MAX_SESSIONS:  # still full: the oldest go
            del self.sessions[next(iter(self.sessions))]

    async def logout(self, request: web.Request) -> web.StreamResponse:
        s = self._session(request)
        form = await request.post()
        if s is not None and hmac.compare_digest(str(form.get("csrf", "")), s.csrf):
            self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        resp = _redirect("/board/login")
        resp.del_cookie(COOKIE, path="/board")
        return resp

    # ------------------------------------------------------------ the board

    async def show(self, request: web.Request, message: str = "", status: int = 200) -> web.Response:
        s = self._session(request)
        if s is None:
            return _redirect("/board/login")
        api = self.incidents()
        rev = _token(api.revision())  # before the rows: a change in between makes the page reload, not vanish
        rows = api.incidents()
        etas = api.etas()
        now = self.clock.now()
        inv = self.inventory
        incidents = []
        touched = []
        for r in rows:
            t = inv.targets.get(r.root)
            muni = inv.municipalities[t.municipality].name if t and t.municipality in inv.municipalities else "-"
            eta = etas.get(r.id)
            last = next((e for e in reversed(api.events(r.id)) if e["event"] in ("opened", "updated")),
                        None)
            nodes, eps = (last["affected_nodes"], last["affected_endpoints"]) if last else ([], [])
            touched.append((r.kind, [r.root, *nodes, *eps]))
            incidents.append({"row": r, "municipality": muni, "age": _age(now - r.opened_at),
                              "eta": time.strftime("%Y-%m-%d %H:%M", time.gmtime(eta)) if eta else "",
                              "tree": down_tree(inv, r.root, nodes, eps)})
        lang = i18n.negotiate(request.query.get("lang"), request.headers.get("Accept-Language", ""))
        site_map = svg(inv, site_severity(inv, touched), i18n.BOARD[lang]["map"])
        windows = [w for w in api.windows() if w.end > now]
        return self._page(request, "board.html.j2", status, user=s.user, csrf=s.csrf, incidents=incidents, rev=rev,
                          windows=windows, message=message, may_act=s.user.may("operator"), site_map=site_map,
                          when=lambda ts: time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)))

    async def act(self, request: web.Request) -> web.StreamResponse:
        action, inc = request.match_info["action"], request.match_info["id"]
        if action not in ACTIONS:
            raise web.HTTPNotFound()
        got = await self._operator(request, action, inc)
        if isinstance(got, web.Response):
            return got
        s, form = got
        text = str(form.get("text", ""))[:2000]
        by, now, api = s.user.name, self.clock.now(), self.incidents()
        try:
            if action == "ack":
                api.ack(inc, by, text, now=now)
            elif action == "note":
                if not text.strip():
                    raise ConfigError("a note needs text")
                api.note(inc, by, text, now=now)
            elif action == "eta":
                api.eta(inc, by, _when(text), now=now)
            else:
                api.resolve(inc, by, text, now=now)
        except (NotFound, ConfigError) as exc:
            return await self.show(request, str(exc)[:200], 404 if isinstance(exc, NotFound) else 409)
        self._audit(request, s.user, action, inc, text)
        return _redirect("/board")

    async def _operator(self, request: web.Request, what: str, target: str) -> tuple[Session, Any] | web.Response:
        """The session and the form of an operator's POST, or the answer that refuses it."""
        s = self._session(request)
        if s is None:
            return _redirect("/board/login")
        form = await request.post()
        if not hmac.compare_digest(str(form.get("csrf", "")), s.csrf):
            return await self.show(request, "forbidden", 403)
        if not s.user.may("operator"):
            self._audit(request, s.user, f"{what} refused (role)", target, "")
            return await self.show(request, "forbidden", 403)
        return s, form

    async def add_window(self, request: web.Request) -> web.StreamResponse:
        got = await self._operator(request, "maintenance add", "")
        if isinstance(got, web.Response):
            return got
        s, form = got
        node, reason = str(form.get("node", ""))[:100].strip(), str(form.get("reason", ""))[:500]
        api = self.incidents()
        try:
            start, end = _when(str(form.get("start", ""))), _when(str(form.get("end", "")))
            wid = api.add_window(node, start, end, reason, s.user.name, now=self.clock.now())
        except ConfigError as exc:
            return await self.show(request, str(exc)[:200], 400)
        self._audit(request, s.user, "maintenance add", f"MW-{wid}", f"{node} {form.get('start')} {form.get('end')}")
        return _redirect("/board")

    async def remove_window(self, request: web.Request) -> web.StreamResponse:
        wid = request.match_info["wid"]
        got = await self._operator(request, "maintenance remove", f"MW-{wid}")
        if isinstance(got, web.Response):
            return got
        s, _ = got
        try:
            self.incidents().remove_window(_window_id(wid), now=self.clock.now())
        except NotFound as exc:
            return await self.show(request, str(exc)[:200], 404)
        self._audit(request, s.user, "maintenance remove", f"MW-{wid}", "")
        return _redirect("/board")



def _window_id(text: str) -> int:
    """A window id from the URL; -1 (no such window) for anything but ASCII digits: str.isdigit() also
    takes '²' or '٣', which int() refuses or reads as another number."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else -1

def _when(text: str) -> float:
    try:
        at = parse_ts(text.strip())
    except ValueError:
        raise ConfigError(f"estimate {text[:40]!r}: expected ISO-8601 like 2026-11-24T15:00-05:00") from None
    if not math.isfinite(at):
        raise ConfigError("estimate: expected a finite time")
    return at


def _age(seconds: float) -> str:
    m = int(max(0.0, seconds) // 60)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min"


def _redirect(location: str) -> web.Response:
    return _headers(web.Response(status=303, headers={"Location": location}))


def _headers(resp: web.Response) -> web.Response:
    resp.headers["Content-Security-Policy"] = BOARD_CSP
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


def _cookie(request: web.Request, resp: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    https = request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"
    resp.set_cookie(name, value, max_age=max_age, path="/board", httponly=True, samesite="Strict", secure=https)
