"""Debian's InfluxDB 1.6.7 (``influxd``) on a free loopback port, in a temp dir, for tests.

The server is restartable on the same data dir and port (the storage test stops it mid-run and
starts it again). Read-back goes through InfluxQL on ``/query``, the only query API 1.6 has.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.servers.common import free_port, require_binary
from tests.servers.restartable import RestartableServer


class InfluxDB1(RestartableServer):
    """One ``influxd`` we started. ``start()``/``stop()`` may be called repeatedly (same dir, same port).

    With ``admin`` = (user, password) the server enforces authentication (``auth-enabled``): the
    first start creates that admin (1.x allows exactly that without credentials) and every query of
    this helper sends it; a writer without the right credentials gets real 401/403 answers.
    """

    def __init__(self, root: Path, admin: tuple[str, str] | None = None) -> None:
        self.admin = admin
        self._admin_created = False
        self.binary = require_binary("influxd")
        self.root = root
        self.port = free_port()
        self.rpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = root / "influxdb.conf"
        self.config.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  auth-enabled = {"true" if admin else "false"}
[continuous_queries]
  enabled = false
"""
        )
        self.name = "influxd"
        self.argv = [self.binary, "run", "-config", str(self.config)]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:
                return int(resp.status) == 204
        except (OSError, urllib.error.URLError):
            return False

    def start(self, timeout: float = 20.0) -> None:
        super().start(timeout)
        if self.admin and not self._admin_created:  # the data dir keeps it across restarts
            user, password = self.admin
            self._post({"q": f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES"}, auth=False)
            self._admin_created = True

    def _post(self, params: dict[str, str], auth: bool = True) -> dict[str, Any]:
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"{self.url}/query", data=data)
        if self.admin and auth:  # 1.x reads u/p from the URL or Basic auth, never from a form body
            token = base64.b64encode(":".join(self.admin).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as resp:
            body: dict[str, Any] = json.load(resp)
        return body

    def query(self, q: str, db: str = "") -> list[dict[str, Any]]:
        """Run InfluxQL; return the ``series`` of the first statement (``[]`` when nothing matched)."""
        body = self._post({"q": q, "db": db, "epoch": "ns"})
        result = body["results"][0]
        if "error" in result:
            raise RuntimeError(f"InfluxQL error for {q!r}: {result['error']}")
        return list(result.get("series", []))

    def rows(self, q: str, db: str) -> list[dict[str, Any]]:
        """The rows of a SELECT as dicts (column → value), with the series tags merged in."""
        out: list[dict[str, Any]] = []
        for series in self.query(q, db):
            tags = series.get("tags", {})
            for values in series["values"]:
                row = dict(zip(series["columns"], values, strict=True))
                row.update(tags)
                out.append(row)
        return out

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')
