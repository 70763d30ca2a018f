"""The whole polling daemon at scale on loopback: scheduler, ICMP, assessment, state, event store.

    .venv/bin/python bench/daemon/run.py --endpoints 50000 --interval 60 --duration 120

Generates an inventory of one core, ``--endpoints / 250`` APs and N customer endpoints (all in
127.0.0.0/8, so traffic stays on this machine), runs the real :class:`monitor.daemon.Daemon`
in-process for ``--duration`` seconds and reports: polls done, CPU % of one core (whole process,
after the inventory is loaded), RSS, false DOWN events (every loopback target answers, so any DOWN
is false), scheduler lag p50/p99 and the number of polls skipped because a target's previous poll
was still running. ``--timeseries spool`` also runs the time-series writer against a closed port,
so every sample goes through the writer into the on-disk spool (the worst case of the storage path).
Needs root (raw ICMP).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from monitor import selfmetrics
from monitor.daemon import Daemon
from monitor.inventory.loader import load_inventory

FIRST_ENDPOINT = int(ipaddress.IPv4Address("127.100.0.1"))


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


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def metric(name: str, **labels: str) -> float:
    return selfmetrics.REGISTRY.get_sample_value(name, labels) or 0.0


def lag_quantile(q: float) -> float:
    buckets = []
    for m in selfmetrics.REGISTRY.collect():
        if m.name == "monitor_scheduler_lag_seconds":
            buckets = [(float(s.labels["le"]), s.value) for s in m.samples if s.name.endswith("_bucket")]
    if not buckets:
        return 0.0
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= q * total:
            return le
    return float("inf")


async def run(endpoints: int, interval: float, duration: float, timeseries: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg = write_inventory(Path(tmp), endpoints, interval, timeseries)
        inventory = load_inventory(cfg)
        load_s = time.perf_counter() - t0
        daemon = Daemon(cfg, inventory=inventory)
        task = asyncio.create_task(daemon.run())
        await daemon.ready.wait()
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        polls0 = metric("monitor_polls_total", probe="icmp", result="ok")
        await asyncio.sleep(duration)
        cpu1, wall1 = cpu_seconds(), time.perf_counter()
        polls = metric("monitor_polls_total", probe="icmp", result="ok") - polls0
        failed = sum(
            metric("monitor_polls_total", probe="icmp", result=r) for r in ("timeout", "error", "unreachable")
        )
        downs = metric("monitor_state_changes_total", new_state="down")
        skipped = metric("monitor_polls_skipped_total")
        spool = metric("monitor_timeseries_spool_points")
        rss = rss_mb()
        daemon.request_stop()
        await task
    elapsed = wall1 - wall0
    print(f"endpoints={endpoints} nodes={len(inventory.nodes())} interval={interval}s duration={elapsed:.0f}s "
          f"timeseries={timeseries}")
    print(f"inventory load: {load_s:.2f} s")
    print(f"polls ok: {polls:.0f} ({polls / elapsed:.0f}/s, expected ~{len(inventory.targets) / interval:.0f}/s)")
    print(f"failed polls: {failed:.0f}   false DOWN events: {downs:.0f}   skipped (overlap): {skipped:.0f}")
    print(f"CPU: {100 * (cpu1 - cpu0) / elapsed:.1f} % of one core   RSS: {rss:.0f} MB")
    print(f"scheduler lag p50 <= {lag_quantile(0.5)} s, p99 <= {lag_quantile(0.99)} s")
    if timeseries == "spool":
        print(f"points spooled: {spool:.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoints", type=int, default=50_000)
    p.add_argument("--interval", type=float, default=60.0)
    p.add_argument("--duration", type=float, default=120.0)
    p.add_argument("--timeseries", choices=["none", "spool"], default="none")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (raw ICMP sockets)")
    asyncio.run(run(args.endpoints, args.interval, args.duration, args.timeseries))


if __name__ == "__main__":
    main()
