"""A database that refuses the writer (401/403/404) holds the points until the settings work.

Real InfluxDB 1.6.7 with ``auth-enabled``: a wrong password gets a real 401, a user without write
permission a real 403, a missing database a real 404. Nothing is dropped: the points wait in the
spool (one log line, a gauge), and once the settings are fixed — by ``reconfigure()`` (what a
reload does) or on the database side — every point arrives exactly once, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.inventory.model import TimeseriesSettings
from monitor.secret import Secret
from monitor.tsdb.writer import TimeseriesWriter
from tests.servers.common import until
from tests.servers.influxdb import InfluxDB1
from tests.tsdb_support import icmp_stream, make, metric, started

pytestmark = pytest.mark.servers
DB = "monitor"
ADMIN = ("admin", "adm1n-pass-9f3")
WRONG = "wr0ng-pass-c7e"


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[InfluxDB1]:
    (tmp_path / "influxdb").mkdir()
    with started(InfluxDB1(tmp_path / "influxdb", admin=ADMIN)) as server:
        assert isinstance(server, InfluxDB1)
        server.create_database(DB)
        yield server


def settings(url: str, password: str, **kw: object) -> TimeseriesSettings:
    base: dict[str, object] = {"kind": "influxdb1", "url": url, "database": DB, "batch_size": 10,
                               "flush_interval": 0.02, "timeout": 3.0, "username": ADMIN[0],
                               "password": Secret(password, "env:INFLUX_PASSWORD")}
    base.update(kw)
    return TimeseriesSettings(**base)  # type: ignore[arg-type]


def stored(influx: InfluxDB1, db: str = DB) -> list[tuple[str, int, int]]:
    """Every (node, time, sent) stored, duplicates included (there are none if each arrived once)."""
    rows = influx.rows('SELECT "sent" FROM icmp GROUP BY "node"', db)
    return [(r["node"], r["time"], r["sent"]) for r in rows]


def expected(rounds: range) -> list[tuple[str, int, int]]:
    return sorted((dict(p.tags)["node"], p.time_ns, s) for s in rounds for p in icmp_stream(s))


async def submit_rounds(writer: TimeseriesWriter, rounds: range) -> None:
    for s in rounds:
        writer.submit(icmp_stream(s))
        await until(lambda: writer.buffered_points == 0, what="batch taken")


async def test_wrong_password_holds_every_point_until_a_reload_brings_the_right_one(
    influx: InfluxDB1, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: with a wrong password 129 batches (872 spooled points) were dropped."""
    caplog.set_level(logging.INFO, logger="monitor.tsdb")
    auth0 = metric("timeseries_write_errors_total", reason="auth")
    permanent0 = metric("timeseries_write_errors_total", reason="permanent")
    dropped0 = metric("timeseries_spool_dropped_points_total")
    spool = tmp_path / "spool"
    writer = make(settings(influx.url, WRONG), spool)
    task = asyncio.create_task(writer.run())
    await submit_rounds(writer, range(40))
    await until(lambda: writer.spool_points == 400, what="every batch held in the spool")
    await until(lambda: metric("timeseries_write_errors_total", reason="auth") - auth0 >= 5,
                what="several retries, all refused")
    refused = writer.refused  # a local: asserting on the property would narrow it for the rest of the test
    assert refused == "auth"
    assert metric("timeseries_writer_blocked", reason="auth") == 1
    assert stored(influx) == []
    assert [r.getMessage() for r in caplog.records] == [
        "time series database refuses the writer, holding points in the spool"]  # once, not per retry
    assert "401" in str(caplog.records[0].kv["error"])  # type: ignore[attr-defined]

    await writer.reconfigure(settings(influx.url, ADMIN[1]))  # what SIGHUP with the fixed password does
    await submit_rounds(writer, range(40, 60))  # polling goes on meanwhile
    await until(lambda: writer.spool_points == 0 and len(stored(influx)) >= 600, what="held points delivered")
    await writer.close()
    await task

    assert sorted(stored(influx)) == expected(range(60))  # every point, exactly once
    assert metric("timeseries_spool_dropped_points_total") == dropped0
    assert metric("timeseries_write_errors_total", reason="permanent") == permanent0
    assert metric("timeseries_writer_blocked", reason="auth") == 0 and writer.refused is None
    assert [r.getMessage() for r in caplog.records] == [
        "time series database refuses the writer, holding points in the spool",
        "time series writer reconfigured",
        "time series database accepts the writer again, spool replayed"]
    assert caplog.records[2].kv["replayed_points"] >= 400  # type: ignore[attr-defined]
    assert WRONG not in caplog.text and ADMIN[1] not in caplog.text
    assert not list(spool.glob("*.lp"))


async def test_held_points_survive_a_restart_with_the_wrong_password(influx: InfluxDB1, tmp_path: Path) -> None:
    """Points held for a refused writer are on disk: a daemon restarted with fixed settings sends them."""
    spool = tmp_path / "spool"
    first = make(settings(influx.url, WRONG), spool)
    task = asyncio.create_task(first.run())
    await submit_rounds(first, range(10))
    await first.close()
    await task
    assert first.spool_points == 100

    second = make(settings(influx.url, ADMIN[1]), spool)
    task = asyncio.create_task(second.run())
    await until(lambda: second.spool_points == 0, what="replay with the right password")
    await second.close()
    await task
    assert sorted(stored(influx)) == expected(range(10))


@pytest.mark.parametrize("case", ["no write permission (403)", "database not found (404)"])
async def test_refusal_fixed_on_the_database_side_delivers_the_held_points(
    influx: InfluxDB1, tmp_path: Path, case: str
) -> None:
    """No reload needed when the operator fixes the database instead: the retries find it fixed."""
    if case.startswith("no write"):
        influx.query("CREATE USER \"poller\" WITH PASSWORD 'poller-pw'")
        config = settings(influx.url, "poller-pw", username="poller")
        db, status, fix = DB, "403", f'GRANT WRITE ON "{DB}" TO "poller"'
    else:
        config = settings(influx.url, ADMIN[1], database="later")
        db, status, fix = "later", "404", 'CREATE DATABASE "later"'
    reason = "auth" if status == "403" else "not_found"
    writer = make(config, tmp_path / "spool")
    task = asyncio.create_task(writer.run())
    await submit_rounds(writer, range(5))
    await until(lambda: writer.spool_points == 50 and writer.refused == reason, what=f"held after {status}")
    assert metric("timeseries_writer_blocked", reason=reason) == 1
    influx.query(fix)
    await until(lambda: writer.spool_points == 0, what="delivered once the database side is fixed")
    await writer.close()
    await task
    assert sorted(stored(influx, db)) == expected(range(5))
    assert metric("timeseries_writer_blocked", reason=reason) == 0


async def test_points_spooled_in_an_outage_then_refused_are_all_delivered_after_the_fix(
    influx: InfluxDB1, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's numbers: points spooled while the database was down, then a wrong password once
    it was back: the replay was refused and dropped (872 spooled points). Now: held, then delivered."""
    caplog.set_level(logging.INFO, logger="monitor.tsdb")
    dropped0 = metric("timeseries_spool_dropped_points_total")
    writer = make(settings(influx.url, WRONG), tmp_path / "spool")
    task = asyncio.create_task(writer.run())
    await asyncio.to_thread(influx.stop)
    await submit_rounds(writer, range(90))
    await until(lambda: writer.spool_points == 900, what="spooled during the outage")
    await asyncio.to_thread(influx.start)
    await until(lambda: writer.refused == "auth", what="the replay refused")
    await submit_rounds(writer, range(90, 100))
    await until(lambda: writer.spool_points == 1000, what="everything still held")
    await writer.reconfigure(settings(influx.url, ADMIN[1]))
    await until(lambda: writer.spool_points == 0, what="delivered")
    await writer.close()
    await task
    assert sorted(stored(influx)) == expected(range(100))
    assert metric("timeseries_spool_dropped_points_total") == dropped0
    assert [r.getMessage() for r in caplog.records] == [
        "time series database unreachable, spooling",
        "time series database refuses the writer, holding points in the spool",
        "time series writer reconfigured",
        "time series database accepts the writer again, spool replayed"]
    assert caplog.records[-1].kv["replayed_points"] == 1000  # type: ignore[attr-defined]
