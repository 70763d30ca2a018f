"""Generate the provisioned dashboards (grafana/dashboards/*.json) from the definitions below.

Run ``.venv/bin/python grafana/generate.py`` after editing; tests/test_grafana.py fails when the
committed JSON differs from what this prints, and runs every query against a real InfluxDB.
Queries are InfluxQL (served by InfluxDB 1.x, 2.x through its v1 API, and 3.x) over the schema in
docs/timeseries.md and monitor/tsdb/annotations.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DS_UID = "monitor-influxdb"
DS = {"type": "influxdb", "uid": DS_UID}
OUT = Path(__file__).resolve().parent / "dashboards"

NODE = '"node" =~ /^$node$/'
SITE = '"site" =~ /^$site$/'
MUNI = '"municipality" =~ /^$municipality$/'
STATE_MAP = [{"type": "value", "options": {
    "-1": {"text": "UNKNOWN", "color": "gray"}, "0": {"text": "DOWN", "color": "red"},
    "1": {"text": "UP", "color": "green"}, "2": {"text": "DEGRADED", "color": "orange"}}}]
# Tables from two queries joined on their tag columns (the time column differs, so it goes first).
MERGE_BY_TAGS = [{"id": "organize", "options": {"excludeByName": {"Time": True}}}, {"id": "merge", "options": {}}]
# Availability as `monitor report` counts it: time-weighted, maintenance and blind time excluded, from the
# hourly rollup (`monitor rollup`, measurement `availability`: seconds up and down per target and hour).
AVAIL = 'SELECT 100 * sum("up_s") / (sum("up_s") + sum("down_s"))'
AVAIL_NOTE = ("Time-weighted like `monitor report`: maintenance and time the monitor was blind are left out. "
              "From the hourly rollup (`monitor rollup`), so the current hour shows from its next run.")
AVAIL_STEPS = [{"color": "red", "value": None}, {"color": "orange", "value": 98}, {"color": "green", "value": 99.5}]


class Board:
    def __init__(self, uid: str, title: str, description: str) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.panels: list[dict[str, Any]] = []
        self.variables: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]
        self.x = self.y = self.row_h = 0

    def panel(self, kind: str, title: str, queries: list[str], w: int = 12, h: int = 8, fmt: str = "time_series",
              unit: str = "", description: str = "", **extra: Any) -> dict[str, Any]:
        if self.x + w > 24:
            self.x, self.y = 0, self.y + self.row_h
            self.row_h = 0
        p: dict[str, Any] = {
            "id": len(self.panels) + 1, "type": kind, "title": title, "description": description, "datasource": DS,
            "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
            "targets": [{"refId": chr(65 + i), "datasource": DS, "rawQuery": True, "query": q, "resultFormat": fmt}
                        for i, q in enumerate(queries)],
            "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []},
            "options": {},
        }
        for key, value in extra.items():
            if key in ("mappings", "thresholds", "min", "max", "decimals", "noValue", "custom"):
                p["fieldConfig"]["defaults"][key] = value
            else:
                p[key] = value
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(p)
        return p

    def variable(self, name: str, label: str, query: str) -> None:
        self.variables.append({
            "name": name, "label": label, "type": "query", "datasource": DS, "query": query, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        })

    def annotation(self, name: str, colour: str, query: str, text: str, tags: str) -> None:
        self.annotations.append({"name": name, "datasource": DS, "enable": True, "iconColor": colour, "query": query,
                                 "textColumn": text, "tagsColumn": tags, "titleColumn": ""})

    def json(self) -> dict[str, Any]:
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": ["monitor", "isp"],
            "editable": True, "schemaVersion": 38, "version": 1, "graphTooltip": 1, "refresh": "1m",
            "time": {"from": "now-6h", "to": "now"}, "timezone": "browser",
            "templating": {"list": self.variables}, "annotations": {"list": self.annotations},
            "panels": self.panels, "links": [{"type": "dashboards", "tags": ["monitor"], "asDropdown": True,
                                              "title": "Boards"}],
        }


def over_time(select: str, measurement: str, where: str, by: str) -> str:
    """A time series per value of tag ``by``, one point per Grafana interval."""
    return f'SELECT {select} FROM "{measurement}" WHERE {where} GROUP BY time($__interval), "{by}" fill(none)'


def last_state(where: str, group: str, state: int) -> str:
    """Targets whose latest confirmed state in the range is ``state``, one row per target."""
    return (f'SELECT "state" FROM (SELECT last("state") AS "state" FROM "state" WHERE $timeFilter AND {where}'
            f' GROUP BY {group}) WHERE "state" = {state} GROUP BY {group}')


def count_state(where: str, state: int) -> str:
    return (f'SELECT count("state") FROM (SELECT last("state") AS "state" FROM "state" WHERE $timeFilter'
            f' AND {where} GROUP BY "node") WHERE "state" = {state}')


OPEN_INCIDENTS = (
    'SELECT "customers", "endpoints", "nodes" FROM (SELECT last("open") AS "open", last("affected_customers")'
    ' AS "customers", last("affected_endpoints") AS "endpoints", last("affected_nodes") AS "nodes"'
    ' FROM "incident" WHERE time > now() - 30d GROUP BY "incident", "root") WHERE "open" = 1'
    ' GROUP BY "incident", "root"'
)


def noc() -> Board:
    b = Board("monitor-noc", "NOC overview", "Status of the network now: what is down, where, and who is affected.")
    b.panel("stat", "Nodes down", [count_state("\"role\" = 'node'", 0)], w=4, h=4, noValue="0",
            thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]})
    b.panel("stat", "Nodes degraded", [count_state("\"role\" = 'node'", 2)], w=4, h=4, noValue="0",
            thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                      {"color": "orange", "value": 1}]})
    b.panel("stat", "Endpoints down", [count_state("\"role\" = 'endpoint'", 0)], w=4, h=4, noValue="0")
    b.panel("stat", "Open incidents", ['SELECT count("open") FROM (SELECT last("open") AS "open" FROM "incident"'
                                       ' WHERE time > now() - 30d GROUP BY "incident") WHERE "open" = 1'],
            w=4, h=4, noValue="0")
    b.panel("stat", "Availability today", [f'{AVAIL} FROM "availability" WHERE $timeFilter'],
            w=4, h=4, unit="percent", decimals=3, timeFrom="now/d", description=AVAIL_NOTE,
            thresholds={"mode": "absolute", "steps": AVAIL_STEPS})
    b.panel("stat", "Availability 30 days", [f'{AVAIL} FROM "availability" WHERE $timeFilter'],
            w=4, h=4, unit="percent", decimals=3, timeFrom="30d", description=AVAIL_NOTE,
            thresholds={"mode": "absolute", "steps": AVAIL_STEPS})
    geo = b.panel(
        "geomap", "Sites", [
            'SELECT last("lat") AS "latitude", last("lon") AS "longitude" FROM "site" GROUP BY "site", "name"',
            f'{AVAIL} AS "availability" FROM "availability" WHERE $timeFilter GROUP BY "site"',
        ], w=12, h=14, fmt="table", unit="percent", thresholds={"mode": "absolute", "steps": AVAIL_STEPS},
        description="Site coordinates (measurement `site`) merged by site with availability in the time range. "
        + AVAIL_NOTE,
        transformations=MERGE_BY_TAGS,
    )
    geo["options"] = {
        "view": {"id": "fit", "padding": 20},
        "controls": {"showZoom": True, "mouseWheelZoom": True},
        "basemap": {"type": "default", "name": "Basemap"},
        "layers": [{"type": "markers", "name": "Sites", "location": {"mode": "coords", "latitude": "latitude",
                                                                     "longitude": "longitude"},
                    "config": {"color": {"field": "availability", "fixed": "green"},
                               "size": {"fixed": 8}, "showLegend": True,
                               "text": {"field": "name", "mode": "field"}}}],
        "tooltip": {"mode": "details"},
    }
    b.panel("table", "Open incidents", [OPEN_INCIDENTS], w=12, h=7, fmt="table",
            description="Incidents whose last lifecycle event (measurement `incident`) left them open.")
    b.panel("table", "Nodes down now", [last_state("\"role\" = 'node'", '"node", "kind", "site"', 0)], w=12, h=7,
            fmt="table")
    b.panel("bargauge", "Availability per municipality", [
        f'{AVAIL} FROM "availability" WHERE $timeFilter GROUP BY "municipality"'],
        w=8, h=8, unit="percent", decimals=3, min=90, max=100, description=AVAIL_NOTE,
        thresholds={"mode": "absolute", "steps": AVAIL_STEPS})
    b.panel("bargauge", "Availability per municipality, 30 days", [
        f'{AVAIL} FROM "availability" WHERE $timeFilter GROUP BY "municipality"'],
        w=8, h=8, unit="percent", decimals=3, min=90, max=100, timeFrom="30d", description=AVAIL_NOTE,
        thresholds={"mode": "absolute", "steps": AVAIL_STEPS})
    b.panel("table", "Down per municipality", [
        'SELECT count("state") AS "down" FROM (SELECT last("state") AS "state" FROM "state" WHERE $timeFilter'
        ' GROUP BY "node", "municipality") WHERE "state" = 0 GROUP BY "municipality"'], w=8, h=8, fmt="table")
    b.panel("table", "Status per site", [
        f'{AVAIL} AS "availability" FROM "availability" WHERE $timeFilter GROUP BY "municipality",'
        ' "site"',
        'SELECT count("state") AS "down" FROM (SELECT last("state") AS "state" FROM "state" WHERE $timeFilter'
        ' GROUP BY "node", "municipality", "site") WHERE "state" = 0 GROUP BY "municipality", "site"'],
        w=24, h=8, fmt="table", unit="percent", decimals=3, description=AVAIL_NOTE,
        transformations=MERGE_BY_TAGS)
    b.panel("timeseries", "Availability over time per municipality", [
        f'{AVAIL} FROM "availability" WHERE $timeFilter GROUP BY time($__interval), "municipality"'
        ' fill(none)'], w=24, h=8, unit="percent", interval="1h", description=AVAIL_NOTE)
    b.annotation("Incidents", "red", 'SELECT "affected_customers", "incident", "kind", "event", "root" FROM'
                 ' "incident" WHERE $timeFilter AND "kind" != \'planned\'', "incident", "event,kind,root")
    return b


PCT = {"min": 0, "max": 100}
NODE_SERIES: list[tuple[str, str, str, str, int, str, dict[str, Any]]] = [  # title, select, measurement, by, ...
    ("Latency", 'mean("rtt_avg_ms") AS "avg", max("rtt_max_ms") AS "max", min("rtt_min_ms") AS "min"', "icmp",
     "node", 8, "ms", {}),
    ("Packet loss", 'mean("loss_pct")', "icmp", "node", 8, "percent", PCT),
    ("Jitter", 'mean("jitter_ms")', "icmp", "node", 8, "ms", {}),
    ("Interface traffic", 'mean("if_in_bps") AS "in", mean("if_out_bps") AS "out"', "snmp", "ifname", 12, "bps", {}),
    ("Interface errors", 'mean("if_in_errors_per_s") AS "in", mean("if_out_errors_per_s") AS "out"', "snmp",
     "ifname", 12, "pps", {}),
    ("Wireless signal", 'mean("wireless_signal_dbm")', "snmp", "peer", 8, "dBm", {}),
    ("CCQ", 'mean("wireless_ccq_pct")', "snmp", "node", 8, "percent", PCT),
    ("Wireless stations", 'last("wireless_stations")', "snmp", "node", 8, "", {}),
    ("ONU optical power (rx)", 'mean("onu_rx_dbm")', "snmp", "onu", 12, "dBm", {}),
    ("PON / SFP optical power", 'mean("optical_rx_dbm") AS "rx", mean("optical_tx_dbm") AS "tx"', "snmp", "port",
     12, "dBm", {}),
]


def node_detail() -> Board:
    b = Board("monitor-node", "Node detail", "One node or endpoint: reachability, radio, fibre and interfaces.")
    b.variable("municipality", "Municipality", 'SHOW TAG VALUES FROM "state" WITH KEY = "municipality"')
    b.variable("site", "Site", f'SHOW TAG VALUES FROM "state" WITH KEY = "site" WHERE {MUNI}')
    b.variable("node", "Node", f'SHOW TAG VALUES FROM "state" WITH KEY = "node" WHERE {MUNI} AND {SITE}')
    where = f"$timeFilter AND {NODE}"
    b.panel("stat", "State", [f'SELECT last("state") FROM "state" WHERE {where} GROUP BY "node"'], w=6, h=4,
            mappings=STATE_MAP)
    b.panel("stat", "Availability", [f'{AVAIL} FROM "availability" WHERE {where} GROUP BY "node"'],
            w=6, h=4, unit="percent", decimals=3, description=AVAIL_NOTE,
            thresholds={"mode": "absolute", "steps": AVAIL_STEPS})
    b.panel("stat", "SNMP uptime", [f'SELECT last("uptime_s") FROM "snmp_poll" WHERE {where} GROUP BY "node"'],
            w=6, h=4, unit="s")
    b.panel("stat", "Reboots", [f'SELECT sum("rebooted") FROM "snmp_poll" WHERE {where} GROUP BY "node"'],
            w=6, h=4, noValue="0")
    b.panel("state-timeline", "State", [
        f'SELECT last("state") FROM "state" WHERE {where} GROUP BY time($__interval), "node" fill(previous)'],
        w=24, h=4, mappings=STATE_MAP)
    for title, select, measurement, by, w, unit, limits in NODE_SERIES:
        b.panel("timeseries", title, [over_time(select, measurement, where, by)], w=w, unit=unit, **limits)
    b.annotation("Incidents", "red", 'SELECT "affected_customers", "incident", "kind", "event" FROM "incident"'
                 ' WHERE $timeFilter AND "root" =~ /^$node$/', "incident", "event,kind")
    b.annotation("State changes", "orange", 'SELECT "state", "old", "new" FROM "state_change"'
                 f' WHERE $timeFilter AND {NODE}', "new", "old,new")
    return b


def capacity() -> Board:
    b = Board("monitor-capacity", "Capacity and quality per tower and AP",
              "Where radio quality is worst and which links are busiest.")
    b.variable("municipality", "Municipality", 'SHOW TAG VALUES FROM "state" WITH KEY = "municipality"')
    b.variable("site", "Tower / site", f'SHOW TAG VALUES FROM "state" WITH KEY = "site" WHERE {MUNI}')
    where = f"$timeFilter AND {MUNI} AND {SITE}"
    b.panel("bargauge", "Worst signal per AP", [
        f'SELECT min("wireless_signal_dbm") FROM "snmp" WHERE {where} GROUP BY "node"'], w=8, h=9, unit="dBm",
        min=-95, max=-40, thresholds={"mode": "absolute", "steps": [
            {"color": "red", "value": None}, {"color": "orange", "value": -80}, {"color": "green", "value": -70}]})
    b.panel("bargauge", "Lowest CCQ per AP", [
        f'SELECT min("wireless_ccq_pct") FROM "snmp" WHERE {where} GROUP BY "node"'], w=8, h=9, unit="percent",
        min=0, max=100)
    b.panel("bargauge", "Stations per AP", [
        f'SELECT last("wireless_stations") FROM "snmp" WHERE {where} GROUP BY "node"'], w=8, h=9)
    b.panel("table", "Busiest links (peak)", [
        f'SELECT max("if_in_bps") AS "in_bps", max("if_out_bps") AS "out_bps" FROM "snmp" WHERE {where}'
        ' GROUP BY "node", "ifname"'], w=12, h=9, fmt="table", unit="bps",
        transformations=[{"id": "sortBy", "options": {"sort": [{"field": "in_bps", "desc": True}]}}])
    b.panel("table", "Weakest ONUs", [
        f'SELECT min("onu_rx_dbm") AS "rx_dbm" FROM "snmp" WHERE {where} GROUP BY "node", "onu"'],
        w=12, h=9, fmt="table", unit="dBm",
        transformations=[{"id": "sortBy", "options": {"sort": [{"field": "rx_dbm"}]}}])
    b.panel("timeseries", "Traffic in per node", [
        over_time('mean("if_in_bps")', "snmp", where, "node")],
        w=12, unit="bps")
    b.panel("timeseries", "Latency per AP", [
        over_time('mean("rtt_avg_ms")', "icmp", f"{where} AND \"kind\" = 'ap'", "node")], w=12, unit="ms")
    b.panel("timeseries", "Packet loss per site", [
        over_time('mean("loss_pct")', "icmp", where, "site")],
        w=12, unit="percent")
    b.panel("timeseries", "Endpoints degraded per site", [
        f'SELECT count("state") FROM "state" WHERE {where} AND "role" = \'endpoint\' AND "state" = 2'
        ' GROUP BY time($__interval), "site" fill(none)'], w=12)
    return b


BOARDS = {"noc-overview.json": noc, "node-detail.json": node_detail, "capacity.json": capacity}


def render() -> dict[str, str]:
    return {name: json.dumps(make().json(), indent=2, ensure_ascii=False) + "\n" for name, make in BOARDS.items()}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}", file=sys.stderr)
