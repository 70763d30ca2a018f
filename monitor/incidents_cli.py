"""``monitor incidents list|show|ack|note|eta|resolve`` and ``monitor maintenance add|list|remove``.

Both work on the daemon's store (``<state_dir>/monitor.db`` from the config, or ``--db``) through
:class:`IncidentsAPI`, the same small Python API other tools can import. Acks and notes take effect
at once; a resolve is queued and carried out by the running daemon (or at its next start), because
only the daemon's engine knows what else the incident holds.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from monitor.correlate.incidents import format_ts, parse_ts
from monitor.correlate.settings import parse_duration
from monitor.correlate.store import ETA_WITHDRAWN, IncidentRow, IncidentStore, MaintenanceRow, NotFound
from monitor.correlate.topology import Topology
from monitor.errors import ConfigError

ETA_MAX_AHEAD = 366 * 86_400.0  # an estimate further out is a typo (or an attack), not a plan
_TS_RANGE = (-62_135_596_800.0, 253_402_300_799.0)  # what format_ts can print: years 1 to 9999 UTC


class Conflict(ConfigError):
    """The incident's state does not allow the operation (not open; no estimate to withdraw)."""


class IncidentsAPI:
    """Staff operations on incidents and maintenance windows (what the CLI and the HTTP API call).

    Errors: :class:`NotFound` for an unknown id, :class:`Conflict` when the incident's state does not
    allow it, :class:`ConfigError` for a bad value (an ETA in the past).
    """

    def __init__(self, db_path: Path, topology: Topology | None = None) -> None:
        if not db_path.exists():
            raise ConfigError(f"{db_path}: no store here (has the daemon run with this config?)")
        self.store = IncidentStore(db_path)
        self.topology = topology

    def close(self) -> None:
        self.store.close()

    def incidents(self, *, all_: bool = False, limit: int = 100) -> list[IncidentRow]:
        return self.store.incidents(status=None if all_ else "open", limit=limit)

    def show(self, inc_id: str) -> dict[str, object]:
        row = self.store.incident(inc_id)
        return {
            "incident": row,
            "events": list(self.store.events(inc_id)),
            "actions": self.store.actions(inc_id),
        }

    def incidents_json(self, *, all_: bool = False, limit: int = 100) -> list[dict[str, object]]:
        """``monitor incidents list --json`` (and ``GET /api/v1/incidents``)."""
        return [_row_dict(r) for r in self.incidents(all_=all_, limit=limit)]

    def show_json(self, inc_id: str) -> dict[str, object]:
        """``monitor incidents show --json`` (and ``GET /api/v1/incidents/{id}``)."""
        return {
            "incident": _row_dict(self.store.incident(inc_id)),
            "events": [{**e, "ts": format_ts(e["ts"])} for e in self.store.events(inc_id)],
            "actions": [{"ts": format_ts(a[0]), "action": a[1], "by": a[2], "text": a[3], "done": a[4] is not None}
                        for a in self.store.actions(inc_id)],
        }

    def ack(self, inc_id: str, by: str, note: str = "", now: float | None = None) -> None:
        """Stop the escalation of an open incident (a closed one has none: refused, so the caller knows)."""
        self._open(inc_id)
        self.store.add_action(inc_id, "ack", by, note, time.time() if now is None else now)

    def note(self, inc_id: str, by: str, text: str, now: float | None = None) -> None:
        self.store.add_action(inc_id, "note", by, text, time.time() if now is None else now)

    def eta(self, inc_id: str, by: str, at: float, now: float | None = None) -> None:
        """Set (or move) the estimated restoration time; the daemon tells the desk and the customers."""
        now = time.time() if now is None else now
        self._open(inc_id)
        if not math.isfinite(at):
            raise ConfigError("ETA: expected a finite time")
        if at <= now:
            shown = f" {format_ts(at)}" if _TS_RANGE[0] <= at <= _TS_RANGE[1] else ""
            raise ConfigError(f"ETA{shown} is not in the future")
        if at > now + ETA_MAX_AHEAD:
            raise ConfigError(f"ETA is more than {ETA_MAX_AHEAD / 86_400:.0f} days ahead")
        self.store.add_action(inc_id, "eta", by, format_ts(at), now)

    def clear_eta(self, inc_id: str, by: str, now: float | None = None) -> None:
        """Withdraw the estimate; the daemon tells the desk, and the customers who were given it."""
        self._open(inc_id)
        if self.store.etas().get(inc_id) is None:
            raise Conflict(f"{inc_id} has no restoration estimate to withdraw")
        self.store.add_action(inc_id, "eta", by, ETA_WITHDRAWN, time.time() if now is None else now)

    def _open(self, inc_id: str) -> None:
        row = self.store.incident(inc_id)
        if row.status != "open":
            raise Conflict(f"{inc_id} is already {row.status}")

    def resolve(self, inc_id: str, by: str, note: str = "", now: float | None = None) -> None:
        self._open(inc_id)
        self.store.add_action(inc_id, "resolve", by, note, time.time() if now is None else now)

    def add_window(
        self, node: str, start: float, end: float, reason: str, by: str, now: float | None = None
    ) -> int:
        if end <= start:
            raise ConfigError(f"maintenance on {node}: end {format_ts(end)} is not after start {format_ts(start)}")
        customers: list[str] = []
        if self.topology is not None:
            if node not in self.topology:
                raise ConfigError(f"maintenance: no node or endpoint with id '{node}' in the inventory")
            customers = self.topology.customers_below(node)
        return self.store.add_window(node, start, end, reason, by, customers, time.time() if now is None else now)

    def windows(self, *, include_removed: bool = False) -> list[MaintenanceRow]:
        return self.store.maintenance(include_removed=include_removed)

    def remove_window(self, window_id: int, now: float | None = None) -> None:
        self.store.remove_window(window_id, time.time() if now is None else now)


# ---------------------------------------------------------------- command line


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=Path("config/sites.yaml"), help="inventory (YAML)")
    common.add_argument("--db", type=Path, help="store file (default: <state_dir>/monitor.db of the config)")
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--by", default=_user(), help="who does it (default: the login name)")

    inc = sub.add_parser("incidents", help="list, show, acknowledge, set an ETA for or resolve incidents")
    isub = inc.add_subparsers(dest="action", required=True)
    p = isub.add_parser("list", parents=[common], help="open incidents (newest first)")
    p.add_argument("--all", action="store_true", help="include resolved and merged ones")
    p.add_argument("--json", action="store_true")
    p = isub.add_parser("show", parents=[common], help="one incident with its history")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    for name, what in (("ack", "acknowledge"), ("resolve", "resolve by hand (the daemon carries it out)")):
        p = isub.add_parser(name, parents=[common, who], help=what)
        p.add_argument("id")
        p.add_argument("--note", default="", help="free text kept with the action")
    p = isub.add_parser("note", parents=[common, who], help="annotate")
    p.add_argument("id")
    p.add_argument("text")
    p = isub.add_parser("eta", parents=[common, who], help="estimated restoration time (desk and customers are told)")
    p.add_argument("id")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", help="ISO-8601, e.g. 2026-11-23T15:00-05:00")
    when.add_argument("--in", dest="in_", metavar="DURATION", help="from now, e.g. 90m, 2h")
    when.add_argument("--clear", action="store_true", help="withdraw the estimate (there is none for now)")
    inc.set_defaults(handler=_incidents)

    mnt = sub.add_parser("maintenance", help="planned maintenance windows (failures inside raise no alarm)")
    msub = mnt.add_subparsers(dest="action", required=True)
    p = msub.add_parser("add", parents=[common, who], help="plan a window on a node and everything below it")
    p.add_argument("--node", required=True)
    p.add_argument("--start", required=True, help="ISO-8601, e.g. 2026-11-24T02:00:00-05:00")
    end = p.add_mutually_exclusive_group(required=True)
    end.add_argument("--end", help="ISO-8601")
    end.add_argument("--duration", help="e.g. 90m, 2h")
    p.add_argument("--reason", default="")
    p = msub.add_parser("list", parents=[common], help="planned windows")
    p.add_argument("--all", action="store_true", help="include removed ones")
    p = msub.add_parser("remove", parents=[common], help="cancel a window")
    p.add_argument("id", type=int)
    mnt.set_defaults(handler=_maintenance)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _api(args: argparse.Namespace, *, topology: bool = False) -> IncidentsAPI:
    from monitor.inventory.loader import load_inventory

    inv = None
    if args.db is None or topology:
        inv = load_inventory(args.config, secrets=False)  # sends nothing
    db = args.db
    if db is None:
        assert inv is not None
        state_dir = Path(inv.daemon.state_dir)
        if not state_dir.is_absolute():
            state_dir = args.config.resolve().parent / state_dir
        db = state_dir / "monitor.db"
    return IncidentsAPI(db, Topology.from_inventory(inv) if inv is not None and topology else None)


def _incidents(args: argparse.Namespace) -> int:
    with _opened(args) as api:
        if args.action == "list":
            if args.json:
                print(json.dumps(api.incidents_json(all_=args.all), indent=1))
            else:
                print(_table(api.incidents(all_=args.all)))
        elif args.action == "show":
            print(_show(api, args.id, as_json=args.json))
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
            print(f"{args.id}: ETA {format_ts(at)}; the daemon tells the desk and the customers")
        else:
            api.resolve(args.id, args.by, args.note)
            print(f"{args.id}: resolution requested; the daemon closes it within seconds")
    return 0


def _maintenance(args: argparse.Namespace) -> int:
    with _opened(args, topology=args.action == "add") as api:
        if args.action == "add":
            start = _when(args.start, "--start")
            end = _when(args.end, "--end") if args.end else start + _duration(args.duration)
            wid = api.add_window(args.node, start, end, args.reason, args.by)
            w = next(m for m in api.windows() if m.id == wid)
            print(f"window {wid} on {w.node}: {format_ts(w.start)} .. {format_ts(w.end)},"
                  f" {len(w.customers)} customers below")
        elif args.action == "list":
            for m in api.windows(include_removed=args.all):
                removed = f" (removed {format_ts(m.removed_at)})" if m.removed_at else ""
                print(f"{m.id:>4}  {m.node:<24} {format_ts(m.start)} .. {format_ts(m.end)}  {len(m.customers):>5}"
                      f" customers  {m.author}: {m.reason}{removed}")
        else:
            api.remove_window(args.id)
            print(f"window {args.id} removed")
    return 0


@contextmanager
def _opened(args: argparse.Namespace, *, topology: bool = False) -> Iterator[IncidentsAPI]:
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


def _row_dict(r: IncidentRow) -> dict[str, object]:
    d: dict[str, object] = {k: getattr(r, k) for k in r.__dataclass_fields__}
    for k in ("opened_at", "updated_at", "cleared_at", "closed_at", "acked_at"):
        v = d[k]
        d[k] = format_ts(v) if isinstance(v, float) else v
    return d


def _table(rows: list[IncidentRow]) -> str:
    if not rows:
        return "no incidents"
    lines = [f"{'ID':<11} {'KIND':<9} {'STATUS':<8} {'ROOT':<24} {'OPENED (UTC)':<20} {'ENDP':>5} {'CUST':>5}  ACK"]
    for r in rows:
        opened = datetime.fromtimestamp(r.opened_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"{r.id:<11} {r.kind:<9} {r.status:<8} {r.root:<24} {opened:<20} {r.affected_endpoints:>5}"
            f" {r.affected_customers:>5}  {r.acked_by or '-'}"
        )
    return "\n".join(lines)


def _show(api: IncidentsAPI, inc_id: str, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(api.show_json(inc_id), indent=1)
    info = api.show(inc_id)
    row = info["incident"]
    assert isinstance(row, IncidentRow)
    events = info["events"]
    actions = info["actions"]
    assert isinstance(events, list) and isinstance(actions, list)
    upgraded = "  (opened as suspected, then its node went down)" if row.upgraded else ""
    out = [f"{row.id}  {row.kind}  {row.status}  root {row.root}{upgraded}",
           f"opened {format_ts(row.opened_at)}"
           + (f", closed {format_ts(row.closed_at)}" if row.closed_at else "")
           + (f", merged into {row.merged_into}" if row.merged_into else "")
           + (f", acknowledged by {row.acked_by} at {format_ts(row.acked_at)}" if row.acked_at else "")]
    if row.kind == "blind" and row.status != "open":
        # staff may resolve the alert while the monitor is still blind: the blindness itself goes on
        out.append(f"blindness ended {format_ts(row.cleared_at)}" if row.cleared_at is not None
                   else "blindness still going on (its alert was resolved)")
    out.append("history:")
    for e in events:
        into = f" into {e['into']}" if e["into"] else ""
        out.append(f"  {format_ts(e['ts'])}  {e['event']:<8} {e['kind']:<9} {len(e['affected_endpoints']):>5} endpoints"
                   f" {len(e['affected_customers']):>5} customers{into}")
    if actions:
        out.append("staff:")
        for ts, action, by, text, done in actions:
            pending = " (pending)" if done is None else ""
            out.append(f"  {format_ts(ts)}  {action:<8} {by}: {text}{pending}")
    return "\n".join(out)
