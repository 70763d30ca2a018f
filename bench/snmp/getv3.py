"""SNMPv3 GETs against net-snmp given master keys: a long-lived session each, interleaved and repeated.

    .venv/bin/python -m bench.snmp.getv3 [--gets 2000] [--rounds 6] [--processes 100]

(repo root; needs snmpd, snmpget, gcc and libsnmp-dev: ``scripts/setup --test``.) One net-snmp
``snmpd`` on loopback; every GET asks for the same 20 OIDs as bench/snmp/run.py (system group and
ifTable row 1), authPriv SHA/AES, one request in flight.

The anchor, and why: a poller is a long-lived process that has discovered its agents and
localized its keys long before the GET being measured, so the fair anchor is net-snmp's library in
one long-lived session doing the same GETs one after the other: ``bench/snmp/getloop.c`` (compiled
here against libnetsnmp; ``snmp_synch_response`` per GET, master keys given as with ``-3m/-3M``,
discovery in an untimed warm-up GET). Ours: one ``Session`` on one ``SnmpTransport``, a warm-up GET,
then the same number of GETs awaited one after the other. ``snmpget -3m/-3M`` as one process per
GET (what a shell script pays: process start, discovery, localization every time) is printed for
comparison, not as the anchor. Rounds alternate which side goes first; the ratios are ours/theirs
in GETs per second of wall time and in GETs per CPU second of the client process, min/median/max.
The agent's CPU per GET (``snmpd``'s, from /proc) is printed for each side (about the same for
both): on shared cores the wall ratio follows (client + agent) CPU per GET.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.snmp.run import OIDS
from monitor.probes.snmp_transport import Endpoint, Session, SnmpTransport
from monitor.probes.snmp_usm import make_user
from tests.servers.common import free_port
from tests.servers.snmpd import V3_AUTH, V3_PRIV, V3_USER, snmpd

HERE = Path(__file__).resolve().parent
DOTTED = ["." + ".".join(map(str, o)) for o in OIDS]


def build_anchor(tmp: Path) -> Path:
    exe = tmp / "getloop"
    flags = subprocess.run(["net-snmp-config", "--cflags", "--libs"], capture_output=True, text=True, check=True)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "getloop.c"), *flags.stdout.split()], check=True)
    return exe


def master_keys() -> tuple[str, str]:
    user = make_user(V3_USER, "SHA", V3_AUTH, "AES", V3_PRIV)
    return bytes(user.auth_master).hex(), bytes(user.priv_master).hex()


def theirs(exe: Path, port: int, gets: int, in_flight: int) -> tuple[float, float]:
    """(wall s, CPU s) of ``gets`` GETs in one net-snmp session, ``in_flight`` at a time."""
    auth, priv = master_keys()
    out = subprocess.run([str(exe), f"127.0.0.1:{port}", str(gets), str(in_flight), V3_USER, auth, priv, *DOTTED],
                         capture_output=True, text=True, check=True)
    ok, varbinds, wall, cpu = out.stdout.split()
    if int(ok) != gets or int(varbinds) != gets * len(OIDS):
        raise SystemExit(f"net-snmp anchor: {ok} of {gets} GETs, {varbinds} varbinds")
    return float(wall), float(cpu)


async def _ours(port: int, gets: int, in_flight: int = 1) -> tuple[float, float]:
    transport = SnmpTransport()
    user = make_user(V3_USER, "SHA", V3_AUTH, "AES", V3_PRIV)
    session = Session(transport, Endpoint("127.0.0.1", port, 2.0, 1), user=user, cred_key="bench")
    await session.get(OIDS)  # discovery and key localization, not timed
    left = gets

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            if len(await session.get(OIDS)) != len(OIDS):
                raise SystemExit("ours: a GET came back short")

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await transport.close()
    return wall, cpu


def ours(port: int, gets: int, in_flight: int) -> tuple[float, float]:
    return asyncio.run(_ours(port, gets, in_flight))


def per_process(port: int, n: int) -> float:
    """Wall seconds for ``n`` GETs as one ``snmpget -3m/-3M`` process each, one after the other."""
    auth, priv = master_keys()
    cmd = ["snmpget", "-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA", "-x", "AES", "-3m", "0x" + auth,
           "-3M", "0x" + priv, "-On", "-m", "", "-t", "2", "-r", "1", f"127.0.0.1:{port}", *DOTTED]
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (/proc): the agent's share of each side's GETs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mmm(xs: list[float]) -> str:
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gets", type=int, default=2000, help="GETs per round per side")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--processes", type=int, default=100, help="snmpget processes for the per-process figure")
    ap.add_argument("--in-flight", type=int, nargs="+", default=[1, 8],
                    help="requests in flight on both sides (1: one after the other; more: as the daemon polls)")
    args = ap.parse_args()
    for tool in ("gcc", "net-snmp-config", "snmpget"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (scripts/setup --test installs it)")
    port = free_port(socket.SOCK_DGRAM)
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp, snmpd(Path(tmp) / "agent", port) as agent:
        exe = build_anchor(Path(tmp))
        assert agent.process.proc is not None
        pid = agent.process.proc.pid  # its CPU is read in clock ticks (10 ms): use 1,000 GETs or more

        def measured(run: Callable[[], tuple[float, float]]) -> tuple[float, float, float]:
            """(wall, client CPU, agent CPU) seconds of one side's GETs."""
            before = cpu_seconds(pid)
            wall, cpu = run()
            return wall, cpu, cpu_seconds(pid) - before

        for k_in_flight in args.in_flight:
            wall_ratios, cpu_ratios, agent_us = [], [], []
            for k in range(args.rounds):
                sides = [partial(theirs, exe, port, args.gets, k_in_flight),
                         partial(ours, port, args.gets, k_in_flight)]
                if k % 2:
                    o, t = measured(sides[1]), measured(sides[0])
                else:
                    t, o = measured(sides[0]), measured(sides[1])
                wall_ratios.append(t[0] / o[0])
                cpu_ratios.append(t[1] / o[1])
                agent_us += [1e6 * t[2] / args.gets, 1e6 * o[2] / args.gets]
                print(f"{k_in_flight} in flight, round {k + 1}: net-snmp session {args.gets / t[0]:,.0f} GETs/s, "
                      f"{1e6 * t[1] / args.gets:.0f} µs CPU per GET | ours {args.gets / o[0]:,.0f} GETs/s, "
                      f"{1e6 * o[1] / args.gets:.0f} µs CPU per GET | ours/theirs wall {t[0] / o[0]:.2f}x, "
                      f"CPU {t[1] / o[1]:.2f}x | agent {1e6 * t[2] / args.gets:.0f} / "
                      f"{1e6 * o[2] / args.gets:.0f} µs CPU per GET")
            print(f"{k_in_flight} in flight: ours/net-snmp session, GETs per wall second, min/median/max: "
                  f"{mmm(wall_ratios)}x")
            print(f"{k_in_flight} in flight: ours/net-snmp session, GETs per client CPU second, min/median/max: "
                  f"{mmm(cpu_ratios)}x")
            print(f"{k_in_flight} in flight: the agent's CPU per GET (either client), min/median/max: "
                  f"{mmm(agent_us)} µs")
        if args.processes:
            w = per_process(port, args.processes)
            print(f"snmpget -3m/-3M, one process per GET: {args.processes / w:,.0f} GETs/s "
                  f"({1000 * w / args.processes:.1f} ms each, process start and discovery included)")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
