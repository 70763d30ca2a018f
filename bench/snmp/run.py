"""SNMP poller benchmark: first-pass time over many distinct agents, v2c and v3, vs net-snmp.

Run (as root, from the repo root):

    .venv/bin/python -m bench.snmp.run --sizes 1000 2000 5000 --compare 500

Agents: net-snmp ``snmpd`` processes on loopback, each listening on 100 distinct addresses
127.50.x.y (one UDP socket per address), so every target is a distinct address:port for our
poller (v3: one engine discovery + key localization per target, exactly as for real devices).
Each poll is one GET of 20 OIDs (system group + ifTable row 1). For each size a FRESH transport
does a first pass over all targets (bounded to --concurrency in flight); the time per target must
stay flat as the size grows. net-snmp's ``snmpget`` runs over the first --compare targets with
``xargs -P`` in the same run for a varbinds/s comparison: --rounds times, alternating which goes
first, ratio min/median/max. For v3 net-snmp gets the pre-computed master keys (``-3m/-3M``), as
our user object holds hashed keys; without them every ``snmpget`` re-hashes both passphrases
(about 1 MB of SHA-1 each), which made the old single comparison look 1.9x in our favour.

``--whole-process`` times our side as the snmpget side is timed, a whole process from spawn to
exit (``bench.snmp.firstpass``: a fresh interpreter imports the client, builds the transport, does
the first pass over the same --compare targets with the master keys, exits), interleaved with
net-snmp's ``xargs -P`` run over the same targets, --rounds times; ratios of varbinds per wall
second and per CPU second (both sides' CPU is that of their waited-for processes), min/median/max:

    .venv/bin/python -m bench.snmp.run --sizes --compare 300 1000 --rounds 7 --whole-process
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.snmp.firstpass import OIDS, addresses
from bench.snmp.firstpass import first_pass as _first_pass
from monitor.probes.snmp_usm import UsmUser, make_user
from tests.servers.common import free_port
from tests.servers.snmpd import COMMUNITY, V3_AUTH, V3_PRIV, V3_USER, snmpd

PER_AGENT = 100  # snmpd ignores addresses beyond ~116 on one agentAddress line
__all__ = ["OIDS", "addresses"]


def _user() -> UsmUser:
    return make_user(V3_USER, "SHA", V3_AUTH, "AES", V3_PRIV)


async def first_pass(addrs: list[str], port: int, version: str, concurrency: int) -> tuple[float, int, int]:
    user = _user() if version == "3" else None
    return await _first_pass(addrs, port, COMMUNITY if user is None else None, user, concurrency)


def _children_cpu() -> float:
    """User + system CPU of every waited-for descendant so far (xargs waits for its ``sh -c snmpget``)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def netsnmp(addrs: list[str], port: int, version: str, parallel: int) -> tuple[float, float, bool]:
    """(wall s, CPU s, every snmpget succeeded) of one ``snmpget`` process per address under ``xargs -P``.

    xargs starts ``snmpget`` itself (no ``sh -c`` per target, which cost net-snmp ~1 ms CPU a target
    in the first version of this bench) with its output to /dev/null.
    """
    user = _user()
    auth = ["-v2c", "-c", COMMUNITY] if version == "2c" else [
        "-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA", "-x", "AES",
        "-3m", f"0x{bytes(user.auth_master).hex()}", "-3M", f"0x{bytes(user.priv_master).hex()}"]
    oids = ["." + ".".join(map(str, o)) for o in OIDS]
    cmd = ["snmpget", *auth, "-On", "-t", "2", "-r", "1", "-m", "", f"{{}}:{port}", *oids]
    stdin = "\n".join(addrs).encode()
    cpu, t0 = _children_cpu(), time.perf_counter()
    done = subprocess.run(["xargs", "-P", str(parallel), "-I{}", *cmd], input=stdin, stdout=subprocess.DEVNULL,
                          check=False)
    return time.perf_counter() - t0, _children_cpu() - cpu, done.returncode == 0


def ours_process(n: int, port: int, version: str, concurrency: int) -> tuple[float, float, int, float]:
    """Our first pass over the first ``n`` addresses as a whole process, timed from spawn to exit.

    (wall s, CPU s, GETs answered in full, the pass alone in s). The child gets the master keys,
    as ``snmpget -3m/-3M`` does; it is a fresh interpreter: start, imports, transport, the pass.
    """
    user = _user()
    cred = [COMMUNITY] if version == "2c" else [V3_USER, bytes(user.auth_master).hex(), bytes(user.priv_master).hex()]
    cmd = [sys.executable, "-m", "bench.snmp.firstpass", version, str(port), str(n), str(concurrency), *cred]
    cpu, t0 = _children_cpu(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu
    ok, _, pass_s = out.stdout.split()
    return wall, cpu, int(ok), float(pass_s)


def mmm(xs: list[float]) -> str:
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"


def whole_processes(addrs: list[str], port: int, version: str, n: int, rounds: int, concurrency: int,
                    parallel: int) -> None:
    """Both sides as whole processes over the same ``n`` targets, interleaved, ``rounds`` times."""
    wall_r, cpu_r, ours_ms, theirs_ms, ours_cpu, theirs_cpu, pass_ms = [], [], [], [], [], [], []
    for rnd in range(rounds):
        if rnd % 2:
            t_wall, t_cpu, t_ok = netsnmp(addrs[:n], port, version, parallel)
        o_wall, o_cpu, ok, o_pass = ours_process(n, port, version, concurrency)
        if rnd % 2 == 0:
            t_wall, t_cpu, t_ok = netsnmp(addrs[:n], port, version, parallel)
        wall_r.append((ok / o_wall) / (n / t_wall))
        cpu_r.append((ok / o_cpu) / (n / t_cpu))
        ours_ms.append(1000 * o_wall)
        theirs_ms.append(1000 * t_wall)
        ours_cpu.append(1e6 * o_cpu / n)
        theirs_cpu.append(1e6 * t_cpu / n)
        pass_ms.append(1000 * o_pass)
        print(f"{version:3} {n:5} targets, round {rnd + 1}: net-snmp {t_wall:.2f} s wall, {1e6 * t_cpu / n:.0f} µs CPU "
              f"a target{'' if t_ok else ' (some snmpget failed)'} | ours {o_wall:.2f} s wall (the pass alone "
              f"{o_pass:.2f} s), {1e6 * o_cpu / n:.0f} µs CPU a target, {ok} of {n} answered | ratio wall "
              f"{wall_r[-1]:.2f}x, CPU {cpu_r[-1]:.2f}x", flush=True)
    print(f"{version:3} {n:5} targets, whole processes, ours/net-snmp varbinds/s, min / median / max: wall "
          f"{mmm(wall_r)}x, CPU {mmm(cpu_r)}x | wall ms net-snmp {mmm(theirs_ms)}, ours {mmm(ours_ms)} (pass alone "
          f"{mmm(pass_ms)}) | CPU µs a target net-snmp {mmm(theirs_cpu)}, ours {mmm(ours_cpu)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 2000, 5000],
                    help="first-pass sizes of the linearity table (none: skip it)")
    ap.add_argument("--compare", type=int, nargs="+", default=[500], help="targets of each net-snmp comparison")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--parallel", type=int, default=16, help="snmpget processes at a time (xargs -P)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the net-snmp comparison")
    ap.add_argument("--whole-process", action="store_true",
                    help="time our side as a whole process too (spawn to exit: interpreter, imports, transport, "
                         "the pass), as the snmpget processes are timed")
    ap.add_argument("--versions", nargs="+", default=["2c", "3"], choices=["2c", "3"])
    args = ap.parse_args()
    biggest = max([*args.sizes, *args.compare])
    addrs = addresses(biggest)
    port = free_port(socket.SOCK_DGRAM)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        for i in range(0, biggest, PER_AGENT):
            stack.enter_context(snmpd(Path(tmp) / f"agent{i}", port, addrs[i:i + PER_AGENT]))
        agents = (biggest - 1) // PER_AGENT + 1
        print(f"{biggest} agent addresses on {agents} snmpd processes, {len(OIDS)} OIDs per GET")
        if args.sizes:
            print("version  targets  seconds  ms/target  varbinds/s  ok  failed")
        for version in args.versions:
            for n in args.sizes:
                elapsed, ok, fail = asyncio.run(first_pass(addrs[:n], port, version, args.concurrency))
                print(f"{version:7}  {n:7}  {elapsed:7.2f}  {1000 * elapsed / n:9.3f}  "
                      f"{ok * len(OIDS) / elapsed:10.0f}  {ok:5}  {fail}")
            for n in args.compare:
                if args.whole_process:
                    whole_processes(addrs, port, version, n, args.rounds, args.concurrency, args.parallel)
                    continue
                ratios = []
                for rnd in range(args.rounds):
                    if rnd % 2:
                        theirs = netsnmp(addrs[:n], port, version, args.parallel)[0]
                    ours, ok, _ = asyncio.run(first_pass(addrs[:n], port, version, args.concurrency))
                    if rnd % 2 == 0:
                        theirs = netsnmp(addrs[:n], port, version, args.parallel)[0]
                    ratio = (ok * len(OIDS) / ours) / (n * len(OIDS) / theirs)
                    ratios.append(ratio)
                    print(f"{version:7}  net-snmp snmpget xargs -P{args.parallel} over {n}: {theirs:.2f} s "
                          f"({n * len(OIDS) / theirs:.0f} varbinds/s); ours {ours:.2f} s "
                          f"({ok * len(OIDS) / ours:.0f} varbinds/s), ratio {ratio:.2f}x")
                print(f"{version:7}  ratio ours/net-snmp varbinds/s over {args.rounds} rounds, min / median / max: "
                      f"{mmm(ratios)}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")


if __name__ == "__main__":
    main()
