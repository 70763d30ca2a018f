"""GETBULK walks: our Session.walk vs net-snmp's snmpbulkwalk, varbinds/s, interleaved and repeated.

Run (from the repo root; needs snmpd and snmpbulkwalk):

    .venv/bin/python -m bench.snmp.walk --rounds 7

One net-snmp ``snmpd`` on loopback serves both. Each round walks the same subtree (mib-2 by
default: the agent's interfaces, IP, TCP/UDP and host-resources tables, ~10,000 varbinds on a
busy Linux box) once with ``snmpbulkwalk`` (a whole process, output to a pipe, MIB loading off)
and once with ours (a fresh transport in a fresh event loop, as the daemon's first walk of an
agent), for v2c and for v3 authPriv (SHA/AES), in alternating order. Both ask for 25 repetitions
per GETBULK. net-snmp gets the pre-computed master keys (``-3m/-3M``), as our user object holds
hashed keys too; both do their own engine discovery. Printed per round: varbinds, wall seconds
and CPU seconds of each, and the ratio of our varbinds/s to snmpbulkwalk's (wall and CPU);
at the end min/median/max of the ratios. The agent's CPU is in neither figure but bounds both.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from monitor.probes.snmp_transport import Endpoint, Session, SnmpTransport, WalkLimits
from monitor.probes.snmp_usm import UsmUser, make_user
from tests.servers.common import free_port
from tests.servers.snmpd import COMMUNITY, V3_AUTH, V3_PRIV, V3_USER, snmpd

REPS = 25


def _oid(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.strip(".").split("."))


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def master_keys(user: UsmUser) -> list[str]:
    """net-snmp's -3m/-3M arguments: the same master keys our user object holds."""
    return ["-3m", "0x" + bytes(user.auth_master).hex(), "-3M", "0x" + bytes(user.priv_master).hex()]


def netsnmp_walk(port: int, base: str, user: UsmUser | None) -> tuple[int, float, float]:
    auth = ["-v2c", "-c", COMMUNITY] if user is None else [
        "-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA", "-x", "AES", *master_keys(user)]
    cmd = ["snmpbulkwalk", *auth, f"-Cr{REPS}", "-On", "-m", "", "-t", "5", "-r", "2", f"127.0.0.1:{port}", base]
    cpu0, t0 = _children_cpu(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    return sum(1 for line in out.splitlines() if line.startswith(b".")), wall, cpu


async def _ours(port: int, base: tuple[int, ...], user: UsmUser | None) -> int:
    transport = SnmpTransport()
    session = Session(transport, Endpoint("127.0.0.1", port, 5.0, 2), community=COMMUNITY if user is None else None,
                      user=user, cred_key="bench",
                      limits=WalkLimits(max_rows=10**7, max_bytes=1 << 31, max_seconds=600))
    try:
        out = await session.walk([base], REPS)
    finally:
        await transport.close()
    return sum(map(len, out.values()))


def our_walk(port: int, base: str, user: UsmUser | None) -> tuple[int, float, float]:
    cpu0, t0 = _self_cpu(), time.perf_counter()
    n = asyncio.run(_ours(port, _oid(base), user))
    return n, time.perf_counter() - t0, _self_cpu() - cpu0


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--base", default=".1.3.6.1.2.1", help="subtree to walk")
    args = ap.parse_args()
    v3user = make_user(V3_USER, "SHA", V3_AUTH, "AES", V3_PRIV)
    port = free_port(socket.SOCK_DGRAM)
    ratios: dict[str, tuple[list[float], list[float]]] = {"2c": ([], []), "3": ([], [])}
    with tempfile.TemporaryDirectory() as tmp, snmpd(Path(tmp) / "agent", port):
        print(f"walk {args.base}, {REPS} repetitions per GETBULK, {args.rounds} rounds, interleaved")
        print("round version  net-snmp varbinds wall-s cpu-s | ours varbinds wall-s cpu-s | ratio wall cpu")
        for rnd in range(args.rounds):
            for version in ("2c", "3"):
                user = v3user if version == "3" else None
                runs = [netsnmp_walk, our_walk] if rnd % 2 == 0 else [our_walk, netsnmp_walk]
                result = {fn: fn(port, args.base, user) for fn in runs}
                (n_t, w_t, c_t), (n_o, w_o, c_o) = result[netsnmp_walk], result[our_walk]
                wall, cpu = (n_o / w_o) / (n_t / w_t), (n_o / c_o) / (n_t / c_t)
                ratios[version][0].append(wall)
                ratios[version][1].append(cpu)
                print(f"{rnd:5} {version:7}  {n_t:17} {w_t:6.2f} {c_t:5.2f} | {n_o:13} {w_o:6.2f} {c_o:5.2f} | "
                      f"{wall:10.2f} {cpu:4.2f}")
    for version, (wall_r, cpu_r) in ratios.items():
        print(f"v{version}: ours / snmpbulkwalk varbinds/s, min / median / max: wall {_spread(wall_r)}, "
              f"CPU {_spread(cpu_r)}")


if __name__ == "__main__":
    main()
