"""The table probe: one bounded walk of a parent's subscriber table, one outcome per endpoint.

An OLT knows for every ONU whether it is online, why it last went down (dying gasp = the ONU lost
mains power; LOS = the light stopped) and its optical levels; an AP's registration table lists every
station with its signal. Walking that table once per interval replaces a ping per customer and
covers customers nobody can ping. The walk reuses the SNMP probe's sessions, credentials and walk
bounds (:class:`monitor.probes.snmp.SnmpProbe`); turning rows into outcomes is pure
(:func:`rows_from_walks`, :func:`outcomes`) so it is tested without a network.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitor.clock import Clock, SystemClock
from monitor.errors import ProbeError, ProbeSetupError
from monitor.inventory.model import Target
from monitor.logs import event
from monitor.probes.base import Metric
from monitor.probes.pon_ports import port_name
from monitor.probes.snmp_extract import Skip, decode_index, to_number, to_text
from monitor.probes.snmp_profiles import Oid
from monitor.probes.snmp_transport import WalkCut
from monitor.probes.table_keys import normalise_key
from monitor.probes.table_profiles import EnumSpec, KeySpec, PortSpec, TableProfile, load_table_profiles

if TYPE_CHECKING:
    from monitor.probes.snmp import SnmpProbe

WALK_PAUSE = 3600.0  # s without walks of a table whose walk was cut (over walk_max_rows/bytes, OIDs not increasing)

log = logging.getLogger(__name__)

Keys = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class TableRow:
    """One subscriber as the parent sees it. ``cause`` is the last down cause (our enum) if known."""

    index: str  # the row index, dotted (what ``onu_index`` / ``station_index`` refer to)
    keys: Keys  # (key kind, normalised value), e.g. (("onu_serial", "UBNT20731888"),)
    state: str  # online | offline
    cause: str | None = None
    metrics: tuple[Metric, ...] = ()
    port: str | None = None  # the PON port the ONU is on (``0/1/3``), when the profile says


@dataclass(frozen=True, slots=True)
class TableResult:
    target: str
    profile: str
    ok: bool
    rows: tuple[TableRow, ...] = ()
    error: str | None = None
    duration_s: float = 0.0

    def lookup(self) -> dict[tuple[str, str], TableRow]:
        """(key kind, normalised value) → row, for matching endpoints in one pass."""
        return {key: row for row in self.rows for key in row.keys}


@dataclass(frozen=True, slots=True)
class EndpointKey:
    """What an address-less endpoint is known by under its parent: e.g. ``onu_serial=UBNT20731888``."""

    endpoint: str
    kind: str
    value: str  # as configured; normalised when matched


@dataclass(frozen=True, slots=True)
class TableOutcome:
    """The parent's view of one endpoint in one poll: present in the table or not, and how it is."""

    endpoint: str
    present: bool
    state: str  # online | offline (absent from the table counts as offline)
    cause: str | None  # dying_gasp | los | other | unknown, only when offline
    metrics: tuple[Metric, ...] = ()
    port: str | None = None  # the PON port its row is on, when the profile says


def outcomes(result: TableResult, endpoints: Iterable[EndpointKey]) -> list[TableOutcome]:
    """One outcome per endpoint; none at all when the walk failed (the parent's own state says why).

    A row that is offline carries its last down cause (``unknown`` when the vendor has none); an
    endpoint missing from the table is offline with cause ``unknown`` (a station that left the AP).
    """
    if not result.ok:
        return []
    rows = result.lookup()
    out: list[TableOutcome] = []
    for ep in endpoints:
        row = rows.get((ep.kind, normalise_key(ep.kind, ep.value)))
        if row is None:
            out.append(TableOutcome(ep.endpoint, False, "offline", "unknown"))
        elif row.state == "online":
            out.append(TableOutcome(ep.endpoint, True, "online", None, row.metrics, row.port))
        else:
            out.append(TableOutcome(ep.endpoint, True, "offline", row.cause or "unknown", row.metrics, row.port))
    return out


def rows_from_walks(profile: TableProfile, walks: Mapping[Oid, Sequence[tuple[Oid, Any]]]) -> tuple[
        list[TableRow], list[str]]:
    """Rows from the walked columns, plus one line per value that could not be read.

    The rows are those of the state column when the profile has one (a provisioned ONU that is
    offline is still listed), otherwise every index seen in any column (a station table lists only
    the stations that are there).
    """
    skipped: list[str] = []
    columns = {base: {oid[len(base):]: v for oid, v in walks.get(base, ()) if not _missing(v)}
               for base in profile.columns()}
    if profile.state is not None:
        indices = list(columns[profile.state.oid])
    else:
        indices = list(dict.fromkeys(s for col in columns.values() for s in col))
    rows: list[TableRow] = []
    for suffix in indices:
        dotted = ".".join(map(str, suffix))
        try:
            labels = dict(decode_index(profile.index, suffix))
        except Skip as exc:
            skipped.append(f"row {dotted}: {exc}")
            continue
        keys = _row_keys(profile, suffix, dotted, labels, columns, skipped)
        state = _enum(profile.state, columns, suffix) or "online"
        cause = _enum(profile.cause, columns, suffix)
        metrics: list[Metric] = []
        for spec in profile.values:
            value = columns[spec.oid].get(suffix)
            if value is None:
                continue
            try:
                metrics.append(Metric(spec.name, to_number(spec, value), spec.labels))
            except Skip as exc:
                skipped.append(f"{spec.name}.{dotted}: {exc}")
        port = _port(profile.port, labels, columns, suffix)
        rows.append(TableRow(dotted, keys, state, cause if state == "offline" else None, tuple(metrics), port))
    return rows, skipped


def _port(spec: PortSpec | None, labels: Mapping[str, str], columns: Mapping[Oid, Mapping[Oid, Any]],
          suffix: Oid) -> str | None:
    if spec is None:
        return None
    raw: Any = labels.get(spec.index_label) if spec.index_label is not None else None
    if spec.oid is not None:
        raw = columns[spec.oid].get(suffix)
    try:
        number = int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    return port_name(spec.format, number) if number is not None else None


def _row_keys(profile: TableProfile, suffix: Oid, dotted: str, labels: Mapping[str, str],
              columns: Mapping[Oid, Mapping[Oid, Any]], skipped: list[str]) -> Keys:
    keys: list[tuple[str, str]] = []
    for spec in profile.keys:
        raw = _key_raw(spec, suffix, dotted, labels, columns)
        if raw is None:
            continue
        try:
            keys.append((spec.kind, normalise_key(spec.kind, raw)))
        except ValueError as exc:
            skipped.append(f"{spec.kind}.{dotted}: {exc}")
    return tuple(keys)


def _key_raw(spec: KeySpec, suffix: Oid, dotted: str, labels: Mapping[str, str],
             columns: Mapping[Oid, Mapping[Oid, Any]]) -> str | None:
    if spec.index_label is not None:
        return labels.get(spec.index_label)
    if spec.oid is None:
        return dotted
    value = columns[spec.oid].get(suffix)
    if value is None:
        return None
    if spec.decode == "text":
        return to_text(value)
    data = bytes(value) if hasattr(value, "asOctets") else to_text(value).encode()
    if spec.decode == "gpon-serial" and len(data) == 8:
        return data.hex()  # normalise_key turns 16 hex digits into vendor ASCII + hex
    if spec.decode == "mac" and len(data) == 6:
        return data.hex()
    return data.decode("latin-1")


def _enum(spec: EnumSpec | None, columns: Mapping[Oid, Mapping[Oid, Any]], suffix: Oid) -> str | None:
    if spec is None:
        return None
    value = columns[spec.oid].get(suffix)
    try:
        raw = int(value) if value is not None else None
    except (TypeError, ValueError):
        raw = None
    if raw is None:
        return spec.default
    return spec.map.get(raw, spec.default)


def _missing(value: Any) -> bool:
    return value.__class__.__name__ in ("NoSuchObject", "NoSuchInstance", "EndOfMibView", "Null")


class TableProbe:
    """Walks subscriber tables with the SNMP probe's sessions and bounds (``walk_max_rows`` etc.)."""

    kind = "snmp-table"

    def __init__(self, snmp: SnmpProbe, profiles: Mapping[str, TableProfile] | None = None,
                 clock: Clock | None = None) -> None:
        self._snmp = snmp
        self._profiles = dict(profiles) if profiles is not None else load_table_profiles()
        self._clock = clock or SystemClock()
        self._paused: dict[str, float] = {}  # target id → clock.monotonic() when its walks resume

    def profile_names(self) -> list[str]:
        return sorted(self._profiles)

    def profile(self, name: str) -> TableProfile | None:
        return self._profiles.get(name)

    async def poll(self, target: Target, profile_name: str, timeout: float) -> TableResult:
        """Walk ``target``'s table once. A dead agent or a cut walk is a failed result, never raised."""
        profile = self._profiles.get(profile_name)
        if profile is None:
            raise ProbeSetupError(f"target {target.id}: unknown table profile {profile_name!r}"
                                  f" (known: {', '.join(self.profile_names())})")
        if target.snmp is None:
            raise ProbeSetupError(f"target {target.id} has no snmp settings")
        session = self._snmp.session(target, target.snmp, timeout)
        loop = asyncio.get_running_loop()
        started = loop.time()
        now = self._clock.monotonic()
        if self._paused.get(target.id, now) > now:
            return TableResult(target.id, profile.name, False, error="table walks paused after a cut walk")
        try:
            async with asyncio.timeout(timeout):
                walks = await session.walk(profile.columns())
        except WalkCut as exc:
            # an agent whose table never ends would cost a bounded walk every poll: once an hour instead
            self._paused[target.id] = now + WALK_PAUSE
            event(log, logging.WARNING, "snmp table walks paused", target=target.id, address=target.address,
                  table=profile.name, error=exc, seconds=WALK_PAUSE)
            return TableResult(target.id, profile.name, False, error=str(exc), duration_s=loop.time() - started)
        except TimeoutError:
            return TableResult(target.id, profile.name, False, error="timeout", duration_s=loop.time() - started)
        except ProbeError as exc:
            return TableResult(target.id, profile.name, False, error=str(exc) or type(exc).__name__,
                               duration_s=loop.time() - started)
        rows, skipped = rows_from_walks(profile, walks)
        if skipped:
            event(log, logging.DEBUG, "snmp table rows skipped", target=target.id, profile=profile.name,
                  skipped=len(skipped), first=repr(skipped[0]))
        return TableResult(target.id, profile.name, True, tuple(rows), duration_s=loop.time() - started)
