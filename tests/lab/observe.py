"""What the outside world received from the daemon, read back the way an operator would.

Scenarios assert only through these helpers: the incident store (``monitor incidents``), the
state-change event log and the time-series database. Delivery (RT tickets, technician email and
MQTT, customer notices) joins here once the daemon delivers: a scenario then calls one more helper.
Every read opens the SQLite store anew (the daemon writes it concurrently, WAL) and closes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.correlate.store import IncidentRow, IncidentStore
from monitor.state import StateChange
from monitor.store import EventStore
from tests.lab.processes import ROOT
from tests.servers.influxdb import InfluxDB1

CUSTOMER_KINDS = ("outage", "suspected", "single")


@dataclass
class Observer:
    config: Path
    db: Path
    influx: InfluxDB1 | None

    # ------------------------------------------------------------------ incident store

    def incidents(self, since: float = 0.0) -> list[IncidentRow]:
        """Every incident opened at or after ``since`` (open, resolved or merged), oldest first."""
        if not self.db.exists():
            return []
        store = IncidentStore(self.db)
        try:
            rows = store.incidents(status=None, limit=10_000)
        finally:
            store.close()
        return sorted((r for r in rows if r.opened_at >= since), key=lambda r: r.opened_at)

    def events(self, incident: str) -> list[dict[str, Any]]:
        store = IncidentStore(self.db)
        try:
            return list(store.events(incident))
        finally:
            store.close()

    def cli_incidents(self) -> list[dict[str, Any]]:
        """``monitor incidents list --all --json``: what the NOC sees on the command line."""
        out = subprocess.run(
            [sys.executable, "-m", "monitor", "incidents", "list", "--all", "--json", "--config", str(self.config)],
            capture_output=True, text=True, cwd=ROOT, timeout=30, check=True,
        )
        rows: list[dict[str, Any]] = json.loads(out.stdout)
        return rows

    # ------------------------------------------------------------------ event log

    def states(self) -> dict[str, str]:
        if not self.db.exists():
            return {}
        store = EventStore(self.db)
        try:
            return {t: s.value for t, (s, _since) in store.load_states().items()}
        finally:
            store.close()

    def changes(self, since: float = 0.0) -> list[StateChange]:
        store = EventStore(self.db)
        try:
            return list(store.changes(since=since))
        finally:
            store.close()

    # ------------------------------------------------------------------ time series

    def series(self, query: str) -> list[dict[str, Any]]:
        assert self.influx is not None, "the lab runs without a time-series database"
        return self.influx.rows(query, "monitor")

