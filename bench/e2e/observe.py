"""What the end-to-end benchmark reads while the daemon runs: its store, the SMTP server's maildir,
and the CPU and memory of the processes (from /proc, by PID).

The store is opened read-only for each query (the daemon writes it concurrently, WAL). Mails are
read incrementally (each maildir file once, headers only) and classified by their Message-ID, which
the email channel derives from the outbox key (``monitor.notify.email.message_id``): so each mail is
matched to exactly one outbox row, i.e. to its action and recipient, without trusting its subject.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from monitor.notify.email import message_id


class Store:
    def __init__(self, db: Path) -> None:
        self.db = db

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return list(con.execute(sql, args).fetchall())
        except sqlite3.OperationalError as exc:  # a table the daemon has not created yet
            if "no such table" in str(exc):
                return []
            raise
        finally:
            con.close()

    def states(self) -> Counter[str]:
        rows = self.query("SELECT state, COUNT(*) FROM target_state GROUP BY state")
        return Counter({str(s): int(n) for s, n in rows})

    def changes(self, since: float, new: str | None = None) -> list[tuple[float, str, str]]:
        """(ts, target, new state) of the transitions at or after ``since``, oldest first."""
        if new is None:
            rows = self.query("SELECT ts, target, new FROM state_changes WHERE ts >= ? ORDER BY id", since)
        else:
            rows = self.query("SELECT ts, target, new FROM state_changes WHERE ts >= ? AND new = ? ORDER BY id",
                              since, new)
        return [(float(ts), str(t), str(n)) for ts, t, n in rows]

    def incidents(self, since: float) -> list[dict[str, Any]]:
        rows = self.query("SELECT id, kind, root, status, opened_at, closed_at FROM incidents WHERE opened_at >= ? "
                          "ORDER BY seq", since)
        return [dict(zip(("id", "kind", "root", "status", "opened_at", "closed_at"), r, strict=True)) for r in rows]

    def events(self, incident: str) -> list[tuple[float, str, int]]:
        """(ts, event, number of affected customers) of one incident's lifecycle."""
        rows = self.query("SELECT ts, event, json_array_length(affected_customers) FROM incident_events "
                          "WHERE incident = ? ORDER BY id", incident)
        return [(float(ts), str(e), int(n)) for ts, e, n in rows]

    def outbox(self, after_id: int = 0) -> list[dict[str, Any]]:
        cols = ("id", "key", "incident", "action", "recipient", "channel", "status", "attempts", "created_at",
                "done_at", "reason")
        rows = self.query(f"SELECT {', '.join(cols)} FROM outbox WHERE id > ? ORDER BY id", after_id)
        return [dict(zip(cols, r, strict=True)) for r in rows]


@dataclass(frozen=True)
class Mail:
    arrived: float  # the maildir file's mtime: when the SMTP server had the whole message
    message_id: str
    to: str
    incident: str
    action: str  # from the outbox row whose key gives this Message-ID; "?" if none does


class Mailbox:
    """Every mail the SMTP server wrote to its maildir, read once each."""

    def __init__(self, maildir: Path, store: Store, sender: str) -> None:
        self.new = maildir / "new"
        self.store = store
        self.sender = sender
        self.mails: list[Mail] = []
        self._seen: set[str] = set()
        self._actions: dict[str, str] = {}  # Message-ID -> outbox action
        self._outbox_id = 0
        self._parser = BytesHeaderParser()

    def refresh(self) -> list[Mail]:
        for row in self.store.outbox(self._outbox_id):
            self._outbox_id = max(self._outbox_id, int(row["id"]))
            if row["channel"] == "email":
                self._actions[message_id(str(row["key"]), self.sender)] = str(row["action"])
        if not self.new.exists():
            return self.mails
        for entry in os.scandir(self.new):
            if entry.name in self._seen:
                continue
            self._seen.add(entry.name)
            with open(entry.path, "rb") as fh:
                head = self._parser.parse(fh)
            mid = str(head["Message-ID"])
            self.mails.append(Mail(entry.stat().st_mtime, mid, str(head["To"]), str(head["X-Monitor-Incident"]),
                                   self._actions.get(mid, "?")))
        return self.mails

    def of(self, incident: str, action: str) -> list[Mail]:
        return sorted((m for m in self.mails if m.incident == incident and m.action == action), key=lambda m: m.arrived)


class Sampler(threading.Thread):
    """CPU (user + system) and RSS of some processes, sampled every ``every`` seconds from /proc."""

    def __init__(self, pids: dict[str, int], every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.every = every
        self.samples: dict[str, list[tuple[float, float, float]]] = {n: [] for n in pids}  # (t, cpu s, rss MB)
        self._halt = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every)

    def sample(self) -> None:
        now = time.time()
        for name, pid in self.pids.items():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
                cpu = (int(fields[11]) + int(fields[12])) / self._tick  # utime, stime
                with open(f"/proc/{pid}/status") as f:
                    rss = next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:")), 0.0)
            except (OSError, StopIteration, IndexError, ValueError):
                continue  # exited
            self.samples[name].append((now, cpu, rss))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sample()

    def cpu_pct(self, name: str, start: float, end: float) -> float:
        """Average CPU % of one core between two wall-clock times (nearest samples inside)."""
        inside = [s for s in self.samples[name] if start <= s[0] <= end]
        if len(inside) < 2:
            return float("nan")
        (t0, c0, _), (t1, c1, _) = inside[0], inside[-1]
        return 100.0 * (c1 - c0) / (t1 - t0) if t1 > t0 else float("nan")

    def cpu_peak(self, name: str, start: float, end: float, window: float = 1.0) -> float:
        """The highest CPU % over any ``window`` seconds between two times (the mail burst, say)."""
        inside = [s for s in self.samples[name] if start <= s[0] <= end]
        best, j = float("nan"), 0
        for i, (t1, c1, _) in enumerate(inside):
            while j < i and t1 - inside[j + 1][0] >= window:
                j += 1
            t0, c0, _ = inside[j]
            if t1 - t0 >= window:
                pct = 100.0 * (c1 - c0) / (t1 - t0)
                best = pct if math.isnan(best) or pct > best else best
        return best

    def rss_max(self, name: str, start: float = 0.0, end: float = float("inf")) -> float:
        return max((s[2] for s in self.samples[name] if start <= s[0] <= end), default=float("nan"))
