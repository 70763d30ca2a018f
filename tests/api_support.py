"""Shared by the API tests: the delivery fixture's config with an ``api:`` section, and its secrets;
the server on a free loopback port over a real store with one open incident (:func:`make_env`)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from monitor.api.server import ApiServer
from monitor.clock import ManualClock
from monitor.correlate.store import IncidentStore
from monitor.delivery.service import DeliveryService
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from tests.delivery_support import SECRETS, T0, delivery_with, ev, ids, write_config
from tests.servers.common import free_port

TOKEN = "api-t0ken-0123456789abcdef"
LINK_KEY = "link-k3y-fedcba9876543210"
ENV = {**SECRETS, "API_TOKEN": TOKEN, "LINK_KEY": LINK_KEY}


def api_section(**over: Any) -> dict[str, Any]:
    """A valid ``api:`` section (listen on a port the caller picks); ``None`` values remove a key."""
    d: dict[str, Any] = {"listen": "127.0.0.1:9109", "token": {"env": "API_TOKEN"},
                         "public_url": "https://noc.isp.example/monitor", "link_key": {"env": "LINK_KEY"}}
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def load_with_api(root: Path, api: object, n: int = 4, delivery: dict[str, Any] | None = None) -> Inventory:
    """The delivery tests' tower with ``n`` customers, plus ``api:`` as given."""
    path = write_config(root, n, delivery)
    doc = yaml.safe_load(path.read_text())
    doc["api"] = api
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return load_inventory(path, env=ENV)


PUBLIC = "https://noc.isp.example/monitor"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Env:
    server: ApiServer
    delivery: DeliveryService
    clock: ManualClock
    db: Path
    base: str
    http: aiohttp.ClientSession

    def store(self) -> IncidentStore:
        return IncidentStore(self.db)

    def rows(self, action: str) -> list[dict[str, Any]]:
        return [r for r in self.delivery.outbox.rows() if r["action"] == action]

    def link(self, action: str = "tech_alert", recipient: str = "") -> str:
        """The ack link in a technician email as rendered into the outbox, aimed at this server (what
        the reverse proxy at public_url does)."""
        row = next(r for r in self.rows(action) if r["channel"] == "email" and recipient in r["recipient"])
        payload = row["payload"] if isinstance(row["payload"], dict) else json.loads(row["payload"])
        m = re.search(re.escape(PUBLIC) + r"(/ack/\S+)", payload["body"])
        assert m is not None, payload["body"]
        return self.base + m.group(1)


async def make_env(tmp_path: Path, opened_at: float = T0, *, desk: dict[str, Any] | None = None,
                   **api: Any) -> AsyncIterator[Env]:
    """``desk``: the delivery config's ``desk:`` section (None: no service desk)."""
    port = free_port()
    tmp_path.mkdir(exist_ok=True)
    inv = load_with_api(tmp_path, api_section(listen=f"127.0.0.1:{port}", **{"public_url": PUBLIC, **api}), 4,
                        delivery_with(smtp=None, maildir={"path": "mail"}, mqtt=None, desk=desk))
    assert inv.delivery is not None
    db = tmp_path / "monitor.db"
    clock = ManualClock(opened_at)
    svc = DeliveryService(inv, db, inv.delivery, clock)
    opened = ev("opened", opened_at, ids(4))
    store = IncidentStore(db)
    store.save([opened], {}, set(), [])
    store.close()
    svc.enqueue([opened])
    server = ApiServer.for_inventory(inv, db, clock)
    assert server is not None
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Env(server, svc, clock, db, f"http://127.0.0.1:{port}", http)
    finally:
        await server.stop()
        await svc.close()




def acked_by(env: Env, inc: str = "INC-000001") -> str | None:
    store = env.store()
    try:
        return store.incident(inc).acked_by
    finally:
        store.close()
