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
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from monitor.probes.snmp_transport import Endpoint, Session, SnmpTransport
from monitor.probes.snmp_usm import UsmUser, make_user
from tests.servers.common import free_port
from tests.servers.snmpd import COMMUNITY, V3_AUTH, V3_PRIV, V3_USER, snmpd

OIDS = [(1, 3, 6, 1, 2, 1, 1, i, 0) for i in range(1, 8)] + [
    (1, 3, 6, 1, 2, 1, 2, 2, 1, c, 1) for c in (2, 3, 4, 5, 6, 7, 8, 10, 11, 14, 16, 17, 20)
]
PER_AGENT = 100  # snmpd ignores addresses beyond ~116 on one agentAddress line


def addresses(n: int) -> list[str]:
    return [f"127.50.{i // 250}.{i % 250 + 1}" for i in range(n)]


async def first_pass(addrs: list[str], port: int, version: str, concurrency: int) -> tuple[float, int, int]:
    transport = SnmpTransport()
    await transport.start()
    user = make_user(V3_USER, "SHA", V3_AUTH, "AES", V3_PRIV) if version == "3" else None
    sem = asyncio.Semaphore(concurrency)
    ok = fail = 0

    async def one(addr: str) -> None:
        nonlocal ok, fail
        session = Session(transport, Endpoint(addr, port, 2.0, 1), community=COMMUNITY if user is None else None,
                          user=user, cred_key="bench")
        async with sem:
            try:
                vbs = await session.get(OIDS)
                ok += len(vbs) == len(OIDS)
            except Exception:  # any failure counts
                fail += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(a) for a in addrs))
    elapsed = time.perf_counter() - t0
    await transport.close()
    return elapsed, ok, fail


def netsnmp(addrs: list[str], port: int, version: str, parallel: int) -> float:
    user: UsmUser = make_user(V3_USER, "SHA", V3_AUTH, "AES", V3_PRIV)
    keys = f"-3m 0x{bytes(user.auth_master).hex()} -3M 0x{bytes(user.priv_master).hex()}"
    auth = ["-v2c", "-c", COMMUNITY] if version == "2c" else [
        "-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA", "-x", "AES", keys]
    oids = " ".join("." + ".".join(map(str, o)) for o in OIDS)
    cmd = f"snmpget {' '.join(auth)} -On -t 2 -r 1 -m '' {{}}:{port} {oids} > /dev/null"
    t0 = time.perf_counter()
    stdin = "\n".join(addrs).encode()
    subprocess.run(["xargs", "-P", str(parallel), "-I{}", "sh", "-c", cmd], input=stdin, check=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000])
    ap.add_argument("--compare", type=int, default=500, help="targets for the net-snmp comparison")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the net-snmp comparison")
    args = ap.parse_args()
    biggest = max(args.sizes)
    addrs = addresses(biggest)
    port = free_port(socket.SOCK_DGRAM)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        for i in range(0, biggest, PER_AGENT):
            stack.enter_context(snmpd(Path(tmp) / f"agent{i}", port, addrs[i:i + PER_AGENT]))
        agents = (biggest - 1) // PER_AGENT + 1
        print(f"{biggest} agent addresses on {agents} snmpd processes, {len(OIDS)} OIDs per GET")
        print("version  targets  seconds  ms/target  varbinds/s  ok  failed")
        for version in ("2c", "3"):
            for n in args.sizes:
                elapsed, ok, fail = asyncio.run(first_pass(addrs[:n], port, version, args.concurrency))
                print(f"{version:7}  {n:7}  {elapsed:7.2f}  {1000 * elapsed / n:9.3f}  "
                      f"{ok * len(OIDS) / elapsed:10.0f}  {ok:5}  {fail}")
            n = min(args.compare, biggest)
            ratios = []
            for rnd in range(args.rounds):
                if rnd % 2:
                    theirs = netsnmp(addrs[:n], port, version, 16)
                ours, ok, _ = asyncio.run(first_pass(addrs[:n], port, version, args.concurrency))
                if rnd % 2 == 0:
                    theirs = netsnmp(addrs[:n], port, version, 16)
                ratio = (ok * len(OIDS) / ours) / (n * len(OIDS) / theirs)
                ratios.append(ratio)
                print(f"{version:7}  net-snmp snmpget xargs -P16 over {n}: {theirs:.2f} s "
                      f"({n * len(OIDS) / theirs:.0f} varbinds/s); ours {ours:.2f} s "
                      f"({ok * len(OIDS) / ours:.0f} varbinds/s), ratio {ratio:.2f}x")
            print(f"{version:7}  ratio ours/net-snmp varbinds/s over {args.rounds} rounds, min / median / max: "
                  f"{min(ratios):.2f} / {statistics.median(ratios):.2f} / {max(ratios):.2f}")


if __name__ == "__main__":
    main()
