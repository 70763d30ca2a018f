"""``monitor incidents list|show|ack|note|eta|resolve`` and ``monitor maintenance add|list|remove``.

Both work on the daemon's store (``<state_dir>/monitor.db`` from the config, or ``--db``) through
:class:`monitor.correlate.staff.Staff`, the staff interface the HTTP API and the board use too (and
other tools can import). This module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.correlate.incidents import format_ts, parse_ts
from monitor.correlate.staff import Staff
from monitor.correlate.store import IncidentRow, NotFound
from monitor.correlate.topology import Topology
from monitor.db import store_location
from monitor.durations import parse_duration
from monitor.errors import ConfigError
from monitor.recurrence import RecurrenceError, occurrences
from monitor.zones import UTC_NAMES, configured_zone

# ---------------------------------------------------------------- command line


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=Path("config/sites.yaml"), help="inventory (YAML)")
    common.add_argument("--db", type=Path, help="store file (default: <state_dir>/monitor.db of the config)")
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--by", default=_user(), help="who does it (default: the login name)")
    zone = argparse.ArgumentParser(add_help=False)
    zone.add_argument("--tz", help="time zone of the times shown (default: the config's delivery.timezone; "
                                   "--tz UTC when asked; --json is always UTC)")

    inc = sub.add_parser("incidents", help="list, show, acknowledge, set an ETA for or resolve incidents")
    isub = inc.add_subparsers(dest="action", required=True)
    p = isub.add_parser("list", parents=[common, zone], help="open incidents (newest first)")
    p.add_argument("--all", action="store_true", help="include resolved and merged ones")
    p.add_argument("--municipality", metavar="ID", help="only incidents whose root node is in this municipality")
    p.add_argument("--json", action="store_true")
    p = isub.add_parser("show", parents=[common, zone], help="one incident with its history")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    for name, what in (("ack", "acknowledge"), ("resolve", "resolve by hand (the daemon carries it out)")):
        p = isub.add_parser(name, parents=[common, who], help=what)
        p.add_argument("id")
        p.add_argument("--note", default="", help="free text kept with the action")
    p = isub.add_parser("note", parents=[common, who], help="annotate")
    p.add_argument("id")
    p.add_argument("text")
    p = isub.add_parser("eta", parents=[common, who, zone],
                        help="estimated restoration time (desk and customers are told)")
    p.add_argument("id")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", help="ISO-8601, e.g. 2026-11-23T15:00-05:00")
    when.add_argument("--in", dest="in_", metavar="DURATION", help="from now, e.g. 90m, 2h")
    when.add_argument("--clear", action="store_true", help="withdraw the estimate (there is none for now)")
    inc.set_defaults(handler=_incidents)

    mnt = sub.add_parser("maintenance", help="planned maintenance windows (failures inside raise no alarm)")
    msub = mnt.add_subparsers(dest="action", required=True)
    p = msub.add_parser("add", parents=[common, who, zone], help="plan a window on a node and everything below it")
    p.add_argument("--node", required=True)
    p.add_argument("--start", required=True, help="ISO-8601, e.g. 2026-11-24T02:00:00-05:00")
    end = p.add_mutually_exclusive_group(required=True)
    end.add_argument("--end", help="ISO-8601")
    end.add_argument("--duration", help="e.g. 90m, 2h")
    p.add_argument("--reason", default="")
    p.add_argument("--every", metavar="RRULE", help="repeat the window (RFC 5545), e.g. 'FREQ=WEEKLY;BYDAY=TU' or "
                   "'FREQ=MONTHLY;BYDAY=1TU;COUNT=6': one window per occurrence, in the config's time zone")
    p = msub.add_parser("list", parents=[common, zone], help="planned windows")
    p.add_argument("--all", action="store_true", help="include removed ones")
    p = msub.add_parser("remove", parents=[common], help="cancel a window")
    p.add_argument("id", type=int)
    mnt.set_defaults(handler=_maintenance)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _api(args: argparse.Namespace, *, topology: bool = False) -> Staff:
    from monitor.inventory.loader import load_inventory

    inv = None
    if args.db is None or topology:
        inv = load_inventory(args.config, secrets=False)  # sends nothing
    db = args.db
    if db is None:
        assert inv is not None
        db = store_location(inv.daemon)  # (state_dir is absolute: the loader resolves it)
    return Staff.open(db, Topology.from_inventory(inv) if inv is not None and topology else None)


def _incidents(args: argparse.Namespace) -> int:
    with _opened(args) as api:
        if args.action == "list":
            keep = _in_municipality(args)
            if args.json:
                found = api.incidents_json(all_=args.all, limit=LIST_LIMIT if keep is None else SCAN_LIMIT)
                print(json.dumps([d for d in found if keep is None or keep(str(d["root"]))][:LIST_LIMIT], indent=1))
            else:
                rows = api.incidents(all_=args.all, limit=LIST_LIMIT if keep is None else SCAN_LIMIT)
                print(_table([r for r in rows if keep is None or keep(r.root)][:LIST_LIMIT], _zone(args)))
        elif args.action == "show":
            print(_show(api, args.id, as_json=args.json, zone=_zone(args) if not args.json else "UTC"))
        elif args.action == "ack":
            api.ack(args.id, args.by, args.note)
            print(f"{args.id} acknowledged by {args.by}")
        elif args.action == "note":
            api.note(args.id, args.by, args.text)
            print(f"note added to {args.id}")
        elif args.action == "eta" and args.clear:
            api.clear_eta(args.id, args.by)
            print(f"{args.id}: estimate withdrawn; the daemon tells the desk and the customers who had it")
        elif args.action == "eta":
            at = _when(args.at, "--at") if args.at else time.time() + _duration(args.in_, "--in")
            api.eta(args.id, args.by, at)
            zone = _zone(args)
            print(f"{args.id}: ETA {_stamp(zone)(at)} ({zone}); the daemon tells the desk and the customers")
        else:
            api.resolve(args.id, args.by, args.note)
            print(f"{args.id}: resolution requested; the daemon closes it within seconds")
    return 0


def _maintenance(args: argparse.Namespace) -> int:
    """Times in the configured zone, said on the line or in the header (``--tz UTC`` when asked)."""
    with _opened(args, topology=args.action == "add") as api:
        zone = _zone(args) if args.action in ("add", "list") else "UTC"
        stamp = _stamp(zone)
        if args.action == "add":
            start = _when(args.start, "--start")
            end = _when(args.end, "--end") if args.end else start + _duration(args.duration)
            spans = _series(args, start, end) if args.every else [(start, end)]
            for s, e in spans:
                wid = api.add_window(args.node, s, e, args.reason, args.by)
                w = next(m for m in api.windows() if m.id == wid)
                print(f"window {wid} on {w.node}: {stamp(w.start)} .. {stamp(w.end)} ({zone}),"
                      f" {len(w.customers)} customers below")
        elif args.action == "list":
            windows = api.windows(include_removed=args.all)
            print(f"{len(windows)} maintenance windows (times: {zone})" if windows else "no maintenance windows")
            for m in windows:
                removed = f" (removed {stamp(m.removed_at)})" if m.removed_at else ""
                print(f"{m.id:>4}  {m.node:<24} {stamp(m.start)} .. {stamp(m.end)}  {len(m.customers):>5}"
                      f" customers  {m.author}: {m.reason}{removed}")
        else:
            api.remove_window(args.id)
            print(f"window {args.id} removed")
    return 0


def _series(args: argparse.Namespace, start: float, end: float) -> list[tuple[float, float]]:
    """The occurrences of ``--every`` (checked before anything is written: a bad rule adds nothing)."""
    from monitor.inventory.loader import load_inventory

    if end <= start:
        raise ConfigError(f"maintenance on {args.node}: the end is not after the start")
    try:
        return occurrences(args.every, start, end, configured_zone(load_inventory(args.config, secrets=False)))
    except RecurrenceError as exc:
        raise ConfigError(f"--every {args.every[:60]!r}: {exc}") from None


@contextmanager
def _opened(args: argparse.Namespace, *, topology: bool = False) -> Iterator[Staff]:
    """The API for one command; "no such id" becomes a user error (exit 2), the store is closed."""
    api = _api(args, topology=topology)
    try:
        yield api
    except NotFound as exc:
        raise ConfigError(str(exc)) from None
    finally:
        api.close()


def _when(text: str, flag: str) -> float:
    try:
        return parse_ts(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected ISO-8601 like 2026-11-24T02:00:00-05:00") from None


def _duration(text: str, flag: str = "--duration") -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{flag} {text!r}: {exc}") from None


LIST_LIMIT = 100  # newest first
SCAN_LIMIT = 5_000  # the newest incidents searched for LIST_LIMIT of one municipality


def _in_municipality(args: argparse.Namespace) -> Callable[[str], bool] | None:
    """``--municipality``: whether an incident's root is there (its own municipality, else its site's)."""
    if not args.municipality:
        return None
    from monitor.inventory.loader import load_inventory

    inv = load_inventory(args.config, secrets=False)
    if args.municipality not in inv.municipalities:
        raise ConfigError(f"--municipality: unknown municipality {args.municipality[:60]!r} (expected one of: "
                          f"{', '.join(sorted(inv.municipalities))})")

    def where(node: str) -> str:
        t = inv.targets.get(node)
        site = inv.sites.get(t.site) if t is not None and t.site else None
        return (t.municipality if t is not None else None) or (site.municipality if site else "")

    return lambda root: where(root) == args.municipality


def _zone(args: argparse.Namespace) -> str:
    """--tz, else the ISP's zone from the config (people read local time), else UTC (said in the output)."""
    if args.tz:
        try:
            ZoneInfo(args.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"--tz: unknown time zone {args.tz[:60]!r}") from exc
        return str(args.tz)
    from monitor.inventory.loader import load_inventory

    try:
        return configured_zone(load_inventory(args.config, secrets=False))
    except ConfigError:
        return "UTC"  # only the store given (--db) and no usable config: the header says UTC


def _stamp(zone: str) -> Callable[[float], str]:
    """ISO-8601 in the zone, with its offset; UTC keeps the store's own form (Z)."""
    if zone in UTC_NAMES:
        return format_ts
    tz = ZoneInfo(zone)

    def stamp(ts: float) -> str:
        try:
            return datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")
        except (OverflowError, ValueError, OSError):  # past year 9999 there: the store's own UTC form
            return format_ts(ts)

    return stamp


def _table(rows: list[IncidentRow], zone: str = "UTC") -> str:
    if not rows:
        return "no incidents"
    opened_h = f"OPENED ({zone})"
    lines = [f"{'ID':<11} {'KIND':<9} {'STATUS':<8} {'ROOT':<24} {opened_h:<20} {'ENDP':>5} {'CUST':>5}  ACK"]
    tz = ZoneInfo("UTC" if zone in UTC_NAMES else zone)
    for r in rows:
        opened = datetime.fromtimestamp(r.opened_at, tz).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"{r.id:<11} {r.kind:<9} {r.status:<8} {r.root:<24} {opened:<20} {r.affected_endpoints:>5}"
            f" {r.affected_customers:>5}  {r.acked_by or '-'}"
        )
    return "\n".join(lines)


def _show(api: Staff, inc_id: str, *, as_json: bool, zone: str = "UTC") -> str:
    stamp = _stamp(zone)
    if as_json:
        return json.dumps(api.show_json(inc_id), indent=1)
    info = api.show(inc_id)
    row = info["incident"]
    assert isinstance(row, IncidentRow)
    events = info["events"]
    actions = info["actions"]
    assert isinstance(events, list) and isinstance(actions, list)
    upgraded = "  (opened as suspected, then its node went down)" if row.upgraded else ""
    out = [f"{row.id}  {row.kind}  {row.status}  root {row.root}{upgraded}  (times: {zone})",
           f"opened {stamp(row.opened_at)}"
           + (f", closed {stamp(row.closed_at)}" if row.closed_at else "")
           + (f", merged into {row.merged_into}" if row.merged_into else "")
           + (f", acknowledged by {row.acked_by} at {stamp(row.acked_at)}" if row.acked_at else "")]
    if row.kind == "blind" and row.status != "open":
        # staff may resolve the alert while the monitor is still blind: the blindness itself goes on
        out.append(f"blindness ended {stamp(row.cleared_at)}" if row.cleared_at is not None
                   else "blindness still going on (its alert was resolved)")
    out.append("history:")
    for e in events:
        into = f" into {e['into']}" if e["into"] else ""
        out.append(f"  {stamp(e['ts'])}  {e['event']:<8} {e['kind']:<9} {len(e['affected_endpoints']):>5} endpoints"
                   f" {len(e['affected_customers']):>5} customers{into}")
    if actions:
        out.append("staff:")
        for ts, action, by, text, done in actions:
            pending = " (pending)" if done is None else ""
            out.append(f"  {stamp(ts)}  {action:<8} {by}: {text}{pending}")
    return "\n".join(out)
