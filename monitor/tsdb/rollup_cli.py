"""``monitor rollup``: write the hourly availability the boards read (see :mod:`monitor.tsdb.rollup`).

Run it from a timer (hourly): by default it rewrites the last two days up to now, so the current
hour fills in, and maintenance windows or blind time recorded since the last run replace the old
figures. ``--month`` rewrites a whole month (e.g. after adding a window in the past).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

from monitor.errors import ConfigError, StorageRetryable
from monitor.inventory.model import TimeseriesSettings
from monitor.report.cli import parse_period
from monitor.report.model import Period
from monitor.report.source import load_input
from monitor.tsdb.lineprotocol import to_line_protocol
from monitor.tsdb.point import Point
from monitor.tsdb.rollup import availability_points
from monitor.tsdb.writer import backend_for
from monitor.zones import configured_zone

BATCH = 5000  # points per write request
DEFAULT_DAYS = 2.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rollup", help="write hourly availability (the report's figure) to the time-series database")
    p.add_argument("--config", type=Path, default=Path("config/sites.yaml"), help="inventory (YAML)")
    p.add_argument("--db", type=Path, help="store file (default: <state_dir>/monitor.db of the config)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--month", help="YYYY-MM (in --tz)")
    when.add_argument("--from", dest="start", help="YYYY-MM-DD or ISO-8601 date-time (with --to)")
    when.add_argument("--days", type=float, help=f"the last N days up to now (default {DEFAULT_DAYS:g})")
    p.add_argument("--to", dest="end", help="YYYY-MM-DD (inclusive day) or ISO-8601 date-time (exclusive)")
    p.add_argument("--tz", help="time zone of --month/--from/--to (default: the config's delivery.timezone)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from monitor.inventory.loader import load_inventory

    inv = load_inventory(args.config)  # the database credentials are secrets: read them
    if inv.timeseries.kind == "none":
        raise ConfigError("timeseries.kind is none: there is no database to write the rollup to")
    now = time.time()
    if args.month is None and args.start is None:
        days = DEFAULT_DAYS if args.days is None else args.days
        if not 0 < days <= 366:
            raise ConfigError(f"--days {days:g}: expected more than 0 and at most 366")
        period = Period(now - days * 86400.0, now, f"last {days:g} days", "UTC")
    else:
        period = parse_period(args.month, args.start, args.end, args.tz or configured_zone(inv))
    db = args.db or _store_path(args.config, inv.daemon.state_dir)
    written = asyncio.run(write_points(inv.timeseries, availability_points(load_input(db, inv, period, until=now))))
    print(f"rollup: wrote {written} availability points for {period.label}", file=sys.stderr)
    return 0


async def write_points(settings: TimeseriesSettings, points: Iterable[Point], *, attempts: int = 3,
                       delay: float = 1.0) -> int:
    """Send the points in batches, returning how many.

    A batch the database could not take for a passing reason (unreachable, timeout, 5xx: retryable)
    is sent again after ``delay``, doubling, up to ``attempts`` times: a busy database should not
    cost an hour of board figures. Then, or at once for a refusal (credentials, no such database),
    the :class:`StorageError` stops the run; the batches already sent are complete hours, and the
    next run rewrites them anyway.
    """
    backend = backend_for(settings)
    written = 0
    try:
        it = iter(points)
        while batch := list(islice(it, BATCH)):
            body = to_line_protocol(batch)
            wait = delay
            for attempt in range(1, attempts + 1):
                try:
                    if body:
                        await backend.write(body)
                    break
                except StorageRetryable:
                    if attempt == attempts:
                        raise
                    await asyncio.sleep(wait)  # backoff between attempts, not a wait for a condition
                    wait *= 2
            written += len(batch)
    finally:
        await backend.close()
    return written


def _store_path(config: Path, state_dir: str) -> Path:
    base = Path(state_dir)
    return (base if base.is_absolute() else config.resolve().parent / base) / "monitor.db"
