"""Shared helpers of the SNMP tests: read .snmprec recordings independently of the probe, build targets."""

from __future__ import annotations

from functools import cache

from monitor.inventory.model import SnmpCredentials, SnmpSettings, Target
from monitor.secret import Secret
from tests.servers.snmpsim import recording_path


@cache
def recording(name: str) -> dict[tuple[int, ...], tuple[str, str]]:
    """``{oid: (tag, value text)}`` straight from the .snmprec file."""
    out: dict[tuple[int, ...], tuple[str, str]] = {}
    for line in recording_path(name).read_text().splitlines():
        oid, tag, value = line.split("|", 2)
        out[tuple(int(p) for p in oid.split("."))] = (tag, value)
    return out


def column(name: str, base: str) -> dict[tuple[int, ...], tuple[str, str]]:
    """Rows of one column: ``{index suffix: (tag, value)}``."""
    b = tuple(int(p) for p in base.strip(".").split("."))
    return {oid[len(b):]: v for oid, v in recording(name).items() if oid[: len(b)] == b and len(oid) > len(b)}


def scalar(name: str, oid: str) -> str:
    return recording(name)[tuple(int(p) for p in oid.strip(".").split("."))][1]


def v2c(community: str, name: str = "v2-test") -> SnmpCredentials:
    return SnmpCredentials(name, "2c", community=Secret(community, "env:TEST_COMMUNITY"))


def v3(auth: str = "authpass123", priv: str = "privpass123", name: str = "v3-test") -> SnmpCredentials:
    return SnmpCredentials(
        name, "3", user="noc", auth_protocol="SHA", auth_key=Secret(auth, "env:TEST_AUTH"),
        priv_protocol="AES", priv_key=Secret(priv, "env:TEST_PRIV"),
    )


def target(tid: str, profile: str, cred: SnmpCredentials, port: int, address: str = "127.0.0.1",
           context: str = "", timeout: float = 1.0, retries: int = 1) -> Target:
    settings = SnmpSettings(profile, cred, port=port, timeout=timeout, retries=retries, context=context)
    return Target(id=tid, kind="ap", role="node", address=address, snmp=settings)


def by_key(metrics: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(m.name, m.labels): m.value for m in metrics}  # type: ignore[attr-defined]
