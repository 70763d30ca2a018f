"""A one-shot check of a v3 device as whole processes: ``monitor probe`` vs the net-snmp commands.

    .venv/bin/python -m bench.snmp.oneshot [--rounds 10] [--root DIR]

(repo root, as root; needs snmpd, snmpget, snmpbulkwalk and ping.) Where a user times a whole
process: someone checking one device from a shell. One net-snmp ``snmpd`` on loopback, authPriv
SHA/AES. Ours: ``monitor probe core`` (a node with the ``generic`` profile: one ICMP echo request, a
GET of sysUpTime, a GETBULK walk of the interface columns), a fresh process each time. Theirs, the
same answers from net-snmp as a script gets them: ``ping -c1``, ``snmpget`` of sysUpTime and
``snmpbulkwalk`` of ifTable and ifXTable, one process each, given the master keys (``-3m/-3M``:
ours hashes the passphrases, ~1 MB of SHA-1 each, inside its process). Also printed: the floor of
any Python program, the interpreter starting and importing asyncio. Rounds alternate which side
goes first; ratio = theirs / ours in wall time and in CPU time of the child processes, min/median/max.
``--root`` runs another checkout's ``monitor`` (a ``git archive`` of main: before/after).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.snmp.getv3 import master_keys, mmm
from tests.servers.common import free_port
from tests.servers.snmpd import V3_AUTH, V3_PRIV, V3_USER, snmpd

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """\
municipalities: [{{id: m1, name: Uno}}]
sites: [{{id: s1, municipality: m1, name: Torre, lat: 7.0, lon: -70.7}}]
service_classes: {{residencial: {{response_hours: 24, availability_target: 98.0}}}}
credentials:
  v3: {{version: 3, user: {user}, auth: {{protocol: SHA, key: {{env: BENCH_AUTH}}}},
        priv: {{protocol: AES, key: {{env: BENCH_PRIV}}}}}}
polling: {{interval: 60, icmp_count: 1, icmp_timeout: 1}}
nodes:
  - {{id: core, kind: router, address: 127.0.0.1, site: s1, snmp: {{profile: generic, credentials: v3, port: {port}}}}}
"""


def timed(cmds: list[list[str]], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall s, CPU s of the children) of running ``cmds`` one after the other, each checked."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    for cmd in cmds:
        subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose monitor package is run")
    args = ap.parse_args()
    port = free_port(socket.SOCK_DGRAM)
    auth, priv = master_keys()
    v3 = ["-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA", "-x", "AES", "-3m", "0x" + auth, "-3M", "0x" + priv,
          "-On", "-m", "", "-t", "2", "-r", "1", f"127.0.0.1:{port}"]
    theirs_cmds = [["ping", "-c1", "-W1", "-q", "127.0.0.1"], ["snmpget", *v3, ".1.3.6.1.2.1.1.3.0"],
                   ["snmpbulkwalk", "-Cr25", *v3, ".1.3.6.1.2.1.2.2"],
                   ["snmpbulkwalk", "-Cr25", *v3, ".1.3.6.1.2.1.31.1.1"]]
    env = {**os.environ, "BENCH_AUTH": V3_AUTH, "BENCH_PRIV": V3_PRIV}
    print(f"load average at start: {os.getloadavg()[0]:.1f}; ours from {args.root}")
    with tempfile.TemporaryDirectory() as tmp, snmpd(Path(tmp) / "agent", port):
        cfg = Path(tmp) / "sites.yaml"
        cfg.write_text(CONFIG.format(user=V3_USER, port=port))
        ours_cmd = [[sys.executable, "-m", "monitor", "probe", "core", "--config", str(cfg)]]
        floor_cmd = [[sys.executable, "-c", "import asyncio"]]
        timed(ours_cmd, args.root, env)  # warm the page cache (and byte code, where it may be written)
        walls, cpus, ours_all, theirs_all, floors = [], [], [], [], []
        for k in range(args.rounds):
            if k % 2:
                o = timed(ours_cmd, args.root, env)
                t = timed(theirs_cmds, args.root)
            else:
                t = timed(theirs_cmds, args.root)
                o = timed(ours_cmd, args.root, env)
            floors.append(timed(floor_cmd, args.root)[1])
            walls.append(t[0] / o[0])
            cpus.append(t[1] / o[1])
            ours_all.append(o)
            theirs_all.append(t)
            print(f"round {k + 1}: monitor probe {o[0] * 1000:.0f} ms wall, {o[1] * 1000:.0f} ms CPU | "
                  f"ping + snmpget + 2 snmpbulkwalk {t[0] * 1000:.0f} ms wall, {t[1] * 1000:.0f} ms CPU")
    print(f"monitor probe, ms wall min/median/max: {mmm([1000 * w for w, _ in ours_all])}; "
          f"CPU: {mmm([1000 * c for _, c in ours_all])}")
    print(f"net-snmp commands, ms wall: {mmm([1000 * w for w, _ in theirs_all])}; "
          f"CPU: {mmm([1000 * c for _, c in theirs_all])}")
    print(f"python floor (interpreter + import asyncio), ms CPU: {mmm([1000 * c for c in floors])}")
    print(f"ours / net-snmp, wall: {mmm(walls)}x; CPU: {mmm(cpus)}x (theirs/ours time: above 1 = ours faster)")
    above = statistics.median(c for _, c in ours_all) - statistics.median(floors)
    print(f"median CPU of ours above the floor: {1000 * above:.0f} ms")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
