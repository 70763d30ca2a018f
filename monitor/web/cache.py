"""Rendered pages kept ready, so a crowd refreshing during an outage costs a dictionary lookup.

The snapshot is rebuilt when the store's signature changes (checked every ``refresh / 2`` seconds),
at most once per ``refresh`` seconds, and at least once a minute (maintenance starts, "updated at").
A page is rendered on its first request after a rebuild — in a worker thread, once however many ask
at the same moment, so the daemon's event loop (which also runs the polls) is never held for the
tens of milliseconds a big page takes — and then served as the same bytes, with an ETag, to
everyone asking for the same (page, language, format). The availability bars are
recomputed in a worker thread every ``BARS_EVERY`` seconds: they are about whole days.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from monitor.inventory.model import Inventory
from monitor.web.availability import Bars
from monitor.web.render import Page, Renderer
from monitor.web.snapshot import Snapshot

BARS_EVERY = 600.0
MAX_AGE = 60.0  # a snapshot is rebuilt this often even when nothing changed
FORMATS = ("html", "atom", "json")


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    etag: str


@dataclass
class PageCache:
    renderer: Renderer
    inventory: Inventory
    snapshot: Snapshot
    bars: dict[str, Bars] = field(default_factory=dict)
    version: int = 0
    renders: int = 0  # how many pages were rendered (tests and the bench check the cache works)
    _pages: dict[tuple[Page, str, str], tuple[int, Rendered]] = field(default_factory=dict)
    _locks: dict[tuple[Page, str, str], asyncio.Lock] = field(default_factory=dict)

    def update(self, *, snapshot: Snapshot | None = None, bars: dict[str, Bars] | None = None,
               inventory: Inventory | None = None) -> None:
        """New data: every cached page is stale from now on (rendered again on its next request)."""
        if snapshot is not None:
            self.snapshot = snapshot
        if bars is not None:
            self.bars = bars
        if inventory is not None:
            self.inventory = inventory
        self.version += 1

    async def get(self, page: Page, lang: str, fmt: str) -> Rendered:
        key = (page, lang, fmt)
        hit = self._pages.get(key)
        if hit is not None and hit[0] == self.version:
            return hit[1]
        async with self._locks.setdefault(key, asyncio.Lock()):
            hit = self._pages.get(key)
            if hit is not None and hit[0] == self.version:
                return hit[1]  # rendered by the request we waited for
            version = self.version
            make: Callable[..., str] = {"html": self.renderer.html, "atom": self.renderer.atom,
                                        "json": self.renderer.json}[fmt]
            body = (await asyncio.to_thread(make, self.inventory, self.snapshot, self.bars, page, lang)).encode()
            rendered = Rendered(body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')
            self._pages[key] = (version, rendered)
            self.renders += 1
            return rendered
