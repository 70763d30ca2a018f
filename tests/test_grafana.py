"""Provisioned Grafana boards: structure, and every query against a real InfluxDB 1.6.7 filled by the
daemon's own schema and writer (ICMP, SNMP, state, incident, state-change and site points) and the hourly
availability rollup (`monitor rollup`)."""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from monitor.correlate.incidents import IncidentEvent
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory, Target, TimeseriesSettings
from monitor.probes.base import IcmpResult, Metric, SnmpResult
from monitor.report.model import Period, ReportInput
from monitor.state import State, StateChange
from monitor.tsdb import Point, icmp_points, snmp_points, state_point
from monitor.tsdb.annotations import incident_points, site_points, state_change_point
from monitor.tsdb.rollup import availability_points
from monitor.tsdb.writer import TimeseriesWriter
from tests.grafana_support import (
    GRAFANA,
    expand,
    group_by_tags,
    load_boards,
    provisioned_uids,
    queries,
    run_problems,
    structure_problems,
)
from tests.servers.common import until
from tests.servers.influxdb import InfluxDB1
from tests.tsdb_support import started

CONFIG = Path(__file__).resolve().parents[1] / "config" / "sites.yaml"
DB = "monitor"
MINUTES = 90
# An AP (radio metrics) and an OLT (optical metrics): every query must return data for one of them.
BINDINGS = [
    {"municipality": "arauca", "site": "twr-centro", "node": "ap-centro-1"},
    {"municipality": "arauca", "site": "noc-arauca", "node": "olt-arauca"},
    {"municipality": "arauca", "site": "twr-brisas", "node": "ap-brisas-2"},  # down: incident and state change
]
DOWN_NODE, DEGRADED_NODE, DOWN_ENDPOINT, DEGRADED_ENDPOINT = "ap-brisas-2", "olt-tame", "cpe-1002", "cpe-1001"


def snmp_metrics(t: Target, minute: int) -> list[Metric]:
    wave = (minute % 10) / 10
    out = [Metric("if_in_bps", 1e6 * (5 + wave), (("ifname", "ether1"),)),
           Metric("if_out_bps", 1e6 * (2 + wave), (("ifname", "ether1"),)),
           Metric("if_in_errors_per_s", 0.1 * wave, (("ifname", "ether1"),)),
           Metric("if_out_errors_per_s", 0.0, (("ifname", "ether1"),))]
    if t.kind == "ap":
        out += [Metric("wireless_signal_dbm", -60 - 10 * wave, (("peer", "00:27:22:aa:bb:01"),)),
                Metric("wireless_signal_dbm", -75 - 5 * wave, (("peer", "00:27:22:aa:bb:02"),)),
                Metric("wireless_ccq_pct", 90 - 20 * wave), Metric("wireless_stations", 12.0)]
    if t.kind == "olt":
        for onu in range(1, 4):
            labels = (("onu", f"0/1/{onu}"), ("port", "1"))
            out += [Metric("onu_rx_dbm", -20 - onu - wave, labels), Metric("onu_tx_dbm", 2.0, labels)]
        out += [Metric("optical_rx_dbm", -8.5, (("port", "1"),)), Metric("optical_tx_dbm", 4.0, (("port", "1"),))]
    return out


def network_points(inv: Inventory, end: float) -> list[Point]:
    """What the daemon writes for the example network over MINUTES minutes, with one node down at the end,
    one degraded, one endpoint down, and an incident opened for the node that went down."""
    points: list[Point] = site_points(inv, end - MINUTES * 60)
    went_down = end - 20 * 60
    for minute in range(MINUTES):
        ts = end - (MINUTES - minute) * 60
        for t in inv.targets.values():
            down = t.id in (DOWN_NODE, DOWN_ENDPOINT) and ts >= went_down
            rtt = 2.0 + (minute % 7)
            result = IcmpResult(t.id, t.address, 3, 0 if down else 3, None if down else rtt - 1,
                                None if down else rtt, None if down else rtt + 1, None if down else 0.4)
            points += icmp_points(t, result, ts)
            state = "DOWN" if down else "DEGRADED" if t.id in (DEGRADED_NODE, DEGRADED_ENDPOINT) else "UP"
            points.append(state_point(t, state, ts))
            if t.snmp is not None and not down:
                snmp = SnmpResult(t.id, t.address, True, uptime_s=86400.0 + minute * 60, rebooted=minute == 5,
                                  metrics=tuple(snmp_metrics(t, minute)), duration_s=0.05)
                points += snmp_points(t, snmp, ts)
    for tid in (DOWN_NODE, DOWN_ENDPOINT):
        points.append(state_change_point(StateChange(tid, State.UP, State.DOWN, went_down, "3 failed polls"),
                                         inv.targets[tid]))
    below = tuple(sorted(t.id for t in inv.targets.values() if DOWN_NODE in t.parents))
    customers = tuple(sorted({inv.targets[e].customer or "" for e in below}))
    events = [
        IncidentEvent(went_down + 10, "opened", "INC-000001", "outage", DOWN_NODE, (), (), (DOWN_NODE,)),
        IncidentEvent(went_down + 70, "updated", "INC-000001", "outage", DOWN_NODE, below, customers, (DOWN_NODE,)),
        IncidentEvent(end - 80 * 60, "opened", "INC-000002", "single", "cpe-0001", ("cpe-0001",), ("C-0001",)),
        IncidentEvent(end - 70 * 60, "resolved", "INC-000002", "single", "cpe-0001", ("cpe-0001",), ("C-0001",)),
    ]
    return points + incident_points(events, inv) + rollup_points(inv, end, went_down)


def rollup_points(inv: Inventory, end: float, went_down: float) -> list[Point]:
    """What `monitor rollup` writes for the same minutes (the boards' availability panels read it)."""
    start = end - MINUTES * 60
    history = {t: [(start, "degraded" if t in (DEGRADED_NODE, DEGRADED_ENDPOINT) else "up")] for t in inv.targets}
    for tid in (DOWN_NODE, DOWN_ENDPOINT):
        history[tid].append((went_down, "down"))
    return list(availability_points(ReportInput(Period(start, end, "test"), inv, history, until=end)))


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InfluxDB1, int, int]]:
    root = tmp_path_factory.mktemp("grafana-influx")
    inv = load_inventory(CONFIG)
    end = float(int(time.time()) // 60 * 60)
    with started(InfluxDB1(root)) as server:
        server.create_database(DB)
        settings = TimeseriesSettings(kind="influxdb1", url=server.url, database=DB, batch_size=5000)

        async def write() -> None:
            writer = TimeseriesWriter(settings, root / "spool")
            task = asyncio.create_task(writer.run())
            writer.submit(network_points(inv, end))
            await writer.close()
            await task

        asyncio.run(write())
        spool = root / "spool"
        while any(spool.glob("*.lp")):  # a batch the server dropped the connection on: replay it, as the daemon would
            asyncio.run(replay(settings, spool))
        yield server, int((end - MINUTES * 60 - 60) * 1000), int((end + 60) * 1000)


async def replay(settings: TimeseriesSettings, spool: Path) -> None:
    writer = TimeseriesWriter(settings, spool, retry_initial=0.05, retry_max=0.2)
    task = asyncio.create_task(writer.run())
    await until(lambda: writer.spool_points == 0, what="spool replayed")
    await writer.close()
    await task


def test_provisioning_files_are_what_grafana_loads() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/monitor.yaml").read_text())
    [source] = ds["datasources"]
    assert ds["apiVersion"] == 1 and source["type"] == "influxdb" and source["uid"] == "monitor-influxdb"
    assert source["url"] == "${INFLUX_URL}" and source["jsonData"]["dbName"] == "${INFLUX_DB}"
    assert source["secureJsonData"]["password"] == "${INFLUX_PASSWORD}"  # never a secret in the file
    prov = yaml.safe_load((GRAFANA / "provisioning/dashboards/monitor.yaml").read_text())
    [provider] = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "${MONITOR_DASHBOARDS}"


def test_committed_boards_are_what_the_generator_makes() -> None:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for name, text in gen.render().items():
        assert (GRAFANA / "dashboards" / name).read_text(encoding="utf-8") == text, f"run grafana/generate.py ({name})"


def test_boards_parse_and_reference_the_provisioned_datasource() -> None:
    boards = load_boards()
    assert set(boards) == {"noc-overview.json", "node-detail.json", "capacity.json"}
    assert structure_problems(boards, provisioned_uids()) == []
    noc = boards["noc-overview.json"]
    assert any(p["type"] == "geomap" for p in noc["panels"])
    detail = boards["node-detail.json"]
    assert [v["name"] for v in detail["templating"]["list"]] == ["municipality", "site", "node"]
    assert {a["name"] for a in detail["annotations"]["list"]} >= {"Incidents", "State changes"}


def test_structure_checker_catches_mistakes() -> None:
    boards = load_boards()
    bad = copy.deepcopy(boards)
    bad["capacity.json"]["uid"] = bad["noc-overview.json"]["uid"]
    bad["node-detail.json"]["panels"][1]["id"] = bad["node-detail.json"]["panels"][0]["id"]
    bad["node-detail.json"]["panels"][2]["targets"][0]["datasource"] = {"type": "influxdb", "uid": "other"}
    bad["node-detail.json"]["annotations"]["list"][1]["textColumn"] = "incidents"
    geo = next(p for p in bad["noc-overview.json"]["panels"] if p["type"] == "geomap")
    geo["options"]["layers"][0]["location"]["latitude"] = "lat"
    problems = structure_problems(bad, provisioned_uids())
    assert len(problems) == 5, problems
    assert any("'incidents' is not selected" in p for p in problems)
    assert any("latitude field 'lat' is not selected" in p for p in problems)


def test_every_query_returns_data_from_the_daemons_points(influx: tuple[InfluxDB1, int, int]) -> None:
    server, start_ms, end_ms = influx
    boards = load_boards()
    n = sum(len(queries(name, b)) for name, b in boards.items())
    assert n >= 40
    assert run_problems(boards, lambda q: server.query(q, DB), BINDINGS, start_ms, end_ms) == []


@pytest.mark.parametrize("old,new", [
    ('FROM "icmp"', 'FROM "icmpx"'),  # measurement
    ('mean("rtt_avg_ms") AS "avg"', 'mean("rtt_avg") AS "avg"'),  # field, next to valid ones
    ('"node" =~ /^$node$/', '"nodes" =~ /^$node$/'),  # tag in WHERE
    ('"ifname" fill(none)', '"if_name" fill(none)'),  # tag in GROUP BY
    ('FROM "snmp"', 'FROM "snmp_poll"'),  # right fields, wrong measurement
])
def test_query_checker_fails_a_board_with_a_wrong_name(influx: tuple[InfluxDB1, int, int], old: str, new: str) -> None:
    server, start_ms, end_ms = influx
    board = copy.deepcopy(load_boards()["node-detail.json"])
    changed = 0
    for p in board["panels"]:
        for t in p["targets"]:
            if old in t["query"] and not changed:
                t["query"] = t["query"].replace(old, new)
                changed += 1
    assert changed == 1
    problems = run_problems({"broken.json": board}, lambda q: server.query(q, DB), BINDINGS, start_ms, end_ms)
    assert len(problems) == 1 and new.split()[0].split("(")[-1].strip('"') in problems[0], problems


def test_expansion_matches_grafana() -> None:
    q = 'SELECT mean("x") FROM "icmp" WHERE $timeFilter AND "node" =~ /^$node$/ GROUP BY time($__interval), "site"'
    text = expand(q, {"node": "cpe.1/a"}, 1000, 2000)
    assert text == ('SELECT mean("x") FROM "icmp" WHERE time >= 1000ms and time <= 2000ms AND'
                    ' "node" =~ /^cpe\\.1\\/a$/ GROUP BY time(1m), "site"')
    assert group_by_tags(text) == ["site"]
    with pytest.raises(ValueError, match="unexpanded"):
        expand("SELECT 1 WHERE $nodo", {"node": "x"}, 0, 1)
