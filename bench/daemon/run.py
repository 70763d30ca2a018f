"""The whole polling daemon at scale on loopback, side by side with fping doing the same pings.

    .venv/bin/python bench/daemon/run.py --endpoints 50000 --interval 60 --rounds 3 --window 20

Generates an inventory of one core, ``--endpoints / 250`` APs and N customer endpoints (all in
127.0.0.0/8, so traffic stays on this machine) and seeds the event store with every target UP (the
steady state of a network that answers; ``--cold`` starts from an empty store instead, so the first
poll of every target is a transition). Then, ``--rounds`` times, interleaved:

- the real :class:`monitor.daemon.Daemon`, in-process, started on that store, settled for
  ``--settle`` s (default: one interval + 5 s, so that the steady state is measured, not the
  first pass) and measured for ``--window`` s (CPU of the whole process, getrusage), then stopped;
- ``fping -q -i0 -c3 -p20 -t1000`` on as many of the same addresses as the daemon polls in one
  window, i.e. the same pings (count 3, 20 ms apart, 1 s timeout), sent as fast as fping can (its
  CPU from RUSAGE_CHILDREN). The comparison is CPU per poll; fping's CPU % is given as it would be
  at the daemon's poll rate. (fping paced to the daemon's rate with ``-i0.4`` is no fair anchor: it
  wakes for every packet, spent ~10x the CPU per ping of ``-i0`` and took twice the window.)

The two never run at once: a raw ICMP socket sees every ICMP packet on the machine, so each would pay
for the other's replies. Alternating them puts other load (a shared machine) on both alike; the ratio
of the daemon's CPU % to fping's is printed per round with min/median/max. Also per round: polls,
failed polls, false DOWN (every loopback target answers, so any DOWN is false), the cyclic GC's
collections (full ones, the longest, all; from gc.callbacks), RSS, scheduler lag p50/p99/max
(exact: every value the scheduler observes is kept beside its histogram; ``--verbose``: the five
longest lags and collections with their times), the p99 of how late a bare asyncio loop in
another process wakes from 5 ms sleeps meanwhile (the lag the loaded machine itself imposes), and
polls skipped because a target's previous poll was still running. ``--nice N`` runs the daemon at
niceness N (the idle loop and fping at the default): how much of the lag is waiting for a core.
``--timeseries spool`` also runs the time-series writer against a closed port (every sample goes
to the on-disk spool).
Needs root (raw ICMP).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from monitor import selfmetrics
from monitor.daemon import Daemon
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.state import State, StateChange
from monitor.store import EventStore

FIRST_ENDPOINT = int(ipaddress.IPv4Address("127.100.0.1"))
COUNT, SPACING_MS, TIMEOUT_MS = 3, 20, 1000  # the daemon's default ICMP settings, given to fping too


def write_inventory(folder: Path, endpoints: int, interval: float, timeseries: str) -> Path:
    aps = max(1, endpoints // 250)
    ts = ""
    if timeseries == "spool":
        ts = "timeseries: {kind: influxdb1, url: 'http://127.0.0.1:9', database: bench}\n"
    lines = [
        "municipalities: [{id: arauca, name: Arauca}]",
        "sites: [{id: twr, municipality: arauca, name: Torre}]",
        "service_classes: {residencial: {response_hours: 24, availability_target: 98.0}}",
        f"polling: {{interval: {interval}}}",
        "daemon: {state_dir: var, metrics_listen: ''}",
        ts,
        "customers_file: customers.csv",
        "nodes:",
        "  - {id: core, kind: router, address: 127.0.0.1, site: twr}",
    ]
    lines += [f"  - {{id: ap-{i}, kind: ap, address: 127.99.{i // 250}.{i % 250 + 1}, parent: core}}"
              for i in range(aps)]
    (folder / "sites.yaml").write_text("\n".join(lines) + "\n")
    rows = ["customer_id,name,service_class,email,phone,language,endpoint_id,endpoint_kind,address,parent"]
    for i in range(endpoints):
        addr = ipaddress.IPv4Address(FIRST_ENDPOINT + i)
        rows.append(f"C{i},Cliente {i},residencial,,,es,cpe-{i},cpe,{addr},ap-{i % aps}")
    (folder / "customers.csv").write_text("\n".join(rows) + "\n")
    return folder / "sites.yaml"


def seed_up(inventory: Inventory, path: Path) -> None:
    """Every target UP in the store, as after a first pass over a network that answers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = EventStore(path)
    now = time.time()
    store.append([StateChange(tid, State.UNKNOWN, State.UP, now, "bench seed") for tid in inventory.targets])
    store.close()


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def metric(name: str, **labels: str) -> float:
    return selfmetrics.REGISTRY.get_sample_value(name, labels) or 0.0


#: Every scheduler lag observed (seconds), kept beside the histogram so that the bench reports exact
#: quantiles rather than bucket bounds.
LAGS: list[float] = []
LAG_TIMES: list[float] = []  # when each was observed (perf_counter)


def record_lags() -> None:
    histogram = selfmetrics.SCHEDULER_LAG
    observe = histogram.observe

    def observe_and_keep(amount: float, exemplar: dict[str, str] | None = None) -> None:
        LAGS.append(amount)
        LAG_TIMES.append(time.perf_counter())
        observe(amount, exemplar)

    histogram.observe = observe_and_keep  # type: ignore[method-assign]


#: Every collection of the cyclic GC during a window: (generation, seconds it took).
GC_PAUSES: list[tuple[int, float]] = []
GC_TIMES: list[float] = []


def record_gc() -> None:
    """Time each collection (gc.callbacks): the daemon's own longest pauses were full collections."""
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            GC_PAUSES.append((info["generation"], time.perf_counter() - started[0]))
            GC_TIMES.append(started[0])

    gc.callbacks.append(callback)


def quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


@dataclass
class DaemonRound:
    window: float
    cpu_pct: float
    polls: float
    failed: float
    downs: float
    skipped: float
    lag_p50: float
    lag_p99: float
    lag_max: float
    idle_p99: float
    rss: float
    gc_full: int  # full (generation 2) collections in the window
    gc_max: float  # the longest collection, seconds
    gc_total: float  # all collections, seconds


def icmp_polls(*results: str) -> float:
    return sum(metric("monitor_polls_total", probe="icmp", result=r) for r in results)


#: A bare asyncio loop in a child process that only sleeps 5 ms at a time and records how late it wakes:
#: the lag the machine itself imposes (other processes on the cores) while the daemon is measured.
IDLE_LOOP = """
import asyncio, os, sys, time
os.nice(int(sys.argv[2]))  # back to the machine's default when the bench runs niced (--nice)
async def main(window):
    lags, end = [], time.monotonic() + window
    while time.monotonic() < end:
        t = time.monotonic()
        await asyncio.sleep(0.005)
        lags.append(time.monotonic() - t - 0.005)
    lags.sort()
    print(lags[int(0.99 * (len(lags) - 1))])
asyncio.run(main(float(sys.argv[1])))
"""


async def idle_loop_lag_p99(window: float) -> float:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", IDLE_LOOP, str(window), str(-NICE[0]),
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return float(out or 0)


async def daemon_round(cfg: Path, inventory: Inventory, settle: float, window: float) -> DaemonRound:
    daemon = Daemon(cfg, inventory=inventory)
    task = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    await asyncio.sleep(settle)
    failed_results = ("timeout", "error", "unreachable", "blocked")
    polls0, failed0 = icmp_polls("ok"), icmp_polls(*failed_results)
    downs0 = metric("monitor_state_changes_total", new_state="down")
    skipped0 = metric("monitor_polls_skipped_total")
    LAGS.clear()
    LAG_TIMES.clear()
    GC_PAUSES.clear()
    GC_TIMES.clear()
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    idle_p99 = await idle_loop_lag_p99(window)
    cpu1, wall1 = cpu_seconds(), time.perf_counter()
    lags = list(LAGS)
    if VERBOSE[0]:  # the five longest lags and collections, seconds into the window
        for t, lag in sorted(zip(LAG_TIMES, LAGS, strict=True), key=lambda x: -x[1])[:5]:
            print(f"  lag {1000 * lag:.0f} ms at {t - wall0:.1f} s")
        for t, (g, d) in sorted(zip(GC_TIMES, GC_PAUSES, strict=True), key=lambda x: -x[1][1])[:5]:
            print(f"  gc gen {g} {1000 * d:.0f} ms at {t - wall0:.1f} s")
    out = DaemonRound(
        wall1 - wall0, 100 * (cpu1 - cpu0) / (wall1 - wall0), icmp_polls("ok") - polls0,
        icmp_polls(*failed_results) - failed0, metric("monitor_state_changes_total", new_state="down") - downs0,
        metric("monitor_polls_skipped_total") - skipped0, quantile(lags, 0.5), quantile(lags, 0.99),
        max(lags, default=0.0), idle_p99, rss_mb(), sum(1 for g, _ in GC_PAUSES if g == 2),
        max((t for _, t in GC_PAUSES), default=0.0), sum(t for _, t in GC_PAUSES),
    )
    daemon.request_stop()
    await task
    return out


def fping_round(addresses: list[str]) -> tuple[float, float, int]:
    """fping on the pings one daemon window makes: (CPU s, wall s, targets without reply)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("\n".join(addresses) + "\n")
        f.flush()
        cpu0, t0 = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
        proc = subprocess.run(
            ["fping", "-q", "-i0", f"-c{COUNT}", f"-p{SPACING_MS}", f"-t{TIMEOUT_MS}", "-f", f.name],
            capture_output=True, text=True, check=False, preexec_fn=lambda: os.nice(-NICE[0]),
        )
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
    lost = len(re.findall(r"xmt/rcv/%loss = \d+/0/", proc.stderr))
    return cpu, wall, lost


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


#: print the longest lags and collections of each round with their times (--verbose)
VERBOSE = [False]

#: the niceness the bench (and so the daemon) runs at, which its children undo (--nice)
NICE = [0]


async def run(args: argparse.Namespace) -> None:
    record_lags()
    record_gc()
    VERBOSE[0] = args.verbose
    if args.nice:
        NICE[0] = args.nice
        os.nice(args.nice)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg = write_inventory(Path(tmp), args.endpoints, args.interval, args.timeseries)
        inventory = load_inventory(cfg)
        load_s = time.perf_counter() - t0
        if not args.cold:
            seed_up(inventory, Path(tmp) / "var" / "monitor.db")
        per_window = int(args.endpoints * args.window / args.interval)
        settle = args.interval + 5 if args.settle is None else args.settle
        addresses = [str(ipaddress.IPv4Address(FIRST_ENDPOINT + i)) for i in range(per_window)]
        print(f"endpoints={args.endpoints} nodes={len(inventory.nodes())} interval={args.interval:g}s "
              f"window={args.window:g}s settle={settle:g}s rounds={args.rounds} "
              f"start={'cold' if args.cold else 'all UP'} "
              f"timeseries={args.timeseries} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} nice={args.nice}")
        print(f"inventory load: {load_s:.2f} s; fping: {per_window} targets -i0 -c{COUNT} -p{SPACING_MS} "
              f"-t{TIMEOUT_MS} per round")
        print("| round | daemon CPU % | polls/s | failed | false DOWN | skipped | lag p50 | lag p99 | lag max "
              "| idle loop lag p99 | GC full / longest / total | RSS MB | fping CPU % (same rate) | fping wall s "
              "| fping lost | daemon/fping (CPU/poll) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        ratios, cpus, p99s, maxes, downs = [], [], [], [], 0.0
        for r in range(args.rounds):
            d = await daemon_round(cfg, inventory, settle, args.window)
            f_cpu_s, f_wall, f_lost = fping_round(addresses)
            # CPU per poll; fping's CPU % as it would be at the daemon's poll rate
            f_cpu = 100 * f_cpu_s / len(addresses) * d.polls / d.window
            ratio = d.cpu_pct / f_cpu if f_cpu else float("inf")
            ratios.append(ratio)
            cpus.append(d.cpu_pct)
            p99s.append(d.lag_p99)
            maxes.append(d.lag_max)
            downs += d.downs
            print(f"| {r + 1} | {d.cpu_pct:.1f} | {d.polls / d.window:.0f} | {d.failed:.0f} | {d.downs:.0f} "
                  f"| {d.skipped:.0f} | {1000 * d.lag_p50:.1f} ms | {1000 * d.lag_p99:.1f} ms "
                  f"| {1000 * d.lag_max:.0f} ms "
                  f"| {1000 * d.idle_p99:.1f} ms "
                  f"| {d.gc_full} / {1000 * d.gc_max:.0f} / {1000 * d.gc_total:.0f} ms | {d.rss:.0f} "
                  f"| {f_cpu:.2f} | {f_wall:.1f} | {f_lost} "
                  f"| {ratio:.1f}x |")
        print(f"daemon CPU % min/median/max: {spread(cpus)}; daemon/fping min/median/max: {spread(ratios)}; "
              f"lag p99 min/median/max {spread([1000 * p for p in p99s])} ms; "
              f"lag max min/median/max {spread([1000 * p for p in maxes])} ms; false DOWN {downs:.0f}; "
              f"RSS {rss_mb():.0f} MB")
        if args.timeseries == "spool":
            print(f"points spooled: {metric('monitor_timeseries_spool_points'):.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoints", type=int, default=50_000)
    p.add_argument("--interval", type=float, default=60.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=float, default=20.0, help="seconds measured per daemon round")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds after start before measuring (default: one interval + 5 s, the steady state: "
                        "during its first interval the daemon builds each target's state as it polls it; "
                        "--settle 1 --window 60 measures that first interval)")
    p.add_argument("--cold", action="store_true", help="start from an empty store (first poll: UNKNOWN -> UP)")
    p.add_argument("--timeseries", choices=["none", "spool"], default="none")
    p.add_argument("--nice", type=int, default=0,
                   help="run the daemon at this niceness (e.g. -5, as Nice= in its unit would); the idle-loop "
                        "reference and fping keep the default")
    p.add_argument("--verbose", action="store_true", help="the longest lags and collections of each round")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (raw ICMP sockets)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
