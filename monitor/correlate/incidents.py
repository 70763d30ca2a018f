"""Incidents and their lifecycle events: what the engine decides and what everyone downstream reads.

Kinds: ``outage`` (a node confirmed down, everything it explains attached), ``suspected`` (many
endpoints below a still-answering node failed together), ``single`` (one endpoint alone),
``planned`` (inside a maintenance window: no alarm, excluded from availability), ``blind`` (the
monitor itself cannot see: internal alert only, time excluded from reports), ``degraded`` (a node
whose own polls show loss, with the failures below it that the loss explains: rain fade), ``power``
(ONUs reporting dying gasp: many below one OLT or PON port are a power cut in that area, one alone is
its customer's own power; never an outage, no crew for fibre).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

Kind = Literal["outage", "suspected", "single", "planned", "blind", "degraded", "power"]
EventType = Literal["opened", "updated", "merged", "resolved"]
KINDS: tuple[Kind, ...] = ("outage", "suspected", "single", "planned", "blind", "degraded", "power")
#: what an incident is judged as, stored beside its kind: the kind it would have outside maintenance, or
#: ``levels`` for a ``degraded`` incident for weak levels below a PON port or AP (monitor.correlate.levels)
Basis = Kind | Literal["levels"]


@dataclass(slots=True)
class Incident:
    """One open incident inside the engine (mutable; only the engine changes it)."""

    id: str
    seq: int
    kind: Kind
    root: str
    opened_at: float
    members: set[str] = field(default_factory=set)  # targets currently down and attached
    grace_from: float | None = None  # the root is back (or the mass event is over) since then
    clear_since: float | None = None  # nothing down since then: resolves after the hold-down
    last_update: float = 0.0  # when the last opened/updated event was emitted
    emitted: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # (endpoints, customers) last announced
    # the affected set changed since then and is not announced yet (gathering for update_interval);
    # persisted with ``emitted`` (the last event), so a restart neither loses nor delays the update
    pending_since: float | None = None
    was_outage: bool = False  # a suspected incident whose root went down (persisted: resume judges it alike)
    detail: str = ""  # why it opened, when a number explains it (a burst's learned rate and odds)


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    ts: float
    event: EventType
    incident: str
    kind: Kind
    root: str
    affected_endpoints: tuple[str, ...]
    affected_customers: tuple[str, ...]
    affected_nodes: tuple[str, ...] = ()
    into: str | None = None  # for "merged": the incident it was folded into
    detail: str = ""  # on "opened": why, when a number explains it (a burst's learned rate and odds)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "ts": format_ts(self.ts),
            "event": self.event,
            "incident": self.incident,
            "kind": self.kind,
            "root": self.root,
            "affected_endpoints": list(self.affected_endpoints),
            "affected_customers": list(self.affected_customers),
        }
        if self.into is not None:
            d["into"] = self.into
        if self.detail:
            d["detail"] = self.detail
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def incident_id(seq: int) -> str:
    return f"INC-{seq:06d}"


_TS_CACHE: dict[float, str] = {}


#: the times :func:`format_ts` can print (years 1 to 9999 UTC). A stored time outside this range
#: (a typo such as year 9999 with a negative offset) would break every list and notice that prints it.
PRINTABLE = (-62_135_596_800.0, 253_402_300_799.0)


def printable(ts: float) -> bool:
    """Whether :func:`format_ts` can print ``ts`` (False for NaN and the infinities too)."""
    return PRINTABLE[0] <= ts <= PRINTABLE[1]


def format_ts(ts: float) -> str:
    """UTC ISO-8601 with a Z, milliseconds only when there are any (stable across platforms)."""
    s = _TS_CACHE.get(ts)
    if s is None:
        whole = int(ts // 1)
        ms = round((ts - whole) * 1000)
        if ms == 1000:
            whole, ms = whole + 1, 0
        base = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        s = f"{base}.{ms:03d}Z" if ms else f"{base}Z"
        if len(_TS_CACHE) > 4096:
            _TS_CACHE.clear()
        _TS_CACHE[ts] = s
    return s


def parse_ts(text: str) -> float:
    """ISO-8601 (``Z`` or an offset; naive means UTC) to epoch seconds."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
