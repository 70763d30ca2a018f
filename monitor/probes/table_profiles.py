"""Table profiles: where a parent device lists its subscribers (ONUs on an OLT, stations on an AP).

One walk of such a table per interval tells the state of hundreds of customers at once, including
ONUs without a management address and CPEs behind customer NAT. A profile is data (YAML in
``monitor/probes/tables/``, format in ``docs/snmp-profiles.md``): the row index, the columns that
identify an endpoint (``keys``), the state and last-down-cause columns with their vendor values
mapped to our own enums, and numeric columns read like SNMP profile columns. Loading is strict and
names the file and key path, like :mod:`monitor.probes.snmp_profiles`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError
from monitor.probes.pon_ports import PORT_FORMATS
from monitor.probes.snmp_profiles import (
    INDEX_DECODERS,
    IndexPart,
    Oid,
    ValueSpec,
    parse_each,
    parse_oid,
    parse_value,
    read_yaml,
)

TABLES_DIR = Path(__file__).resolve().parent / "tables"
TABLE_KINDS = ("onu", "station")
STATES = ("online", "offline")
CAUSES = ("dying_gasp", "los", "other", "unknown")
KEY_KINDS = {"onu": ("onu_serial", "onu_index"), "station": ("station_mac", "station_index")}
KEY_DECODERS = ("text", "gpon-serial", "mac")
_TOP_KEYS = {"name", "device", "kind", "source", "index", "keys", "state", "cause", "values", "port"}


@dataclass(frozen=True, slots=True)
class KeySpec:
    """How one kind of endpoint identifier is read from a row: an index label or a column."""

    kind: str  # onu_serial, onu_index, station_mac, station_index
    index_label: str | None = None
    oid: Oid | None = None
    decode: str = "text"
    pattern: str = ""  # what a configured value must look like (check-config), a regex
    example: str = ""


@dataclass(frozen=True, slots=True)
class PortSpec:
    """Where a row says which PON port the ONU hangs from: an index label or a column, and how its
    number is written (:data:`monitor.probes.pon_ports.PORT_FORMATS`). Ports become topology nodes."""

    format: str
    index_label: str | None = None
    oid: Oid | None = None
    example: str = ""


@dataclass(frozen=True, slots=True)
class EnumSpec:
    """A column whose vendor values map onto one of our enums; unlisted values become ``default``."""

    oid: Oid
    map: Mapping[int, str]
    default: str | None = None


@dataclass(frozen=True, slots=True)
class TableProfile:
    name: str
    device: str
    kind: str  # onu | station
    source: str  # where the OIDs and value meanings come from (cited in the YAML)
    path: str
    index: tuple[IndexPart, ...]
    keys: tuple[KeySpec, ...]
    state: EnumSpec | None = None  # None: a row's presence in the table means online
    cause: EnumSpec | None = None
    values: tuple[ValueSpec, ...] = ()
    port: PortSpec | None = None  # None: the table does not say which PON port a row is on

    def key(self, kind: str) -> KeySpec | None:
        return next((k for k in self.keys if k.kind == kind), None)

    def columns(self) -> list[Oid]:
        """Every column one poll walks, in profile order, without duplicates."""
        oids = [k.oid for k in self.keys if k.oid is not None]
        oids += [e.oid for e in (self.state, self.cause) if e is not None] + [v.oid for v in self.values]
        if self.port is not None and self.port.oid is not None:
            oids.append(self.port.oid)
        return list(dict.fromkeys(oids))


def load_table_profiles(directory: Path = TABLES_DIR) -> dict[str, TableProfile]:
    """Every ``*.yaml`` table profile of ``directory``; a :class:`ConfigError` lists all problems."""
    profiles: dict[str, TableProfile] = {}
    problems: list[str] = []
    for prof in parse_each(directory, _parse_file, problems):
        if prof.name in profiles:
            problems.append(f"{prof.path}: name: {prof.name!r} is already used by {profiles[prof.name].path}")
        profiles[prof.name] = prof
    if problems:
        raise ConfigError(problems)
    return profiles


def _parse_file(path: Path) -> TableProfile:
    src = str(path)
    doc = read_yaml(path, "table profile")
    if not isinstance(doc, dict):
        raise ConfigError(f"{src}: expected a mapping with name, kind, source, index, keys")
    problems: list[str] = []
    for key in doc:
        if key not in _TOP_KEYS:
            problems.append(f"{src}: {key}: unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})")
    name, device, source = (_text(doc, k, src, problems) for k in ("name", "device", "source"))
    kind = doc.get("kind")
    if kind not in TABLE_KINDS:
        problems.append(f"{src}: kind: expected one of {', '.join(TABLE_KINDS)}, got {kind!r}")
        kind = "onu"
    index = _index(doc.get("index"), src, problems)
    labels = {p.label for p in index if p.label}
    keys = _keys(doc.get("keys"), str(kind), labels, src, problems)
    state = _enum(doc.get("state"), STATES, src, "state", problems)
    cause = _enum(doc.get("cause"), CAUSES, src, "cause", problems)
    raw_values = doc.get("values") or []
    if not isinstance(raw_values, list):
        problems.append(f"{src}: values: expected a list")
        raw_values = []
    values = [parse_value(v, src, f"values[{i}]", problems) for i, v in enumerate(raw_values)]
    port = _port(doc.get("port"), str(kind), labels, src, problems)
    if problems:
        raise ConfigError(problems)
    return TableProfile(name, device, str(kind), source, src, index, keys, state, cause,
                        tuple(v for v in values if v is not None), port)


def _text(doc: Mapping[str, Any], key: str, src: str, problems: list[str]) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{src}: {key}: expected a non-empty string")
        return ""
    return value.strip()


def _index(raw: Any, src: str, problems: list[str]) -> tuple[IndexPart, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append(f"{src}: index: expected a list like [{{label: onu, decode: int}}]")
        return ()
    parts: list[IndexPart] = []
    for i, part in enumerate(raw):
        if not isinstance(part, dict) or part.get("decode", "int") not in INDEX_DECODERS:
            problems.append(f"{src}: index[{i}]: expected {{label: NAME, decode: {'|'.join(INDEX_DECODERS)}}}")
            continue
        label = part.get("label")
        parts.append(IndexPart(str(label) if label is not None else None, str(part.get("decode", "int"))))
    return tuple(parts)


def _keys(raw: Any, kind: str, labels: set[str], src: str, problems: list[str]) -> tuple[KeySpec, ...]:
    allowed = KEY_KINDS[kind]
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{src}: keys: expected a mapping of {' / '.join(allowed)} to how each is read")
        return ()
    keys: list[KeySpec] = []
    for key_kind, spec in raw.items():
        at = f"keys.{key_kind}"
        if key_kind not in allowed:
            problems.append(f"{src}: {at}: a {kind} table identifies endpoints by {' or '.join(allowed)}")
            continue
        if not isinstance(spec, dict) or ("index" in spec and "oid" in spec):
            problems.append(f"{src}: {at}: expected {{index: LABEL}}, {{oid: OID, decode: ...}}"
                            " or {} (the row index)")
            continue
        extra = set(spec) - {"index", "oid", "decode", "pattern", "example"}
        if extra:
            problems.append(f"{src}: {at}.{sorted(extra)[0]}: unknown key")
        label = spec.get("index")
        if label is not None and label not in labels:
            problems.append(f"{src}: {at}.index: no index part is labelled {label!r}")
        decode = spec.get("decode", "text")
        if decode not in KEY_DECODERS:
            problems.append(f"{src}: {at}.decode: expected one of {', '.join(KEY_DECODERS)}, got {decode!r}")
        pattern = str(spec.get("pattern", ""))
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append(f"{src}: {at}.pattern: not a regular expression: {exc}")
            pattern = ""
        oid = parse_oid(spec["oid"], src, f"{at}.oid", problems) if "oid" in spec else None
        keys.append(KeySpec(key_kind, label, oid, str(decode), pattern, str(spec.get("example", ""))))
    return tuple(keys)


def _port(raw: Any, kind: str, labels: set[str], src: str, problems: list[str]) -> PortSpec | None:
    if raw is None:
        return None
    formats = "|".join(PORT_FORMATS)
    if kind != "onu" or not isinstance(raw, dict) or ("index" in raw) == ("oid" in raw):
        problems.append(f"{src}: port: expected {{index: LABEL, format: {formats}}} or {{oid: OID, format: ...}}"
                        " (ONU tables only)")
        return None
    extra = set(raw) - {"index", "oid", "format", "example"}
    if extra:
        problems.append(f"{src}: port.{sorted(extra)[0]}: unknown key")
    fmt = raw.get("format")
    if fmt not in PORT_FORMATS:
        problems.append(f"{src}: port.format: expected one of {', '.join(PORT_FORMATS)}, got {fmt!r}")
        fmt = "number"
    label = raw.get("index")
    if label is not None and label not in labels:
        problems.append(f"{src}: port.index: no index part is labelled {label!r}")
    oid = parse_oid(raw["oid"], src, "port.oid", problems) if "oid" in raw else None
    return PortSpec(str(fmt), str(label) if label is not None else None, oid, str(raw.get("example", "")))


def _enum(raw: Any, allowed: tuple[str, ...], src: str, at: str, problems: list[str]) -> EnumSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("map"), dict):
        problems.append(f"{src}: {at}: expected {{oid: OID, map: {{RAW: {'|'.join(allowed)}}}}}")
        return None
    mapping: dict[int, str] = {}
    for k, v in raw["map"].items():
        if isinstance(k, bool) or not isinstance(k, int) or v not in allowed:
            problems.append(f"{src}: {at}.map.{k}: expected an integer mapped to one of {', '.join(allowed)}")
            continue
        mapping[k] = str(v)
    default = raw.get("default")
    if default is not None and default not in allowed:
        problems.append(f"{src}: {at}.default: expected one of {', '.join(allowed)}, got {default!r}")
        default = None
    return EnumSpec(parse_oid(raw.get("oid"), src, f"{at}.oid", problems), mapping, default)
