"""What staff do to incidents and maintenance windows: the one owner of those actions.

``monitor incidents``/``monitor maintenance``, the HTTP API, the staff board, acknowledgements that
arrive through a delivery channel (MQTT, a desk ticket taken) and the daemon's sync of the config's
``maintenance:`` list all act through :class:`Staff`, so a rule about an action (an ack needs an
open incident, an estimate must lie ahead, a window's customers are the ones below its node) is
written once and holds for every way in. Only :mod:`monitor.correlate.store` writes the tables.

Acks, notes and estimates take effect at once; a resolve is queued and carried out by the running
daemon (or at its next start), because only the daemon's engine knows what else the incident holds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from monitor.correlate.incidents import format_ts, printable
from monitor.correlate.maintenance import config_specs
from monitor.correlate.store import ETA_WITHDRAWN, ActionRow, IncidentRow, IncidentStore, MaintenanceRow, NotFound
from monitor.correlate.topology import Topology
from monitor.db import Where
from monitor.errors import ConfigError
from monitor.inventory.model import MaintenanceSpec

ETA_MAX_AHEAD = 366 * 86_400.0  # an estimate further out is a typo (or an attack), not a plan
_MAX_ID = 2**63 - 1  # the largest row id SQLite stores
CONFIG_AUTHOR = "config"  # the author of windows the config's ``maintenance:`` list made


class Conflict(ConfigError):
    """The incident's state does not allow the operation (not open; no estimate to withdraw)."""


class Staff:
    """Staff operations on incidents and maintenance windows, on one :class:`IncidentStore`.

    Errors: :class:`monitor.correlate.store.NotFound` for an unknown id, :class:`Conflict` when the
    incident's state does not allow it, :class:`ConfigError` for a bad value (an ETA in the past).
    ``topology`` (optional) checks a window's node and lists the customers below it.
    """

    def __init__(self, store: IncidentStore, topology: Topology | None = None) -> None:
        self.store = store
        self.topology = topology

    @classmethod
    def open(cls, db_path: Where, topology: Topology | None = None) -> Staff:
        """On the daemon's store, a SQLite file which must exist (a typo in ``--db`` would otherwise create
        one), or a PostgreSQL database (``daemon.store``)."""
        if isinstance(db_path, Path) and not db_path.exists():
            raise ConfigError(f"{db_path}: no store here (has the daemon run with this config?)")
        return cls(IncidentStore(db_path), topology)

    def close(self) -> None:
        """Close the store (for a :class:`Staff` made with :meth:`open`)."""
        self.store.close()

    # ------------------------------------------------------------ reads

    def incidents(self, *, all_: bool = False, limit: int = 100) -> list[IncidentRow]:
        return self.store.incidents(status=None if all_ else "open", limit=limit)

    def incident(self, inc_id: str) -> IncidentRow:
        """One incident's row; :class:`NotFound` for an unknown id."""
        return self.store.incident(inc_id)

    def show(self, inc_id: str) -> dict[str, object]:
        row = self.store.incident(inc_id)
        return {
            "incident": row,
            "events": list(self.store.events(inc_id)),
            "actions": self.store.actions(inc_id),
        }

    def incidents_json(self, *, all_: bool = False, limit: int = 100) -> list[dict[str, object]]:
        """``monitor incidents list --json`` (and ``GET /api/v1/incidents``)."""
        return [_row_dict(r) for r in self.incidents(all_=all_, limit=limit)]

    def show_json(self, inc_id: str) -> dict[str, object]:
        """``monitor incidents show --json`` (and ``GET /api/v1/incidents/{id}``)."""
        return {
            "incident": _row_dict(self.store.incident(inc_id)),
            "events": [{**e, "ts": format_ts(e["ts"])} for e in self.store.events(inc_id)],
            "actions": [{"ts": format_ts(a[0]), "action": a[1], "by": a[2], "text": a[3], "done": a[4] is not None}
                        for a in self.store.actions(inc_id)],
        }

    def events(self, inc_id: str) -> list[dict[str, Any]]:
        """The incident's lifecycle events, oldest first (what it affected at each step)."""
        return list(self.store.events(inc_id))

    def revision(self) -> tuple[object, ...]:
        """Changes whenever an incident, an action or a window changes (see ``IncidentStore.revision``)."""
        return self.store.revision()

    def acked_open(self) -> set[str]:
        """Open incidents someone acknowledged (their escalation stops)."""
        return {r.id for r in self.store.incidents(status="open", limit=100_000) if r.acked_at is not None}

    def etas(self) -> dict[str, float | None]:
        """The latest restoration estimate per open incident; None = withdrawn (see ``IncidentStore.etas``)."""
        return self.store.etas()

    def eta_authors(self) -> dict[str, str]:
        """Who set (or withdrew) the latest estimate per open incident."""
        return self.store.eta_authors()

    def actions_after(self, after_id: int) -> list[ActionRow]:
        """Actions (every kind, every author) recorded after ``after_id``, oldest first, at most 1000."""
        return self.store.actions_after(after_id)

    def last_action_id(self) -> int:
        return self.store.last_action_id()

    def windows(self, *, include_removed: bool = False) -> list[MaintenanceRow]:
        return self.store.maintenance(include_removed=include_removed)

    # ------------------------------------------------------------ incident actions

    def ack(self, inc_id: str, by: str, note: str = "", now: float | None = None) -> None:
        """Stop the escalation of an open incident (a closed one has none: refused, so the caller knows)."""
        self._open(inc_id)
        self.store.add_action(inc_id, "ack", by, note, _now(now))

    def acknowledged_elsewhere(self, inc_id: str, by: str, text: str, now: float) -> None:
        """An ack that arrived through a channel (MQTT, a desk ticket taken): recorded as it came,
        also when the incident closed meanwhile (nobody waits for a refusal; the history keeps it)."""
        self.store.add_action(inc_id, "ack", by, text, now)

    def note(self, inc_id: str, by: str, text: str, now: float | None = None) -> None:
        self.store.add_action(inc_id, "note", by, text, _now(now))

    def eta(self, inc_id: str, by: str, at: float, now: float | None = None) -> None:
        """Set (or move) the estimated restoration time; the daemon tells the desk and the customers."""
        now = _now(now)
        self._open(inc_id)
        if not math.isfinite(at):
            raise ConfigError("ETA: expected a finite time")
        if at <= now:
            shown = f" {format_ts(at)}" if printable(at) else ""
            raise ConfigError(f"ETA{shown} is not in the future")
        if at > now + ETA_MAX_AHEAD:
            raise ConfigError(f"ETA is more than {ETA_MAX_AHEAD / 86_400:.0f} days ahead")
        self.store.add_action(inc_id, "eta", by, format_ts(at), now)

    def clear_eta(self, inc_id: str, by: str, now: float | None = None) -> None:
        """Withdraw the estimate; the daemon tells the desk, and the customers who were given it."""
        self._open(inc_id)
        if self.store.etas().get(inc_id) is None:
            raise Conflict(f"{inc_id} has no restoration estimate to withdraw")
        self.store.add_action(inc_id, "eta", by, ETA_WITHDRAWN, _now(now))

    def resolve(self, inc_id: str, by: str, note: str = "", now: float | None = None) -> None:
        self._open(inc_id)
        self.store.add_action(inc_id, "resolve", by, note, _now(now))

    def _open(self, inc_id: str) -> None:
        row = self.store.incident(inc_id)
        if row.status != "open":
            raise Conflict(f"{inc_id} is already {row.status}")

    # ------------------------------------------------------------ maintenance

    def add_window(
        self, node: str, start: float, end: float, reason: str, by: str, now: float | None = None
    ) -> int:
        for name, at in (("start", start), ("end", end)):
            # a window is printed in notices, lists and on the board: one that cannot be (a typo like
            # --duration 99999999999999999999d) would be stored and then break every one of them
            if not printable(at):
                raise ConfigError(f"maintenance on {node}: the {name} is not between the years 1 and 9999 (UTC)")
        if end <= start:
            raise ConfigError(f"maintenance on {node}: end {format_ts(end)} is not after start {format_ts(start)}")
        customers: list[str] = []
        if self.topology is not None:
            if node not in self.topology:
                raise ConfigError(f"maintenance: no node or endpoint with id '{node}' in the inventory")
            customers = self.topology.customers_below(node)
        return self.store.add_window(node, start, end, reason, by, customers, _now(now))

    def remove_window(self, window_id: int, now: float | None = None) -> None:
        if not 0 < window_id <= _MAX_ID:  # no such row (and SQLite cannot even compare with a larger one)
            raise NotFound(f"no active maintenance window {window_id}")
        self.store.remove_window(window_id, _now(now))

    def sync_config_windows(self, specs: Iterable[MaintenanceSpec], topology: Topology, now: float) -> None:
        """Make the store's config-made windows equal the config's ``maintenance:`` list (start, reload).

        Windows added by staff are left alone; a config window keeps its id while it stays in the
        list, so notices already given for it are not given again. ``topology``: the daemon's
        current one (a reload brings a new one), for the customers below each window's node.
        """
        wanted = config_specs(specs)
        missing = set(wanted)
        for row in self.store.maintenance():
            if row.author != CONFIG_AUTHOR:
                continue
            spec = MaintenanceSpec(row.node, row.start, row.end, row.reason)
            if spec in missing:
                missing.discard(spec)
            else:
                self.store.remove_window(row.id, now)
        for spec in wanted:
            if spec in missing:
                customers = topology.customers_below(spec.node)
                self.store.add_window(spec.node, spec.start, spec.end, spec.reason, CONFIG_AUTHOR, customers, now)


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _row_dict(r: IncidentRow) -> dict[str, object]:
    d: dict[str, object] = {k: getattr(r, k) for k in r.__dataclass_fields__}
    for k in ("opened_at", "updated_at", "cleared_at", "closed_at", "acked_at"):
        v = d[k]
        d[k] = format_ts(v) if isinstance(v, float) else v
    return d
