"""Is this the way the parent's vendor names a subscriber? (``check-config`` for table endpoints.)

Each table profile says which identifiers its table has (``onu_serial``, ``onu_index``,
``station_mac``, ``station_index``) and what they look like; a value that could never match a row
is a config error at its file:line, not an endpoint that stays DOWN forever.
"""

from __future__ import annotations

import functools
import re

from monitor.probes.pon_ports import normalise_port, port_name
from monitor.probes.table_keys import normalise_key
from monitor.probes.table_profiles import TableProfile, load_table_profiles


@functools.cache
def _profiles() -> dict[str, TableProfile]:
    return load_table_profiles()


def table_key_problem(table: str, kind: str, value: str) -> tuple[str | None, str]:
    """(problem, "") or (None, canonical value) for identifier ``kind`` = ``value`` in table ``table``."""
    profile = _profiles().get(table)
    if profile is None:
        return f"unknown table profile {table!r}", ""
    spec = profile.key(kind)
    if spec is None:
        have = ", ".join(k.kind for k in profile.keys)
        return f"table profile {table!r} ({profile.device}) has no {kind} (it identifies {profile.kind}s by {have})", ""
    if spec.pattern and not re.fullmatch(spec.pattern, value):
        return f"{value[:40]!r} is not a {kind} of {profile.device} (expected like {spec.example})", ""
    try:
        return None, normalise_key(kind, value)
    except ValueError as exc:
        return str(exc), ""


def has_ports(table: str) -> bool:
    """Whether the table profile says which PON port a row is on (its ONUs can hang from port nodes)."""
    profile = _profiles().get(table)
    return profile is not None and profile.port is not None


def port_of_key(table: str, kind: str, canonical: str) -> str | None:
    """The PON port an ONU is on, when its identifier encodes it (``onu_index`` of Huawei, ZTE, V-SOL).

    Only integer index parts up to the port's are read (what those vendors use), so loading a config
    needs no SNMP stack.
    """
    profile = _profiles().get(table)
    if profile is None or profile.port is None or profile.port.index_label is None or kind != "onu_index":
        return None
    parts = canonical.split(".")
    for i, part in enumerate(profile.index):
        if part.decode != "int" or i >= len(parts):
            return None
        if part.label == profile.port.index_label:
            return port_name(profile.port.format, int(parts[i]))
    return None


def pon_port_problem(table: str, value: str) -> tuple[str | None, str]:
    """(problem, "") or (None, canonical port name) for a ``pon_port`` under a parent walking ``table``."""
    profile = _profiles().get(table)
    if profile is None:
        return f"unknown table profile {table!r}", ""
    if profile.port is None:
        return f"table profile {table!r} ({profile.device}) does not say which PON port a row is on", ""
    try:
        return None, normalise_port(profile.port.format, value)
    except ValueError as exc:
        return f"{exc} (like {profile.port.example} on {profile.device})", ""
