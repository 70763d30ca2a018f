"""The ``pollers:`` section: which zone each target belongs to and who polls it (issue 14).

Absent = today's single daemon: the core polls everything. Present, every target belongs to exactly
one zone, found from the most specific entry that names it: its own id under ``nodes``, else its
site under ``sites``, else its municipality under ``municipalities`` (each named in at most one
zone). A zone lists the remote pollers that cover it (at most four: several vantage points); a
zone without pollers is polled by the core itself (the NOC's own). A target in no zone is a
mistake, reported with the section's line, as are unknown ids and a poller claimed by two zones:
a poller may only ever report its own zone, and the core checks every message against this map.

A target observed through its parent's table (an ONU or station identified by ``onu_serial``,
``onu_index``, ``station_mac``..., with or without an address, and a PON port node) is in its table
parent's zone instead, whatever its site: only the poller that walks the OLT's or AP's table can
report it (an address is pinged from there too, so ping and table are judged together). Naming such
a target under ``nodes`` of another zone than its parent's would split them: it is refused.

Example::

    pollers:
      brokers: [{host: 127.0.0.1, port: 1883, username: core, password: {env: MQTT_CORE_PASSWORD}}]
      zones:
        - {id: noc, municipalities: [arauca]}                      # the core polls it
        - {id: saravena, municipalities: [saravena], pollers: [p-saravena-1, p-saravena-2],
           vantage: {p-saravena-1: gw-saravena}}            # optional: the node each sees the zone through
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from monitor.inventory.fields import ID_HINT, ID_RE, Section, type_name
from monitor.inventory.model import PON_PORT_KIND, Municipality, Site, Target
from monitor.inventory.settings import SecretReader
from monitor.secret import Secret

KEYS = ("brokers", "prefix", "heartbeat", "silent_after", "zones")
BROKER_KEYS = ("host", "port", "username", "password", "tls", "ca_file")
ZONE_KEYS = ("id", "pollers", "vantage", "municipalities", "sites", "nodes")
MAX_POLLERS_PER_ZONE = 4
DEFAULT_PREFIX = "monitor/pollers"
HEARTBEAT = 10.0  # s between a poller's heartbeats
SILENT_AFTER = 60.0  # s without a word from every poller of a zone before the zone is blind
_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")  # no wildcards, no empty levels
_SHOWN = 5  # ids named in a message before "..."
_SINGULAR = {"municipalities": "municipality", "sites": "site", "nodes": "node"}


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str
    port: int = 1883
    username: str | None = None
    password: Secret | None = None
    tls: bool = False  # verify the broker's certificate against ca_file (else the system's CAs)
    ca_file: str = ""  # absolute, or relative to the config's folder


@dataclass(frozen=True, slots=True)
class Zone:
    id: str
    pollers: tuple[str, ...] = ()  # empty: the core polls this zone itself
    #: poller -> the node it sees the zone through (its own uplink or gateway): while that node is
    #: down the poller is blind and its view is set aside (monitor.remote.vantage)
    vantage: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PollersSettings:
    brokers: tuple[BrokerSettings, ...]
    zones: dict[str, Zone]
    zone_of: dict[str, str] = field(default_factory=dict)  # target id -> zone id
    prefix: str = DEFAULT_PREFIX
    heartbeat: float = HEARTBEAT
    silent_after: float = SILENT_AFTER

    def poller_zones(self) -> dict[str, str]:
        """Poller id -> the one zone it may report (what the core checks messages against)."""
        return {p: z.id for z in self.zones.values() for p in z.pollers}

    def vantage_of(self) -> dict[str, str]:
        """Poller id -> its declared vantage node (pollers that declared one)."""
        return {p: node for z in self.zones.values() for p, node in z.vantage.items()}

    def zone_pollers(self) -> dict[str, tuple[str, ...]]:
        """Zone id -> its remote pollers, for the zones that have any."""
        return {z.id: z.pollers for z in self.zones.values() if z.pollers}

    def remote(self, target: str) -> bool:
        """Polled by a remote poller, not by the core."""
        zone = self.zone_of.get(target)
        return zone is not None and bool(self.zones[zone].pollers)


def parse(top: Section, secrets: SecretReader, munis: Mapping[str, Municipality], sites: Mapping[str, Site],
          targets: Mapping[str, Target]) -> PollersSettings | None:
    """The validated section, or None when absent."""
    sec = top.section("pollers", KEYS, ("brokers", "zones"))
    if sec is None:
        return None
    prefix = sec.text("prefix") or DEFAULT_PREFIX
    if not _PREFIX.match(prefix) or len(prefix) > 100:
        sec.err("prefix", f"bad MQTT topic prefix {prefix[:40]!r} (expected levels of letters, digits, '_' or '-' "
                          "joined by '/', no wildcards)")
        prefix = DEFAULT_PREFIX
    heartbeat = sec.duration("heartbeat", HEARTBEAT, ge=0.1, le=3600.0)
    silent_after = sec.duration("silent_after", SILENT_AFTER, ge=0.3, le=86400.0)
    if silent_after < 2 * heartbeat:
        sec.err("silent_after", f"must be at least twice the heartbeat ({2 * heartbeat:g}s): one lost heartbeat "
                                "must not make a zone blind")
    brokers = tuple(b for value, path, line in sec.items("brokers")
                    if (b := _broker(sec, secrets, value, path, line)) is not None)
    if "brokers" in sec.data and not brokers:
        sec.err("brokers", "expected at least one broker ({host: ..., port: ...})")
    zones = _Zones({"municipalities": munis, "sites": sites, "nodes": targets})
    for value, path, line in sec.items("zones"):
        zones.add(Section.open(sec.problems, sec.file, value, path, line, ZONE_KEYS, ("id",)))
    zone_of, homeless = zones.place(targets)
    zones.check_vantage(zone_of, targets)
    if homeless and zones.zones:
        shown = ", ".join(homeless[:_SHOWN]) + (", ..." if len(homeless) > _SHOWN else "")
        sec.err("zones", f"{len(homeless)} target(s) in no zone ({shown}): name their municipality, site or node "
                         "in a zone (a zone without pollers is polled by the core)")
    return PollersSettings(brokers, zones.zones, zone_of, prefix, heartbeat, silent_after)


class _Zones:
    """The zones read so far, and which zone claimed each municipality, site and node."""

    def __init__(self, known: Mapping[str, Mapping[str, object]]) -> None:
        self.known = known
        self.claimed: dict[str, dict[str, str]] = {k: {} for k in known}
        self.zones: dict[str, Zone] = {}
        self.poller_of: dict[str, str] = {}
        self.node_claims: dict[str, Section] = {}  # node id -> the zone entry naming it (for its line)
        self.vantage_at: dict[tuple[str, str], tuple[Section, str, int]] = {}  # (zone, poller) -> entry, path, line

    def add(self, z: Section | None) -> None:
        if z is None or (zid := z.ident("id")) is None:
            return
        if zid in self.zones:
            z.err("id", f"duplicate zone id {zid!r}")
            return
        pollers = _ids(z, "pollers")
        if len(pollers) > MAX_POLLERS_PER_ZONE:
            z.err("pollers", f"at most {MAX_POLLERS_PER_ZONE} pollers per zone, got {len(pollers)}")
        for p in pollers:
            if self.poller_of.setdefault(p, zid) != zid:
                z.err("pollers", f"poller {p!r} already covers zone {self.poller_of[p]!r} (a poller reports one zone)")
        if not any(k in z.data for k in self.claimed):
            z.err(None, "a zone needs municipalities, sites or nodes")
        for key, seen in self.claimed.items():
            for ident in _ids(z, key):
                if ident not in self.known[key]:
                    z.err(key, f"unknown {_SINGULAR[key]} {ident!r}")
                elif ident in seen:
                    z.err(key, f"{ident!r} is already in zone {seen[ident]!r}")
                else:
                    seen[ident] = zid
                    if key == "nodes":
                        self.node_claims[ident] = z
        self.zones[zid] = Zone(zid, tuple(dict.fromkeys(pollers)), self._vantage(z, zid, pollers))

    def _vantage(self, z: Section, zid: str, pollers: list[str]) -> dict[str, str]:
        """``vantage: {poller: node}``: each key one of the zone's pollers (the nodes are checked once
        every target has its zone, :meth:`check_vantage`)."""
        out: dict[str, str] = {}
        for poller, node, path, line in z.entries("vantage"):
            if poller not in pollers:
                z.problems.add(z.file, line, path, f"unknown poller {poller!r}: the zone's pollers are "
                                                   f"{', '.join(pollers) if pollers else 'none'}")
            elif not isinstance(node, str) or not ID_RE.match(node) or len(node) > 128:
                z.problems.add(z.file, line, path, f"bad node id {str(node)[:40]!r} ({ID_HINT})")
            else:
                out[poller] = node
                self.vantage_at[(zid, poller)] = (z, path, line)
        return out

    def check_vantage(self, zone_of: Mapping[str, str], targets: Mapping[str, Target]) -> None:
        """A vantage node exists, and is either in its poller's own zone (judged by that poller's own
        view) or in a zone the core polls (judged by the core): never a node other pollers report."""
        for zid, zone in self.zones.items():
            for poller, node in zone.vantage.items():
                where = zone_of.get(node)
                z, path, line = self.vantage_at[(zid, poller)]
                if node not in targets:
                    z.problems.add(z.file, line, path, f"vantage node {node!r} does not exist")
                elif where is not None and where != zid and self.zones[where].pollers:
                    z.problems.add(z.file, line, path, f"vantage node {node!r} is in zone {where!r}, which its own "
                                                       f"pollers report: name a node of zone {zid!r} or one the "
                                                       "core polls")

    def place(self, targets: Mapping[str, Target]) -> tuple[dict[str, str], list[str]]:
        """Each target's zone, and the homeless (see the module's docstring for the rule)."""
        nodes, sites, munis = self.claimed["nodes"], self.claimed["sites"], self.claimed["municipalities"]
        zone_of: dict[str, str | None] = {}

        def zone(tid: str) -> str | None:
            if tid in zone_of:
                return zone_of[tid]
            zone_of[tid] = None  # a parent cycle (reported by the graph) ends here, homeless
            t = targets[tid]
            via = _table_parent(t)
            if via is not None and via in targets:
                found = zone(via)
                named = nodes.get(tid)
                if named is not None and found is not None and named != found:
                    port = targets[via]
                    walker = port.parents[0] if port.kind == PON_PORT_KIND and port.parents else via
                    self.node_claims[tid].err("nodes", f"{tid!r} is observed through the table of {walker!r}, in "
                                                       f"zone {found!r}, not {named!r}: name it in zone {found!r} or "
                                                       "not at all (whoever polls that zone walks the table)")
            else:
                found = nodes.get(tid) or sites.get(t.site or "") or munis.get(t.municipality or "")
            zone_of[tid] = found
            return found

        placed = {tid: z for tid in targets if (z := zone(tid)) is not None}
        return placed, [tid for tid in targets if tid not in placed]


def _table_parent(t: Target) -> str | None:
    """The target whose walks observe ``t`` (an ONU's port node or OLT, a station's AP), else None."""
    if t.parents and (t.kind == PON_PORT_KIND or t.table_key is not None):
        return t.parents[0]
    return None


def _broker(sec: Section, secrets: SecretReader, value: object, path: str, line: int) -> BrokerSettings | None:
    b = Section.open(sec.problems, sec.file, value, path, line, BROKER_KEYS, ("host",))
    if b is None:
        return None
    host = b.text("host") or ""
    if not host or len(host) > 253 or any(c.isspace() or c in "/@" for c in host):
        b.err("host", f"bad broker host {host[:40]!r} (expected a name or an address)")
    username = b.text("username")
    if "password" in b.data and username is None:
        b.err("password", "a broker password needs a username")
    tls = b.flag("tls", False)
    ca_file = b.text("ca_file") or ""
    if ca_file and not tls:
        b.err("ca_file", "a CA file needs tls: true")
    return BrokerSettings(host, b.integer("port", 8883 if tls else 1883, 1, 65535), username,
                          secrets.get(b, "password"), tls, str(secrets.base_dir / ca_file) if ca_file else "")


def _ids(sec: Section, key: str) -> list[str]:
    value = sec.data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        sec.err(key, f"expected a list of ids, got {type_name(value)}")
        return []
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not ID_RE.match(item) or len(item) > 128:
            sec.err(key, f"bad id {str(item)[:40]!r} ({ID_HINT})")
        else:
            out.append(item)
    return out
