"""What the outside world received from the daemon, read back the way an operator would.

Scenarios assert only through these helpers: the incident store (``monitor incidents``, and
``monitor maintenance`` to plan windows as the NOC does), the state-change event log and the
time-series database. Delivery (RT tickets, technician email and
MQTT, customer notices) joins here once the daemon delivers: a scenario then calls one more helper.
Every read opens the SQLite store anew (the daemon writes it concurrently, WAL) and closes it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.correlate.incidents import format_ts
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

    def cli(self, *argv: str) -> str:
        """``monitor ARGV --config <the lab's>``, the real command line; its standard output."""
        out = subprocess.run([sys.executable, "-m", "monitor", *argv, "--config", str(self.config)],
                             capture_output=True, text=True, cwd=ROOT, timeout=30, check=False)
        assert out.returncode == 0, f"monitor {' '.join(argv)}: exit {out.returncode}\n{out.stdout}{out.stderr}"
        return out.stdout

    def cli_incidents(self) -> list[dict[str, Any]]:
        """``monitor incidents list --all --json``: what the NOC sees on the command line."""
        rows: list[dict[str, Any]] = json.loads(self.cli("incidents", "list", "--all", "--json"))
        return rows

    # ------------------------------------------------------------------ maintenance

    def add_window(self, node: str, start: float, duration: float, reason: str) -> int:
        """``monitor maintenance add``, as the NOC plans a window; returns the window id it printed."""
        out = self.cli("maintenance", "add", "--node", node, "--start", format_ts(start),
                       "--duration", f"{duration:g}s", "--reason", reason, "--by", "lab")
        m = re.match(r"window (\d+) on ", out)
        assert m, out
        return int(m.group(1))

    def plan_window(self, node: str, lead: float, duration: float, reason: str) -> tuple[int, float, float]:
        """A window on ``node`` that starts at least ``lead`` / 2 after ``monitor maintenance add`` returned
        (and aims at ``lead``): (window id, when it was planned, its start).

        Why: the advance notice goes out only if the daemon's delivery (a tick a second) sees the window
        before it starts, and the start is fixed before the command runs; on a loaded machine the
        command alone took most of a 3 s lead, the start passed unseen and no advance notice was ever
        due. So the start allows for the command as long as it last took, and a window left without
        its lead once written is withdrawn (no start or end notice goes out for one removed before its
        start; an advance notice that did is keyed by that window alone) and planned again, allowing
        for the time that one took.
        """
        began = time.time()
        self.cli("maintenance", "list")  # as long as a command takes on this machine right now
        took = time.time() - began
        for _ in range(3):
            planned_at = time.time()
            start = planned_at + took + lead
            window = self.add_window(node, start, duration, reason)
            took = time.time() - planned_at
            if start - time.time() >= lead / 2:
                return window, planned_at, start
            self.remove_window(window)
        raise AssertionError(f"monitor maintenance add took {took:.1f} s, three times: no lead left for advance notice")

    def remove_window(self, window: int) -> None:
        self.cli("maintenance", "remove", str(window))

    def window_events(self, window: int) -> dict[str, float]:
        """When the daemon's correlation saw the window start and end (``maintenance_events``)."""
        if not self.db.exists():
            return {}
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("SELECT event, ts FROM maintenance_events WHERE window_id = ? ORDER BY id",
                              (window,)).fetchall()
        finally:
            db.close()
        return {str(event): float(ts) for event, ts in rows}

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

    def blind_zones(self) -> list[tuple[str, float, float | None]]:
        """(zone, start, end) of every blind-zone episode (reports count them unknown), oldest first, as
        the core's store holds them."""
        store = EventStore(self.db)
        try:
            return store.blind_zones()
        finally:
            store.close()

    # ------------------------------------------------------------------ time series

    def series(self, query: str) -> list[dict[str, Any]]:
        assert self.influx is not None, "the lab runs without a time-series database"
        return self.influx.rows(query, "monitor")

