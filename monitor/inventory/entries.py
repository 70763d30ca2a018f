"""Read nodes, customers and their endpoints from YAML into :mod:`records` (no cross-checks yet).

Why two passes: a node may name a parent defined further down, and endpoints may come from the CSV,
so this module only validates each entry on its own and claims its id and address; references are
resolved by :mod:`monitor.inventory.graph` once everything is read.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Mapping

from monitor.inventory.fields import Section, type_name
from monitor.inventory.model import ENDPOINT_KINDS, NODE_KINDS, SnmpCredentials, SnmpSettings, TargetRole
from monitor.inventory.records import RawCustomer, RawTarget, Registry, Where
from monitor.inventory.settings import POLLING_KEYS, polling_override

SNMP_KEYS = ("profile", "credentials", "port", "timeout", "retries", "context", "walk_max_rows", "walk_max_bytes",
             "table")
TABLE_KEYS = ("onu_serial", "onu_index", "station_mac", "station_index")
NODE_KEYS = ("id", "kind", "address", "site", "municipality", "name", "parent", "parents", "snmp", "polling")
ENDPOINT_KEYS = ("id", "kind", "address", "name", "parent", "parents", "snmp", "polling", *TABLE_KEYS, "pon_port")
CUSTOMER_KEYS = ("id", "name", "service_class", "contacts", "language", "notify", "endpoints")
LANGUAGES = ("es", "en")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ADDRESS_HINT = "expected an IPv4 or IPv6 literal such as 192.0.2.10 or 2001:db8::10"


def parse_address(value: object) -> tuple[str | None, str | None]:
    """(normalised address, None) or (None, problem)."""
    if not isinstance(value, str):
        return None, f"expected an IP address as a string, got {type_name(value)}"
    text = value.strip()
    try:  # fast path for IPv4, which is ~5x cheaper than ipaddress (50k-endpoint billing exports)
        first = socket.inet_pton(socket.AF_INET, text)[0]
        if text != "0.0.0.0" and not 224 <= first <= 239:
            return text, None
    except OSError:
        pass
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None, f"bad IP address {value!r} ({ADDRESS_HINT})"
    if ip.is_unspecified or ip.is_multicast:
        return None, f"bad IP address {value!r} (expected a unicast host address)"
    return str(ip), None


@functools.cache
def known_table_profiles() -> tuple[str, ...]:
    """The built-in table profiles (ONU and station tables) a node's ``snmp.table`` may name."""
    from monitor.probes.table_profiles import load_table_profiles

    return tuple(sorted(load_table_profiles()))


@functools.cache
def known_profiles() -> tuple[str, ...]:
    """The built-in SNMP profiles, the only ones the daemon loads: a typo here would fail every poll."""
    from monitor.probes.snmp_profiles import load_profiles

    return tuple(sorted(load_profiles(())))


def check_email(value: str | None) -> str | None:
    """A problem with an e-mail address, if any. Deliberately loose: one '@', a dot in the domain."""
    if value is None:
        return None
    if not _EMAIL_RE.match(value):
        return f"bad e-mail address {value!r} (expected name@domain)"
    return None


class EntryReader:
    """Reads the YAML entries of one file; shares the id/address registry with the CSV reader."""

    def __init__(
        self, registry: Registry, credentials: Mapping[str, SnmpCredentials], defined: set[str],
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.defined = defined  # includes broken entries, already reported where they are

    def nodes(self, top: Section) -> list[RawTarget]:
        out = []
        for value, path, line in top.items("nodes"):
            sec = Section.open(top.problems, top.file, value, path, line, NODE_KEYS, ("id", "kind", "address"))
            if sec is not None and (raw := self.target(sec, "node", NODE_KINDS)) is not None:
                for key in ("site", "municipality"):
                    ref = sec.ident(key)
                    if ref is not None:
                        setattr(raw, key, (ref, self.where(sec, key)))
                out.append(raw)
        if top.data.get("nodes") == []:
            top.err("nodes", "must not be empty (at least one node is needed)")
        return out

    def customers(self, top: Section) -> list[RawCustomer]:
        out = []
        for value, path, line in top.items("customers"):
            sec = Section.open(top.problems, top.file, value, path, line, CUSTOMER_KEYS,
                               ("id", "name", "service_class"))
            if sec is None:
                continue
            cid = sec.ident("id")
            if cid is None or not self.registry.claim_customer(cid, self.where(sec, "id")):
                continue
            cust = RawCustomer(cid, sec.text("name") or cid, self.where(sec, "id"),
                               language=sec.choice("language", LANGUAGES, "es") or "es",
                               notify=sec.flag("notify", True))
            sc = sec.ident("service_class")
            if sc is not None:
                cust.service_class = (sc, self.where(sec, "service_class"))
            contacts = sec.section("contacts", ("email", "phone"))
            if contacts is not None:
                cust.email, cust.phone = contacts.text("email"), contacts.text("phone")
                if problem := check_email(cust.email):
                    contacts.err("email", problem)
            for item, ipath, iline in sec.items("endpoints"):
                esec = Section.open(top.problems, top.file, item, ipath, iline, ENDPOINT_KEYS, ("id", "kind"))
                if esec is None or (raw := self.target(esec, "endpoint", ENDPOINT_KINDS)) is None:
                    continue
                raw.table_key = self.table_key(esec)
                raw.pon_port = self.pon_port(esec)
                if "address" not in esec.data and raw.table_key is None:
                    esec.err(None, "missing required key 'address' (or one of onu_serial, onu_index, station_mac,"
                                   " station_index: what its parent's subscriber table knows it by)")
                if not raw.parents:
                    esec.err(None, "missing required key 'parent' (the node this endpoint hangs from)")
                raw.customer, raw.name = cid, raw.name or cust.name
                cust.endpoints.append(raw)
            out.append(cust)
        return out

    @staticmethod
    def where(sec: Section, key: str | None = None) -> Where:
        return Where(sec.file, sec.line(key), sec.key_path(key) if key else sec.path)

    def target(self, sec: Section, role: TargetRole, kinds: tuple[str, ...]) -> RawTarget | None:
        """The fields nodes and endpoints share. None if the id is missing, bad or taken."""
        tid = sec.ident("id")
        kind = sec.choice("kind", kinds)
        if tid is None or not self.registry.claim_target(tid, self.where(sec, "id")):
            return None
        raw = RawTarget(tid, kind or "", role, self.where(sec, "id"), name=sec.text("name"))
        if "address" in sec.data:
            raw.address_where = self.where(sec, "address")
            raw.address, problem = parse_address(sec.data["address"])
            if problem:
                sec.err("address", problem)
            else:
                self.registry.claim_address(raw.address or "", tid, raw.address_where)
        raw.parents = self.parents(sec)
        snmp = sec.section("snmp", SNMP_KEYS, ("profile", "credentials"))
        if snmp is not None:
            raw.snmp, raw.snmp_where = self.snmp(snmp), self.where(sec, "snmp")
        polling = sec.section("polling", POLLING_KEYS)
        if polling is not None:
            raw.polling, raw.polling_where = polling_override(polling), self.where(sec, "polling")
        return raw

    def table_key(self, sec: Section) -> tuple[str, str, Where] | None:
        """The endpoint's identifier in its parent's subscriber table, as written (checked in graph)."""
        given = [k for k in TABLE_KEYS if k in sec.data]
        if len(given) > 1:
            sec.err(given[1], f"give one of {', '.join(given)}, not several")
            return None
        if not given:
            return None
        key = given[0]
        value = sec.data[key]
        if isinstance(value, int) and not isinstance(value, bool) and key.endswith("_index"):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            hint = " (quote it: 1.10 read as a number would become 1.1)" if isinstance(value, float) else ""
            sec.err(key, f"expected a string, got {type_name(value)}{hint}")
            return None
        return key, value.strip(), self.where(sec, key)

    def pon_port(self, sec: Section) -> tuple[str, Where] | None:
        """The PON port an ONU hangs from, as written (``0/1/3``; checked against the OLT's profile in graph)."""
        if "pon_port" not in sec.data:
            return None
        value = sec.data["pon_port"]
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            sec.err("pon_port", f"expected a PON port like 0/1/3 or 3, got {type_name(value)}")
            return None
        return value.strip(), self.where(sec, "pon_port")

    def parents(self, sec: Section) -> list[tuple[str, Where]]:
        if "parent" in sec.data and "parents" in sec.data:
            sec.err("parents", "give either parent or parents, not both")
            return []
        if "parent" in sec.data:
            ref = sec.ident("parent")
            return [] if ref is None else [(ref, self.where(sec, "parent"))]
        out: list[tuple[str, Where]] = []
        items = list(sec.items("parents"))
        if "parents" in sec.data and not items and isinstance(sec.data["parents"], list):
            sec.err("parents", "must not be empty (leave it out for a node without parents)")
        for item, path, line in items:
            where = Where(sec.file, line, path)
            if not isinstance(item, str) or not item.strip():
                where.err(sec.problems, f"expected a node id, got {type_name(item)}")
            elif any(item == seen for seen, _ in out):
                where.err(sec.problems, f"parent {item!r} is listed twice")
            else:
                out.append((item.strip(), where))
        return out

    def snmp(self, sec: Section) -> SnmpSettings | None:
        profile = sec.text("profile")
        if profile is not None and profile not in known_profiles():
            sec.err("profile", f"unknown SNMP profile {profile!r} (expected one of: {', '.join(known_profiles())})")
            profile = None
        name = sec.ident("credentials")
        creds = self.credentials.get(name) if name else None
        if name is not None and name not in self.defined:
            known = ", ".join(sorted(self.defined)) or "none defined"
            sec.err("credentials", f"unknown credentials {name!r} (expected a key of credentials: {known})")
        port = sec.integer("port", 161, 1, 65535)
        timeout = sec.duration("timeout", 2.0, gt=0, le=60)
        retries = sec.integer("retries", 1, 0, 10)
        context = (sec.text("context") or "") if "context" in sec.data else ""  # SNMPv3 context name
        max_rows = sec.integer("walk_max_rows", 10_000, 1, 10_000_000)
        max_bytes = sec.integer("walk_max_bytes", 4 << 20, 1 << 10, 1 << 30)
        table = sec.text("table") or ""
        if table and table not in known_table_profiles():
            sec.err("table", f"unknown table profile {table!r} (expected one of: {', '.join(known_table_profiles())})")
            table = ""
        if profile is None or creds is None:
            return None
        return SnmpSettings(profile=profile, credentials=creds, port=port, timeout=timeout, retries=retries,
                            context=context, walk_max_rows=max_rows, walk_max_bytes=max_bytes, table=table)
