"""Recurring maintenance windows: one window repeated by an RFC 5545 RRULE ("every Tuesday 02:00-04:00").

The rule is expanded into ordinary windows, one per occurrence, so everything downstream stays as it
is: each occurrence is a planned window of its own with its own advance, start and end notices, and
reports exclude each occurrence. python-dateutil does the RRULE arithmetic (BYDAY=1TU, BYSETPOS,
months without a 31st, wall-clock time across DST changes), which hand-written code would get wrong.

The rule text comes from a config file or a command line, so it is bounded before dateutil sees it:
printable ASCII, at most 300 characters, only the parts maintenance needs (FREQ DAILY to YEARLY,
INTERVAL, COUNT, UNTIL, BYDAY, BYMONTHDAY, BYMONTH, BYSETPOS, WKST; the time of day is the first
window's), and the expansion stops at :data:`MAX_OCCURRENCES` or :data:`HORIZON` after the first
window, whichever comes first: an open-ended rule covers two years (reload the config or add the
series again later).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

MAX_OCCURRENCES = 1000
HORIZON = timedelta(days=731)
MAX_LENGTH = 300
LAST_PRINTABLE = 253_402_300_799.0  # 9999-12-31T23:59:59Z: windows end before it (they are printed as ISO times)
FREQS = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
PARTS = ("FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "BYMONTH", "BYSETPOS", "WKST")
_PART = re.compile(r"^[A-Z0-9,+\-]{1,100}$")
_UNTIL = re.compile(r"^(\d{8})(T\d{6}Z?)?$")


class RecurrenceError(ValueError):
    """The rule is not one we expand; the message says why (shown as a config or CLI error)."""


def occurrences(rule: str, start: float, end: float, zone: str) -> list[tuple[float, float]]:
    """Each occurrence of the window ``start``–``end`` as (start, end), the first window included.

    ``zone`` is the ISP's time zone: occurrences keep the first window's wall-clock time there.
    """
    parts = _parts(rule)
    tz = ZoneInfo(zone)
    first = datetime.fromtimestamp(start, tz)
    count = int(parts.pop("COUNT")) if "COUNT" in parts else MAX_OCCURRENCES
    if not 1 <= count <= MAX_OCCURRENCES:
        raise RecurrenceError(f"COUNT must be between 1 and {MAX_OCCURRENCES}")
    limit = datetime.fromtimestamp(min(start + HORIZON.total_seconds(), LAST_PRINTABLE), UTC)
    if "UNTIL" in parts:
        limit = min(limit, _until(parts.pop("UNTIL"), tz))
    if limit < first:
        raise RecurrenceError("UNTIL is before the first window")
    text = ";".join(f"{k}={v}" for k, v in parts.items()) + f";UNTIL={limit:%Y%m%dT%H%M%SZ}"
    try:
        parsed = rrulestr(text, dtstart=first)
    except (ValueError, TypeError, OverflowError) as exc:
        raise RecurrenceError(f"not a valid RRULE: {exc}") from exc
    if not isinstance(parsed, rrule):
        raise RecurrenceError("expected one RRULE")
    length = end - start
    out: list[tuple[float, float]] = []
    for dt in parsed:
        ts = dt.timestamp()
        if len(out) >= count or ts + length > LAST_PRINTABLE:
            break
        out.append((ts, ts + length))
    if not out or out[0][0] != start:
        out.insert(0, (start, end))  # the first window is an occurrence even when the rule skips its day
        del out[count:]
    return out


def _parts(rule: str) -> dict[str, str]:
    text = rule.strip().removeprefix("RRULE:")
    if not text or len(text) > MAX_LENGTH or not text.isascii() or not text.isprintable():
        raise RecurrenceError(f"expected an RRULE such as FREQ=WEEKLY;BYDAY=TU (printable ASCII, at most "
                              f"{MAX_LENGTH} characters)")
    parts: dict[str, str] = {}
    for item in text.upper().split(";"):
        key, eq, value = item.partition("=")
        if key not in PARTS:
            raise RecurrenceError(f"unsupported RRULE part {key[:20]!r} (allowed: {', '.join(PARTS)}; the time of "
                                  "day is the first window's)")
        if not eq or not _PART.match(value) or key in parts:
            raise RecurrenceError(f"bad or repeated RRULE part {item[:40]!r}")
        parts[key] = value
    if parts.get("FREQ") not in FREQS:
        raise RecurrenceError(f"FREQ must be one of {', '.join(FREQS)}")
    if "COUNT" in parts and "UNTIL" in parts:
        raise RecurrenceError("give COUNT or UNTIL, not both")
    if "COUNT" in parts and not parts["COUNT"].isdigit():
        raise RecurrenceError("COUNT must be a number")
    if "INTERVAL" in parts and not (parts["INTERVAL"].isdigit() and 1 <= int(parts["INTERVAL"]) <= 1000):
        raise RecurrenceError("INTERVAL must be between 1 and 1000")
    return parts


def _until(value: str, tz: ZoneInfo) -> datetime:
    """UNTIL as RFC 5545 writes it: a date (that whole local day counts) or a time (UTC with Z, else local)."""
    m = _UNTIL.match(value)
    if m is None:
        raise RecurrenceError(f"UNTIL must look like 20270301 or 20270301T000000Z, got {value[:30]!r}")
    try:
        if m.group(2) is None:
            day = datetime.strptime(m.group(1), "%Y%m%d").replace(hour=23, minute=59, second=59, tzinfo=tz)
            return day.astimezone(UTC)
        t = datetime.strptime(m.group(1) + m.group(2).rstrip("Z"), "%Y%m%dT%H%M%S")
        return t.replace(tzinfo=UTC if m.group(2).endswith("Z") else tz).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise RecurrenceError(f"UNTIL {value[:30]!r} is not a date") from exc
