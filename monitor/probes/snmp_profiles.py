"""SNMP profiles: which OIDs to poll for a kind of device and how to turn them into metrics.

Profiles are YAML data files (format in ``docs/snmp-profiles.md``) so an ISP can add a device
without touching code: the built-in ones live in ``monitor/probes/profiles/``, user directories
override them by name. Loading is strict: every mistake names the file and the key path, because a
silently ignored typo would mean a metric that is never collected.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from monitor.errors import ConfigError

Oid = tuple[int, ...]
T = TypeVar("T")
BUILTIN_DIR = Path(__file__).resolve().parent / "profiles"
INDEX_DECODERS = ("int", "mac", "length-prefixed-ascii", "ascii", "rest")
PARSERS = ("dbm-string", "number-string")
_VALUE_KEYS = {"name", "oid", "scale", "offset", "map", "parse", "type", "ignore", "fallback", "labels"}


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """One metric from one OID (a scalar instance or a table column)."""

    name: str
    oid: Oid
    scale: float = 1.0
    offset: float = 0.0  # added to the raw value before scaling: (raw + offset) * scale
    map: Mapping[int, float] | None = None  # raw enum → metric value; unmapped values are skipped
    parse: str | None = None  # for numbers sent as strings
    counter: bool = False  # monotonic counter: reported as a per-second rate (× scale)
    ignore: frozenset[int] = frozenset()  # raw values that mean "not available" (e.g. 2147483647)
    fallback: Oid | None = None  # polled when ``oid`` returns nothing (e.g. 32-bit ifInOctets)
    labels: tuple[tuple[str, str], ...] = ()  # fixed labels, e.g. chain=0


@dataclass(frozen=True, slots=True)
class IndexPart:
    label: str | None  # None: consumed but not turned into a label
    decode: str


@dataclass(frozen=True, slots=True)
class LabelColumn:
    label: str
    oid: Oid
    fallback: Oid | None = None


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    index: tuple[IndexPart, ...]
    columns: tuple[ValueSpec, ...]
    labels: tuple[LabelColumn, ...] = ()


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    source: str
    scalars: tuple[ValueSpec, ...] = ()
    tables: tuple[Table, ...] = ()
    extends: tuple[str, ...] = field(default=())


def load_profiles(dirs: Sequence[Path]) -> dict[str, Profile]:
    """Load every ``*.yaml`` profile of the built-in dir, then of ``dirs`` (later ones override).

    ``extends`` is resolved here: a profile's scalars and tables come after those it extends.
    Raises :class:`ConfigError` listing every problem (file, key path, what was expected).
    """
    raw, problems = dict(_builtin()[0]), list(_builtin()[1])
    for d in dirs:
        _read_dir(Path(d), raw, problems)
    resolved: dict[str, Profile] = {}
    for name in raw:
        try:
            resolved[name] = _resolve(name, raw, ())
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return resolved


@functools.cache
def _builtin() -> tuple[dict[str, Profile], tuple[str, ...]]:
    """The built-in profiles as parsed (package data, frozen values): read once per process, not once
    by the inventory's check and again by the probe (a one-shot ``monitor probe`` did both)."""
    raw: dict[str, Profile] = {}
    problems: list[str] = []
    _read_dir(BUILTIN_DIR, raw, problems)
    return raw, tuple(problems)


def _read_dir(d: Path, raw: dict[str, Profile], problems: list[str]) -> None:
    if not d.is_dir():
        problems.append(f"{d}: profile directory does not exist")
        return
    for prof in parse_each(d, _parse_file, problems):
        raw[prof.name] = prof


def parse_each(d: Path, parse: Callable[[Path], T], problems: list[str]) -> Iterator[T]:
    """``parse`` of every ``*.yaml`` in ``d`` by name; the problems of the files that fail go to ``problems``."""
    for path in sorted(d.glob("*.yaml")):
        try:
            yield parse(path)
        except ConfigError as exc:
            problems.extend(exc.problems)


def _resolve(name: str, raw: Mapping[str, Profile], chain: tuple[str, ...]) -> Profile:
    prof = raw[name]
    if name in chain:
        raise ConfigError(f"{prof.source}: extends: cycle {' -> '.join((*chain, name))}")
    scalars: list[ValueSpec] = []
    tables: list[Table] = []
    for parent in prof.extends:
        if parent not in raw:
            raise ConfigError(f"{prof.source}: extends: unknown profile {parent!r} (known: {sorted(raw)})")
        base = _resolve(parent, raw, (*chain, name))
        scalars.extend(base.scalars)
        tables.extend(base.tables)
    return Profile(name, prof.source, (*scalars, *prof.scalars), (*tables, *prof.tables), prof.extends)


# libyaml's safe loader when PyYAML was built with it: the same documents, ~10x faster. Parsing the 12
# built-in profiles with the pure-Python one was ~0.07 s of every ``monitor probe``/``check-config``.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path, what: str = "profile") -> Any:
    """The parsed YAML document of a profile file; unreadable or invalid YAML is a ConfigError."""
    try:
        return yaml.load(path.read_text(), Loader=_SAFE_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc}") from exc


def _parse_file(path: Path) -> Profile:
    src = str(path)
    doc = read_yaml(path)
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise ConfigError(f"{src}: expected a mapping with name, scalars, tables")
    _unknown(doc, {"name", "extends", "description", "scalars", "tables"}, src, "", problems)
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"{src}: name: expected a non-empty string")
        name = path.stem
    ext = doc.get("extends") or []
    if isinstance(ext, str):
        ext = [ext]
    if not isinstance(ext, list) or not all(isinstance(e, str) for e in ext):
        problems.append(f"{src}: extends: expected a profile name or a list of names")
        ext = []
    scalars = [_value(v, src, f"scalars[{i}]", problems) for i, v in enumerate(_list(doc, "scalars", src, problems))]
    tables = [_table(t, src, f"tables[{i}]", problems) for i, t in enumerate(_list(doc, "tables", src, problems))]
    if problems:
        raise ConfigError(problems)
    return Profile(name, src, tuple(s for s in scalars if s), tuple(t for t in tables if t), tuple(ext))


def _table(doc: Any, src: str, at: str, problems: list[str]) -> Table | None:
    if not isinstance(doc, dict):
        problems.append(f"{src}: {at}: expected a mapping with name, index, columns")
        return None
    _unknown(doc, {"name", "index", "labels", "columns"}, src, at, problems)
    index: list[IndexPart] = []
    for i, part in enumerate(_list(doc, "index", src, problems, at) or [{"label": None, "decode": "rest"}]):
        where = f"{at}.index[{i}]"
        if not isinstance(part, dict):
            problems.append(f"{src}: {where}: expected {{label: NAME, decode: {'|'.join(INDEX_DECODERS)}}}")
            continue
        _unknown(part, {"label", "decode"}, src, where, problems)
        decode = part.get("decode", "int")
        if decode not in INDEX_DECODERS:
            problems.append(f"{src}: {where}.decode: expected one of {', '.join(INDEX_DECODERS)}, got {decode!r}")
        label = part.get("label")
        if label is not None and not isinstance(label, str):
            problems.append(f"{src}: {where}.label: expected a string")
        index.append(IndexPart(label, str(decode)))
    labels: list[LabelColumn] = []
    for i, lab in enumerate(_list(doc, "labels", src, problems, at)):
        where = f"{at}.labels[{i}]"
        if not isinstance(lab, dict) or not isinstance(lab.get("label"), str):
            problems.append(f"{src}: {where}: expected {{label: NAME, oid: OID}}")
            continue
        _unknown(lab, {"label", "oid", "fallback"}, src, where, problems)
        oid = _oid(lab.get("oid"), src, f"{where}.oid", problems)
        fb = _oid(lab["fallback"], src, f"{where}.fallback", problems) if "fallback" in lab else None
        labels.append(LabelColumn(lab["label"], oid, fb))
    col_docs = _list(doc, "columns", src, problems, at)
    cols = [_value(c, src, f"{at}.columns[{i}]", problems) for i, c in enumerate(col_docs)]
    if not cols:
        problems.append(f"{src}: {at}.columns: expected at least one column")
    return Table(str(doc.get("name", at)), tuple(index), tuple(c for c in cols if c), tuple(labels))


def _value(doc: Any, src: str, at: str, problems: list[str]) -> ValueSpec | None:
    if not isinstance(doc, dict):
        problems.append(f"{src}: {at}: expected a mapping with name and oid")
        return None
    _unknown(doc, _VALUE_KEYS, src, at, problems)
    name = doc.get("name")
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        problems.append(f"{src}: {at}.name: expected a metric name like wireless_signal_dbm, got {name!r}")
        name = "?"
    oid = _oid(doc.get("oid"), src, f"{at}.oid", problems)
    scale, offset = _num(doc, "scale", 1.0, src, at, problems), _num(doc, "offset", 0.0, src, at, problems)
    mapping = doc.get("map")
    if mapping is not None and not (
        isinstance(mapping, dict)
        and all(isinstance(k, int) and isinstance(v, (int, float)) for k, v in mapping.items())
    ):
        problems.append(f"{src}: {at}.map: expected a mapping of integer raw values to numbers")
        mapping = None
    parse = doc.get("parse")
    if parse is not None and parse not in PARSERS:
        problems.append(f"{src}: {at}.parse: expected one of {', '.join(PARSERS)}, got {parse!r}")
    kind = doc.get("type", "gauge")
    if kind not in ("gauge", "counter"):
        problems.append(f"{src}: {at}.type: expected gauge or counter, got {kind!r}")
    ignore = doc.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(i, int) for i in ignore):
        problems.append(f"{src}: {at}.ignore: expected a list of integers")
        ignore = []
    fixed = doc.get("labels", {})
    if not isinstance(fixed, dict):
        problems.append(f"{src}: {at}.labels: expected a mapping of label to value")
        fixed = {}
    fb = _oid(doc["fallback"], src, f"{at}.fallback", problems) if "fallback" in doc else None
    return ValueSpec(
        name, oid, scale, offset, {int(k): float(v) for k, v in mapping.items()} if mapping else None, parse,
        kind == "counter", frozenset(ignore), fb, tuple(sorted((str(k), str(v)) for k, v in fixed.items())),
    )


def _oid(value: Any, src: str, at: str, problems: list[str]) -> Oid:
    text = str(value) if isinstance(value, (str, int)) else ""
    parts = text.strip().lstrip(".").split(".")
    if not text or not all(p.isdigit() for p in parts) or len(parts) < 2:
        problems.append(f"{src}: {at}: expected a numeric OID like .1.3.6.1.2.1.1.3.0, got {value!r}")
        return (0, 0)
    return tuple(int(p) for p in parts)


def _num(doc: Mapping[str, Any], key: str, default: float, src: str, at: str, problems: list[str]) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{src}: {at}.{key}: expected a number, got {value!r}")
        return default
    return float(value)


def _list(doc: Mapping[str, Any], key: str, src: str, problems: list[str], at: str = "") -> list[Any]:
    value = doc.get(key) or []
    if not isinstance(value, list):
        problems.append(f"{src}: {at + '.' if at else ''}{key}: expected a list")
        return []
    return value


def _unknown(doc: Mapping[str, Any], allowed: set[str], src: str, at: str, problems: list[str]) -> None:
    for key in doc:
        if key not in allowed:
            where = f"{at}.{key}" if at else str(key)
            problems.append(f"{src}: {where}: unknown key (expected one of {', '.join(sorted(allowed))})")


# Shared with the table profiles (monitor.probes.table_profiles): same OID and value syntax.
parse_oid = _oid
parse_value = _value
