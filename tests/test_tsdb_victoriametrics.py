"""The writer's influxdb2 backend (influxdb-client async, /api/v2/write) against real VictoriaMetrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.inventory.model import TimeseriesSettings
from monitor.probes.base import IcmpResult, Metric, SnmpResult
from monitor.secret import Secret
from monitor.tsdb import icmp_points, snmp_points, state_point
from tests.servers.common import until
from tests.servers.victoriametrics import VictoriaMetrics
from tests.tsdb_support import BASE_TS, make, outage_mid_run, started, target

pytestmark = pytest.mark.servers
TOKEN = Secret("vm-token-do-not-log", "env:INFLUX_TOKEN")


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    (tmp_path / "vm").mkdir()
    with started(VictoriaMetrics(tmp_path / "vm")) as server:
        assert isinstance(server, VictoriaMetrics)
        yield server


def settings(url: str) -> TimeseriesSettings:
    return TimeseriesSettings(kind="influxdb2", url=url, org="isp", bucket="monitor", token=TOKEN,
                              batch_size=50, flush_interval=0.05, timeout=3.0)


def samples(vm: VictoriaMetrics, match: str) -> int:
    return sum(len(s["values"]) for s in vm.export(match))


async def test_icmp_snmp_and_state_points_read_back(vm: VictoriaMetrics, tmp_path: Path) -> None:
    writer = make(settings(vm.url), tmp_path / "spool")
    task = asyncio.create_task(writer.run())
    t = target(3)
    writer.submit(icmp_points(t, IcmpResult(t.id, t.address, sent=3, received=3, rtt_min_ms=0.25,
                                            rtt_avg_ms=0.5, rtt_max_ms=1.0, jitter_ms=0.125), BASE_TS))
    writer.submit(snmp_points(t, SnmpResult(t.id, t.address, ok=True, uptime_s=99.0, metrics=(
        Metric("onu_rx_dbm", -19.25, (("onu", "0/1/7"),)),)), BASE_TS))
    writer.submit([state_point(t, "DOWN", BASE_TS, "3 consecutive failed polls")])
    await until(lambda: samples(vm, '{__name__="state_state"}') == 1, what="points in victoria-metrics")
    await writer.close()
    await task

    [rtt] = vm.export('{__name__="icmp_rtt_avg_ms"}')
    assert rtt["values"] == [0.5] and rtt["timestamps"] == [int(BASE_TS * 1000)]
    assert {k: rtt["metric"][k] for k in ("node", "kind", "site", "municipality", "customer", "service_class")} == {
        "node": "cpe-0003", "kind": "cpe", "site": "twr-centro", "municipality": "arauca", "customer": "C-0003",
        "service_class": "residencial"}
    [sent] = vm.export('{__name__="icmp_sent"}')
    assert sent["values"] == [3]
    [onu] = vm.export('{__name__="snmp_onu_rx_dbm"}')
    assert onu["values"] == [-19.25] and onu["metric"]["onu"] == "0/1/7"
    [state] = vm.export('{__name__="state_state"}')
    [available] = vm.export('{__name__="state_available"}')
    assert state["values"] == [0] and available["values"] == [0]  # DOWN, stored as a number


async def test_database_outage_mid_run_loses_nothing_and_duplicates_nothing(
    vm: VictoriaMetrics, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stop VictoriaMetrics mid-run, restart it, every sample exactly once (VM keeps duplicates
    unless started with -dedup.minScrapeInterval, which the fixture does, as docs/timeseries.md says)."""
    caplog.set_level(logging.INFO, logger="monitor.tsdb")
    seq = await outage_mid_run(make(settings(vm.url), tmp_path / "spool"), vm)

    series = vm.export('{__name__="icmp_sent"}')
    assert len(series) == 10
    for s in series:
        node = s["metric"]["node"]
        assert sorted(s["values"]) == list(range(seq)), node  # each sample once, none missing
        assert len(set(s["timestamps"])) == len(s["timestamps"]) == seq
    assert "vm-token-do-not-log" not in caplog.text
    assert [r.getMessage() for r in caplog.records] == ["time series database unreachable, spooling",
                                                        "time series database reachable again, spool replayed"]
