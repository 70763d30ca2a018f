"""The ``status_page:`` section: the public status page and customer lookup (monitor.web).

Absent = no status page. Every text given here is published to everyone: it is the company's own
wording (title, how to report a problem), never inventory data.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.inventory.fields import Section, type_name
from monitor.inventory.settings import valid_listen
from monitor.web.config import DEFAULT_LISTEN, StatusPageSettings

KEYS = ("listen", "title", "timezone", "report_contact", "lookup_check", "lookup_per_minute", "trust_forwarded",
        "refresh", "history_days")
MAX_TEXT = 200


def parse(top: Section, taken: dict[str, str]) -> StatusPageSettings | None:
    """The validated section, or None when absent; ``taken``: listen addresses already used, by owner."""
    sec = top.section("status_page", KEYS)
    if sec is None:
        return None
    d = StatusPageSettings()
    listen = sec.data.get("listen", DEFAULT_LISTEN)
    if not isinstance(listen, str):
        sec.err("listen", f"expected a string such as {DEFAULT_LISTEN} ('' turns it off), got {type_name(listen)}")
        listen = d.listen
    elif listen and not valid_listen(listen):
        sec.err("listen", f"bad listen address {listen!r} (expected HOST:PORT such as {DEFAULT_LISTEN}, or '')")
    elif listen and listen in taken:
        sec.err("listen", f"{listen} is already {taken[listen]} (give the status page its own port)")
    tz = sec.text("timezone") or d.timezone
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        sec.err("timezone", f"unknown time zone {tz[:40]!r} (expected an IANA name such as America/Bogota)")
        tz = d.timezone
    texts = {k: _text(sec, k) for k in ("title", "report_contact")}
    check = sec.choice("lookup_check", ("none", "phone"), d.lookup_check)
    return StatusPageSettings(
        listen=listen,
        title=texts["title"],
        timezone=tz,
        report_contact=texts["report_contact"],
        lookup_check="none" if check == "none" else "phone",
        lookup_per_minute=sec.integer("lookup_per_minute", d.lookup_per_minute, 1, 600),
        trust_forwarded=sec.flag("trust_forwarded", d.trust_forwarded),
        refresh=sec.duration("refresh", d.refresh, ge=0.5, le=60),
        history_days=sec.integer("history_days", d.history_days, 1, 366),
    )


def _text(sec: Section, key: str) -> str:
    value = sec.text(key) or ""
    if len(value) > MAX_TEXT or any(ord(c) < 32 for c in value):
        sec.err(key, f"expected one line of at most {MAX_TEXT} characters")
        return ""
    return value
