"""A real net-snmp ``snmpd`` on loopback for tests: v2c community and a v3 authPriv user.

Started in its own temp dir on free UDP ports and stopped by the PID we started; several
listening addresses can be given (the benchmark uses hundreds of 127.x addresses).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers.common import Process, require_binary, running

COMMUNITY = "public-test"
V3_USER, V3_AUTH, V3_PRIV = "noc", "authpass123", "privpass123"


@dataclass
class Snmpd:
    process: Process
    addresses: list[str]
    port: int


def _answers(address: str, port: int, community: str = COMMUNITY) -> bool:
    out = subprocess.run(
        ["snmpget", "-v2c", "-c", community, "-t", "0.3", "-r", "0", "-On", f"{address}:{port}", ".1.3.6.1.2.1.1.3.0"],
        capture_output=True, timeout=5,
    )
    return out.returncode == 0


@contextmanager
def snmpd(
    tmp: Path, port: int, addresses: Sequence[str] = ("127.0.0.1",), community: str = COMMUNITY
) -> Iterator[Snmpd]:
    binary = require_binary("snmpd")
    require_binary("snmpget")
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "snmpd.conf"
    conf.write_text(
        "agentAddress " + ",".join(f"udp:{a}:{port}" for a in addresses) + "\n"
        "sysName monitor-test\n"
        f"rocommunity {community} 127.0.0.0/8\n"
        f'createUser {V3_USER} SHA "{V3_AUTH}" AES "{V3_PRIV}"\n'
        f"rouser {V3_USER} priv\n"
    )
    (tmp / "persist").mkdir(exist_ok=True)
    env = {"SNMP_PERSISTENT_DIR": str(tmp / "persist"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MIBS": ""}
    proc = Process([binary, "-f", "-C", "-c", str(conf), "-m", "", "-I", "-smux", "-Lo"], tmp / "snmpd.log", env)
    with running(proc, lambda: _answers(addresses[0], port, community), "snmpd"):
        yield Snmpd(proc, list(addresses), port)
