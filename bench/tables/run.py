"""Table probe benchmark: one OLT with 1,024 ONUs and one AP with 200 stations per interval, against
pinging the same number of loopback addresses with the project's ICMP probe (needs root for ICMP).

    .venv/bin/python -m bench.tables.run --onus 1024 --stations 200 --rounds 5

The OLT (``huawei-olt`` profile: state, last down cause, serial, Rx/Tx power, distance: 6 columns)
and the AP (``airos-stations``: 7 columns) are generated ``.snmprec`` files served by the real
snmpsim on loopback. Each round measures, in this order (interleaved, so other load on the 2-core
machine falls on all alike): walk the OLT's table and turn it into one outcome per ONU; ping 1,024
loopback addresses (127.1.0.1 upwards) with ``IcmpProbe.ping_many`` at the daemon's defaults (3
echoes 20 ms apart, 1 s timeout); walk the AP's table; ping 200 addresses. Each measurement runs in a
fresh event loop and probe. Reported: wall time and this process's CPU (getrusage: the poller only;
snmpsim runs in its own process and its CPU is reported separately), per endpoint, min/median/max.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import resource
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from monitor.inventory.model import SnmpCredentials, SnmpSettings, Target
from monitor.probes.icmp import IcmpProbe
from monitor.probes.snmp import SnmpProbe
from monitor.probes.snmp_table import EndpointKey, TableProbe, outcomes
from monitor.secret import Secret
from tests.servers.common import free_port
from tests.servers.snmpsim import snmpsim
from tests.snmprec_build import Record, write_snmprec

HW = "1.3.6.1.4.1.2011.6.128.1.1.2"
AIRMAX = "1.3.6.1.4.1.41112.1.4.7.1"
FIRST = int(ipaddress.IPv4Address("127.1.0.1"))


def olt(n: int) -> tuple[dict[str, Record], list[EndpointKey]]:
    """``n`` ONTs over 16 PON ports (64 each, like a GPON OLT's 1:64 split), 1 in 20 offline."""
    out: dict[str, Record] = {}
    keys: list[EndpointKey] = []
    for i in range(n):
        idx = f"{4194304000 + (i // 64) * 256}.{i % 64}"
        sn = f"48575443{i:08X}"
        offline = i % 20 == 7
        out[f"{HW}.43.1.3.{idx}"] = ("4x", sn)
        out[f"{HW}.46.1.15.{idx}"] = ("2", "2" if offline else "1")
        out[f"{HW}.46.1.20.{idx}"] = ("2", "-1" if offline else str(800 + i))
        out[f"{HW}.46.1.24.{idx}"] = ("2", "13" if offline else "-1")
        out[f"{HW}.51.1.3.{idx}"] = ("2", "2147483647" if offline else "215")
        out[f"{HW}.51.1.4.{idx}"] = ("2", "2147483647" if offline else str(-1700 - i % 1000))
        keys.append(EndpointKey(f"onu-{i}", "onu_serial", sn))
    return out, keys


def ap(n: int) -> tuple[dict[str, Record], list[EndpointKey]]:
    out: dict[str, Record] = {}
    keys: list[EndpointKey] = []
    for i in range(n):
        mac = (0x24, 0xA4, 0x3C, 0, i // 256, i % 256)
        suffix = ".".join(map(str, mac))
        for col, value in ((3, -50 - i % 40), (4, -96), (5, 300 + i), (6, 90 - i % 50), (11, 130000000),
                           (12, 117000000), (16, 30 - i % 20)):
            out[f"{AIRMAX}.{col}.1.{suffix}"] = ("2", str(value))
        keys.append(EndpointKey(f"cpe-{i}", "station_mac", ":".join(f"{o:02x}" for o in mac)))
    return out, keys


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measured(make: Callable[[], Coroutine[Any, Any, int]]) -> tuple[float, float, int]:
    """(wall s, CPU s, endpoints answered) of one run in a fresh event loop."""
    c0, t0 = cpu(), time.perf_counter()
    n = asyncio.run(make())
    return time.perf_counter() - t0, cpu() - c0, n


async def walk(port: int, community: str, profile: str, keys: list[EndpointKey]) -> int:
    settings = SnmpSettings("generic", SnmpCredentials("b", "2c", community=Secret(community, "bench")), port=port,
                            timeout=5.0, retries=0)
    target = Target("parent", "olt", "node", "127.0.0.1", snmp=settings)
    snmp = SnmpProbe()
    await snmp.start()
    try:
        result = await TableProbe(snmp).poll(target, profile, 60.0)
    finally:
        await snmp.close()
    if not result.ok:
        raise SystemExit(f"walk failed: {result.error}")
    return sum(o.present for o in outcomes(result, keys))


async def ping(n: int) -> int:
    probe = IcmpProbe()
    await probe.start()
    try:
        addrs = [str(ipaddress.IPv4Address(FIRST + i)) for i in range(n)]
        results = await probe.ping_many(addrs, count=3, spacing=0.02, per_ping_timeout=1.0)
    finally:
        await probe.close()
    return sum(r.ok for r in results)


def agent_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime in clock ticks (USER_HZ = 100)


def main() -> None:
    ap_ = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap_.add_argument("--onus", type=int, default=1024)
    ap_.add_argument("--stations", type=int, default=200)
    ap_.add_argument("--rounds", type=int, default=5)
    args = ap_.parse_args()
    olt_records, onu_keys = olt(args.onus)
    ap_records, sta_keys = ap(args.stations)
    runs: dict[str, list[tuple[float, float, int]]] = {k: [] for k in ("olt walk", "olt ping", "ap walk", "ap ping")}
    agent: dict[str, list[float]] = {"olt walk": [], "ap walk": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_snmprec(folder / "olt.snmprec", olt_records)
        write_snmprec(folder / "ap.snmprec", ap_records)
        port = free_port(socket.SOCK_DGRAM)
        with snmpsim(folder / "sim", port, [str(folder / "olt.snmprec"), str(folder / "ap.snmprec")]) as sim:
            pid = sim.process.pid
            asyncio.run(walk(port, "olt", "huawei-olt", onu_keys))  # warm snmpsim's index before measuring
            for _ in range(args.rounds):
                for name, make in (
                    ("olt walk", lambda: walk(port, "olt", "huawei-olt", onu_keys)),
                    ("olt ping", lambda: ping(args.onus)),
                    ("ap walk", lambda: walk(port, "ap", "airos-stations", sta_keys)),
                    ("ap ping", lambda: ping(args.stations)),
                ):
                    a0 = agent_cpu(pid) if name in agent else 0.0
                    runs[name].append(measured(make))
                    if name in agent:
                        agent[name].append(agent_cpu(pid) - a0)
    print(f"rounds: {args.rounds}, interleaved; endpoints: {args.onus} ONUs, {args.stations} stations")
    print("| measurement | endpoints answered | wall s (min/median/max) | poller CPU ms (min/median/max) "
          "| poller CPU µs per endpoint (median) | agent CPU ms (median) |")
    print("|---|---|---|---|---|---|")
    for name, rows in runs.items():
        n = args.onus if name.startswith("olt") else args.stations
        walls, cpus = [r[0] for r in rows], [r[1] * 1000 for r in rows]
        answered = sorted({r[2] for r in rows})
        ag = f"{statistics.median(agent[name]) * 1000:.0f}" if name in agent else "-"
        print(f"| {name} | {'/'.join(map(str, answered))} of {n} | {min(walls):.3f} / {statistics.median(walls):.3f}"
              f" / {max(walls):.3f} | {min(cpus):.0f} / {statistics.median(cpus):.0f} / {max(cpus):.0f} | "
              f"{statistics.median(cpus) * 1000 / n:.0f} | {ag} |")


if __name__ == "__main__":
    main()
