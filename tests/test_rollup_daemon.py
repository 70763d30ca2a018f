"""The daemon writes the boards' hourly availability itself (issue 18): no timer needed.

:class:`monitor.tsdb.rollup_job.HourlyRollup` on an injected clock against a real InfluxDB 1.6.7
and a real store (the example network's October): the hours missing at start, each hour after it
ends, the same points when an hour is written again, and an InfluxDB that is away costs nothing but
a later write (the task lives on; the next hour writes every hour since). Then the real daemon:
started on a store with history, it writes the past hours without anyone running ``monitor rollup``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.clock import ManualClock
from monitor.daemon import Daemon
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.report.compute import compute
from monitor.report.model import Period
from monitor.report.source import load_input
from monitor.state import State, StateChange
from monitor.store import EventStore
from monitor.tsdb.rollup_job import LAG, MARKER, HourlyRollup
from tests.report_support import at, october_store
from tests.servers.common import free_port, until
from tests.servers.influxdb import InfluxDB1
from tests.test_availability_agreement import DB, example_config
from tests.test_daemon_storage import config as daemon_config
from tests.tsdb_support import started

pytestmark = [pytest.mark.servers]

H = 3600.0


def sums(server: InfluxDB1, start: float, end: float, node: str | None = None) -> tuple[float, float, int]:
    """(sum of up_s, sum of down_s, points) of the availability points stamped in [start, end)."""
    where = f"time >= {int(start)}s AND time < {int(end)}s" + (f" AND \"node\" = '{node}'" if node else "")
    series = server.query(f'SELECT sum("up_s"), sum("down_s"), count("up_s") FROM "availability" WHERE {where}', DB)
    if not series:
        return 0.0, 0.0, 0
    [[_, up, down, n]] = series[0]["values"]
    return float(up), float(down), int(n)


def report_seconds(db: Path, inv: Inventory, start: float, end: float) -> tuple[float, float]:
    """The report's up and down seconds over [start, end), all targets."""
    totals = compute(load_input(db, inv, Period(start, end, "x", "America/Bogota"), until=end), "node").totals
    return totals.up_s, totals.down_s


October = tuple[InfluxDB1, Inventory, Path, Path]  # server, inventory, store, state directory


@pytest.fixture
def october(tmp_path: Path) -> Iterator[October]:
    """A real InfluxDB, the example config writing to it (America/Bogota), October's store."""
    (tmp_path / "influx").mkdir()
    with started(InfluxDB1(tmp_path / "influx")) as server:
        server.create_database(DB)
        inv = load_inventory(example_config(tmp_path, server.url))
        db = tmp_path / "monitor.db"
        october_store(db, inv)  # ap-centro-1 and its 4 endpoints down on the 10th 08:00-09:00 UTC
        yield server, inv, db, tmp_path


async def test_start_writes_the_missing_hours_then_each_hour_after_it_ends(october: October) -> None:
    server, inv, db, state_dir = october
    clock = ManualClock(at(11, 0) + LAG + 1)  # 5 minutes past midnight (UTC) on the 11th
    rollup = HourlyRollup(inv, db, clock, state_dir, retry_delay=0.0)
    assert rollup.due(clock.now()) == (at(9, 0), at(11, 0))  # no marker yet: two days back
    written = await rollup.run_once()
    targets = len(inv.targets)
    assert written == 48 * targets
    up, down, n = sums(server, at(9, 0), at(11, 0))
    assert n == 48 * targets and (up, down) == pytest.approx(report_seconds(db, inv, at(9, 0), at(11, 0)), abs=1e-3)
    assert down == pytest.approx(H + 4 * (H - 30))  # the outage: ap-centro-1, then its 4 endpoints 30 s later
    assert (state_dir / MARKER).read_text().strip() == f"{at(11, 0):.0f}"

    assert await rollup.run_once() is None  # nothing due until the next hour has ended (and LAG)
    clock.advance(H - LAG - 2)
    assert await rollup.run_once() is None
    clock.advance(LAG + 2)  # 01:05:01: the hour 00:00-01:00 is due, and the one before is written again
    assert rollup.due(clock.now()) == (at(10, 23), at(11, 1))
    assert await rollup.run_once() == 2 * targets
    up2, down2, n2 = sums(server, at(9, 0), at(11, 0))
    assert (up2, down2, n2) == (up, down, n)  # the hour written twice: the same points, not added
    assert sums(server, at(11, 0), at(11, 1))[2] == targets

    # a new daemon (restart) reads the marker: it goes on from there, not two days back
    again = HourlyRollup(inv, db, clock, state_dir, retry_delay=0.0)
    assert again.done == at(11, 1) and again.due(clock.now()) is None


async def test_an_absent_database_costs_a_later_write_not_the_daemon(october: October,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    server, inv, db, state_dir = october
    clock = ManualClock(at(10, 0) + LAG + 1)
    rollup = HourlyRollup(inv, db, clock, state_dir, retry_delay=0.0)
    assert await rollup.run_once() == 48 * len(inv.targets)
    server.stop()
    task = asyncio.create_task(rollup.run())
    try:
        with caplog.at_level(logging.WARNING, logger="monitor.tsdb.rollup"):
            for hour in range(1, 13):  # twelve hours with the database away: logged once, the task lives on
                clock.advance(H)
                rollup.wake()

                def failed(n: int = hour) -> bool:
                    return rollup.failures >= n

                await until(failed, 30, f"attempt {hour} with the database away")
            assert caplog.text.count("availability rollup not written, retrying next hour") == 1
            assert not task.done() and rollup.done == at(10, 0)  # nothing claimed written
            server.start()
            clock.advance(H * 11)  # 23:05:01 on the 10th
            rollup.wake()
            await until(lambda: rollup.done == at(10, 23), 60, "the hours since written once it is back")
            assert "availability rollup written again" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sums(server, at(10, 0), at(10, 23))[2] == 23 * len(inv.targets)
    up, down, _ = sums(server, at(10, 0), at(10, 23))
    assert (up, down) == pytest.approx(report_seconds(db, inv, at(10, 0), at(10, 23)), abs=1e-3)
    assert down == pytest.approx(H + 4 * (H - 30))


@pytest.mark.root
async def test_the_daemon_writes_the_past_hours_at_start(tmp_path: Path) -> None:
    """Nobody runs ``monitor rollup``: the daemon, started on a store whose last run had ap-centro-1
    down for half an hour, writes those hours to InfluxDB by itself."""
    (tmp_path / "influx").mkdir()
    influx = InfluxDB1(tmp_path / "influx")
    with started(influx):
        influx.create_database("monitor")
        cfg = daemon_config(tmp_path, influx.url, free_port())
        inv = load_inventory(cfg)
        t0 = time.time() // H * H - 3 * H  # whole hours that ended more than an hour ago
        log = EventStore(tmp_path / "var" / "monitor.db")
        run = log.run_started(t0)
        log.append([StateChange(t, State.UNKNOWN, State.UP if t != "ap-centro-1" else State.DOWN, t0, "first poll")
                    for t in inv.targets])
        log.append([StateChange("ap-centro-1", State.DOWN, State.UP, t0 + 1800, "2 replies")])
        log.run_stopped(run, t0 + H)
        log.close()

        def ap() -> list[dict[str, object]]:
            return influx.rows(f'SELECT "up_s", "down_s" FROM "availability" WHERE "node" = \'ap-centro-1\''
                               f' AND time >= {int(t0)}s AND time < {int(t0 + H)}s', "monitor")

        daemon = Daemon(cfg)
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: daemon.rollup is not None and daemon.rollup.done is not None, 90,
                        "the daemon's own rollup of the past hours")
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 15)
        assert [(r["up_s"], r["down_s"]) for r in ap()] == [(1800.0, 1800.0)]
        assert daemon.rollup is not None and daemon.rollup.done is not None and daemon.rollup.done >= t0 + H


def test_the_command_writes_on_the_daemons_grid_whatever_zone_its_dates_are_in(october: October) -> None:
    """``monitor rollup --tz Asia/Kolkata`` only reads its dates in that zone: the buckets stay the
    configured zone's (America/Bogota: whole epoch hours), or the daemon's points and the command's
    would overlap and a board would count the same minutes twice."""
    from monitor.cli import main

    server, _, db, tmp_path = october
    config = tmp_path / "config" / "sites.yaml"
    assert main(["rollup", "--config", str(config), "--db", str(db), "--tz", "Asia/Kolkata",
                 "--from", "2026-10-10T12:00", "--to", "2026-10-10T18:00"]) == 0
    times = [r["time"] for r in server.rows('SELECT "up_s" FROM "availability"', DB)]
    assert times and all(t % (3600 * 10**9) == 0 for t in times)
    _, down, _ = sums(server, at(10, 6), at(10, 13))  # 12:00-18:00 in Kolkata is 06:30-12:30 UTC
    assert down == pytest.approx(H + 4 * (H - 30))
