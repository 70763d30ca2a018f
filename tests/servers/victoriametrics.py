"""Debian's VictoriaMetrics on a free loopback port, in a temp dir, for tests.

Read-back: ``/internal/force_flush`` makes fresh samples searchable at once, then ``/api/v1/export``
with an explicit ``end`` in the future (the default end hides just-written samples).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.servers.common import free_port, require_binary
from tests.servers.restartable import RestartableServer


class VictoriaMetrics(RestartableServer):
    """One ``victoria-metrics`` we started; restartable on the same data dir and port."""

    def __init__(self, root: Path, *, dedup: bool = True) -> None:
        self.binary = require_binary("victoria-metrics")
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={root}/data",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]
        if dedup:
            # Collapse samples with identical series+timestamp, so a resent spool segment counts once
            # (docs/timeseries.md: required for exactly-once on VictoriaMetrics).
            self.argv.append("-dedup.minScrapeInterval=1ms")
        self.name = "victoria-metrics"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                return bool(resp.read().strip() == b"OK")
        except (OSError, urllib.error.URLError):
            return False

    def export(self, match: str) -> list[dict[str, Any]]:
        """Flush, then export every series matching ``match`` as dicts (``metric``, ``values``, ``timestamps``)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10) as resp:
            resp.read()
        params = urllib.parse.urlencode({"match[]": match, "start": "0", "end": str(int(time.time()) + 10**8)})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{params}", timeout=30) as resp:
            return [json.loads(line) for line in resp.read().splitlines() if line.strip()]
