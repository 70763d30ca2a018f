"""The pollers: section (issue 14): absent is today's single daemon; each target lands in one zone by its
node, site or municipality; each kind of mistake is named with its place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.errors import ConfigError
from monitor.inventory.fields import ID_HINT
from monitor.inventory.loader import load_inventory
from monitor.inventory.pollers import PollersSettings
from monitor.polling.table_watch import TableWatch
from monitor.remote.poller import zone_inventory

BASE = """
municipalities: [{id: arauca, name: Arauca}, {id: saravena, name: Saravena}, {id: tame, name: Tame}]
sites:
  - {id: noc, municipality: arauca, name: NOC}
  - {id: twr-s, municipality: saravena, name: Torre Saravena}
  - {id: twr-t, municipality: tame, name: Torre Tame}
service_classes:
  residencial: {response_hours: 24, availability_target: 98.0}
nodes:
  - {id: core, kind: router, address: 127.0.0.1, site: noc}
  - {id: bh-s, kind: backhaul, address: 127.0.0.2, parent: core, site: noc}
  - {id: ap-s, kind: ap, address: 127.0.0.3, parent: bh-s, site: twr-s}
  - {id: ap-t, kind: ap, address: 127.0.0.4, parent: core, site: twr-t}
customers:
  - id: C1
    name: Uno
    service_class: residencial
    endpoints: [{id: cpe-s, kind: cpe, address: 127.0.0.5, parent: ap-s}]
  - id: C2
    name: Dos
    service_class: residencial
    endpoints: [{id: cpe-t, kind: cpe, address: 127.0.0.6, parent: ap-t}]
"""

GOOD: dict[str, list[dict[str, Any]]] = {
    "brokers": [{"host": "127.0.0.1", "port": 1883, "username": "core", "password": {"env": "MQTT_CORE"}},
                {"host": "127.0.0.2"}],
    "zones": [
        {"id": "noc", "municipalities": ["arauca"]},
        {"id": "saravena", "municipalities": ["saravena"], "pollers": ["p-s1", "p-s2"]},
        {"id": "tame", "sites": ["twr-t"], "nodes": ["bh-s"], "pollers": ["p-t"]},
    ],
}


def load_with(tmp_path: Path, section: Any) -> PollersSettings | None:
    doc = yaml.safe_load(BASE)
    if section is not None:
        doc["pollers"] = section
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return load_inventory(path, env={"MQTT_CORE": "s3cret"}).pollers


def test_absent_is_the_single_daemon(tmp_path: Path) -> None:
    assert load_with(tmp_path, None) is None


def test_each_target_lands_in_one_zone_by_node_then_site_then_municipality(tmp_path: Path) -> None:
    p = load_with(tmp_path, GOOD)
    assert p is not None
    assert p.zone_of == {"core": "noc", "bh-s": "tame", "ap-s": "saravena", "ap-t": "tame", "cpe-s": "saravena",
                         "cpe-t": "tame"}
    assert p.poller_zones() == {"p-s1": "saravena", "p-s2": "saravena", "p-t": "tame"}
    assert [p.remote(t) for t in ("core", "ap-s", "cpe-t")] == [False, True, True]
    assert [(b.host, b.port, b.username) for b in p.brokers] == [("127.0.0.1", 1883, "core"), ("127.0.0.2", 1883, None)]
    assert p.brokers[0].password is not None and p.brokers[0].password.reveal() == "s3cret"
    assert "s3cret" not in repr(p)
    assert p.prefix == "monitor/pollers"
    assert (p.heartbeat, p.silent_after) == (10.0, 60.0)
    assert p.zone_pollers() == {"saravena": ("p-s1", "p-s2"), "tame": ("p-t",)}
    timed = load_with(tmp_path, {**GOOD, "heartbeat": "2s", "silent_after": "1m"})
    assert timed is not None and (timed.heartbeat, timed.silent_after) == (2.0, 60.0)


def zones(*extra: dict[str, Any], base: bool = True) -> dict[str, Any]:
    z = list(GOOD["zones"]) if base else []
    return {"brokers": [{"host": "127.0.0.1"}], "zones": z + list(extra)}


@pytest.mark.parametrize(("section", "message"), [
    ({"zones": []}, "pollers: missing required key 'brokers'"),
    ({"brokers": [], "zones": GOOD["zones"]}, "pollers.brokers: expected at least one broker"),
    ({"brokers": [{"host": "mqtt broker"}], "zones": GOOD["zones"]}, "pollers.brokers[0].host: bad broker host"),
    ({"brokers": [{"host": "h", "port": 70000}], "zones": GOOD["zones"]}, "pollers.brokers[0].port: must be"),
    ({"brokers": [{"host": "h", "password": "x"}], "zones": GOOD["zones"]},
     "pollers.brokers[0].password: a broker password needs a username"),
    ({**zones(), "prefix": "monitor/#"}, "pollers.prefix: bad MQTT topic prefix 'monitor/#'"),
    ({**zones(), "colour": 1}, "pollers: unknown key 'colour'"),
    ({**zones(), "heartbeat": "10s", "silent_after": "15s"},
     "pollers.silent_after: must be at least twice the heartbeat (20s)"),
    ({**zones(), "heartbeat": 0}, "pollers.heartbeat: must be"),
    ({**zones(), "silent_after": ".inf"}, "pollers.silent_after: bad duration"),
    (zones({"id": "x", "municipalities": ["atlantis"]}),
     "pollers.zones[3].municipalities: unknown municipality 'atlantis'"),
    (zones({"id": "x", "sites": ["twr-z"]}), "pollers.zones[3].sites: unknown site 'twr-z'"),
    (zones({"id": "x", "nodes": ["ap-z"]}), "pollers.zones[3].nodes: unknown node 'ap-z'"),
    (zones({"id": "x", "municipalities": ["saravena"]}),
     "pollers.zones[3].municipalities: 'saravena' is already in zone 'saravena'"),
    (zones({"id": "noc", "nodes": ["ap-t"]}), "pollers.zones[3].id: duplicate zone id 'noc'"),
    (zones({"id": "x", "nodes": ["core"], "pollers": ["p-t"]}),
     "pollers.zones[3].pollers: poller 'p-t' already covers zone 'tame' (a poller reports one zone)"),
    (zones({"id": "x", "pollers": ["p-x"]}), "pollers.zones[3]: a zone needs municipalities, sites or nodes"),
    (zones({"id": "x", "nodes": ["core"], "pollers": ["a", "b", "c", "d", "e"]}),
     "pollers.zones[3].pollers: at most 4 pollers per zone, got 5"),
    (zones({"id": "x", "nodes": ["core"], "pollers": ["bad id"]}), "pollers.zones[3].pollers: bad id 'bad id'"),
    (zones({"id": "x", "nodes": "core"}), "pollers.zones[3].nodes: expected a list of ids, got a string"),
    (zones({"id": "saravena", "municipalities": ["saravena"]}, base=False),
     "pollers.zones: 4 target(s) in no zone (core, bh-s, ap-t, cpe-t): name their municipality, site or node"),
])
def test_mistakes_are_named(tmp_path: Path, section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_with(tmp_path, section)
    assert any(message in p for p in err.value.problems), err.value.problems
    assert all("sites.yaml:" in p for p in err.value.problems)


def test_a_poller_reads_the_shared_config_without_the_cores_secrets(tmp_path: Path) -> None:
    """On a poller's machine the core's broker password (and delivery's, the API's) is not there:
    ``monitor poll`` reads the shared config all the same; the core itself still needs it."""
    load_with(tmp_path, GOOD)
    path = tmp_path / "sites.yaml"
    with pytest.raises(ConfigError, match="MQTT_CORE"):
        load_inventory(path, env={})
    p = load_inventory(path, env={}, poller=True).pollers
    assert p is not None and p.brokers[0].password is None and p.zone_of["cpe-s"] == "saravena"


TABLES = """\
municipalities: [{id: arauca, name: Arauca}, {id: saravena, name: Saravena}, {id: tame, name: Tame}]
sites:
  - {id: noc, municipality: arauca, name: NOC}
  - {id: twr-s, municipality: saravena, name: Torre Saravena}
service_classes:
  residencial: {response_hours: 24, availability_target: 98.0}
credentials:
  v2: {version: 2c, community: {env: SNMP_COMMUNITY}}
nodes:
  - {id: core, kind: router, address: 127.0.0.1, site: noc}
  - {id: olt-t, kind: olt, address: 127.0.0.2, parent: core, site: twr-s,
     snmp: {profile: generic, credentials: v2, table: huawei-olt}}
  - {id: ap-t, kind: ap, address: 127.0.0.3, parent: core, site: twr-s,
     snmp: {profile: generic, credentials: v2, table: airos-stations}}
  - {id: sw-s, kind: switch, address: 127.0.0.4, parent: core, site: twr-s}
customers:
  - id: C1
    name: Uno
    service_class: residencial
    endpoints:
      - {id: onu-1, kind: onu, parent: olt-t, onu_serial: HWTC00000001}
      - {id: onu-2, kind: onu, parent: olt-t, onu_index: "4194312960.1"}
      - {id: onu-3, kind: onu, parent: olt-t, onu_serial: HWTC00000003, address: 127.0.0.5}
      - {id: cpe-1, kind: cpe, parent: ap-t, station_mac: "24:a4:3c:01:02:03"}
      - {id: rtr-1, kind: cpe, parent: sw-s, address: 127.0.0.6}
pollers:
  brokers: [{host: 127.0.0.1}]
  zones:
    - {id: noc, municipalities: [arauca]}
    - {id: saravena, municipalities: [saravena], pollers: [p-s]}
    - {id: tame, nodes: [olt-t, ap-t], pollers: [p-t]}
"""
NAMED_LINE = TABLES.count("\n", 0, TABLES.index("    - {id: saravena")) + 1  # the saravena zone's line


def load_tables(tmp_path: Path, text: str = TABLES) -> PollersSettings:
    path = tmp_path / "sites.yaml"
    path.write_text(text, encoding="utf-8")
    p = load_inventory(path, env={"SNMP_COMMUNITY": "c0mmunity"}).pollers
    assert p is not None
    return p


def test_a_table_endpoint_is_in_its_table_parents_zone_not_its_sites(tmp_path: Path) -> None:
    """The OLT and the AP sit at a Saravena tower but are claimed by node id for Tame's poller, the one
    that walks their tables: their ONUs and stations (address-less, through a PON port, or also pinged)
    and the port node go to Tame with them. A plain node and its pinged customer at the same tower keep
    their site's zone."""
    path = tmp_path / "sites.yaml"
    p = load_tables(tmp_path)
    assert {t: p.zone_of[t] for t in ("olt-t", "ap-t", "olt-t:pon-0-1-3", "onu-1", "onu-2", "onu-3", "cpe-1")} == \
        dict.fromkeys(("olt-t", "ap-t", "olt-t:pon-0-1-3", "onu-1", "onu-2", "onu-3", "cpe-1"), "tame")
    assert (p.zone_of["rtr-1"], p.zone_of["sw-s"], p.zone_of["core"]) == ("saravena", "saravena", "noc")
    inv = load_inventory(path, env={"SNMP_COMMUNITY": "c0mmunity"}, poller=True)
    local = zone_inventory(inv, "tame", "p-t")
    watch = TableWatch()
    watch.configure(local)  # what Tame's poller walks: every member of both tables, the port under its OLT
    assert {parent: sorted(k.endpoint for k in keys) for parent, keys in watch.members.items()} == \
        {"olt-t": ["onu-1", "onu-2", "onu-3"], "ap-t": ["cpe-1"]}
    assert [t.id for t in watch.ports["olt-t"]] == ["olt-t:pon-0-1-3"]
    assert "rtr-1" not in zone_inventory(inv, "tame", "p-t").targets
    assert "rtr-1" in zone_inventory(inv, "saravena", "p-s").targets


def test_naming_a_table_endpoint_in_its_parents_zone_is_allowed(tmp_path: Path) -> None:
    text = TABLES.replace("nodes: [olt-t, ap-t]", "nodes: [olt-t, ap-t, onu-1, olt-t:pon-0-1-3, onu-2, cpe-1]")
    assert load_tables(tmp_path, text).zone_of["onu-1"] == "tame"


@pytest.mark.parametrize(("named", "message"), [
    ("onu-1", "'onu-1' is observed through the table of 'olt-t', in zone 'tame', not 'saravena'"),
    ("onu-2", "'onu-2' is observed through the table of 'olt-t', in zone 'tame', not 'saravena'"),
    ("onu-3", "'onu-3' is observed through the table of 'olt-t', in zone 'tame', not 'saravena'"),
    ("olt-t:pon-0-1-3", "'olt-t:pon-0-1-3' is observed through the table of 'olt-t', in zone 'tame', not 'saravena'"),
    ("cpe-1", "'cpe-1' is observed through the table of 'ap-t', in zone 'tame', not 'saravena'"),
])
def test_splitting_a_table_endpoint_from_its_parent_is_refused(tmp_path: Path, named: str, message: str) -> None:
    """Naming an ONU, station or port in another zone than the OLT or AP whose table lists it would leave
    it to a poller that cannot see it (and the core waiting for it from there): refused at its line."""
    text = TABLES.replace("[saravena], pollers", f"[saravena], nodes: [{named}], pollers")
    with pytest.raises(ConfigError) as err:
        load_tables(tmp_path, text)
    assert err.value.problems == [
        f"{tmp_path / 'sites.yaml'}:{NAMED_LINE}: pollers.zones[1].nodes: {message}: name it in zone 'tame' or "
        "not at all (whoever polls that zone walks the table)"]



def test_a_poller_may_declare_the_node_it_sees_its_zone_through(tmp_path: Path) -> None:
    """``vantage: {poller: node}`` (several vantage points, monitor.remote.vantage): a node of the
    poller's own zone, or one the core polls."""
    p = load_with(tmp_path, zones({"id": "x", "nodes": ["core"], "pollers": ["p-x1", "p-x2"],
                                   "vantage": {"p-x1": "core", "p-x2": "bh-s"}}, base=False)
                  | {"zones": [{"id": "saravena", "municipalities": ["saravena", "arauca", "tame"],
                                "pollers": ["p-s1", "p-s2"], "vantage": {"p-s1": "ap-s", "p-s2": "bh-s"}}]})
    assert p is not None and p.vantage_of() == {"p-s1": "ap-s", "p-s2": "bh-s"}
    p = load_with(tmp_path, zones())
    assert p is not None and p.vantage_of() == {} and p.zones["saravena"].vantage == {}
    core_polled = load_with(tmp_path, {"brokers": [{"host": "h"}], "zones": [
        {"id": "noc", "municipalities": ["arauca"]},
        {"id": "saravena", "municipalities": ["saravena", "tame"], "pollers": ["p-s"], "vantage": {"p-s": "core"}}]})
    assert core_polled is not None and core_polled.vantage_of() == {"p-s": "core"}


@pytest.mark.parametrize(("vantage", "message"), [
    ("{p-x: core}", "pollers.zones[2].vantage.p-x: unknown poller 'p-x': the zone's pollers are p-s1, p-s2"),
    ("{p-s1: gw-nowhere}", "pollers.zones[2].vantage.p-s1: vantage node 'gw-nowhere' does not exist"),
    ("{p-s1: ap-t}", "pollers.zones[2].vantage.p-s1: vantage node 'ap-t' is in zone 'tame', which its own "
                     "pollers report: name a node of zone 'saravena' or one the core polls"),
    ("{p-s1: bad id}", f"pollers.zones[2].vantage.p-s1: bad node id 'bad id' ({ID_HINT})"),
    ("[p-s1]", "pollers.zones[2].vantage: expected a mapping, got a list"),
])
def test_vantage_mistakes_are_named_with_their_line(tmp_path: Path, vantage: str, message: str) -> None:
    path = tmp_path / "sites.yaml"
    text = BASE + f"""pollers:
  brokers: [{{host: 127.0.0.1}}]
  zones:
    - {{id: noc, municipalities: [arauca]}}
    - {{id: tame, municipalities: [tame], pollers: [p-t]}}
    - id: saravena
      municipalities: [saravena]
      pollers: [p-s1, p-s2]
      vantage: {vantage}
"""
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_inventory(path, env={})
    line = text.split("\n").index(f"      vantage: {vantage}") + 1
    assert err.value.problems == [f"{path}:{line}: {message}"]
