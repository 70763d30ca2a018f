"""Debian's Request Tracker 5 (standalone server, SQLite) on a free loopback port, for tests.

Facts from ``../shared/servers.md``: an own RT_SiteConfig.pm, an EMPTY ``RT_SITE_CONFIG_DIR`` (so
Debian's site config is not read), ``rt-setup-database-5 --action init``, then ``rt-server`` with two
workers. REST2 answers with basic auth ``root:password``. Restartable on the same database and port
(the fault-injection tests stop it mid-run).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.servers.common import free_port, require_binary
from tests.servers.restartable import RestartableServer

RT_SERVER = "/usr/share/request-tracker5/libexec/rt-server"
USER, PASSWORD = "root", "password"


class RequestTracker(RestartableServer):
    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        require_binary("rt-setup-database-5")
        self.root = root
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.config = root / "RT_SiteConfig.pm"
        self.config_dir = root / "siteconfig.d"
        self.config_dir.mkdir(exist_ok=True)
        self.config.write_text(
            "Set($DatabaseType, 'SQLite');\n"
            f'Set($DatabaseName, "{root}/rtdb");\n'
            "Set($WebPath, '');\n"
            f"Set($WebBaseURL, '{self.url}');\n"
            "Set($MailCommand, 'testfile');\n"
            "Set($LogToSTDERR, 'warning');\n"
            "1;\n"
        )
        self.env = {**os.environ, "RT_SITE_CONFIG": str(self.config), "RT_SITE_CONFIG_DIR": str(self.config_dir)}
        self.name = "rt-server"
        self.argv = ["env", f"RT_SITE_CONFIG={self.config}", f"RT_SITE_CONFIG_DIR={self.config_dir}",
                     RT_SERVER, "--host", host, "--port", str(self.port), "--max-workers", "2"]
        subprocess.run(
            ["rt-setup-database-5", "--action", "init", "--skip-create", "--dba", "", "--dba-password", ""],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=True,
            timeout=120,
        )

    def ready(self) -> bool:
        try:
            self.get("/REST/2.0/queues/all")
            return True
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=20) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def tickets(self, query: str = "id > 0") -> list[dict[str, Any]]:
        """Every ticket matching TicketSQL, with its fields."""
        q = urllib.parse.quote(query)
        found = self.get(f"/REST/2.0/tickets?query={q}&per_page=100&fields=Subject,Status,Queue,Owner")
        return list(found.get("items", []))

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        return dict(self.get(f"/REST/2.0/ticket/{ticket_id}"))

    def history(self, ticket_id: str) -> list[dict[str, Any]]:
        """Transactions with their type and (for create/comment) text content."""
        out = []
        page = self.get(f"/REST/2.0/ticket/{ticket_id}/history?per_page=100&fields=Type,Field,NewValue")
        for item in page.get("items", []):
            out.append(item)
        return out

    def take(self, ticket_id: str) -> None:
        """Staff takes the ticket (Owner = root): what the acknowledgement check looks for."""
        self._request("PUT", f"/REST/2.0/ticket/{ticket_id}", {"Owner": USER})

    def set_status(self, ticket_id: str, status: str) -> None:
        self._request("PUT", f"/REST/2.0/ticket/{ticket_id}", {"Status": status})




def texts(rt: RequestTracker, ticket_id: str) -> list[str]:
    """The plain-text bodies (create, comments) of a ticket, oldest first."""
    page = rt.get(f"/REST/2.0/ticket/{ticket_id}/attachments?per_page=100&fields=Content,ContentType")
    out = []
    for item in page.get("items", []):
        if str(item.get("ContentType", "")).startswith("text/plain") and item.get("Content"):
            out.append(str(item["Content"]))
    return out
