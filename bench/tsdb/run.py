"""Time-series writer benchmark against the real databases (Debian influxd 1.6.7, victoria-metrics).

    .venv/bin/python bench/tsdb/run.py --points 500000

For each backend (influxdb1 → influxd, influxdb2 → victoria-metrics via influxdb-client async):

- ``encode``: building ICMP points with the schema and encoding them to line protocol (points/s);
- ``submit``: cost of one ``submit()`` of one poll's points, what polling pays (µs per call);
- ``write``: N points submitted as fast as possible with batch_size 5000, until the database
  acknowledged all of them (points/s, CPU % of one core for our process);
- ``spool``: the same N points submitted while the database is stopped (all go to the on-disk
  spool), then the database is started and the spool replayed (spool and replay points/s).

Servers run on free loopback ports in a temp dir and are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from monitor import selfmetrics
from monitor.inventory.model import TimeseriesSettings
from monitor.probes.base import IcmpResult
from monitor.tsdb import Point, icmp_points, to_line_protocol
from monitor.tsdb.writer import TimeseriesWriter
from tests.servers.influxdb import InfluxDB1
from tests.servers.restartable import RestartableServer
from tests.servers.victoriametrics import VictoriaMetrics
from tests.tsdb_support import target

TARGETS = 5000


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def written() -> float:
    return selfmetrics.REGISTRY.get_sample_value("monitor_timeseries_points_written_total") or 0.0


def rounds(n_points: int, t0: float) -> list[list[Point]]:
    """Poll results of TARGETS targets, round after round (1 s apart), n_points in total."""
    targets = [target(i) for i in range(TARGETS)]
    out = []
    for k in range(n_points):
        t = targets[k % TARGETS]
        res = IcmpResult(t.id, t.address, 3, 3, 0.1 + k % 7, 0.2 + k % 5, 0.3 + k % 3, 0.01 * (k % 11))
        out.append(icmp_points(t, res, t0 + k // TARGETS))
    return out


async def until(cond: object, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.005)


async def bench_backend(name: str, server: RestartableServer, settings: TimeseriesSettings, n: int,
                        spool: Path) -> None:
    polls = rounds(n, time.time() - 3600)
    writer = TimeseriesWriter(settings, spool / "write", retry_initial=0.05, retry_max=0.5)
    task = asyncio.create_task(writer.run())
    w0, c0, t0 = written(), cpu(), time.perf_counter()
    for i, pts in enumerate(polls):
        writer.submit(pts)
        if i % 5000 == 4999:
            await asyncio.sleep(0)  # let the writer task run, as the poller's awaits would
    await until(lambda: written() - w0 >= n)
    wall, used = time.perf_counter() - t0, cpu() - c0
    await writer.close()
    await task
    print(f"{name:10s} write   {n:>8,d} points {wall:6.2f} s {n / wall:>10,.0f} points/s  "
          f"cpu {100 * used / wall:5.1f} %")

    polls = rounds(n, time.time() - 7200)
    server.stop()
    writer = TimeseriesWriter(settings, spool / "outage", retry_initial=0.05, retry_max=0.2)
    task = asyncio.create_task(writer.run())
    t0 = time.perf_counter()
    for i, pts in enumerate(polls):
        writer.submit(pts)
        if i % 5000 == 4999:
            await asyncio.sleep(0)
    await until(lambda: writer.spool_points >= n)
    spool_wall = time.perf_counter() - t0
    size = writer.spool_bytes
    server.start()
    w0, t0 = written(), time.perf_counter()
    await until(lambda: writer.spool_points == 0)
    replay_wall = time.perf_counter() - t0
    assert written() - w0 >= n
    await writer.close()
    await task
    print(f"{name:10s} spool   {n:>8,d} points {spool_wall:6.2f} s {n / spool_wall:>10,.0f} points/s  "
          f"({size / 1e6:.1f} MB on disk)")
    print(f"{name:10s} replay  {n:>8,d} points {replay_wall:6.2f} s {n / replay_wall:>10,.0f} points/s")


async def bench_cpu_paths(n: int) -> None:
    t0 = time.perf_counter()
    polls = rounds(n, time.time())
    t1 = time.perf_counter()
    body = to_line_protocol(p for pts in polls for p in pts)
    t2 = time.perf_counter()
    print(f"schema     icmp_points {n / (t1 - t0):>10,.0f} points/s")
    print(f"encode     line proto  {n / (t2 - t1):>10,.0f} points/s  ({len(body) / n:.0f} bytes/point)")

    async def submits() -> float:
        settings = TimeseriesSettings(kind="influxdb1", url="http://127.0.0.1:9", database="x",
                                      batch_size=10**9, flush_interval=3600)
        with tempfile.TemporaryDirectory() as d:
            writer = TimeseriesWriter(settings, Path(d), max_buffer_points=10**9)
            t = time.perf_counter()
            for pts in polls:
                writer.submit(pts)
            took = time.perf_counter() - t
            writer._buffer.clear()  # not a write benchmark
            await writer.close()
            return took

    took = await submits()
    print(f"submit     one poll    {1e6 * took / n:>10.2f} µs per call")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=500_000)
    args = ap.parse_args()
    await bench_cpu_paths(min(args.points, 200_000))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "influxdb").mkdir()
        influx = InfluxDB1(root / "influxdb")
        influx.start()
        try:
            influx.create_database("bench")
            await bench_backend("influxdb1", influx, TimeseriesSettings(
                kind="influxdb1", url=influx.url, database="bench", batch_size=5000, flush_interval=0.2,
                timeout=30), args.points, root / "spool1")
        finally:
            influx.stop()
        (root / "vm").mkdir()
        vm = VictoriaMetrics(root / "vm")
        vm.start()
        try:
            await bench_backend("influxdb2", vm, TimeseriesSettings(
                kind="influxdb2", url=vm.url, org="isp", bucket="bench", batch_size=5000, flush_interval=0.2,
                timeout=30), args.points, root / "spool2")
        finally:
            vm.stop()


if __name__ == "__main__":
    asyncio.run(main())
