"""The public status page's HTTP server (aiohttp), on its own listener apart from the staff API.

Routes (``{m}`` is a municipality id of the inventory):

``/``, ``/m/{m}``                       the page (HTML, no script)
``/feed.atom``, ``/m/{m}/feed.atom``    Atom feed of incidents and maintenance
``/status.json``, ``/m/{m}/status.json`` JSON summary for embedding
``GET|POST /lookup``                    the customer lookup (form; answers are never cached)
``/static/status.css``                  the style sheet

Why a separate listener: this page is for everyone on the internet (through a reverse proxy and a
CDN if the ISP likes), the API is for staff; different exposure, different limits, and a crowd
here never queues in front of a technician's acknowledgement. Pages come from :class:`PageCache`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from monitor.api.listen import listen
from monitor.clock import Clock
from monitor.db import Where
from monitor.errors import MonitorError
from monitor.inventory.model import Inventory
from monitor.logs import event
from monitor.web import i18n
from monitor.web.availability import COMPANY, Bars, read_bars
from monitor.web.cache import BARS_EVERY, MAX_AGE, PageCache
from monitor.web.config import StatusPageSettings
from monitor.web.lookup import Answer, CustomerIndex, RateLimiter, client_key
from monitor.web.render import Page, Renderer
from monitor.web.snapshot import build
from monitor.web.source import StatusSource

log = logging.getLogger("monitor.web")

MAX_BODY = 4096  # a lookup form is two short fields
LOOKUP_FLOOR = 0.25  # seconds every lookup answer takes at least: its timing tells nothing
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
CSS = Path(__file__).parent / "static" / "status.css"
BARS_SOON = 60.0  # seconds: how soon the bars are looked at again while nothing has been measured
EMPTY = Bars((), None)
_TYPES = {"html": "text/html", "atom": "application/atom+xml", "json": "application/json"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusServer:
    """Serves the status page for one inventory; ``start()`` binds, ``serve()`` is the daemon's task."""

    def __init__(self, settings: StatusPageSettings, db_path: Where, inventory: Inventory, clock: Clock) -> None:
        self.settings = settings
        self.db_path = db_path
        self.clock = clock
        self.renderer = Renderer(settings)
        self.limiter = RateLimiter(settings.lookup_per_minute)
        self.index = CustomerIndex(inventory)
        self.source: StatusSource | None = None
        self.cache: PageCache | None = None
        self.bars_ready = asyncio.Event()
        self._signature: tuple[object, ...] | None = None
        self._built = -1e18  # monotonic time of the last snapshot
        self._inventory = inventory
        self._runner: web.AppRunner | None = None
        self._failing = False
        self._css = CSS.read_bytes()

    @classmethod
    def for_inventory(cls, inv: Inventory, db_path: Where, clock: Clock) -> StatusServer | None:
        """The server the inventory asks for; None without ``status_page:`` or with ``listen: ''``."""
        if inv.status_page is None or not inv.status_page.listen:
            return None
        return cls(inv.status_page, db_path, inv, clock)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Read the store once and bind; a port in use is a :class:`MonitorError` naming the address."""
        self.source = StatusSource(self.db_path)
        rows = self.source.rows()
        self._signature = self.source.signature()
        self._built = self.clock.monotonic()
        self.cache = PageCache(self.renderer, self._inventory, build(self._inventory, rows, self.clock.now()))
        app = web.Application(middlewares=[self._headers], client_max_size=MAX_BODY)
        page_routes = []
        for prefix in ("", "/m/{m}"):
            page_routes += [web.get(f"{prefix}/feed.atom", self._atom), web.get(f"{prefix}/status.json", self._json)]
        app.add_routes([
            web.get("/", self._html), web.get("/m/{m}", self._html), *page_routes,
            web.get("/lookup", self._lookup_form), web.post("/lookup", self._lookup),
            web.get("/static/status.css", self._style),
        ])
        try:
            self._runner = await listen(app, self.settings.listen, "the status page")
        except MonitorError:
            self.source.close()
            self.source = None
            raise
        event(log, logging.INFO, "status page listening", listen=self.settings.listen)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.source is not None:
            self.source.close()
            self.source = None

    async def serve(self) -> None:
        """Keep the pages fresh until cancelled; ``start()`` must have succeeded."""
        next_bars = 0.0
        bars_task: asyncio.Task[None] | None = None
        try:
            while True:
                if (bars_task is None or bars_task.done()) and self.clock.monotonic() >= next_bars:
                    # a new store has no measured day yet: look again soon rather than in 10 minutes
                    empty = self.cache is None or self.cache.bars.get(COMPANY, EMPTY).availability is None
                    next_bars = self.clock.monotonic() + (BARS_SOON if empty else BARS_EVERY)
                    bars_task = asyncio.create_task(self._update_bars())
                await self.refresh()
                await asyncio.sleep(self.settings.refresh / 2)
        finally:
            if bars_task is not None:
                bars_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bars_task
            await self.stop()

    def set_inventory(self, inv: Inventory) -> None:
        """A reloaded config with the same ``status_page:``: new names, areas and customers at once."""
        self._inventory = inv
        self.index = CustomerIndex(inv)
        self._signature = None  # rebuild with the new areas on the next refresh

    async def refresh(self) -> bool:
        """Rebuild the snapshot if the store changed (or it is a minute old), at most every ``refresh`` s.

        The signature is one row, read here; the rows and the snapshot are read and built in a worker
        thread (thousands of open incidents in a mass outage must not hold the daemon's event loop).
        """
        assert self.source is not None and self.cache is not None, "not started"
        mono = self.clock.monotonic()
        if mono - self._built < self.settings.refresh:
            return False
        source, inv = self.source, self._inventory
        try:
            sig = source.signature()
            if sig == self._signature and mono - self._built < MAX_AGE:
                return False
            snapshot = await asyncio.to_thread(lambda: build(inv, source.rows(), self.clock.now()))
        except MonitorError as exc:
            if not self._failing:
                event(log, logging.ERROR, "status page keeps its last data: the store cannot be read", error=exc)
            self._failing = True
            return False
        if self._failing:
            event(log, logging.INFO, "status page reads the store again")
            self._failing = False
        # a reload (set_inventory) while the build ran in its thread: this snapshot has the old
        # names, so the signature stays unknown and the next refresh builds again with the new ones
        self._signature = sig if self._inventory is inv else None
        self._built = mono
        self.cache.update(snapshot=snapshot, inventory=inv)
        return True

    async def _update_bars(self) -> None:
        assert self.cache is not None
        s = self.settings
        try:
            bars = await asyncio.to_thread(read_bars, self.db_path, self._inventory, self.clock.now(),
                                           s.timezone, s.history_days)
        except MonitorError as exc:
            event(log, logging.ERROR, "status page: availability bars not updated", error=exc)
            return
        self.cache.update(bars=bars)
        self.bars_ready.set()

    # ------------------------------------------------------------ plumbing

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            lang = _lang(request)
            resp = web.Response(text=self.renderer.not_found(lang) if exc.status == 404 else exc.reason,
                                status=exc.status, content_type="text/html" if exc.status == 404 else "text/plain")
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    async def _page(self, request: web.Request, fmt: str) -> web.StreamResponse:
        assert self.cache is not None, "not started"
        mid = request.match_info.get("m")
        if mid is not None and mid not in self._inventory.municipalities:
            raise web.HTTPNotFound()
        lang = _lang(request)
        rendered = await self.cache.get(Page(mid), lang, fmt)
        headers = {"ETag": rendered.etag, "Vary": "Accept-Language", "Content-Language": lang,
                   "Cache-Control": "public, max-age=1"}
        if request.headers.get("If-None-Match") == rendered.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=rendered.body, content_type=_TYPES[fmt], charset="utf-8", headers=headers)

    async def _html(self, request: web.Request) -> web.StreamResponse:
        return await self._page(request, "html")

    async def _atom(self, request: web.Request) -> web.StreamResponse:
        return await self._page(request, "atom")

    async def _json(self, request: web.Request) -> web.StreamResponse:
        return await self._page(request, "json")

    async def _style(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._css, content_type="text/css", charset="utf-8",
                            headers={"Cache-Control": "public, max-age=3600"})

    # ------------------------------------------------------------ lookup

    async def _lookup_form(self, request: web.Request) -> web.StreamResponse:
        lang = _lang(request)
        return self._lookup_page(lang, Answer("form"), 200)

    async def _lookup(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        assert self.cache is not None, "not started"
        lang = _lang(request)
        key = client_key(request.remote, request.headers.get("X-Forwarded-For"), self.settings.trust_forwarded)
        if not self.limiter.allow(key, self.clock.monotonic()):
            resp = self._lookup_page(lang, Answer("limited"), 429)
            resp.headers["Retry-After"] = "60"
            return resp
        try:
            form = await request.post()
        except ValueError:  # a body that is not a form
            form = None
        number = form.get("number") if form is not None else None
        digits = form.get("digits", "") if form is not None else None
        if isinstance(number, str) and isinstance(digits, str):
            answer = self.index.answer(number, digits, self.settings.lookup_check, self.cache.snapshot)
        else:
            answer = Answer("bad")
        await asyncio.sleep(max(0.0, LOOKUP_FLOOR - (time.monotonic() - started)))
        return self._lookup_page(lang, answer, 400 if answer.outcome == "bad" else 200)

    def _lookup_page(self, lang: str, answer: Answer, status: int) -> web.Response:
        t = i18n.TEXT[lang]
        message = {
            "form": t["lookup_help"], "affected": t["affected"], "maintenance": t["in_maintenance"],
            "clear": t["clear"], "unverified": t["unverified"], "limited": t["too_many"],
            "bad": t["bad_input"].format(digits=t["bad_digits"] if self.settings.lookup_check == "phone" else ""),
        }[answer.outcome]
        body = self.renderer.lookup(self._inventory, lang, outcome=answer.outcome, message=message, items=answer.items)
        return web.Response(text=body, status=status, content_type="text/html",
                            headers={"Cache-Control": "no-store", "Content-Language": lang})


def _lang(request: web.Request) -> str:
    return i18n.negotiate(request.query.get("lang"), request.headers.get("Accept-Language", ""))
