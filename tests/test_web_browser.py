"""The status page in a real headless Chromium, before, during and after a scripted outage: the text of
the rendered document and the pixels of a phone-sized screenshot, all under the page's script-less CSP.

The server runs the daemon's code (``StatusServer.serve``) on the system clock; the outage is written
into the store by the daemon's EventStore and correlation service, and must be on the page within 5 s."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp

from monitor.clock import SystemClock
from monitor.web.server import StatusServer
from tests import png
from tests.cdp import Browser
from tests.test_report_cli import chromium
from tests.test_web import serve
from tests.test_web_lookup import unaffected
from tests.web_support import DAY, Network, example

GREEN, RED, GREY = (0x2E, 0x7D, 0x32), (0xC6, 0x28, 0x28), (0xBD, 0xBD, 0xBD)


async def look(url: str, tmp: Path, name: str) -> tuple[str, dict[tuple[int, int, int], int]]:
    """The rendered DOM and the colours of a 412x1400 screenshot (a phone held upright)."""
    dom = (await asyncio.to_thread(chromium, ["--dump-dom", url], tmp)).stdout.decode()
    shot = tmp / f"{name}.png"
    await asyncio.to_thread(chromium, [f"--screenshot={shot}", "--window-size=412,1400", "--hide-scrollbars", url],
                            tmp)
    width, height, rows = png.decode(shot.read_bytes())
    assert (width, height) == (412, 1400)
    return dom, png.colours(rows, len(rows[0]) // width)


async def shows(http: aiohttp.ClientSession, url: str, text: str, within: float) -> float:
    """Seconds until ``text`` is on the page (fails after ``within``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        async with http.get(url) as r:
            if text in await r.text():
                return time.monotonic() - t0
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} not on {url} within {within} s")


async def test_status_page_before_during_and_after_an_outage_in_chromium(tmp_path: Path) -> None:
    inv = example()
    assert inv.status_page is not None
    db = tmp_path / "monitor.db"
    now = time.time()
    net = Network(db, inv, now - 20 * DAY)
    server = StatusServer(inv.status_page, db, inv, SystemClock())
    await server.start()
    task = asyncio.create_task(server.serve())
    url = f"http://{inv.status_page.listen}/?lang=es"
    try:
        await asyncio.wait_for(server.bars_ready.wait(), 30)
        dom, colours = await look(url, tmp_path, "before")
        assert "Todo funciona con normalidad." in dom and "Incidentes en curso" in dom
        assert "No hay incidentes en curso." in dom and "Disponibilidad de los últimos 90 días" in dom
        assert colours.get(GREEN, 0) > 5000, "the green banner and bars"
        assert colours.get(RED, 0) == 0

        async with aiohttp.ClientSession() as http:
            net.down("ap-centro-1", time.time() - 400)
            seconds = await shows(http, url, "Corte de servicio", 5.0)
            dom, colours = await look(url, tmp_path, "during")
            assert "Corte de servicio" in dom and "Arauca (Torre Centro)" in dom and "Aún sin estimación" in dom
            assert "Todo funciona con normalidad." not in dom
            assert colours.get(RED, 0) > 5000, "the red banner and the incident's border"

            net.up("ap-centro-1", time.time() - 60)
            await shows(http, url, "Resueltos en las últimas 24 horas", 5.0)
        dom, colours = await look(url, tmp_path, "after")
        assert "Todo funciona con normalidad." in dom and "Servicio restablecido" not in dom
        assert "Resueltos en las últimas 24 horas" in dom and "Restablecido" in dom
        assert colours.get(GREEN, 0) > 5000

        # Without JavaScript: the page has none, and its CSP (default-src 'none', no script-src) would
        # block any in the browser; everything above was rendered under that policy.
        english = (await asyncio.to_thread(chromium, ["--dump-dom", url.replace("lang=es", "lang=en")],
                                           tmp_path)).stdout.decode()
        assert "Everything is working normally." in english and "<script" not in english
        assert 'action="/lookup?lang=en"' in english  # the lookup is a plain form
    finally:
        net.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert seconds < 5.0


async def test_lookup_in_a_real_browser_affected_and_unaffected(tmp_path: Path) -> None:
    """The form on the status page filled and sent in Chromium (DevTools), for an affected customer
    and for one without problems."""
    async for site in serve(tmp_path, example()):
        async with Browser(tmp_path / "chromium") as chrome:
            await chrome.open(f"{site.base}/?lang=es")
            text = await chrome.submit("form.lookup", {"number": "C-0001", "digits": "0101"})
            assert "Su servicio está afectado por un problema conocido." in text and "Corte de servicio" in text
            await chrome.open(f"{site.base}/?lang=en")
            number, digits = unaffected(site.inv)
            text = await chrome.submit("form.lookup", {"number": number, "digits": digits})
            assert "There is no known problem in your area." in text and "607 885 0000" in text
