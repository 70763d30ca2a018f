"""The inventory loader: the shipped example, the issue's shape, and every kind of mistake.

Mistakes are applied as text edits to one small valid inventory so each expected message can carry
its exact ``file:line:``. The loader runs in a temp folder (chdir) so files are named relatively.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.inventory.loader import TOP_KEYS, load_inventory, summarize
from monitor.inventory.model import NODE_KINDS

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "inventory"
ENV = {"SNMP_COMMUNITY": "sup3rs3cret"}

BASE = """\
municipalities:
  - {id: arauca, name: Arauca}
  - {id: tame, name: Tame}
sites:
  - {id: twr-centro, municipality: arauca, name: Torre Centro, lat: 7.08, lon: -70.76}
service_classes:
  residencial: {response_hours: 24, availability_target: 98.0}
credentials:
  v2: {version: 2c, community: {env: SNMP_COMMUNITY}}
nodes:
  - {id: core, kind: router, address: 127.0.0.1, site: twr-centro, snmp: {profile: routeros, credentials: v2}}
  - {id: ap-1, kind: ap, address: 127.0.0.2, parent: core}
  - {id: ap-2, kind: ap, address: 127.0.0.3, parent: core}
customers:
  - {id: C-1, name: Uno, service_class: residencial,
     endpoints: [{id: cpe-1, kind: cpe, address: 127.0.1.1, parent: ap-1}]}
"""

CSV_HEADER = "customer_id,name,service_class,email,phone,language,endpoint_id,endpoint_kind,address,parent\n"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def edited(old: str, new: str) -> str:
    assert BASE.count(old) == 1, f"edit {old!r} must match exactly once"
    return BASE.replace(old, new)


def problems_of(text: str, env: dict[str, str] | None = None, csv: str | None = None) -> list[str]:
    Path("sites.yaml").write_text(text, encoding="utf-8")
    if csv is not None:
        Path("customers.csv").write_text(csv, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_inventory("sites.yaml", env=ENV if env is None else env)
    return info.value.problems


# -- what ships ---------------------------------------------------------------------------------
def test_example_config_loads_with_demo_secrets() -> None:
    inv = load_inventory(ROOT / "config" / "sites.yaml", env={})
    assert len(inv.endpoints()) >= 60
    assert set(inv.municipalities) == {"arauca", "arauquita", "saravena", "tame", "fortul"}
    assert all(ipaddress.ip_address(t.address) in ipaddress.ip_network("127.0.0.0/8")
               for t in inv.targets.values())
    assert {t.kind for t in inv.nodes()} >= {"router", "backhaul", "ap", "olt", "switch"}
    assert {t.service_class for t in inv.endpoints()} == {"corporativo", "residencial"}
    assert all(t.municipality in inv.municipalities and t.site in inv.sites for t in inv.targets.values())
    profiles = {t.snmp.profile for t in inv.targets.values() if t.snmp}
    assert profiles <= {"generic", "airos", "airfiber", "af-ltu", "routeros", "cambium-pmp", "ufiber-olt",
                        "huawei-olt", "zte-olt", "vsol-olt"}
    assert {"airos", "routeros", "cambium-pmp", "huawei-olt"} <= profiles
    assert inv.credentials["v2-default"].community is not None
    assert inv.credentials["v2-default"].community.reveal() == "public"
    assert inv.credentials["v3-core"].auth_key.reveal() == "authpass123"  # type: ignore[union-attr]
    assert inv.daemon.state_dir == str(ROOT / "config" / "var")
    assert inv.timeseries.kind == "none"
    assert {t.polling.interval for t in inv.nodes() if t.kind in ("ap", "olt", "backhaul")} == {30.0}
    assert {t.polling.interval for t in inv.endpoints() if t.id != "rtr-0003"} == {60.0}
    # most residential subscribers come from the billing CSV
    assert sum(1 for t in inv.endpoints() if t.address.startswith("127.0.2.")) >= 40


def test_issue_example_shape_loads() -> None:
    inv = load_inventory(FIXTURES / "issue_example.yaml", env={**ENV, "V3_PRIV": "privpass123"})
    assert inv.targets["olt-saravena"].parents == ("core-arauca", "core-backup")
    core = inv.targets["core-arauca"]
    assert core.snmp is not None and core.snmp.credentials.version == "3"
    assert core.snmp.credentials.auth_protocol == "SHA" and core.snmp.credentials.priv_protocol == "AES"
    assert core.snmp.credentials.priv_key is not None and core.snmp.credentials.priv_key.source == "env:V3_PRIV"
    cpe = inv.targets["cpe-0001"]
    assert (cpe.role, cpe.customer, cpe.service_class, cpe.site, cpe.municipality) == (
        "endpoint", "C-0001", "corporativo", "twr-centro", "arauca")
    assert inv.customers["C-0001"].phone == "+57..."
    assert inv.customers["C-0003"].endpoints == ("onu-0003", "cpe-0004")  # two CSV rows, one customer
    assert inv.customers["C-0002"].language == "es" and inv.customers["C-0002"].notify is True


def test_summary_counts_and_is_deterministic(folder: Path) -> None:
    Path("sites.yaml").write_text(BASE)
    inv = load_inventory("sites.yaml", env=ENV)
    text = summarize(inv)
    assert text == summarize(load_inventory("sites.yaml", env=ENV))
    assert text == f"""\
inventory: {folder / 'sites.yaml'}
targets: 4 (3 nodes, 1 endpoints), 1 customers, 1 sites

municipality     nodes  endpoints
arauca (Arauca)      3          1
tame (Tame)          0          0

kind    nodes  endpoints
ap          2          0
cpe         0          1
router      1          0

service class  customers  endpoints
residencial            1          1

credentials v2c: v2
credentials v3: -
polling: default interval 60 s, 3 pings, down after 3, up after 2; targets by interval: 60 s: 4
timeseries: none (time series off)
delivery: off (no delivery section: no tickets, alerts or notices)
api: off
status page: off
metrics: 127.0.0.1:9108
state_dir: {folder / 'var'}
"""


# -- the table of mistakes ----------------------------------------------------------------------
NODE_KEYS = "address, id, kind, municipality, name, parent, parents, polling, site, snmp"
MISTAKES = [
    ("unknown key", "address: 127.0.0.2,", "adress: 127.0.0.2,", [
        f"sites.yaml:12: nodes[1]: unknown key 'adress' (allowed: {NODE_KEYS})",
        "sites.yaml:12: nodes[1]: missing required key 'address'"]),
    ("unknown top-level key", "customers:\n", "colour: red\ncustomers:\n", [
        f"sites.yaml:14: unknown key 'colour' (allowed: {', '.join(sorted(TOP_KEYS))})"]),
    ("unknown correlation setting", "customers:\n", "correlation: {K: 4, hold: 5m}\ncustomers:\n", [
        "sites.yaml:14: correlation.hold: unknown setting (known: K, P, W, blind_min, blind_recovery, blind_share, "
        "burst_history, burst_odds, burst_prior, degraded_settle, "
        "down_after, grace, hold-down, hold_down, holddown, interval, levels_hold_down, min_endpoints, min_share, "
        "settle, up_after, update_interval, vantage, window)"]),
    ("negative levels hold-down", "customers:\n", "correlation: {levels_hold_down: -5m}\ncustomers:\n", [
        "sites.yaml:14: correlation.levels_hold_down: expected a duration like 90, 90s, 5m, 2h"]),
    ("levels hold-down beyond a month", "customers:\n", "correlation: {levels_hold_down: 32d}\ncustomers:\n", [
        "sites.yaml:14: correlation.levels_hold_down: levels_hold_down must be between 0 and 31d, got 2.7648e+06"]),
    ("bad correlation value", "customers:\n", "correlation: {W: soon}\ncustomers:\n", [
        "sites.yaml:14: correlation.W: expected a duration like 90, 90s, 5m, 2h"]),
    ("unknown vantage node", "customers:\n", "correlation: {vantage: [core, gw-9]}\ncustomers:\n", [
        "sites.yaml:14: correlation: vantage: unknown node 'gw-9' (expected ids of nodes)"]),
    ("maintenance on unknown node", "customers:\n",
     "maintenance:\n  - {node: ap-9, start: '2026-11-01T02:00:00Z', end: '2026-11-01T04:00:00Z'}\ncustomers:\n", [
        "sites.yaml:15: maintenance[0].node: unknown node 'ap-9' (expected the id of a node or endpoint)"]),
    ("maintenance ending before it starts", "customers:\n",
     "maintenance:\n  - {node: ap-1, start: '2026-11-01T04:00:00Z', end: '2026-11-01T02:00:00Z'}\ncustomers:\n", [
        "sites.yaml:15: maintenance[0].end: must be after start"]),
    ("maintenance past the year 9999 in UTC", "customers:\n",
     "maintenance:\n  - {node: ap-1, start: '9999-12-31T23:00:00-05:00', end: '9999-12-31T23:30:00-05:00'}\n"
     "customers:\n", [
        "sites.yaml:15: maintenance[0].start: must be between the years 1 and 9999 (UTC)",
        "sites.yaml:15: maintenance[0].end: must be between the years 1 and 9999 (UTC)"]),
    ("maintenance with a bad time", "customers:\n",
     "maintenance:\n  - {node: ap-1, start: tomorrow, end: '2026-11-01T02:00:00Z'}\ncustomers:\n", [
        "sites.yaml:15: maintenance[0].start: expected an ISO 8601 time like 2026-11-01T02:00:00-05:00, "
        "got 'tomorrow'"]),
    ("unknown nested key", "credentials: v2}}", "credentials: v2, community: x}}", [
        "sites.yaml:11: nodes[0].snmp: unknown key 'community' "
        "(allowed: context, credentials, port, profile, retries, table, timeout, walk_max_bytes, walk_max_rows)"]),
    ("wrong type", "lat: 7.08", "lat: north", [
        "sites.yaml:5: sites[0].lat: expected a number, got a string"]),
    ("wrong container type", "  - {id: tame, name: Tame}\n", "  - tame\n", [
        "sites.yaml:3: municipalities[1]: expected a mapping, got a string"]),
    ("missing required key", "{id: ap-2, kind: ap, ", "{id: ap-2, ", [
        "sites.yaml:13: nodes[2]: missing required key 'kind'"]),
    ("bad enum", "{id: ap-1, kind: ap,", "{id: ap-1, kind: antenna,", [
        f"sites.yaml:12: nodes[1].kind: bad value 'antenna' (expected one of: {', '.join(NODE_KINDS)})"]),
    ("bad IP address", "127.0.0.3", "127.0.0.300", [
        "sites.yaml:13: nodes[2].address: bad IP address '127.0.0.300' "
        "(expected an IPv4 or IPv6 literal such as 192.0.2.10 or 2001:db8::10)"]),
    ("hostname instead of IP", "127.0.0.3", "ap2.isp.example", [
        "sites.yaml:13: nodes[2].address: bad IP address 'ap2.isp.example' "
        "(expected an IPv4 or IPv6 literal such as 192.0.2.10 or 2001:db8::10)"]),
    ("bad id", "{id: ap-2,", "{id: ap 2,", [
        "sites.yaml:13: nodes[2].id: bad id 'ap 2' "
        "(expected letters, digits, '.', '_', ':' or '-', starting with a letter or digit)"]),
    ("duplicate node id", "{id: ap-2,", "{id: ap-1,", [
        "sites.yaml:13: nodes[2].id: duplicate id 'ap-1' (already used at sites.yaml:12)"]),
    ("endpoint id used by a node", "{id: cpe-1,", "{id: core,", [
        "sites.yaml:16: customers[0].endpoints[0].id: duplicate id 'core' (already used at sites.yaml:11)"]),
    ("duplicate customer id", "     endpoints: [{id: cpe-1, kind: cpe, address: 127.0.1.1, parent: ap-1}]}\n",
     "     endpoints: [{id: cpe-1, kind: cpe, address: 127.0.1.1, parent: ap-1}]}\n"
     "  - {id: C-1, name: Dos, service_class: residencial}\n", [
        "sites.yaml:17: customers[1].id: duplicate id 'C-1' (already used at sites.yaml:15)"]),
    ("duplicate municipality id", "{id: tame, name: Tame}", "{id: arauca, name: Tame}", [
        "sites.yaml:3: municipalities[1].id: duplicate id 'arauca' (already used at sites.yaml:2)"]),
    ("duplicate address", "127.0.0.3", "127.0.0.2", [
        "sites.yaml:13: nodes[2].address: duplicate address 127.0.0.2 (already used by ap-1 at sites.yaml:12)"]),
    ("dangling parent", "parent: core}\n  - {id: ap-2", "parent: core-x}\n  - {id: ap-2", [
        "sites.yaml:12: nodes[1].parent: unknown node 'core-x' (expected the id of a node defined under nodes)"]),
    ("dangling parent in parents", "address: 127.0.0.3, parent: core}", "address: 127.0.0.3, parents: [core, bk]}", [
        "sites.yaml:13: nodes[2].parents[1]: unknown node 'bk' (expected the id of a node defined under nodes)"]),
    ("parent is an endpoint", "address: 127.0.0.3, parent: core}", "address: 127.0.0.3, parent: cpe-1}", [
        "sites.yaml:13: nodes[2].parent: unknown node 'cpe-1' "
        "(expected the id of a node defined under nodes; 'cpe-1' is a customer endpoint)"]),
    ("dangling site", "site: twr-centro,", "site: twr-norte,", [
        "sites.yaml:11: nodes[0].site: unknown site 'twr-norte' (expected the id of a site defined under sites)"]),
    ("dangling municipality", "municipality: arauca,", "municipality: cravo-norte,", [
        "sites.yaml:5: sites[0].municipality: unknown municipality 'cravo-norte' "
        "(expected the id of a municipality defined under municipalities)"]),
    ("municipality contradicts site", "site: twr-centro,", "site: twr-centro, municipality: tame,", [
        "sites.yaml:11: nodes[0].municipality: 'tame' contradicts site 'twr-centro', "
        "which is in municipality 'arauca'"]),
    ("dangling service class", "{id: C-1, name: Uno, service_class: residencial,",
     "{id: C-1, name: Uno, service_class: gold,", [
        "sites.yaml:15: customers[0].service_class: unknown service class 'gold' "
        "(expected a key of service_classes: residencial)"]),
    ("dangling credentials", "credentials: v2}}", "credentials: v3}}", [
        "sites.yaml:11: nodes[0].snmp.credentials: unknown credentials 'v3' (expected a key of credentials: v2)"]),
    ("empty snmp profile", "profile: routeros", "profile: ''", [
        "sites.yaml:11: nodes[0].snmp.profile: must not be empty"]),
    ("unknown snmp profile", "profile: routeros", "profile: routeros7", [
        "sites.yaml:11: nodes[0].snmp.profile: unknown SNMP profile 'routeros7' (expected one of: af-ltu, airfiber, "
        "airos, cambium-pmp, generic, huawei-olt, mimosa, routeros, siklu, ufiber-olt, vsol-olt, zte-olt)"]),
    ("parent cycle", "site: twr-centro,", "site: twr-centro, parent: ap-2,", [
        "sites.yaml:11: nodes[0].parent: parent cycle: core -> ap-2 -> core"]),
    ("self parent", "{id: ap-2, kind: ap, address: 127.0.0.3, parent: core}",
     "{id: ap-2, kind: ap, address: 127.0.0.3, parent: ap-2}", [
        "sites.yaml:13: nodes[2].parent: parent cycle: ap-2 -> ap-2"]),
    ("both parent and parents", "address: 127.0.0.3, parent: core}",
     "address: 127.0.0.3, parent: core, parents: [ap-1]}", [
        "sites.yaml:13: nodes[2].parents: give either parent or parents, not both"]),
    ("endpoint without parent", "address: 127.0.1.1, parent: ap-1}", "address: 127.0.1.1}", [
        "sites.yaml:16: customers[0].endpoints[0]: missing required key 'parent' (the node this endpoint hangs from)"]),
    ("duplicate YAML key", "{id: ap-2, kind: ap,", "{id: ap-2, kind: ap, kind: switch,", [
        "sites.yaml:13: duplicate key 'kind'"]),
    ("secret written inline", "community: {env: SNMP_COMMUNITY}", "community: sup3rs3cret", [
        "sites.yaml:9: credentials.v2.community: secrets cannot be written inline; "
        "use {env: NAME}, {file: PATH} or {credential: NAME}"]),
    ("secret reference of unknown kind", "{env: SNMP_COMMUNITY}", "{vault: snmp}", [
        "sites.yaml:9: credentials.v2.community: expected a secret reference "
        "(use {env: NAME}, {file: PATH} or {credential: NAME}), "
        "got a mapping with keys vault"]),
    ("missing env var", "{env: SNMP_COMMUNITY}", "{env: SNMP_COMMUNITY_ARAUCA}", [
        "sites.yaml:9: credentials.v2.community: environment variable SNMP_COMMUNITY_ARAUCA is not set"]),
    ("missing secret file", "{env: SNMP_COMMUNITY}", "{file: secrets/community}", [
        "sites.yaml:9: credentials.v2.community: secret file secrets/community does not exist "
        "(looked for {folder}/secrets/community)"]),
    ("bad credentials version", "{version: 2c,", "{version: 2,", [
        "sites.yaml:9: credentials.v2.version: bad value 2 (expected one of: 2c, 3)"]),
    ("v3 bad auth protocol", "  v2: {version: 2c, community: {env: SNMP_COMMUNITY}}\n",
     "  v2: {version: 2c, community: {env: SNMP_COMMUNITY}}\n"
     "  v3: {version: 3, user: noc, auth: {protocol: SHA1, key: {env: SNMP_COMMUNITY}}}\n", [
        "sites.yaml:10: credentials.v3.auth.protocol: bad value 'SHA1' "
        "(expected one of: MD5, SHA, SHA224, SHA256, SHA384, SHA512)"]),
    ("v3 key too short", "  v2: {version: 2c, community: {env: SNMP_COMMUNITY}}\n",
     "  v2: {version: 2c, community: {env: SNMP_COMMUNITY}}\n"
     "  v3: {version: 3, user: noc, auth: {protocol: SHA, key: {env: SHORT}}}\n", [
        "sites.yaml:10: credentials.v3.auth.key: the key from env:SHORT is shorter than 8 characters "
        "(SNMPv3 needs at least 8)"]),
    ("non-positive interval", "customers:\n", "polling: {interval: 0}\ncustomers:\n", [
        "sites.yaml:14: polling.interval: must be between 0.1s and 1d, got 0"]),
    ("bad duration", "customers:\n", "polling: {interval: 30 seconds}\ncustomers:\n", [
        "sites.yaml:14: polling.interval: bad duration '30 seconds' "
        "(expected seconds, or a string like '30s', '500ms', '2m', '1d')"]),
    ("down_after below 1", "customers:\n", "polling: {down_after: 0}\ncustomers:\n", [
        "sites.yaml:14: polling.down_after: must be between 1 and 100, got 0"]),
    ("poll longer than interval", "parent: core}\n  - {id: ap-2",
     "parent: core, polling: {interval: 1}}\n  - {id: ap-2", [
        "sites.yaml:12: nodes[1].polling: a poll takes up to 1.04 s (icmp_timeout + (icmp_count - 1) × "
        "icmp_spacing), which must be shorter than interval 1 s"]),
    ("snmp slower than interval", "credentials: v2}}", "credentials: v2, timeout: 30s}}", [
        "sites.yaml:11: nodes[0].snmp: timeout × (retries + 1) = 60 s must be shorter than the polling "
        "interval 60 s"]),
    ("loss threshold above 100", "customers:\n", "polling: {thresholds: {loss_pct: 120}}\ncustomers:\n", [
        "sites.yaml:14: polling.thresholds.loss_pct: must be between 0 and 100, got 120"]),
    ("unknown kind in polling_by_kind", "customers:\n", "polling_by_kind: {antenna: {interval: 5}}\ncustomers:\n", [
        "sites.yaml:14: polling_by_kind.antenna: unknown kind 'antenna' (expected one of: "
        f"{', '.join(NODE_KINDS)}, cpe, onu)"]),
    ("bad language", "{id: C-1, name: Uno,", "{id: C-1, name: Uno, language: fr,", [
        "sites.yaml:15: customers[0].language: bad value 'fr' (expected one of: es, en)"]),
    ("bad e-mail", "{id: C-1, name: Uno,", "{id: C-1, name: Uno, contacts: {email: uno.example.com},", [
        "sites.yaml:15: customers[0].contacts.email: bad e-mail address 'uno.example.com' (expected name@domain)"]),
    ("notify not a boolean", "{id: C-1, name: Uno,", "{id: C-1, name: Uno, notify: maybe,", [
        "sites.yaml:15: customers[0].notify: expected a boolean (true or false), got a string"]),
    ("influxdb2 without token", "customers:\n", "timeseries: {kind: influxdb2, url: 'http://127.0.0.1:8086', "
     "org: isp, bucket: m}\ncustomers:\n", [
        "sites.yaml:14: timeseries: missing required key 'token' (needed for kind influxdb2)"]),
    ("inline token even with time series off", "customers:\n", "timeseries: {kind: none, token: abc}\ncustomers:\n", [
        "sites.yaml:14: timeseries.token: secrets cannot be written inline; "
        "use {env: NAME}, {file: PATH} or {credential: NAME}"]),
    ("bad metrics_listen", "customers:\n", "daemon: {metrics_listen: 9108}\ncustomers:\n", [
        "sites.yaml:14: daemon.metrics_listen: expected a string such as 127.0.0.1:9108 ('' disables /metrics), "
        "got an integer"]),
    ("YAML syntax error", "  - {id: ap-2, kind: ap, address: 127.0.0.3, parent: core}\n",
     "  - {id: ap-2, kind: ap, address: 127.0.0.3, parent: core\n", [
        "sites.yaml:14: YAML syntax error: expected ',' or '}', but got ':' "
        "(while parsing a flow mapping)"]),
]


@pytest.mark.parametrize(("edit_from", "edit_to", "expected"), [m[1:] for m in MISTAKES],
                         ids=[m[0] for m in MISTAKES])
def test_mistake_is_reported_exactly(folder: Path, edit_from: str, edit_to: str, expected: list[str]) -> None:
    text = edited(edit_from, edit_to)
    env = {**ENV, "SHORT": "abc"}
    got = problems_of(text, env)
    assert got == [e.replace("{folder}", str(folder)) for e in expected]
    assert all("sup3rs3cret" not in p for p in got)


def test_every_problem_is_reported_not_just_the_first(folder: Path) -> None:
    text = BASE.replace("127.0.0.3", "127.0.0.300").replace("parent: ap-1}", "parent: ap-9}") \
        .replace("lat: 7.08", "lat: 91").replace("service_class: residencial", "service_class: gold")
    got = problems_of(text, env={})
    assert got == [
        "sites.yaml:5: sites[0].lat: must be between -90 and 90, got 91",
        "sites.yaml:9: credentials.v2.community: environment variable SNMP_COMMUNITY is not set",
        "sites.yaml:13: nodes[2].address: bad IP address '127.0.0.300' "
        "(expected an IPv4 or IPv6 literal such as 192.0.2.10 or 2001:db8::10)",
        "sites.yaml:15: customers[0].service_class: unknown service class 'gold' "
        "(expected a key of service_classes: residencial)",
        "sites.yaml:16: customers[0].endpoints[0].parent: unknown node 'ap-9' "
        "(expected the id of a node defined under nodes)",
    ]


def test_cycles_among_many_nodes_are_each_reported_once(folder: Path) -> None:
    text = BASE.replace("customers:\n", """\
  - {id: a, kind: switch, address: 127.0.0.10, parents: [b, core]}
  - {id: b, kind: switch, address: 127.0.0.11, parents: [c]}
  - {id: c, kind: switch, address: 127.0.0.12, parents: [a, d]}
  - {id: d, kind: switch, address: 127.0.0.13, parents: [b]}
customers:
""").replace("parent: ap-1}]}", "parent: d}]}")
    assert problems_of(text) == [
        "sites.yaml:14: nodes[3].parents[0]: parent cycle: a -> b -> c -> a",
        "sites.yaml:15: nodes[4].parents[0]: parent cycle: b -> c -> d -> b",
    ]


def test_unreadable_and_empty_files(folder: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_inventory("nowhere.yaml")
    assert info.value.problems == ["nowhere.yaml: cannot read the inventory: No such file or directory"]
    Path("empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError) as info:
        load_inventory("empty.yaml")
    assert info.value.problems == ["empty.yaml: the file is empty (expected a mapping with at least 'nodes')"]


# -- billing CSV --------------------------------------------------------------------------------
CSV_YAML = BASE + "customers_file: customers.csv\n"
CSV_MISTAKES = [
    ("unknown column",
     CSV_HEADER.replace("phone", "telefono") + "R-1,Ana,residencial,,,es,cpe-2,cpe,127.0.2.1,ap-1\n", [
        "customers.csv:1: telefono: unknown column (allowed: customer_id, name, service_class, endpoint_id, "
        "endpoint_kind, address, parent, email, phone, language, notify, endpoint_name)"]),
    ("missing column", CSV_HEADER.replace(",parent", "") + "R-1,Ana,residencial,,,es,cpe-2,cpe,127.0.2.1\n", [
        "customers.csv:1: parent: missing required column"]),
    ("empty required cell", CSV_HEADER + "R-1,Ana,,,,es,cpe-2,cpe,127.0.2.1,ap-1\n", [
        "customers.csv:2: service_class: must not be empty"]),
    ("unknown service class", CSV_HEADER + "R-1,Ana,plata,,,es,cpe-2,cpe,127.0.2.1,ap-1\n", [
        "customers.csv:2: service_class: unknown service class 'plata' (expected a key of service_classes: "
        "residencial)"]),
    ("bad kind", CSV_HEADER + "R-1,Ana,residencial,,,es,cpe-2,antena,127.0.2.1,ap-1\n", [
        "customers.csv:2: endpoint_kind: bad value 'antena' (expected one of: cpe, onu, router, ap)"]),
    ("bad address", CSV_HEADER + "R-1,Ana,residencial,,,es,cpe-2,cpe,127.0.2,ap-1\n", [
        "customers.csv:2: address: bad IP address '127.0.2' "
        "(expected an IPv4 or IPv6 literal such as 192.0.2.10 or 2001:db8::10)"]),
    ("dangling parent", CSV_HEADER + "R-1,Ana,residencial,,,es,cpe-2,cpe,127.0.2.1,ap-7\n", [
        "customers.csv:2: parent: unknown node 'ap-7' (expected the id of a node defined under nodes)"]),
    ("endpoint id taken in the YAML", CSV_HEADER + "R-1,Ana,residencial,,,es,cpe-1,cpe,127.0.2.1,ap-1\n", [
        "customers.csv:2: endpoint_id: duplicate id 'cpe-1' (already used at sites.yaml:16)"]),
    ("address taken in the YAML", CSV_HEADER + "R-1,Ana,residencial,,,es,cpe-2,cpe,127.0.1.1,ap-1\n", [
        "customers.csv:2: address: duplicate address 127.0.1.1 (already used by cpe-1 at sites.yaml:16)"]),
    ("customer id taken in the YAML", CSV_HEADER + "C-1,Ana,residencial,,,es,cpe-2,cpe,127.0.2.1,ap-1\n", [
        "customers.csv:2: customer_id: duplicate id 'C-1' (already used at sites.yaml:15)"]),
    ("rows of one customer disagree", CSV_HEADER + "R-1,Ana,residencial,,,es,cpe-2,cpe,127.0.2.1,ap-1\n"
     "R-1,Ana María,residencial,,,es,cpe-3,cpe,127.0.2.2,ap-2\n", [
        "customers.csv:3: name: 'Ana María' differs from line 2 ('Ana') for customer R-1"]),
    ("wrong number of cells", CSV_HEADER + "R-1,Ana,residencial,,,es,cpe-2,cpe,127.0.2.1\n", [
        "customers.csv:2: expected 10 columns, got 9"]),
    ("bad language", CSV_HEADER + "R-1,Ana,residencial,,,pt,cpe-2,cpe,127.0.2.1,ap-1\n", [
        "customers.csv:2: language: bad value 'pt' (expected one of: es, en)"]),
]


@pytest.mark.parametrize(("csv", "expected"), [m[1:] for m in CSV_MISTAKES], ids=[m[0] for m in CSV_MISTAKES])
def test_csv_mistake_is_reported_exactly(folder: Path, csv: str, expected: list[str]) -> None:
    assert problems_of(CSV_YAML, csv=csv) == expected


def test_csv_rows_group_into_customers(folder: Path) -> None:
    Path("sites.yaml").write_text(CSV_YAML)
    Path("customers.csv").write_text(
        "\ufeff" + CSV_HEADER.replace("parent", "parent,notify")
        + 'R-1,"Rojas, Ana",residencial,ana@example.com,+57 300,en,cpe-2,cpe,127.0.2.1,ap-1,no\n'
        + '\n'
        + 'R-2,Luis,residencial,,,,onu-3,onu,127.0.2.2,ap-2,\n'
        + 'R-1,"Rojas, Ana",residencial,ana@example.com,+57 300,en,cpe-4,cpe,127.0.2.3,ap-2,no\n', encoding="utf-8")
    inv = load_inventory("sites.yaml", env=ENV)
    ana = inv.customers["R-1"]
    assert (ana.name, ana.language, ana.notify, ana.endpoints) == ("Rojas, Ana", "en", False, ("cpe-2", "cpe-4"))
    assert inv.customers["R-2"].notify is True and inv.customers["R-2"].language == "es"
    cpe = inv.targets["cpe-4"]
    assert (cpe.role, cpe.customer, cpe.service_class, cpe.parents, cpe.municipality) == (
        "endpoint", "R-1", "residencial", ("ap-2",), "arauca")
    assert list(inv.targets)[-3:] == ["cpe-2", "cpe-4", "onu-3"]  # grouped by customer, then row order


def test_missing_customers_file(folder: Path) -> None:
    Path("sites.yaml").write_text(BASE + "customers_file: billing/export.csv\n")
    with pytest.raises(ConfigError) as info:
        load_inventory("sites.yaml", env=ENV)
    assert info.value.problems == [
        "billing/export.csv: cannot read the customers file: No such file or directory"]


# -- secrets ------------------------------------------------------------------------------------
def test_secret_values_never_show(folder: Path) -> None:
    Path("sites.yaml").write_text(BASE.replace(
        "  v2: {version: 2c, community: {env: SNMP_COMMUNITY}}\n",
        "  v2: {version: 2c, community: {env: SNMP_COMMUNITY}}\n"
        "  v3: {version: 3, user: noc, auth: {protocol: SHA, key: {file: auth.key}},"
        " priv: {protocol: AES, key: {env: SNMP_COMMUNITY}}}\n"))
    Path("auth.key").write_text("sup3rs3cret-auth\n")
    inv = load_inventory("sites.yaml", env=ENV)
    assert inv.credentials["v3"].auth_key is not None
    assert inv.credentials["v3"].auth_key.reveal() == "sup3rs3cret-auth"  # one trailing newline stripped
    for text in (repr(inv), str(inv), summarize(inv), repr(inv.targets["core"])):
        assert "sup3rs3cret" not in text
    assert "Secret(env:SNMP_COMMUNITY)" in repr(inv)
    # an error elsewhere in a file with resolvable secrets, and a too-short key, leak nothing either
    Path("auth.key").write_text("sup3rs3")
    got = problems_of(Path("sites.yaml").read_text().replace("127.0.0.3", "bad"), env={"SNMP_COMMUNITY": "sup3rs3"})
    assert len(got) == 3 and not any("sup3rs3" in p for p in got)


@pytest.mark.parametrize(("content", "expected"), [
    ("", "secret file c.txt is empty"),
    ("\n", "secret file c.txt is empty"),
])
def test_empty_secret_file(folder: Path, content: str, expected: str) -> None:
    Path("c.txt").write_text(content)
    got = problems_of(BASE.replace("{env: SNMP_COMMUNITY}", "{file: c.txt}"))
    assert got == [f"sites.yaml:9: credentials.v2.community: {expected}"]


def test_empty_env_var(folder: Path) -> None:
    got = problems_of(BASE, env={"SNMP_COMMUNITY": ""})
    assert got == ["sites.yaml:9: credentials.v2.community: environment variable SNMP_COMMUNITY is empty"]


def test_secret_file_relative_to_config_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "cfg" / "secrets").mkdir(parents=True)
    (folder / "cfg" / "secrets" / "c").write_text("public\n")
    (folder / "cfg" / "sites.yaml").write_text(BASE.replace("{env: SNMP_COMMUNITY}", "{file: secrets/c}"))
    monkeypatch.chdir("/")
    inv = load_inventory(folder / "cfg" / "sites.yaml", env={})
    assert inv.credentials["v2"].community is not None
    assert inv.credentials["v2"].community.reveal() == "public"
    assert inv.credentials["v2"].community.source == "file:secrets/c"
    assert inv.daemon.state_dir == str(folder / "cfg" / "var")
    assert inv.timeseries.spool_dir == str(folder / "cfg" / "var" / "spool")


def test_env_defaults_to_process_environment(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNMP_COMMUNITY", "from-environ")
    Path("sites.yaml").write_text(BASE)
    inv = load_inventory("sites.yaml")
    assert inv.credentials["v2"].community is not None
    assert inv.credentials["v2"].community.reveal() == "from-environ"
    assert os.environ["SNMP_COMMUNITY"] == "from-environ"


# -- inheritance and overrides ------------------------------------------------------------------
TOPOLOGY = """\
municipalities: [{id: arauca, name: Arauca}, {id: saravena, name: Saravena}]
sites:
  - {id: noc, municipality: arauca, name: NOC}
  - {id: twr-sar, municipality: saravena, name: Torre Saravena}
service_classes:
  corporativo: {response_hours: 12, availability_target: 99.5, polling: {interval: 45, down_after: 2}}
  residencial: {response_hours: 24, availability_target: 98}
polling: {interval: 30, up_after: 4, thresholds: {rtt_ms: 100, jitter_ms: 20}}
polling_by_kind:
  ap: {interval: 20, thresholds: {rtt_ms: 80}}
  cpe: {interval: 90}
nodes:
  - {id: ap-sar, kind: ap, address: 127.0.0.4, parents: [bh-b, core-2], polling: {thresholds: {signal_dbm_min: null}}}
  - {id: core, kind: router, address: 127.0.0.1, site: noc}
  - {id: bh-a, kind: backhaul, address: 127.0.0.2, parent: core}
  - {id: bh-b, kind: backhaul, address: 127.0.0.3, parent: bh-a}
  - {id: core-2, kind: router, address: 127.0.0.5, site: twr-sar, polling: {interval: 10, icmp_count: 5}}
  - {id: sw-muni, kind: switch, address: '::1', municipality: saravena, parent: core}
customers:
  - id: C-1
    name: Uno
    service_class: corporativo
    endpoints:
      - {id: cpe-1, kind: cpe, address: 127.0.1.1, parent: ap-sar}
      - {id: cpe-2, kind: cpe, address: 127.0.1.2, parent: ap-sar, polling: {interval: 120}}
  - id: C-2
    name: Dos
    service_class: residencial
    endpoints: [{id: cpe-3, kind: cpe, address: 127.0.1.3, parent: sw-muni}]
"""


def test_site_and_municipality_inherited_through_redundant_parents(folder: Path) -> None:
    Path("sites.yaml").write_text(TOPOLOGY)
    t = load_inventory("sites.yaml", env={}).targets
    assert (t["bh-b"].site, t["bh-b"].municipality) == ("noc", "arauca")  # two hops up, defined later
    # ap-sar's first parent chain reaches a site first (bh-b -> bh-a -> core/noc)
    assert t["ap-sar"].parents == ("bh-b", "core-2")
    assert (t["ap-sar"].site, t["ap-sar"].municipality) == ("noc", "arauca")
    assert (t["cpe-1"].site, t["cpe-1"].municipality) == ("noc", "arauca")
    # an own municipality without a site wins over the parent's, and endpoints below inherit it
    assert (t["sw-muni"].site, t["sw-muni"].municipality, t["sw-muni"].address) == ("noc", "saravena", "::1")
    assert t["cpe-3"].municipality == "saravena"
    assert list(t)[:2] == ["ap-sar", "core"]  # file order kept


def test_redundant_parent_without_site_falls_back_to_next_parent(folder: Path) -> None:
    Path("sites.yaml").write_text(TOPOLOGY.replace(
        "  - {id: core, kind: router, address: 127.0.0.1, site: noc}",
        "  - {id: core, kind: router, address: 127.0.0.1}"))
    t = load_inventory("sites.yaml", env={}).targets
    assert (t["bh-b"].site, t["bh-b"].municipality) == (None, None)
    assert (t["ap-sar"].site, t["ap-sar"].municipality) == ("twr-sar", "saravena")


def test_polling_layers_merge_global_kind_class_and_own(folder: Path) -> None:
    Path("sites.yaml").write_text(TOPOLOGY)
    inv = load_inventory("sites.yaml", env={})
    t = inv.targets
    assert inv.polling.interval == 30 and inv.polling.up_after == 4
    core = t["core"].polling
    assert (core.interval, core.up_after, core.down_after, core.thresholds.rtt_ms) == (30, 4, 3, 100)
    ap = t["ap-sar"].polling  # kind layer, then its own: thresholds merge key by key, null disables
    assert (ap.interval, ap.thresholds.rtt_ms, ap.thresholds.jitter_ms, ap.thresholds.signal_dbm_min) == (
        20, 80, 20, None)
    assert ap.thresholds.loss_pct == 20.0  # model default survives every layer
    core2 = t["core-2"].polling
    assert (core2.interval, core2.icmp_count, core2.up_after) == (10, 5, 4)
    cpe1, cpe2, cpe3 = t["cpe-1"].polling, t["cpe-2"].polling, t["cpe-3"].polling
    assert (cpe1.interval, cpe1.down_after) == (45, 2)  # class beats kind
    assert (cpe2.interval, cpe2.down_after) == (120, 2)  # own beats class
    assert cpe3.interval == 90  # residencial has no polling layer: the kind's applies


def test_same_address_in_another_spelling_is_a_duplicate(folder: Path) -> None:
    text = BASE.replace("127.0.0.2", "'::1'").replace("127.0.0.3", "'0:0:0:0:0:0:0:1'")
    assert problems_of(text) == [
        "sites.yaml:13: nodes[2].address: duplicate address ::1 (already used by ap-1 at sites.yaml:12)"]


def test_correlation_and_maintenance_sections(folder: Path) -> None:
    text = BASE.replace("customers:\n", "correlation: {K: 5, P: 40, W: 3m, vantage: [core]}\nmaintenance:\n"
                        "  - {node: ap-1, start: 2026-11-01T02:00:00-05:00, end: '2026-11-01T09:00:00Z',"
                        " reason: cambio de radio}\ncustomers:\n", 1)
    Path("sites.yaml").write_text(text, encoding="utf-8")
    inv = load_inventory("sites.yaml", env=ENV)
    # parsed and typed at load time, by field name (K, P, W are aliases): nothing parses the text again
    assert dict(inv.correlation.values) == {"min_endpoints": 5, "min_share": 40.0, "window": 180.0,
                                            "vantage": ("core",)}
    (window,) = inv.maintenance
    assert (window.node, window.end - window.start, window.reason) == ("ap-1", 2 * 3600, "cambio de radio")


def test_durations_accept_units(folder: Path) -> None:
    Path("sites.yaml").write_text(BASE.replace(
        "customers:\n", "polling: {interval: 2m, icmp_timeout: 500ms, icmp_spacing: 0}\n"
        "timeseries: {kind: influxdb1, url: 'http://127.0.0.1:8086/', database: m, flush_interval: 1.5s}\n"
        "customers:\n"))
    inv = load_inventory("sites.yaml", env=ENV)
    assert (inv.polling.interval, inv.polling.icmp_timeout, inv.polling.icmp_spacing) == (120, 0.5, 0)
    ts = inv.timeseries
    assert (ts.kind, ts.url, ts.database, ts.flush_interval) == ("influxdb1", "http://127.0.0.1:8086", "m", 1.5)


def test_anchors_and_merge_keys_work(folder: Path) -> None:
    Path("sites.yaml").write_text(BASE.replace(
        "{id: core, kind: router, address: 127.0.0.1, site: twr-centro, snmp: {profile: routeros, credentials: v2}}",
        "{id: core, kind: router, address: 127.0.0.1, site: twr-centro, snmp: &rb {profile: routeros, credentials: v2}}"
    ).replace("{id: ap-2, kind: ap, address: 127.0.0.3, parent: core}",
              "{id: ap-2, kind: ap, address: 127.0.0.3, parent: core, snmp: {<<: *rb, port: 1161}}"))
    snmp = load_inventory("sites.yaml", env=ENV).targets["ap-2"].snmp
    assert snmp is not None and (snmp.profile, snmp.port, snmp.credentials.name) == ("routeros", 1161, "v2")
