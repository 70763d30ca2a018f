"""``monitor pollers acl``: the mosquitto ACL file that confines each poller to its own topics.

Why generate it: the ACL must name every poller of the ``pollers:`` section and the topic prefix,
and a hand-written one drifts from the config (a poller added to a zone but not to the ACL cannot
publish; a typo in a prefix lets nobody through, or everybody). Printed from the same config, it is
what the core expects:

- the core (each ``username`` of ``pollers.brokers``, else ``--core-user``) reads every poller's
  ``changes`` and ``status`` and writes every ``acked`` and its hello (``<prefix>/core``);
- a poller (user = its id, ``monitor poll``'s default ``--mqtt-user``) writes only its own
  ``changes`` and ``status`` (heartbeats, and its last will, which mosquitto checks as a write) and
  reads only its own ``acked`` and the core's hello.

mosquitto denies whatever is not granted: a poller publishing on another poller's topic gets its
PUBACK (MQTT 3.1.1 cannot refuse a publish) but the message goes nowhere. The core still checks each
message against the zone map (:func:`monitor.remote.messages.decode`), since a poller may write any
payload on its own topic.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
from monitor.inventory.pollers import PollersSettings

DEFAULT_CORE_USER = "core"


def mosquitto_acl(p: PollersSettings, core_users: Sequence[str] = (), source: str = "") -> str:
    """The ACL file text: one ``user`` block for the core's user(s) and one per poller."""
    users = list(dict.fromkeys([b.username for b in p.brokers if b.username] + list(core_users)))
    if not users:
        users = [DEFAULT_CORE_USER]
    bad = [u for u in users if not u.isprintable() or any(c.isspace() for c in u)]
    if bad:  # one line per rule: a space or a newline in a name would write another rule
        raise ConfigError([f"{source or 'pollers'}: broker username {bad[0][:40]!r} has spaces or control "
                           "characters: not usable in a mosquitto ACL"])
    base = p.prefix
    lines = [f"# mosquitto acl_file for the pollers of {source or 'the config'} (monitor pollers acl)", ""]
    for user in users:
        lines += [f"user {user}", f"topic read {base}/+/changes", f"topic read {base}/+/status",
                  f"topic write {base}/+/acked", f"topic write {base}/core", ""]
    for zone in sorted(p.zones.values(), key=lambda z: z.id):
        for poller in zone.pollers:
            lines += [f"# zone {zone.id}", f"user {poller}", f"topic write {base}/{poller}/changes",
                      f"topic write {base}/{poller}/status", f"topic read {base}/{poller}/acked",
                      f"topic read {base}/core", ""]
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pollers", help="remote pollers' broker setup")
    psub = p.add_subparsers(dest="pollers_command", required=True)
    acl = psub.add_parser("acl", help="print the mosquitto ACL file for the config's pollers and core")
    acl.add_argument("--config", type=Path, required=True, help="the shared inventory (YAML) with a pollers: section")
    acl.add_argument("--core-user", action="append", default=[],
                     help=f"the core's broker user (default: pollers.brokers' usernames, else {DEFAULT_CORE_USER!r})")
    acl.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    inv = load_inventory(args.config, poller=True)  # no secret is needed to write the ACL
    if inv.pollers is None:
        raise ConfigError([f"{args.config}: no pollers: section"])
    print(mosquitto_acl(inv.pollers, args.core_user, str(args.config)), end="")
    return 0
