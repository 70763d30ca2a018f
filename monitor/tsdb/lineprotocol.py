"""InfluxDB line protocol encoding (what InfluxDB 1.x/2.x/3.x and VictoriaMetrics all accept).

Escaping rules (docs.influxdata.com, "Line protocol"): measurement names escape commas and spaces;
tag keys, tag values and field keys escape commas, equals signs and spaces. Backslashes are the
portability trap: InfluxDB 1.6 stores ``\\\\`` literally while VictoriaMetrics unescapes it, and a
backslash at the end of a name or before an escaped character makes 1.6 reject the line ("invalid
tag format"). So a backslash is kept as it is (both store it verbatim) except at the end or before
``, = \\``, where it becomes ``/``. Line breaks and tabs cannot be represented and become (escaped)
spaces. Integers carry the ``i`` suffix, booleans are ``true``/``false``, floats use Python's
shortest round-trip repr. Non-finite floats (NaN, ±inf) are not representable:
such fields are left out, and a point with no field left is left out entirely.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable

from monitor.tsdb.point import FieldValue, Point

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_AMBIGUOUS_BACKSLASH = re.compile(r"\\(?=[, =\\]|$)")

_SPACES = str.maketrans({"\n": " ", "\r": " ", "\t": " "})
_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ "})
_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})


def _unambiguous(text: str) -> str:
    if not text.isprintable():
        text = text.translate(_SPACES)
    return _AMBIGUOUS_BACKSLASH.sub("/", text) if "\\" in text else text


def escape_measurement(name: str) -> str:
    return _unambiguous(name).translate(_MEASUREMENT)


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    return _unambiguous(text).translate(_KEY)


def format_value(value: FieldValue) -> str | None:
    """The line-protocol text of a field value, or ``None`` when it cannot be represented."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return f"{value}i"
        value = float(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    raise TypeError(f"field values are numbers or booleans, not {type(value).__name__}")


@functools.lru_cache(maxsize=200_000)
def _series_key(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """``measurement,tag=value,...`` escaped. Cached: a target's tags repeat every poll, and escaping
    was half the encoding time (bench/tsdb)."""
    head = escape_measurement(measurement)
    if tags:
        head += "," + ",".join(f"{escape_key(k)}={escape_key(v)}" for k, v in tags if k and v)
    return head


_field_key = functools.lru_cache(maxsize=10_000)(escape_key)


def encode_point(point: Point) -> str | None:
    """One line without the trailing newline, or ``None`` when no field is representable."""
    fields = []
    for key, value in point.fields:
        text = format_value(value)
        if text is not None:
            fields.append(f"{_field_key(key)}={text}")
    if not fields:
        return None
    return f"{_series_key(point.measurement, point.tags)} {','.join(fields)} {point.time_ns}"


def encode_lines(points: Iterable[Point]) -> list[str]:
    """Encode points to lines, skipping unrepresentable ones (see the module docstring)."""
    lines = []
    for point in points:
        line = encode_point(point)
        if line is not None:
            lines.append(line)
    return lines


def to_line_protocol(points: Iterable[Point]) -> bytes:
    """The body of one write request: one line per point, newline-terminated, UTF-8."""
    lines = encode_lines(points)
    return ("\n".join(lines) + "\n").encode() if lines else b""
