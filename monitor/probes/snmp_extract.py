"""Turn raw varbinds into samples as a profile describes (pure; no I/O, no pysnmp calls).

Agents send odd things: a string where a number belongs, noSuchObject, enum values nobody
documented, "N/A" instead of a power reading. Every such value is skipped with a reason and the
rest of the reply is kept, so one bad column never hides the good ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyasn1.type import univ
from pysnmp.proto import rfc1902

from monitor.probes.snmp_profiles import IndexPart, Oid, Profile, Table, ValueSpec

VarBind = tuple[Oid, Any]
_DBM = re.compile(r"(-?\d+(?:\.\d+)?)\s*dbm", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True, slots=True)
class Sample:
    """A gauge value (already scaled) or, when ``counter_bits`` is set, a raw counter reading."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    counter_bits: int = 0
    scale: float = 1.0  # applied to a counter's per-second rate


class Skip(Exception):
    """A value that cannot become a metric; the message says why (never contains secrets)."""


def extract(
    profile: Profile, scalars: Mapping[Oid, Any], walks: Mapping[Oid, Sequence[VarBind]]
) -> tuple[list[Sample], list[str]]:
    """Samples for every value the profile names, plus one line per skipped value."""
    samples: list[Sample] = []
    skipped: list[str] = []
    for spec in profile.scalars:
        value = scalars.get(spec.oid)
        if (value is None or _missing(value)) and spec.fallback is not None:
            value = scalars.get(spec.fallback)
        if value is None or _missing(value):
            continue  # the device does not implement it: not an error
        try:
            samples.append(to_sample(spec, value, spec.labels))
        except Skip as exc:
            skipped.append(f"{spec.name}: {exc}")
    for table in profile.tables:
        _table(table, walks, samples, skipped)
    return samples, skipped


def _table(table: Table, walks: Mapping[Oid, Sequence[VarBind]], samples: list[Sample], skipped: list[str]) -> None:
    label_values: dict[str, dict[Oid, str]] = {}
    for lab in table.labels:
        base, rows = column_rows(walks, lab.oid, lab.fallback)
        label_values[lab.label] = {
            oid[len(base):]: text for oid, v in rows if not _missing(v) and (text := to_text(v))
        }
    for spec in table.columns:
        base, rows = column_rows(walks, spec.oid, spec.fallback)
        for oid, value in rows:
            if _missing(value):
                continue
            suffix = oid[len(base):]
            try:
                labels = dict(decode_index(table.index, suffix))
            except Skip as exc:
                skipped.append(f"{spec.name}{'.'.join(map(str, ('', *suffix)))}: {exc}")
                continue
            for name, values in label_values.items():
                if suffix in values:
                    labels[name] = values[suffix]
            labels.update(spec.labels)
            try:
                samples.append(to_sample(spec, value, tuple(sorted(labels.items()))))
            except Skip as exc:
                skipped.append(f"{spec.name}{'.'.join(map(str, ('', *suffix)))}: {exc}")


def column_rows(
    walks: Mapping[Oid, Sequence[VarBind]], oid: Oid, fallback: Oid | None
) -> tuple[Oid, Sequence[VarBind]]:
    rows = walks.get(oid) or ()
    if not rows and fallback is not None:
        return fallback, walks.get(fallback) or ()
    return oid, rows


def to_sample(spec: ValueSpec, value: Any, labels: tuple[tuple[str, str], ...]) -> Sample:
    if spec.counter:
        if isinstance(value, rfc1902.Counter64):
            return Sample(spec.name, labels, float(int(value)), 64, spec.scale)
        if isinstance(value, (rfc1902.Counter32, rfc1902.Gauge32)):  # some agents misuse Gauge32
            return Sample(spec.name, labels, float(int(value)), 32, spec.scale)
        raise Skip(f"expected a counter, got {_type_name(value)}")
    return Sample(spec.name, labels, to_number(spec, value))


def to_number(spec: ValueSpec, value: Any) -> float:
    """The metric value for a gauge: parse, drop 'not available', map enums, offset and scale."""
    if isinstance(value, univ.Integer):
        raw: float = int(value)
        if int(raw) in spec.ignore:
            raise Skip(f"value {int(raw)} means not available")
    elif isinstance(value, univ.OctetString) and spec.parse:
        raw = parse_string(spec.parse, to_text(value))
    else:
        raise Skip(f"expected a number, got {_type_name(value)}")
    if spec.map is not None:
        if not float(raw).is_integer() or int(raw) not in spec.map:
            raise Skip(f"value {raw} is not in the profile's map")
        return spec.map[int(raw)]
    return (raw + spec.offset) * spec.scale


def parse_string(how: str, text: str) -> float:
    """Numbers sent as text: Cambium '-62.8', V-SOL '0.03 mW (-14.61 dBm)' or '6.56 dbm'."""
    m = _DBM.search(text) if how == "dbm-string" else None
    m = m or _NUMBER.match(text)
    if m is None:
        raise Skip(f"cannot read a number from {text[:40]!r}")
    number = float(m.group(1))
    if not math.isfinite(number):
        raise Skip(f"not a finite number: {text[:40]!r}")
    return number


def decode_index(parts: Sequence[IndexPart], suffix: Oid) -> list[tuple[str, str]]:
    """Labels from a row index: ints, 6-byte MACs, length-prefixed serial numbers, the rest."""
    labels: list[tuple[str, str]] = []
    pos = 0
    for part in parts:
        if part.decode == "rest":
            text, pos = ".".join(map(str, suffix[pos:])), len(suffix)
        elif part.decode == "int":
            if pos >= len(suffix):
                raise Skip("index too short")
            text, pos = str(suffix[pos]), pos + 1
        elif part.decode == "mac":
            octets = suffix[pos:pos + 6]
            if len(octets) != 6 or any(o > 255 for o in octets):
                raise Skip("index is not a MAC address")
            text, pos = ":".join(f"{o:02x}" for o in octets), pos + 6
        else:  # length-prefixed-ascii / ascii
            if part.decode == "length-prefixed-ascii":
                if pos >= len(suffix):
                    raise Skip("index too short")
                n, pos = suffix[pos], pos + 1
            else:
                n = len(suffix) - pos
            chars = suffix[pos:pos + n]
            if len(chars) != n or any(c > 126 or c < 32 for c in chars):
                raise Skip("index is not printable ASCII")
            text, pos = "".join(map(chr, chars)), pos + n
        if part.label:
            labels.append((part.label, text))
    return labels


def to_text(value: Any) -> str:
    if isinstance(value, univ.OctetString):
        data = bytes(value)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
        return text.replace("\x00", "").strip()
    if isinstance(value, univ.Integer):
        return str(int(value))
    return str(value)


def _missing(value: Any) -> bool:
    return value.__class__.__name__ in ("NoSuchObject", "NoSuchInstance", "EndOfMibView", "Null")


def _type_name(value: Any) -> str:
    return str(value.__class__.__name__)
