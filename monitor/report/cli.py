"""``monitor report``: read the store, compute the figures, render them (progress on stderr)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.db import store_location
from monitor.errors import ConfigError
from monitor.report.compute import GROUPINGS, compute
from monitor.report.model import Period
from monitor.report.render import FORMATS, render
from monitor.report.source import load_input
from monitor.zones import configured_zone

LANGS = ("es", "en")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="availability report (SLA, MTTR, MTBF) for a month or a date range")
    p.add_argument("--config", type=Path, default=Path("config/sites.yaml"), help="inventory (YAML)")
    p.add_argument("--db", type=Path, help="store file (default: <state_dir>/monitor.db of the config)")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--month", help="YYYY-MM")
    when.add_argument("--from", dest="start", help="YYYY-MM-DD or ISO-8601 date-time (inclusive)")
    p.add_argument("--to", dest="end", help="YYYY-MM-DD (inclusive day) or ISO-8601 date-time (exclusive)")
    p.add_argument("--tz", help="time zone of dates and day/week buckets (default: the config's delivery.timezone, "
                                "e.g. America/Bogota; UTC only when asked: --tz UTC)")
    p.add_argument("--by", choices=GROUPINGS, default="municipality")
    p.add_argument("--format", choices=FORMATS, help="default: from --output's extension, else md")
    p.add_argument("--output", type=Path, help="file to write (default: standard output)")
    p.add_argument("--lang", choices=LANGS, default="es")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from monitor.inventory.loader import load_inventory

    started = time.monotonic()

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"report: {msg} ({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)

    inv = load_inventory(args.config, secrets=False)  # sends nothing
    period = parse_period(args.month, args.start, args.end, args.tz or configured_zone(inv))
    db = args.db or store_location(inv.daemon)  # (state_dir is absolute: the loader resolves it)
    now = time.time()
    inp = load_input(db, inv, period, progress, until=now)
    report = compute(inp, args.by, generated_at=now, progress=progress)
    fmt = args.format or _format_from(args.output)
    text = render(report, fmt, args.lang, inv)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        progress(f"wrote {args.output}")
    return 0


def _format_from(output: Path | None) -> str:
    ext = output.suffix.lstrip(".").lower() if output else ""
    return {"htm": "html", "markdown": "md"}.get(ext, ext) if ext in (*FORMATS, "htm", "markdown") else "md"


def parse_period(month: str | None, start: str | None, end: str | None, tz: str) -> Period:
    """``--month`` or ``--from/--to`` → epoch bounds in the report's time zone (end exclusive)."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"--tz: unknown time zone {tz!r}") from exc
    if month is not None:
        try:
            first = datetime.strptime(month, "%Y-%m").date()
        except ValueError as exc:
            raise ConfigError(f"--month {month!r}: expected a month as YYYY-MM, e.g. 2026-10") from exc
        nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return Period(_midnight(first, zone), _midnight(nxt, zone), month, tz)
    if start is None or end is None:
        raise ConfigError("give --month YYYY-MM, or both --from and --to")
    try:
        s = _bound(start, zone, False)
    except ValueError as exc:
        raise ConfigError(f"--from {start!r}: expected a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM)") from exc
    try:
        e = _bound(end, zone, True)
    except ValueError as exc:
        raise ConfigError(f"--to {end!r}: expected a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM)") from exc
    if e <= s:
        raise ConfigError(f"--to ({end}) must be after --from ({start})")
    return Period(s, e, f"{start} – {end}", tz)


def _midnight(d: date, zone: ZoneInfo) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=zone).timestamp()


def _bound(text: str, zone: ZoneInfo, is_end: bool) -> float:
    if len(text) == 10:  # a date: --to includes that whole day
        d = date.fromisoformat(text)
        return _midnight(date.fromordinal(d.toordinal() + 1) if is_end else d, zone)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (dt if dt.tzinfo else dt.replace(tzinfo=zone)).timestamp()
