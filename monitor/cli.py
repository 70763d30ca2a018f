"""Command line: ``monitor run | check-config | probe``; the other subcommands register their own parsers.

Exit codes: 0 success, 1 the probed target is unreachable or the daemon failed at run time,
2 invalid configuration (every problem is listed, one per line), 75 the active daemon lost its lease
and stood down (active/standby on PostgreSQL: start it again, it waits as a standby).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
import time
from pathlib import Path

from monitor import __version__, logs
from monitor.errors import ConfigError, MonitorError, StoodDown
from monitor.inventory.loader import load_inventory, summarize
from monitor.inventory.model import Target
from monitor.polling.assess import assess
from monitor.probes.base import IcmpResult, SnmpResult

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
EXIT_STOOD_DOWN = 75  # the active daemon lost its lease (monitor.ha.keeper.STOOD_DOWN)


# The subcommands other modules register, in the order ``monitor --help`` lists them, and the module
# that registers each. A one-shot command imports only its own module: importing all of them (the
# report, replay, demo, poller, MQTT and web modules) cost ~0.2 s of a ~0.5 s ``monitor probe``.
_SUBCOMMANDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("replay",), "monitor.replay"),
    (("incidents", "maintenance"), "monitor.incidents_cli"),
    (("report",), "monitor.report.cli"),
    (("rollup",), "monitor.tsdb.rollup_cli"),
    (("demo",), "monitor.demo.run"),
    (("users",), "monitor.web.users"),
    (("poll",), "monitor.remote.poller"),
    (("pollers",), "monitor.remote.acl"),
    (("store",), "monitor.store_copy"),
    (("status",), "monitor.ha.status"),
)
_OWN = frozenset({"run", "check-config", "probe"})


def _command(argv: list[str] | None) -> str | None:
    """The subcommand named on the command line, None when none (or an unknown one) is: then all are registered."""
    args = sys.argv[1:] if argv is None else argv
    first = next((a for a in args if not a.startswith("-")), None)
    known = _OWN.union(*(names for names, _ in _SUBCOMMANDS))
    return first if first in known else None


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with a ``command``, only that subcommand's module is imported."""
    p = argparse.ArgumentParser(prog="monitor", description="ISP network availability monitor")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the polling daemon")
    run.add_argument("--config", required=True, type=Path, help="inventory and settings (YAML)")

    check = sub.add_parser("check-config", help="validate a config and print a summary")
    check.add_argument("config", type=Path, help="inventory and settings (YAML)")

    probe = sub.add_parser("probe", help="poll one node or endpoint now and print what it answers")
    probe.add_argument("target", help="node or endpoint id")
    probe.add_argument("--config", type=Path, default=Path("config/sites.yaml"),
                       help="inventory and settings (YAML; default: config/sites.yaml)")

    for names, module in _SUBCOMMANDS:
        if command is None or command in names:  # import only the module of the command asked for
            register = importlib.import_module(module)
            (register.add_parsers if hasattr(register, "add_parsers") else register.add_parser)(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser(_command(argv)).parse_args(argv)
    try:
        if hasattr(args, "handler"):  # replay, incidents, maintenance, report
            return int(args.handler(args))
        if args.command == "check-config":
            return _check_config(args.config)
        if args.command == "probe":
            return asyncio.run(_probe(args.config, args.target))
        return _run(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except MonitorError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _check_config(path: Path) -> int:
    inv = load_inventory(path)
    print(summarize(inv))
    return EXIT_OK


def _run(path: Path) -> int:
    from monitor.daemon import Daemon

    inv = load_inventory(path)
    logs.setup(inv.daemon.log_format, inv.daemon.log_level)
    try:
        asyncio.run(Daemon(path, inventory=inv).run())
    except (MonitorError, ExceptionGroup) as exc:
        fatal = _monitor_errors(exc)
        if not fatal:
            raise
        if any(isinstance(err, StoodDown) for err in fatal):
            return EXIT_STOOD_DOWN  # (logged by the keeper: systemd starts it again, as a standby)
        for err in fatal:
            logging.getLogger("monitor").error("fatal: %s", err)
        return EXIT_FAILED
    return EXIT_OK


def _monitor_errors(exc: BaseException) -> list[MonitorError]:
    """Our own errors inside a (possibly nested) TaskGroup exception group; anything else is a bug."""
    if isinstance(exc, MonitorError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        found = [e for sub in exc.exceptions for e in _monitor_errors(sub)]
        return found if len(found) == len(exc.exceptions) else []
    return []


async def _probe(path: Path, target_id: str) -> int:
    from monitor.polling.probeset import ProbeSet

    inv = load_inventory(path)
    target = inv.targets.get(target_id)
    if target is None:
        raise ConfigError(f"{path}: no node or endpoint with id '{target_id}'")
    if not target.address:
        raise ConfigError(f"{path}: '{target_id}' has no address: it is seen only in the table of its parent "
                          f"'{target.parents[0]}' (probe that node)")
    probes = ProbeSet()  # the daemon's own probes, started the same way
    await probes.start(inv)
    print(waiting_for(target), file=sys.stderr, flush=True)  # a silent target takes seconds: say on what
    started = time.monotonic()
    try:
        icmp, snmp = await probes.poll_once(target)
    finally:
        await probes.close()
    print(f"done after {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    print(format_probe(target.id, target.kind, target.address, icmp, snmp))
    obs = assess(target, icmp, snmp)
    if not obs.reachable:
        print(f"verdict: UNREACHABLE ({obs.detail})")
        return EXIT_FAILED
    print("verdict: " + ("DEGRADED: " + "; ".join(obs.degraded_reasons) if obs.degraded_reasons else "OK"))
    return EXIT_OK


def waiting_for(target: Target) -> str:
    """What ``monitor probe`` is about to wait for, and for how long at most (the poll's own deadline)."""
    from monitor.polling.probeset import poll_deadline

    p = target.polling
    parts = [f"ICMP {p.icmp_count} echo request{'s' if p.icmp_count != 1 else ''} to {target.address}, "
             f"replies awaited up to {p.icmp_timeout:g} s"]
    if target.snmp is not None:
        s = target.snmp
        parts.append(f"SNMP v{s.credentials.version} ({s.profile}) on port {s.port}, {s.timeout:g} s per request, "
                     f"{s.retries} retr{'y' if s.retries == 1 else 'ies'}")
    return f"probing {target.id} ({target.kind}): {'; '.join(parts)}; at most {poll_deadline(target):.3g} s ..."


def format_probe(tid: str, kind: str, address: str, icmp: IcmpResult | None, snmp: SnmpResult | None) -> str:
    lines = [f"{tid} ({kind}, {address})"]
    if icmp is not None:
        if icmp.ok:
            lines.append(
                f"  icmp: {icmp.received}/{icmp.sent} replies, loss {icmp.loss_pct:.0f}%, rtt min/avg/max "
                f"{icmp.rtt_min_ms:.2f}/{icmp.rtt_avg_ms:.2f}/{icmp.rtt_max_ms:.2f} ms,"
                f" jitter {icmp.jitter_ms or 0:.2f} ms"
            )
        else:
            lines.append(f"  icmp: 0/{icmp.sent} replies ({icmp.error or 'no reply'})")
    if snmp is not None:
        if not snmp.ok:
            lines.append(f"  snmp: failed ({snmp.error})")
        else:
            up = f", uptime {_duration(snmp.uptime_s)}" if snmp.uptime_s is not None else ""
            lines.append(f"  snmp: ok in {snmp.duration_s * 1000:.0f} ms{up}{', REBOOTED' if snmp.rebooted else ''}")
            for m in snmp.metrics:
                labels = ",".join(f"{k}={v}" for k, v in m.labels)
                lines.append(f"    {m.name}{'{' + labels + '}' if labels else ''} = {m.value:g}")
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    s = int(seconds or 0)
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{days}d {h:02d}:{m:02d}:{s:02d}"


if __name__ == "__main__":
    sys.exit(main())
