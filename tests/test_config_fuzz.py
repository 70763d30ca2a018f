"""Hypothesis over the config loader: whatever the file holds, the answer is a loaded Inventory or our
own ConfigError (whose every line names the file), never another exception and never a hang.

Three sources of files: arbitrary bytes, YAML-ish text assembled from YAML's own punctuation, tags,
anchors and odd scalars, and structured mutations (replace, delete, add) of a valid config that
uses every section. Bounded: 200 examples per property, no deadline, each load timed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.correlate.settings import ALIASES, CorrelationSettings
from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.pipeline import correlation_settings
from tests.test_inventory import BASE, ENV

RICH = BASE + """\
polling: {interval: 30s, icmp_count: 3, icmp_timeout: 1s, down_after: 3, thresholds: {loss_pct: 20, rtt_ms: 150}}
polling_by_kind: {router: {interval: 15s}}
daemon: {state_dir: var, metrics_listen: '127.0.0.1:9108', concurrency: 100}
timeseries: {kind: influxdb1, url: 'http://127.0.0.1:8086', database: m, flush_interval: 1s, batch_size: 100}
correlation: {K: 3, P: 50, W: 2m, hold_down: 5m, vantage: [core]}
maintenance:
  - {node: ap-1, start: '2026-11-01T02:00:00Z', end: '2026-11-01T04:00:00Z', reason: radio}
delivery:
  timezone: America/Bogota
  maildir: {path: mail, from: noc@isp.example}
  technicians: [{id: ana, name: Ana, email: ana@isp.example}]
  oncall: [{municipality: '*', shifts: [{days: [mon-sun], from: '00:00', to: '24:00', tiers: [ana]}]}]
  escalation: {after: 15m, max_tier: 2}
  retry: {initial: 2s, maximum: 5m, factor: 2, jitter: 0.5, deadline: 1d}
  rate_limits: {email: 5}
api: {listen: '127.0.0.1:9109', token: {env: API_TOKEN}, link_ttl: 1d}
pollers:
  brokers: [{host: 127.0.0.1, port: 1883, username: core, password: {env: MQTT_CORE}}, {host: mqtt-2.isp.example}]
  prefix: isp/pollers
  heartbeat: 5s
  silent_after: 30s
  zones:
    - {id: noc, municipalities: [arauca], nodes: [ap-2]}
    - {id: north, sites: [twr-centro], nodes: [ap-1, cpe-1], pollers: [p-north-1, p-north-2]}
"""
RICH_ENV = {**ENV, "API_TOKEN": "t" * 32, "MQTT_CORE": "mqtt-core-pw"}
RICH_DOC = yaml.safe_load(RICH)
TIMEOUT = 60.0  # a hang, not a slow machine: the slowest accepted hostile file takes well under a second idle


def check(folder: Path, content: bytes) -> None:
    path = folder / "sites.yaml"
    path.write_bytes(content)
    started = time.monotonic()
    try:
        inv = load_inventory(path, env=RICH_ENV)
    except ConfigError as exc:
        assert exc.problems and all(p.startswith(f"{folder}/") for p in exc.problems), exc.problems  # a file
    else:
        assert isinstance(inv, Inventory)
        for t in inv.targets.values():  # what loaded is usable: finite numbers only
            assert math.isfinite(t.polling.interval) and math.isfinite(t.polling.icmp_timeout)
        correlation_settings(inv)  # and the daemon can build its correlation settings from it
    assert time.monotonic() - started < TIMEOUT


YAMLISH = st.lists(st.sampled_from([
    "[", "]", "{", "}", ":", ": ", "- ", ", ", "\n", "  ", "    ", "? ", "#", "'", '"', "|", ">", "---\n", "...\n",
    "&a ", "&b ", "*a", "*b", "<<: ", "<<: *a", "!!timestamp ", "!!binary ", "!!int ", "!!float ", "!!set ",
    "!!omap ", "!!python/object:os.system ", "!local ", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n",
    "nodes", "polling", "interval", "id", "kind", "address", "parent", "customers", "correlation", "delivery",
    "pollers", "zones", "brokers", "silent_after", "municipalities",
    "core", "ap", "127.0.0.1", ".nan", ".inf", "-.inf", "1e400", "0x1F", "0o17", "1_000", "2026-13-45",
    "2026-11-01T02:00:00Z", "9" * 50, "~", "null", "yes", "no", "\t", "\x00", "\x85", "\u2028", "\ufeff", "é",
    '"\\0"', '"\\x07"', '"\\e"', '"\\N"', "{file: ", "{env: ", "{credential: ", "customers_file: ",
]), max_size=60).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400) | st.text(max_size=200).map(str.encode) | YAMLISH.map(str.encode))
def test_any_file_loads_or_is_our_error(tmp_path: Path, content: bytes) -> None:
    check(tmp_path, content)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=YAMLISH)
def test_yamlish_after_a_valid_config_loads_or_is_our_error(tmp_path: Path, text: str) -> None:
    check(tmp_path, (RICH + text).encode())


SCALARS = (st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | st.text(max_size=20)
           | st.sampled_from([0, 1, -1, 0.0, 1e300, -1e300, "", "30s", "1d", "nan", "127.0.0.1", "core", "ap-1",
                              "env: X", {"env": "SNMP_COMMUNITY"}, {"file": "nowhere"}, [], {}]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8) | st.sampled_from(["id", "kind", "interval", "<<"]),
                                        inner, max_size=3), max_leaves=8)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


ALL_PATHS = paths(RICH_DOC)[1:]


def mutate(doc: Any, path: tuple[Any, ...], op: str, value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict) and head in doc:
        out = dict(doc)
        if rest:
            out[head] = mutate(doc[head], rest, op, value)
        elif op == "delete":
            del out[head]
        elif op == "add":
            out[f"{head}_x"] = value
        else:
            out[head] = value
        return out
    if isinstance(doc, list) and isinstance(head, int) and head < len(doc):
        items = list(doc)
        if rest:
            items[head] = mutate(doc[head], rest, op, value)
        elif op == "delete":
            del items[head]
        elif op == "add":
            items.append(value)
        else:
            items[head] = value
        return items
    return doc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["replace", "replace", "delete", "add"]),
                                VALUES), min_size=1, max_size=3))
def test_mutated_valid_config_loads_or_is_our_error(tmp_path: Path, edits: list[tuple[Any, str, Any]]) -> None:
    doc = RICH_DOC
    for path, op, value in edits:
        doc = mutate(doc, path, op, value)
    check(tmp_path, yaml.safe_dump(doc, allow_unicode=True).encode())


def test_the_rich_config_itself_loads(tmp_path: Path) -> None:
    (tmp_path / "sites.yaml").write_text(RICH)
    inv = load_inventory(tmp_path / "sites.yaml", env=RICH_ENV)
    assert inv.delivery is not None and inv.api is not None and inv.correlation and inv.maintenance
    assert inv.pollers is not None and inv.pollers.zone_of == {"core": "north", "ap-1": "north", "ap-2": "noc",
                                                               "cpe-1": "north"}


SETTING_NAMES = sorted({*ALIASES, *(f for f in CorrelationSettings.__dataclass_fields__ if f != "vantage")})
SETTING_VALUES = st.text(max_size=12) | st.sampled_from([
    "nan", "inf", "-inf", "1e400", "9" * 50, "0", "-1", "1", "0.5", "1d", "5m", "7d", "30s", "50%", "1e-9", ""])


@settings(max_examples=200, deadline=None)
@given(overrides=st.dictionaries(st.sampled_from(SETTING_NAMES) | st.text(max_size=6), SETTING_VALUES, max_size=4),
       interval=st.sampled_from([0.1, 1.0, 60.0, 3600.0, 86400.0]))
def test_correlation_overrides_give_finite_settings_or_our_error(overrides: dict[str, str], interval: float) -> None:
    """``replay --set`` and the ``correlation:`` section: finite settings within range, or ConfigError."""
    try:
        result = CorrelationSettings.for_interval(interval).with_overrides(overrides)
    except ConfigError as exc:
        assert exc.problems
        return
    for name in CorrelationSettings.__dataclass_fields__:
        value = getattr(result, name)
        assert not isinstance(value, float) or math.isfinite(value), (name, value)


def test_a_day_long_interval_with_correlation_overrides_still_builds(tmp_path: Path) -> None:
    """Defaults derived from a 1 d interval (hold-down 5 d) stay within the correlation ranges."""
    (tmp_path / "sites.yaml").write_text(BASE + "polling: {interval: 1d, icmp_timeout: 1s}\ncorrelation: {K: 5}\n")
    settings_ = correlation_settings(load_inventory(tmp_path / "sites.yaml", env=ENV))
    assert (settings_.hold_down, settings_.min_endpoints) == (5 * 86400, 5)


CSV_HEADER = "customer_id,name,service_class,email,phone,language,endpoint_id,endpoint_kind,address,parent\n"
CSVISH = st.lists(st.sampled_from([
    ",", '"', '""', "\n", "\r\n", "\r", "\x00", "\ufeff", "R-1", "Ana", "residencial", "ana@x.example", "es", "en",
    "pt", "cpe-2", "cpe", "127.0.2.1", "127.0.1.1", "ap-1", "ap-9", "core", "true", "no", "é", " ", "x" * 200,
]), max_size=80).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(csv=st.binary(max_size=300) | CSVISH.map(str.encode) | CSVISH.map(lambda t: (CSV_HEADER + t).encode()))
def test_any_customers_file_loads_or_is_our_error(tmp_path: Path, csv: bytes) -> None:
    (tmp_path / "customers.csv").write_bytes(csv)
    check(tmp_path, (BASE + "customers_file: customers.csv\n").encode())
