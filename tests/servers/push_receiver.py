"""A real local HTTP receiver for Apprise's push services (ntfy, Gotify, generic JSON) on loopback.

Any method and path is accepted and recorded (path, headers, JSON body). ``script`` says how the
next requests are answered, one entry each: an HTTP status, or "hang" (no answer until the
receiver stops: the sender's timeout is what ends it); once it is used up every request gets 200.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.servers.common import free_port


@dataclass
class Push:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def doc(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class PushReceiver:
    port: int = field(default_factory=free_port)
    script: list[int | str] = field(default_factory=list)
    received: list[Push] = field(default_factory=list)  # answered 2xx
    refused: int = 0  # answered otherwise, or left hanging
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def base(self, scheme: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        step = self.script.pop(0) if self.script else 200
        if step == "hang":
            self.refused += 1
            await self._release.wait()
            return web.Response(status=504)
        assert isinstance(step, int)
        if step >= 300:
            self.refused += 1
            return web.Response(status=step)
        self.received.append(Push(request.method, request.path, dict(request.headers), body))
        return web.json_response({"id": len(self.received)}, status=step)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
