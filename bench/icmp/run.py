"""ICMP probe benchmark on loopback targets, side by side with fping in the same run (needs root).

    .venv/bin/python bench/icmp/run.py --targets 5000 20000 50000
    .venv/bin/python bench/icmp/run.py --steady 50000 --interval 60 --duration 60

Burst mode: for each size N, ping N distinct loopback addresses (127.1.0.1 upwards) once each, as fast
as the probe allows with at most ``--concurrency`` polls in flight, for ``--rounds`` rounds, once with
one ``ping()`` coroutine per address and once through the batch API ``ping_many()``; and run
``fping -i0 -q -t500 -c1`` on the same addresses (same count and timeout). The rounds are
interleaved (fping, ping, ping_many, fping, ...) so that other load on the machine falls on all
alike; each of our rounds runs in a fresh probe whose address cache is cold, as fping's process is,
and fping's wall time runs from spawn to exit. Reports pings/s, CPU % of one core (getrusage), RSS,
false downs (targets without a reply: on loopback every one must answer), the ratio of our rate to
fping's over all rounds and its range over single rounds.

Steady mode: N endpoints polled every ``--interval`` s (count 3, 20 ms apart, the daemon's defaults),
each at its own offset spread evenly over the interval, for ``--duration`` s; reports CPU % of one core.

Only loopback addresses are used: all traffic stays on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from monitor.probes.icmp import IcmpProbe

FIRST = int(ipaddress.IPv4Address("127.1.0.1"))


def addresses(n: int) -> list[str]:
    return [str(ipaddress.IPv4Address(FIRST + i)) for i in range(n)]


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Row:
    who: str
    targets: int
    rate: float  # pings per second
    cpu_pct: float  # of one core
    rss_mb: float
    false_down: int


async def burst_round(probe: IcmpProbe, targets: list[str], concurrency: int) -> tuple[float, float, int]:
    """One pass over all targets, count=1 each; returns (wall s, cpu s, targets without reply)."""
    it = iter(targets)
    down = 0

    async def worker() -> None:
        nonlocal down
        for address in it:
            r = await probe.ping(address, count=1, per_ping_timeout=0.5)
            if not r.received:
                down += 1

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(targets)))))
    return time.perf_counter() - t0, cpu_seconds() - cpu0, down


async def batch_round(probe: IcmpProbe, targets: list[str], concurrency: int) -> tuple[float, float, int]:
    """The same pass through ``ping_many``: batches of ``concurrency // 2`` addresses, two in flight."""
    size = max(1, concurrency // 2)
    starts = iter(range(0, len(targets), size))
    down = 0

    async def worker() -> None:
        nonlocal down
        for s in starts:
            results = await probe.ping_many(targets[s:s + size], count=1, per_ping_timeout=0.5)
            down += sum(1 for r in results if not r.received)

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    await asyncio.gather(worker(), worker())
    return time.perf_counter() - t0, cpu_seconds() - cpu0, down


@dataclass
class Tally:
    """Sums over the rounds of one contender, and the per-round wall times for the ratio range."""

    walls: list[float] = field(default_factory=list)
    cpu: float = 0.0
    rss: float = 0.0
    down: int = 0

    def add(self, wall: float, cpu: float, rss: float, down: int) -> None:
        self.walls.append(wall)
        self.cpu += cpu
        self.rss = max(self.rss, rss)
        self.down = max(self.down, down)

    def row(self, who: str, targets: int) -> Row:
        wall = sum(self.walls)
        return Row(who, targets, len(self.walls) * targets / wall, 100 * self.cpu / wall, self.rss, self.down)


async def ours_once(targets: list[str], concurrency: int, batched: bool,
                    stamped: bool = False) -> tuple[float, float, float, int]:
    """One measured round in a fresh probe (its address cache cold, as fping's is): wall, cpu, RSS, down.

    ``stamped``: with kernel receive timestamps (SO_TIMESTAMPNS), to measure what they cost."""
    one_pass = batch_round if batched else burst_round
    probe = IcmpProbe(kernel_timestamps=stamped)
    await probe.start()
    try:
        await one_pass(probe, targets[:1000], concurrency)  # warm-up: first allocations, socket buffers
        wall, cpu, down = await one_pass(probe, targets, concurrency)
    finally:
        await probe.close()
    return wall, cpu, rss_mb(), down


def fping_once(path: str) -> tuple[float, float, float, int]:
    """``fping -i0 -q -t500 -c1`` on the same targets: wall (from spawn to exit), cpu, RSS, down."""
    cpu0, t0 = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(["fping", "-i0", "-q", "-t500", "-c1", "-f", path],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
    lost = len(re.findall(r"xmt/rcv/%loss = \d+/0/", proc.stderr))
    return wall, cpu, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, lost


def compare(n: int, rounds: int, concurrency: int) -> list[tuple[Row, Row, float, float]]:
    """Rounds interleaved (fping, ping, ping_many, ping_many with kernel timestamps, fping, ...), so that
    load from anything else on the machine falls on all alike; returns (ours, fping, lowest, highest
    per-round ratio) per API."""
    targets = addresses(n)
    apis = ("ping", "ping_many", "ping_many+kernel_ts")
    tallies = {"fping": Tally(), **{who: Tally() for who in apis}}
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("\n".join(targets) + "\n")
        f.flush()
        for _ in range(rounds):
            tallies["fping"].add(*fping_once(f.name))
            for who in apis:  # each in a fresh event loop and probe
                tallies[who].add(*asyncio.run(ours_once(targets, concurrency, who != "ping", who.endswith("_ts"))))
    theirs = tallies["fping"]
    out = []
    for who in apis:
        ratios = [f / o for o, f in zip(tallies[who].walls, theirs.walls, strict=True)]
        out.append((tallies[who].row(who, n), theirs.row("fping", n), min(ratios), max(ratios)))
    return out


async def steady(n: int, interval: float, duration: float) -> None:
    """N endpoints, each polled every ``interval`` s at its own evenly spread offset."""
    targets = addresses(n)
    probe = IcmpProbe()
    await probe.start()
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[object]] = set()
    polls = failed = 0

    async def poll(address: str) -> None:
        nonlocal polls, failed
        r = await probe.ping(address, count=3, spacing=0.02, per_ping_timeout=1.0)
        polls += 1
        failed += r.received == 0

    start = loop.time()
    cpu0 = cpu_seconds()
    step = interval / n
    i = 0
    while True:
        now = loop.time()
        if now - start >= duration:
            break
        due = min(int((now - start) / step) + 1, int(duration / step))
        while i < due:  # start every poll whose slot has come (slot i at start + i*step)
            task = loop.create_task(poll(targets[i % n]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.sleep(0.01)
    wall = loop.time() - start
    cpu = cpu_seconds() - cpu0
    await asyncio.gather(*tasks)
    await probe.close()
    print(f"steady: {n} endpoints, interval {interval:g} s, count 3, {wall:.0f} s: {polls} polls "
          f"({polls * 3 / wall:.0f} pings/s), polls without reply {failed}, "
          f"CPU {100 * cpu / wall:.1f} % of one core, RSS {rss_mb():.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, nargs="*", default=[5000, 20000, 50000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=2000)
    ap.add_argument("--steady", type=int, default=0, help="endpoints for the steady-state mode (0: skip)")
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--starve", type=int, default=0,
                    help="busy-loop processes running meanwhile (e.g. 6 on 2 cores): a starved process reads "
                         "replies late, which must not count as lost (issue 12's false DOWNs)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: raw ICMP sockets (and fping -i0) need it")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.starve)]
    try:
        rows = [row for n in args.targets for row in compare(n, args.rounds, args.concurrency)]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    if rows:
        print(f"burst, count=1, {args.rounds} rounds interleaved with fping's, concurrency {args.concurrency}, "
              f"{os.cpu_count()} CPUs, {args.starve} busy loops beside")
        print("| targets | API | pings/s | CPU % | RSS MB | false down "
              "| fping pings/s | fping CPU % | fping false down | ours/fping | per round |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for o, f, lo, hi in rows:
            print(f"| {o.targets:,} | {o.who} | {o.rate:,.0f} | {o.cpu_pct:.0f} | {o.rss_mb:.0f} | {o.false_down} "
                  f"| {f.rate:,.0f} | {f.cpu_pct:.0f} | {f.false_down} | {o.rate / f.rate:.2f}x "
                  f"| {lo:.2f}-{hi:.2f}x |")
    if args.steady:
        asyncio.run(steady(args.steady, args.interval, args.duration))


if __name__ == "__main__":
    main()
