"""Rendered pages kept ready, so a crowd refreshing during an outage costs a dictionary lookup.

The snapshot is rebuilt when the store's signature changes (checked every ``refresh / 2`` seconds),
at most once per ``refresh`` seconds, and at least once a minute (maintenance starts, "updated at").
A page is rendered on its first request after a rebuild and then served as the same bytes, with an
ETag, to everyone asking for the same (page, language, format). The availability bars are
recomputed in a worker thread every ``BARS_EVERY`` seconds: they are about whole days.
"""

from __future__ import annotations

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

    def get(self, page: Page, lang: str, fmt: str) -> Rendered:
        key = (page, lang, fmt)
        hit = self._pages.get(key)
        if hit is not None and hit[0] == self.version:
            return hit[1]
        make: Callable[..., str] = {"html": self.renderer.html, "atom": self.renderer.atom,
                                    "json": self.renderer.json}[fmt]
        body = make(self.inventory, self.snapshot, self.bars, page, lang).encode()
        rendered = Rendered(body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')
        self._pages[key] = (self.version, rendered)
        self.renders += 1
        return rendered
