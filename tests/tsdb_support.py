"""Shared by the time-series tests: waiting inside the event loop, metric deltas, a point stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from monitor import selfmetrics
from monitor.inventory.model import Target, TimeseriesSettings
from monitor.probes.base import IcmpResult
from monitor.tsdb import Point, icmp_points
from monitor.tsdb.writer import TimeseriesWriter
from tests.servers.common import until
from tests.servers.restartable import RestartableServer

BASE_TS = 1_790_000_000.0  # 2026-09: inside VictoriaMetrics' accepted range and InfluxDB's autogen RP


def metric(name: str, **labels: str) -> float:
    value = selfmetrics.REGISTRY.get_sample_value(f"monitor_{name}", labels)
    return value or 0.0


def target(i: int) -> Target:
    return Target(id=f"cpe-{i:04d}", kind="cpe", role="endpoint", address=f"127.0.1.{i % 250 + 1}",
                  site="twr-centro", municipality="arauca", customer=f"C-{i:04d}", service_class="residencial")


def icmp_stream(seq: int, nodes: int = 10) -> list[Point]:
    """Points number ``seq``: one ICMP sample per node, each (node, time) unique, ``sent`` = seq."""
    ts = BASE_TS + seq * 0.001
    out: list[Point] = []
    for i in range(nodes):
        result = IcmpResult(f"cpe-{i:04d}", "127.0.1.1", sent=seq, received=1, rtt_min_ms=1.0, rtt_avg_ms=1.5,
                            rtt_max_ms=2.0, jitter_ms=0.1)
        out += icmp_points(target(i), result, ts)
    return out


def make(settings: TimeseriesSettings, spool: Path, max_buffer_points: int | None = None) -> TimeseriesWriter:
    """A writer with fast retries (tests must not wait seconds for a backoff)."""
    return TimeseriesWriter(settings, spool, retry_initial=0.05, retry_max=0.2, max_buffer_points=max_buffer_points)


S = TypeVar("S", bound=RestartableServer)


@contextlib.contextmanager
def started(server: S) -> Iterator[S]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def outage_mid_run(writer: TimeseriesWriter, server: RestartableServer, spooled: int = 3000) -> int:
    """The issue's storage scenario; returns how many ``icmp_stream`` rounds were submitted.

    A steady stream of unique points; once some are written the database is stopped (SIGTERM to the
    PID we started) while the stream goes on into the spool; then it is started again on the same
    data dir and port, the stream stops once replay is under way, and the writer drains and closes.
    """
    task = asyncio.create_task(writer.run())
    written0 = metric("timeseries_points_written_total")
    seq = 0
    stop = asyncio.Event()

    async def produce() -> None:
        nonlocal seq
        while not stop.is_set():
            writer.submit(icmp_stream(seq))
            seq += 1
            await asyncio.sleep(0.002)  # pacing a steady stream, not waiting for a condition

    producer = asyncio.create_task(produce())
    await until(lambda: metric("timeseries_points_written_total") - written0 >= 500, what="first writes")
    await asyncio.to_thread(server.stop)
    assert server.process is not None and not server.process.alive()
    await until(lambda: writer.spool_points >= spooled, what="points spooled during the outage")
    await asyncio.to_thread(server.start)
    await until(lambda: metric("timeseries_points_written_total") - written0 >= 500 + spooled, what="replay")
    stop.set()
    await producer
    await until(lambda: writer.spool_points == 0 and writer.buffered_points == 0, what="spool drained")
    await writer.close()
    await task
    return seq
