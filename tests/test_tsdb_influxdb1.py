"""The writer against Debian's real InfluxDB 1.6.7 (native /write), read back with InfluxQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.inventory.model import TimeseriesSettings
from monitor.probes.base import IcmpResult, Metric, SnmpResult
from monitor.secret import Secret
from monitor.tsdb import icmp_points, make_point, make_writer, snmp_points, state_point
from monitor.tsdb.writer import TimeseriesWriter
from tests.servers.common import free_port, until
from tests.servers.influxdb import InfluxDB1
from tests.tsdb_support import BASE_TS, icmp_stream, make, metric, outage_mid_run, started, target

pytestmark = pytest.mark.servers
DB = "monitor"


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[InfluxDB1]:
    (tmp_path / "influxdb").mkdir()
    with started(InfluxDB1(tmp_path / "influxdb")) as server:
        assert isinstance(server, InfluxDB1)
        server.create_database(DB)
        yield server


def settings(url: str, **kw: object) -> TimeseriesSettings:
    base: dict[str, object] = {"kind": "influxdb1", "url": url, "database": DB, "batch_size": 50,
                               "flush_interval": 0.05, "timeout": 3.0}
    base.update(kw)
    return TimeseriesSettings(**base)  # type: ignore[arg-type]


def count(influx: InfluxDB1, measurement: str = "icmp", field: str = "sent") -> int:
    series = influx.query(f'SELECT COUNT("{field}") FROM "{measurement}"', DB)
    return int(series[0]["values"][0][1]) if series else 0


async def test_icmp_snmp_and_state_points_read_back(influx: InfluxDB1, tmp_path: Path) -> None:
    writer = make_writer(settings(influx.url), tmp_path)
    assert isinstance(writer, TimeseriesWriter)
    task = asyncio.create_task(writer.run())
    t = target(7)
    icmp = IcmpResult(t.id, t.address, sent=3, received=2, rtt_min_ms=0.5, rtt_avg_ms=0.75, rtt_max_ms=1.0,
                      jitter_ms=0.25)
    snmp = SnmpResult(t.id, t.address, ok=True, uptime_s=3600.0, duration_s=0.1, metrics=(
        Metric("signal_dbm", -63.0, (("peer", "aa:bb"),)), Metric("if_in_bps", 12345.5, (("ifname", "ath0"),))))
    writer.submit(icmp_points(t, icmp, BASE_TS))
    writer.submit(snmp_points(t, snmp, BASE_TS))
    writer.submit([state_point(t, "DEGRADED", BASE_TS, "loss 33% > 20%")])
    await until(lambda: count(influx, "state", "state") == 1, what="points in influxdb")
    await writer.close()
    await task

    [row] = influx.rows("SELECT * FROM icmp", DB)
    assert row["time"] == int(BASE_TS * 1e9)
    assert {k: row[k] for k in ("node", "kind", "role", "site", "municipality", "customer", "service_class")} == {
        "node": "cpe-0007", "kind": "cpe", "role": "endpoint", "site": "twr-centro", "municipality": "arauca",
        "customer": "C-0007", "service_class": "residencial"}
    assert (row["sent"], row["received"], row["ok"]) == (3, 2, 1)
    assert row["loss_pct"] == pytest.approx(100 / 3)
    assert (row["rtt_min_ms"], row["rtt_avg_ms"], row["rtt_max_ms"], row["jitter_ms"]) == (0.5, 0.75, 1.0, 0.25)
    types = {f: ty for f, ty in influx.query("SHOW FIELD KEYS FROM icmp", DB)[0]["values"]}
    assert types == {"sent": "integer", "received": "integer", "ok": "integer", "loss_pct": "float",
                     "rtt_min_ms": "float", "rtt_avg_ms": "float", "rtt_max_ms": "float", "jitter_ms": "float"}

    snmp_rows = influx.rows('SELECT * FROM snmp GROUP BY "peer", "ifname"', DB)
    by_label = {(r.get("peer") or "", r.get("ifname") or ""): r for r in snmp_rows}
    assert by_label[("aa:bb", "")]["signal_dbm"] == -63.0
    assert by_label[("", "ath0")]["if_in_bps"] == 12345.5
    [poll] = influx.rows("SELECT * FROM snmp_poll", DB)
    assert (poll["ok"], poll["uptime_s"], poll["rebooted"]) == (1, 3600.0, 0)
    [state] = influx.rows("SELECT * FROM state", DB)
    assert (state["state"], state["available"], state["node"]) == (2, 1, "cpe-0007")


async def test_awkward_names_survive_the_round_trip(influx: InfluxDB1, tmp_path: Path) -> None:
    values = ["Torre Centro, Arauca", "k=v", 'say "hi"', "x\\y", "Ferretería ñ", "end\\", "tab\there"]
    points = [make_point("weird", {"site": v, "n": str(i)}, {"v": i}, int(BASE_TS * 1e9) + i)
              for i, v in enumerate(values)]
    writer = make(settings(influx.url), tmp_path / "spool")
    writer.submit(points)
    await writer.close()  # close() without run(): drains straight to the database
    stored = {r["n"]: r["site"] for r in influx.rows('SELECT * FROM weird GROUP BY "site", "n"', DB)}
    expected = ["Torre Centro, Arauca", "k=v", 'say "hi"', "x\\y", "Ferretería ñ", "end/", "tab here"]
    assert stored == {str(i): v for i, v in enumerate(expected)}


async def test_database_outage_mid_run_loses_nothing_and_duplicates_nothing(
    influx: InfluxDB1, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's storage test: stop the database mid-run, restart it, every sample exactly once."""
    caplog.set_level(logging.INFO, logger="monitor.tsdb")
    spool = tmp_path / "spool"
    retry0 = metric("timeseries_write_errors_total", reason="retryable")
    seq = await outage_mid_run(make(settings(influx.url), spool), influx)

    total = seq * 10
    assert metric("timeseries_write_errors_total", reason="retryable") > retry0
    assert count(influx) == total
    rows = influx.rows('SELECT "sent" FROM icmp GROUP BY "node"', DB)
    got = [(r["node"], r["time"], r["sent"]) for r in rows]
    expected = {(dict(p.tags)["node"], p.time_ns, s)
                for s in range(seq) for p in icmp_stream(s)}
    assert len(got) == len(set(got)) == total
    assert set(got) == expected
    for series in influx.query('SELECT COUNT("sent") FROM icmp GROUP BY "node"', DB):
        assert series["values"][0][1] == seq, series["tags"]
    assert not list(spool.glob("*.lp"))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["time series database unreachable, spooling",
                        "time series database reachable again, spool replayed"]
    assert caplog.records[1].kv["replayed_points"] >= 3000  # type: ignore[attr-defined]


async def test_spool_survives_a_restart_of_the_writer(influx: InfluxDB1, tmp_path: Path, caplog:
                                                      pytest.LogCaptureFixture) -> None:
    spool = tmp_path / "spool"
    await asyncio.to_thread(influx.stop)
    first = make(settings(influx.url), spool)
    task = asyncio.create_task(first.run())
    for s in range(30):
        first.submit(icmp_stream(s))
    await first.close()  # database down: everything goes to the spool
    await task
    assert first.spool_points == 300
    assert sum(int(f.name.split("-")[1].removesuffix(".lp")) for f in spool.glob("*.lp")) == 300

    await asyncio.to_thread(influx.start)
    caplog.set_level(logging.INFO, logger="monitor.tsdb")
    second = make(settings(influx.url), spool)
    assert second.spool_points == 300
    task = asyncio.create_task(second.run())
    await until(lambda: second.spool_points == 0, what="replay by the new writer")
    await second.close()
    await task
    assert count(influx) == 300
    replayed = [r for r in caplog.records if "spool replayed" in r.getMessage()]
    assert len(replayed) == 1 and replayed[0].kv["replayed_points"] == 300  # type: ignore[attr-defined]


async def test_full_spool_drops_the_oldest_once_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="monitor.tsdb")
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused, like a stopped server
    probe = make(settings(nobody, spool_max_bytes=10**9), tmp_path / "probe")
    probe.submit(icmp_stream(0))
    await probe.close()
    one_batch = probe.spool_bytes  # bytes of one 10-point segment
    caplog.clear()
    dropped0 = metric("timeseries_spool_dropped_points_total")

    writer = make(settings(nobody, batch_size=10, spool_max_bytes=int(one_batch * 3.5)), tmp_path / "spool")
    task = asyncio.create_task(writer.run())
    for s in range(20):
        writer.submit(icmp_stream(s))
        await until(lambda: writer.buffered_points == 0, what="batch moved")
    await writer.close()
    await task

    dropped = metric("timeseries_spool_dropped_points_total") - dropped0
    assert writer.spool_bytes <= one_batch * 3.5
    assert writer.spool_points + dropped == 200 and dropped >= 160
    kept = sorted(int(line.split(b"sent=")[1].split(b"i")[0]) for f in (tmp_path / "spool").glob("*.lp")
                  for line in f.read_bytes().splitlines())
    assert kept == sorted(s for s in range(20 - writer.spool_points // 10, 20) for _ in range(10))  # the newest
    full = [r for r in caplog.records if "spool full" in r.getMessage()]
    assert len(full) == 1
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1


async def test_rejected_batches_are_counted_logged_once_and_not_spooled(
    influx: InfluxDB1, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 400 (here a field type conflict) rejects the batch itself: dropped, counted, logged once.
    (A missing database used to be this test's example; 404 now holds the points: test_tsdb_auth.)"""
    caplog.set_level(logging.INFO, logger="monitor.tsdb")
    permanent0 = metric("timeseries_write_errors_total", reason="permanent")
    t0 = int(BASE_TS * 1e9)
    writer = make(settings(influx.url, batch_size=10, username="noc",
                           password=Secret("hunter2-secret", "env:INFLUX_PASSWORD")), tmp_path / "spool")
    writer.submit([make_point("conflict", {"n": "first"}, {"v": 1}, t0)])  # v is an integer field now
    await writer.close()
    writer = make(settings(influx.url, batch_size=10, username="noc",
                           password=Secret("hunter2-secret", "env:INFLUX_PASSWORD")), tmp_path / "spool")
    task = asyncio.create_task(writer.run())
    for s in range(3):
        writer.submit([make_point("conflict", {"n": f"{s}-{i}"}, {"v": 0.5}, t0 + i) for i in range(10)])
        await until(lambda: writer.buffered_points == 0, what="batch sent")
    await until(lambda: metric("timeseries_write_errors_total", reason="permanent") - permanent0 == 3,
                what="three rejected batches")
    await writer.close()
    await task
    assert writer.spool_points == 0 and not list((tmp_path / "spool").glob("*.lp"))
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1
    assert "field type conflict" in str(rejected[0].kv["error"])  # type: ignore[attr-defined]
    assert "400" in str(rejected[0].kv["error"])  # type: ignore[attr-defined]
    assert "hunter2" not in caplog.text


async def test_flush_by_size_and_on_close(influx: InfluxDB1, tmp_path: Path) -> None:
    writer = make(settings(influx.url, batch_size=20, flush_interval=3600.0), tmp_path / "spool")
    task = asyncio.create_task(writer.run())
    writer.submit(icmp_stream(0) + icmp_stream(1) + icmp_stream(2))  # 30 points: one full batch
    await until(lambda: count(influx) == 20, what="the full batch")
    assert writer.buffered_points == 10  # the partial batch waits for the interval...
    await writer.close()  # ...or for close()
    await task
    assert count(influx) == 30


async def test_v2_api_on_influxdb_1_6_holds_the_points_until_the_kind_is_fixed(
    influx: InfluxDB1, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Debian's 1.6.7 answers 404 on /api/v2/write: a configuration mistake, said once; the points
    wait in the spool (they used to be dropped) and a reload to ``kind: influxdb1`` delivers them."""
    caplog.set_level(logging.INFO, logger="monitor.tsdb")
    not_found0 = metric("timeseries_write_errors_total", reason="not_found")
    writer = make(TimeseriesSettings(kind="influxdb2", url=influx.url, org="isp", bucket="monitor",
                                     token=Secret("tok-en-secret", "env:INFLUX_TOKEN"), batch_size=10,
                                     flush_interval=0.01), tmp_path / "spool")
    task = asyncio.create_task(writer.run())
    for s in range(2):
        writer.submit(icmp_stream(s))
    await until(lambda: writer.spool_points == 20 and writer.refused == "not_found", what="held after 404")
    assert metric("timeseries_write_errors_total", reason="not_found") > not_found0
    [line] = [r for r in caplog.records if "refuses" in r.getMessage()]
    assert "HTTP 404" in str(line.kv["error"])  # type: ignore[attr-defined]
    await writer.reconfigure(settings(influx.url, batch_size=10))
    await until(lambda: writer.spool_points == 0, what="delivered through /write")
    await writer.close()
    await task
    assert count(influx) == 20
    assert "tok-en-secret" not in caplog.text
