"""A webhook receiver that accepts and then answers without end (a broken gateway, or a hostile one
streaming a body forever): the status is what counts, the body is read only up to a bound, so the
notice is delivered once instead of timing out, being retried and sent again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from monitor.delivery.config import WebhookSettings
from monitor.notify.webhook import WebhookPoster
from tests.servers.common import free_port


@pytest.fixture
async def endless() -> AsyncIterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        received.append(await request.read())
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        chunk = b"x" * 65536
        while True:  # 200 at once, then a body that never ends
            await resp.write(chunk)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


async def test_an_endless_answer_after_200_is_a_delivery(endless: tuple[str, list[bytes]]) -> None:
    url, received = endless
    poster = WebhookPoster(WebhookSettings(url=url, timeout=15.0))
    try:
        t0 = time.monotonic()
        assert await asyncio.wait_for(poster.post({"text": "hola"}, "k1"), 30) == 200
        # not the 15 s timeout: the body was not read to its end (the margin is for a loaded machine)
        assert time.monotonic() - t0 < 7.5
    finally:
        await poster.close()
    assert len(received) == 1
