"""Everything a request brings, checked before it reaches the store: bodies, fields, query strings, ids.

Every request is untrusted (whoever reaches the port; a link anyone forwarded). So each value is
typed, finite, bounded in length and range, and unknown or repeated keys are refused rather than
ignored (a typo must not silently do something else). A bad value is a :class:`Problem` (HTTP 400
with a message naming the field), never an exception from a library: those stop here.
"""

from __future__ import annotations

import math
import re
from typing import Any, NoReturn

from aiohttp import web
from multidict import MultiMapping

from monitor import jsonbound
from monitor.correlate.incidents import parse_ts

MAX_NAME = 100  # characters of "by"
MAX_TEXT = 2000  # characters of a note (it goes to the desk ticket and the incident log)
MAX_TS_TEXT = 64  # characters of an ISO-8601 time
AT_ERROR = "at: expected ISO-8601 like 2026-11-24T15:00:00-05:00, or epoch seconds"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")  # newline, tab, CR are fine


class Problem(Exception):
    """An error answer: HTTP status and a message for the caller (never a secret)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Repeated(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def bad(message: str) -> NoReturn:
    raise Problem(400, message)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Repeated(key)
        out[key] = value
    return out


async def body(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object of a POST; unknown or repeated keys are refused.

    Read as UTF-8 whatever charset the request claims (RFC 8259: JSON is UTF-8), so neither an
    unknown charset nor undecodable bytes nor nesting deeper than the parser's recursion limit gets
    past this as anything but a 400. The size is bounded before this by ``client_max_size`` (413).
    """
    raw = await request.read()
    try:
        doc = jsonbound.loads(raw.decode("utf-8"), object_pairs_hook=_pairs)
    except _Repeated as exc:
        bad(f"{exc.key[:40]}: given twice")
    except ValueError:  # jsonbound.TooDeep included
        bad("the body is not JSON")
    if not isinstance(doc, dict):
        bad("expected a JSON object")
    for key in doc:
        if key not in allowed:
            bad(f"unknown key {key[:40]!r} (allowed: {', '.join(allowed)})")
    return doc


def query(request: web.Request, allowed: tuple[str, ...]) -> MultiMapping[str]:
    """The query string, with unknown and repeated parameters refused."""
    q = request.query
    for key in q:
        if key not in allowed:
            bad(f"unknown query parameter {key[:40]!r} (allowed: {', '.join(allowed) or 'none'})")
        if len(q.getall(key)) > 1:
            bad(f"{key}: given twice")
    return q


def incident_id(request: web.Request) -> str:
    inc = request.match_info["id"]
    if not _ID.fullmatch(inc):
        bad("incident id: expected an id like INC-000001")
    return inc


def name(doc: dict[str, Any]) -> str:
    by = doc.get("by")
    if not isinstance(by, str) or not by.strip() or len(by) > MAX_NAME or not by.isprintable():
        bad(f"by: expected who does it, a name of 1 to {MAX_NAME} printable characters")
    return by.strip()


def text(doc: dict[str, Any], key: str, *, required: bool) -> str:
    value = doc.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value.strip()):
        bad(f"{key}: expected {'a non-empty' if required else 'a'} string")
    if len(value) > MAX_TEXT:
        bad(f"{key}: expected at most {MAX_TEXT} characters")
    if _CONTROL.search(value) or not _encodable(value):
        bad(f"{key}: control characters are not allowed")
    return value


def when(value: object) -> float:
    """An ETA as epoch seconds: finite; its range against the clock is :meth:`monitor.correlate.staff.Staff.eta`'s."""
    if isinstance(value, float):
        if not math.isfinite(value):
            bad("at: expected a finite time")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(max(-(10**18), min(value, 10**18)))  # beyond a float's range: still just "too far"
    if isinstance(value, str) and len(value) <= MAX_TS_TEXT:
        try:
            return parse_ts(value)
        except (ValueError, OverflowError):
            pass
    bad(AT_ERROR)


def _encodable(value: str) -> bool:
    """False for lone surrogates (from ``\\ud800`` escapes): SQLite and mail cannot store them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
