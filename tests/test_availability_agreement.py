"""One availability figure everywhere (issue 18): `monitor report` and the NOC board agree to 0.01 %.

A month of the example network in a real store: an outage with its endpoints behind it, a planned
outage inside a maintenance window, a 10 h window with everything below sw-tame down for 8 h of
it, an hour the monitor was blind (its vantage node down), and a 6 h endpoint outage. The same
store goes through `monitor report --month` (JSON) and through `monitor rollup --month` into a
real InfluxDB 1.6.7, where the "Availability 30 days" panel's own query (read from the committed
dashboard) is run over the month as Grafana sends it. The daemon's per-poll ``state`` points are
written too (nodes every 30 min, endpoints hourly), so the board's old ``mean("available")``
would have an answer to disagree with.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.correlate.store import IncidentStore
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory, TimeseriesSettings
from monitor.report.cli import parse_period
from monitor.state import State, StateChange
from monitor.store import EventStore
from monitor.tsdb import Point, state_point
from monitor.tsdb.rollup import hour_bounds
from monitor.tsdb.rollup_cli import write_points
from tests.grafana_support import expand, load_boards
from tests.report_support import at, october_store
from tests.servers.common import free_port
from tests.servers.influxdb import InfluxDB1
from tests.tsdb_support import started

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
DB = "monitor"
POLL_S = {"node": 1800, "endpoint": 3600}


def more_october(db: Path, inv: Inventory) -> None:
    """The 15th: sw-tame's 10 h window, everything below it down 8 h inside; the 22nd: cpe-0001 down 6 h."""
    below = [t.id for t in inv.targets.values() if _below(inv, t.id, "sw-tame")]
    store = IncidentStore(db)
    store.add_window("sw-tame", at(15, 0), at(15, 10), "cambio de switch", "noc", [], now=at(14))
    store.close()
    log = EventStore(db)
    why = "3 consecutive failed polls"
    log.append([StateChange(t, State.UP, State.DOWN, at(15, 1), why) for t in ["sw-tame", *below]])
    log.append([StateChange(t, State.DOWN, State.UP, at(15, 9), "2 replies") for t in ["sw-tame", *below]])
    log.append([StateChange("cpe-0001", State.UP, State.DOWN, at(22, 0), why)])
    log.append([StateChange("cpe-0001", State.DOWN, State.UP, at(22, 6), "2 replies")])
    log.close()


def _below(inv: Inventory, tid: str, root: str) -> bool:
    seen, todo = set(), list(inv.targets[tid].parents)
    while todo:
        p = todo.pop()
        if p == root:
            return True
        if p not in seen and p in inv.targets:
            seen.add(p)
            todo.extend(inv.targets[p].parents)
    return False


def poll_points(db: Path, inv: Inventory, start: float, end: float) -> list[Point]:
    """The daemon's per-poll ``state`` points over [start, end), each target at its role's interval."""
    history: dict[str, list[tuple[float, str]]] = defaultdict(list)
    log = EventStore(db)
    for change in log.changes(until=end):
        history[change.target].append((change.ts, change.new.value))
    log.close()
    points = []
    for tid, unsorted in history.items():
        t, changes = inv.targets[tid], sorted(unsorted, key=lambda c: c[0])
        times = [ts for ts, _ in changes]
        ts = start
        while ts < end:
            state = changes[bisect.bisect_right(times, ts) - 1][1]
            points.append(state_point(t, state, ts))
            ts += POLL_S[t.role]
    return points


def example_config(tmp_path: Path, url: str, database: str = DB) -> Path:
    """A copy of the example config whose time series go to ``url`` (InfluxDB 1.x)."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config, ignore=shutil.ignore_patterns("var"))
    text = (config / "sites.yaml").read_text(encoding="utf-8")
    line = next(x for x in text.splitlines() if x.startswith("  kind: none"))
    text = text.replace(line, f"  kind: influxdb1\n  url: {url}\n  database: {database}", 1)
    (config / "sites.yaml").write_text(text, encoding="utf-8")
    return config / "sites.yaml"


Month = tuple[InfluxDB1, Path, Path, Inventory]  # server, config, store, inventory


@pytest.fixture
def month(tmp_path: Path) -> Iterator[Month]:
    """A copy of the example config writing to a real InfluxDB, and October's store."""
    db = tmp_path / "monitor.db"
    (tmp_path / "influx").mkdir()
    with started(InfluxDB1(tmp_path / "influx")) as server:
        server.create_database(DB)
        config = example_config(tmp_path, server.url)
        inv = load_inventory(config)
        october_store(db, inv, vantage_outage=True)
        more_october(db, inv)
        yield server, config, db, inv


def board_query(title: str) -> str:
    queries: list[str] = [t["query"] for p in load_boards()["noc-overview.json"]["panels"] if p["title"] == title
                          for t in p["targets"]]
    [query] = queries
    return query


def test_the_board_and_the_report_give_the_same_month(month: Month, tmp_path: Path) -> None:
    server, config, db, inv = month
    out = tmp_path / "r.json"
    assert main(["report", "--config", str(config), "--db", str(db), "--month", "2026-10", "--format", "json",
                 "--output", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())["totals"]
    assert report["maintenance_min"] > 0 and report["blind_min"] > 0 and report["downtime_min"] > 0
    assert main(["rollup", "--config", str(config), "--db", str(db), "--month", "2026-10"]) == 0
    period = parse_period("2026-10", None, None, "America/Bogota")  # the config's zone, as the report used
    settings = TimeseriesSettings(kind="influxdb1", url=server.url, database=DB)
    asyncio.run(write_points(settings, poll_points(db, inv, period.start, period.end)))

    # Grafana's "This month" range ends one millisecond before the next month
    start_ms, end_ms = int(period.start * 1000), int(period.end * 1000) - 1
    [[_, board]] = server.query(expand(board_query("Availability 30 days"), {}, start_ms, end_ms), DB)[0]["values"]
    assert board == pytest.approx(report["availability_pct"], abs=0.01)
    # the data tells the two ways of counting apart: poll-weighted, planned and blind time included
    [[_, polls]] = server.query(f'SELECT mean("available") * 100 FROM "state" WHERE time >= {start_ms}ms'
                                f' AND time <= {end_ms}ms', DB)[0]["values"]
    assert abs(polls - report["availability_pct"]) > 0.05


def test_per_municipality_agrees_too(month: Month, tmp_path: Path) -> None:
    server, config, db, _ = month
    out = tmp_path / "r.json"
    assert main(["report", "--config", str(config), "--db", str(db), "--month", "2026-10", "--format", "json",
                 "--output", str(out), "--quiet", "--by", "municipality"]) == 0
    rows = {r["key"]: r["availability_pct"] for r in json.loads(out.read_text())["rows"]}
    assert main(["rollup", "--config", str(config), "--db", str(db), "--month", "2026-10"]) == 0
    period = parse_period("2026-10", None, None, "America/Bogota")
    text = expand(board_query("Availability per municipality"), {}, int(period.start * 1000),
                  int(period.end * 1000) - 1)
    board = {s["tags"]["municipality"]: s["values"][0][1] for s in server.query(text, DB)}
    assert set(board) == set(rows) and len(rows) >= 3
    for key, pct in rows.items():
        assert board[key] == pytest.approx(pct, abs=0.01), key
    assert rows["tame"] < 100.0 or rows["arauca"] < 100.0


def test_a_rerun_replaces_the_hours_it_covers(month: Month, tmp_path: Path) -> None:
    """Idempotent: the rollup run again over another range (hourly, or after a window is added in the past)
    overwrites the same hourly points, never adds to them."""
    server, config, db, _ = month
    assert main(["rollup", "--config", str(config), "--db", str(db)]) == 0  # the timer's run: the last 2 days
    assert main(["rollup", "--config", str(config), "--db", str(db), "--days", "0"]) == 2
    assert main(["rollup", "--config", str(config), "--db", str(db), "--from", "2026-10-21T23:30",
                 "--to", "2026-10-22T08:10"]) == 0
    store = IncidentStore(db)
    store.add_window("cpe-0001", at(22, 3), at(22, 7), "late window", "noc", [], now=at(25))
    store.close()
    assert main(["rollup", "--config", str(config), "--db", str(db), "--month", "2026-10"]) == 0
    out = tmp_path / "r.json"
    assert main(["report", "--config", str(config), "--db", str(db), "--month", "2026-10", "--format", "json",
                 "--output", str(out), "--quiet", "--by", "node"]) == 0
    cpe = next(r for r in json.loads(out.read_text())["rows"] if r["key"] == "cpe-0001")
    period = parse_period("2026-10", None, None, "America/Bogota")
    q = expand(board_query_node(), {"node": "cpe-0001"}, int(period.start * 1000), int(period.end * 1000) - 1)
    [[_, board]] = server.query(q, DB)[0]["values"]
    assert cpe["availability_pct"] < 100.0 and cpe["maintenance_min"] == pytest.approx(4 * 60)
    assert board == pytest.approx(cpe["availability_pct"], abs=0.01)


def board_query_node() -> str:
    queries: list[str] = [t["query"] for p in load_boards()["node-detail.json"]["panels"]
                          if p["title"] == "Availability" for t in p["targets"]]
    [query] = queries
    return query


def test_rollup_buckets_are_whole_hours_and_without_a_database_it_says_so(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert hour_bounds(3600.0 * 10 + 5, 3600.0 * 12) == [36000.0, 39600.0, 43200.0]
    assert hour_bounds(7200.0, 7200.0) == [7200.0, 10800.0]
    assert main(["rollup", "--config", str(CONFIG_DIR / "sites.yaml"), "--db", str(tmp_path / "x.db")]) == 2
    assert "timeseries.kind is none" in capsys.readouterr().err


def test_an_unreachable_database_is_exit_1_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = example_config(tmp_path, url, "m")
    db = tmp_path / "monitor.db"
    october_store(db, load_inventory(config))
    assert main(["rollup", "--config", str(config), "--db", str(db), "--month", "2026-10"]) == 1
    assert f"monitor: influxdb1 {url} db=m" in capsys.readouterr().err
