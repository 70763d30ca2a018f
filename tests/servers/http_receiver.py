"""A real local HTTP receiver (aiohttp, in the test's event loop) for webhook deliveries.

It records every request, checks the HMAC signature with the shared secret, keeps one entry per
``Idempotency-Key`` (what a careful receiver does), and can be told to fail the next N requests with
a status (503 to test retries, 400 to test permanent failures).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from monitor.notify.webhook import SIGNATURE, TIMESTAMP, verify
from tests.servers.common import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signed_ok: bool

    @property
    def doc(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class HttpReceiver:
    secret: bytes
    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 503
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ts = request.headers.get(TIMESTAMP, "")
        ok = verify(self.secret, ts, body, request.headers.get(SIGNATURE, ""))
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=self.fail_status)
        self.requests.append(Received(dict(request.headers), body, ok))
        return web.Response(status=202 if ok else 401)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def unique(self) -> dict[str, Received]:
        out: dict[str, Received] = {}
        for r in self.requests:
            out.setdefault(r.headers.get("Idempotency-Key", ""), r)
        return out
