"""A small Chrome DevTools Protocol client for the browser tests: a real headless Chromium (Debian's),
driven over its debugging WebSocket to fill and submit forms as a person would — no downloads, no
Selenium. Only loopback: the browser is started with networking features that call home turned off."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from tests.servers.common import require_binary


class Browser:
    def __init__(self, profile: Path, *, scripts: bool = True) -> None:
        self.profile = profile
        self.scripts = scripts  # False: the page's own scripts never run (a browser with JavaScript off)
        self.proc: subprocess.Popen[bytes] | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    async def __aenter__(self) -> Browser:
        self.profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [require_binary("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-quic", f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             "--window-size=412,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = self.profile / "DevToolsActivePort"
        for _ in range(300):
            if active.exists() and len(active.read_text().split()) >= 2:
                break
            await asyncio.sleep(0.1)
        port = active.read_text().split()[0]
        self.http = aiohttp.ClientSession()
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
            page = next(t for t in await r.json() if t["type"] == "page")
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=64 << 20)
        await self.call("Page.enable")
        if not self.scripts:
            await self.call("Emulation.setScriptExecutionDisabled", value=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        mid = next(self._ids)
        await self.ws.send_json({"id": mid, "method": method, "params": params})
        while True:
            msg = json.loads((await asyncio.wait_for(self.ws.receive(), 30)).data)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            self._events.append(msg)

    async def loaded(self) -> None:
        """Wait for the next page load to finish."""
        assert self.ws is not None
        while True:
            if any(e.get("method") == "Page.loadEventFired" for e in self._events):
                self._events.clear()
                return
            msg = json.loads((await asyncio.wait_for(self.ws.receive(), 30)).data)
            self._events.append(msg)

    async def open(self, url: str) -> str:
        self._events.clear()
        await self.call("Page.navigate", url=url)
        await self.loaded()
        return await self.text()

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def text(self) -> str:
        return str(await self.evaluate("document.body.innerText"))

    async def submit(self, form: str, fields: dict[str, str]) -> str:
        """Type ``fields`` (by element id) into the page and submit ``form`` (a CSS selector), as a click
        on its button does; returns the text of the page that answers."""
        self._events.clear()
        fill = "".join(f"document.getElementById({json.dumps(k)}).value = {json.dumps(v)};" for k, v in fields.items())
        await self.evaluate(fill + f"document.querySelector({json.dumps(form)}).querySelector('button').click();")
        await self.loaded()
        return await self.text()

    async def _node(self, selector: str) -> int:
        doc = await self.call("DOM.getDocument")
        found = await self.call("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector=selector)
        if not found.get("nodeId"):
            raise AssertionError(f"nothing matches {selector!r}")
        return int(found["nodeId"])

    async def type(self, selector: str, text: str) -> None:
        """Focus the field and type into it through the input pipeline (no script of ours or the page's)."""
        await self.call("DOM.focus", nodeId=await self._node(selector))
        await self.call("Input.insertText", text=text)

    async def click(self, selector: str) -> str:
        """A mouse click in the middle of the element; returns the text of the page that loads."""
        node = await self._node(selector)
        await self.call("DOM.scrollIntoViewIfNeeded", nodeId=node)
        quad = (await self.call("DOM.getBoxModel", nodeId=node))["model"]["content"]
        x, y = (quad[0] + quad[4]) / 2, (quad[1] + quad[5]) / 2
        self._events.clear()
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        await self.loaded()
        return await self.text()
