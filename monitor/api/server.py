"""The daemon's HTTP API (aiohttp): incidents as JSON for glue, staff actions, one-click ack links.

``/api/v1/...`` needs ``Authorization: Bearer <api.token>``; ``/ack/...`` is authorised by the
link's own signature instead (see :mod:`monitor.api.pages`). Every action goes through
:class:`monitor.correlate.staff.Staff`, the same code as ``monitor incidents``, so the planner's
escalation, desk comments and customer updates follow exactly as after the CLI. Meant to listen on
loopback behind a TLS reverse proxy. The access log is off and nothing here logs the token or a link's signature:
both would otherwise land in journald with every request.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from monitor.api import inputs
from monitor.api.config import ApiSettings
from monitor.api.inputs import Problem
from monitor.api.links import AckLinks
from monitor.api.listen import listen
from monitor.api.pages import AckPages
from monitor.clock import Clock
from monitor.correlate.staff import Conflict, Staff
from monitor.correlate.store import NotFound
from monitor.correlate.topology import Topology
from monitor.db import Where
from monitor.errors import ConfigError, MonitorError
from monitor.inventory.model import Inventory
from monitor.logs import event
from monitor.web.board import Board

log = logging.getLogger("monitor.api")

MAX_BODY = 64 * 1024  # bytes of a request body; aiohttp answers 413 beyond, before reading it
_HTTP_ERRORS = {404: "no such path", 405: "method not allowed", 413: f"the body is over {MAX_BODY} bytes"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiServer:
    """Serves one :class:`ApiSettings` on the store at ``db_path``; ``serve()`` is a daemon task."""

    def __init__(self, settings: ApiSettings, db_path: Where, clock: Clock,
                 languages: dict[str, str] | None = None, topology: Topology | None = None) -> None:
        """``topology``: the inventory's, for the staff actions that need it (a maintenance window
        covers the customers below its node); without it those actions check nothing against it."""
        if settings.token is None:
            raise ConfigError("api: no token (the loader requires one when the API listens)")
        self.settings = settings
        self.db_path = db_path
        self.clock = clock
        self.topology = topology
        self._token = settings.token
        self.links = AckLinks.from_settings(settings)
        self.pages = AckPages(self, languages or {})
        self.api: Staff | None = None
        self.board: Board | None = None  # the staff board on /board (monitor.web.board)
        self._runner: web.AppRunner | None = None

    @classmethod
    def for_inventory(cls, inv: Inventory, db_path: Where, clock: Clock) -> ApiServer | None:
        """The server the inventory asks for; None without ``api:`` or with ``listen: ''``."""
        if inv.api is None or not inv.api.listen:
            return None
        techs = inv.delivery.technicians.values() if inv.delivery is not None else ()
        server = cls(inv.api, db_path, clock, {t.id: t.language for t in techs}, Topology.from_inventory(inv))
        state_dir = db_path.parent if isinstance(db_path, Path) else Path(inv.daemon.state_dir)  # (board users)
        server.board = Board(lambda: server.incidents, state_dir, inv, clock)
        return server

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the store and bind; a port in use is a :class:`MonitorError` naming the address."""
        self.api = Staff.open(self.db_path, self.topology)
        app = web.Application(middlewares=[self._errors], client_max_size=MAX_BODY)
        app.add_routes([
            web.get("/api/v1/incidents", self._list),
            web.get("/api/v1/incidents/{id}", self._show),
            web.post("/api/v1/incidents/{id}/ack", self._ack),
            web.post("/api/v1/incidents/{id}/note", self._note),
            web.post("/api/v1/incidents/{id}/eta", self._eta),
            web.get("/ack/{id}", self.pages.confirm),
            web.post("/ack/{id}", self.pages.acknowledge),
            *(self.board.routes() if self.board is not None else ()),
        ])
        if self.board is not None:
            app.on_shutdown.append(self.board.shutdown)  # live streams end before the runner waits
        try:
            self._runner = await listen(app, self.settings.listen, "the API")
        except MonitorError:
            self.api.close()
            self.api = None
            raise
        event(log, logging.INFO, "API listening", listen=self.settings.listen, links=self.links is not None)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.api is not None:
            self.api.close()
            self.api = None

    async def serve(self) -> None:
        """Answer until cancelled (the daemon's TaskGroup task); ``start()`` must have succeeded."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # ------------------------------------------------------------ plumbing

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Bearer auth for /api/, and the project's errors as JSON answers (pages make their own)."""
        try:
            if request.path.startswith("/api/"):
                self._authorise(request)
            return await handler(request)
        except Problem as exc:
            return _json_error(exc.status, exc.message)
        except NotFound as exc:
            return _json_error(404, str(exc))
        except Conflict as exc:
            return _json_error(409, str(exc))
        except ConfigError as exc:
            return _json_error(400, str(exc))
        except web.HTTPException as exc:  # aiohttp's own 404, 405, 413: as JSON too on /api/
            if not request.path.startswith("/api/") or exc.status < 400:
                raise
            return _json_error(exc.status, _HTTP_ERRORS.get(exc.status, exc.reason.lower()))
        except MonitorError as exc:  # the store failed: say so, keep serving
            event(log, logging.ERROR, "API request failed", path=request.path, error=exc)
            return _json_error(500, "internal error (see the daemon's log)")

    def _authorise(self, request: web.Request) -> None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # aiohttp decodes header bytes as UTF-8 with surrogateescape: encode them back the same way
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(errors="surrogateescape"),
                                                                 self._token.reveal().encode()):
            raise Problem(401, "missing or wrong bearer token")

    @property
    def incidents(self) -> Staff:
        assert self.api is not None, "not started"
        return self.api

    # ------------------------------------------------------------ /api/v1

    async def _list(self, request: web.Request) -> web.Response:
        status = inputs.query(request, ("status",)).get("status", "open")
        if status not in ("open", "all"):
            raise Problem(400, f"status: bad value {status[:20]!r} (expected open or all)")
        return web.json_response(self.incidents.incidents_json(all_=status == "all"))

    async def _show(self, request: web.Request) -> web.Response:
        inputs.query(request, ())
        return web.json_response(self.incidents.show_json(inputs.incident_id(request)))

    async def _ack(self, request: web.Request) -> web.Response:
        inc, _ = inputs.incident_id(request), inputs.query(request, ())
        body = await inputs.body(request, ("by", "note"))
        by, note = inputs.name(body), inputs.text(body, "note", required=False)
        self.incidents.ack(inc, by, note, now=self.clock.now())
        event(log, logging.INFO, "incident acknowledged", incident=inc, by=by, via="api")
        return web.json_response(self.incidents.show_json(inc))

    async def _note(self, request: web.Request) -> web.Response:
        inc, _ = inputs.incident_id(request), inputs.query(request, ())
        body = await inputs.body(request, ("by", "text"))
        self.incidents.note(inc, inputs.name(body), inputs.text(body, "text", required=True), now=self.clock.now())
        return web.json_response(self.incidents.show_json(inc))

    async def _eta(self, request: web.Request) -> web.Response:
        inc, _ = inputs.incident_id(request), inputs.query(request, ())
        body = await inputs.body(request, ("by", "at", "clear"))
        by = inputs.name(body)
        if body.get("clear") is True and "at" not in body:
            self.incidents.clear_eta(inc, by, now=self.clock.now())
        elif "at" in body and "clear" not in body:
            self.incidents.eta(inc, by, inputs.when(body["at"]), now=self.clock.now())
        else:
            raise Problem(400, 'expected {"at": ISO-8601 or epoch seconds} or {"clear": true}')
        return web.json_response(self.incidents.show_json(inc))


def _json_error(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="monitor"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)
