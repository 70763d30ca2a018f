"""``monitor rollup``: write the hourly availability the boards read (see :mod:`monitor.tsdb.rollup`).

The daemon writes each hour itself (:class:`monitor.tsdb.rollup_job.HourlyRollup`, the same code);
this command backfills: by default it rewrites the last two days up to now (the current hour
included), ``--month`` a whole month (e.g. after adding a maintenance window in the past), or a gap
longer than the daemon's two-day catch-up. The buckets are the configured zone's local hours
whatever ``--tz`` the dates are given in.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from monitor.db import store_location
from monitor.errors import ConfigError
from monitor.report.cli import parse_period
from monitor.report.model import Period
from monitor.tsdb.rollup_job import CATCH_UP, rollup_points, write_points
from monitor.zones import configured_zone

DEFAULT_DAYS = CATCH_UP / 86400.0

__all__ = ["add_parser", "main", "write_points"]


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
        period = Period(now - days * 86400.0, now, f"last {days:g} days", configured_zone(inv))
    else:
        period = parse_period(args.month, args.start, args.end, args.tz or configured_zone(inv))
    db = args.db or store_location(inv.daemon)  # (state_dir is absolute: the loader resolves it)
    written = asyncio.run(write_points(inv.timeseries, rollup_points(db, inv, period, now)))
    print(f"rollup: wrote {written} availability points for {period.label}", file=sys.stderr)
    return 0


