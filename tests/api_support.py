"""Shared by the API tests: the delivery fixture's config with an ``api:`` section, and its secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from tests.delivery_support import SECRETS, write_config

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
