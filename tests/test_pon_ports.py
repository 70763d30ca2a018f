"""PON ports as topology nodes: derived from the ONUs' identifiers, checked by check-config, rooted by the engine.

An ONU's parent becomes its PON port node (``olt-1:pon-0-1-3``) when its ``onu_index`` encodes the port
(Huawei, ZTE, V-SOL) or the config says ``pon_port``; the correlation engine's existing rules then root
a failure of one port's ONUs at that port, and of several ports at the OLT.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.correlate.engine import Engine
from monitor.correlate.settings import CorrelationSettings
from monitor.correlate.topology import Topology
from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory, summarize
from monitor.inventory.model import Inventory
from monitor.probes.pon_ports import PORT_FORMATS, normalise_port, port_name
from monitor.state import State, StateChange

HW = 4194304000  # Huawei GPON port 0/0/0; + 8192 per slot, + 256 per port


def hw(slot: int, port: int) -> int:
    return HW + slot * 8192 + port * 256


BASE = f"""\
service_classes:
  residencial: {{response_hours: 24, availability_target: 98.0}}
credentials:
  v2: {{version: 2c, community: {{env: SNMP_COMMUNITY}}}}
nodes:
  - {{id: core, kind: router, address: 127.0.0.9}}
  - {{id: olt-1, kind: olt, address: 127.0.0.1, parent: core,
     snmp: {{profile: generic, credentials: v2, table: huawei-olt}}}}
  - {{id: olt-2, kind: olt, address: 127.0.0.2, parent: core,
     snmp: {{profile: generic, credentials: v2, table: ufiber-olt}}}}
  - {{id: ap-1, kind: ap, address: 127.0.0.3, parent: core,
     snmp: {{profile: generic, credentials: v2, table: airos-stations}}}}
customers:
  - id: C-1
    name: Uno
    service_class: residencial
    endpoints:
      - {{id: onu-a, kind: onu, parent: olt-1, onu_index: "{hw(1, 3)}.1"}}
      - {{id: onu-b, kind: onu, parent: olt-1, onu_serial: HWTC00000002, pon_port: 0/1/3}}
      - {{id: onu-c, kind: onu, parent: olt-1, onu_serial: HWTC00000003}}
      - {{id: onu-d, kind: onu, parent: olt-2, onu_serial: UBNT20731888, pon_port: 3}}
      - {{id: cpe-1, kind: cpe, parent: ap-1, station_mac: "24:a4:3c:01:02:03"}}
"""


@pytest.fixture(autouse=True)
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(os.environ, "SNMP_COMMUNITY", "sup3rs3cret")
    return tmp_path


def load(text: str) -> Inventory:
    Path("sites.yaml").write_text(text, encoding="utf-8")
    return load_inventory(Path("sites.yaml"))


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value.problems


def edited(old: str, new: str) -> str:
    assert BASE.count(old) == 1
    return BASE.replace(old, new)


def test_onus_hang_from_port_nodes_derived_from_their_index_or_pon_port() -> None:
    inv = load(BASE)
    port = inv.targets["olt-1:pon-0-1-3"]
    assert (port.kind, port.role, port.address, port.parents, port.pon_port, port.name) == (
        "pon_port", "node", "", ("olt-1",), "0/1/3", "olt-1 PON 0/1/3")
    assert port.polling == inv.targets["olt-1"].polling
    assert inv.targets["onu-a"].parents == ("olt-1:pon-0-1-3",)  # from the index
    assert inv.targets["onu-b"].parents == ("olt-1:pon-0-1-3",)  # from pon_port
    assert inv.targets["onu-c"].parents == ("olt-1",)  # a serial alone says no port
    assert inv.targets["onu-d"].parents == ("olt-2:pon-3",)  # UFiber: the port is a column, so pon_port
    assert inv.targets["cpe-1"].parents == ("ap-1",)
    ids = list(inv.targets)
    assert ids.index("olt-2:pon-3") < ids.index("onu-a")  # nodes first, then ports, then endpoints
    assert ("PON ports: 2 port nodes under 2 OLTs, 3 ONUs placed under their port, 1 directly under their OLT "
            "(serial alone: pon_port places them)") in summarize(inv).splitlines()
    topo = Topology.from_inventory(inv)
    assert topo.ancestors["onu-a"] == ("olt-1:pon-0-1-3", "olt-1", "core")
    assert topo.endpoints_below["olt-1"] == 3 and topo.endpoints_below["olt-1:pon-0-1-3"] == 2


@pytest.mark.parametrize(("old", "new", "message"), [
    ("pon_port: 0/1/3}", "pon_port: 0-1-3}",
     "sites.yaml:19: customers[0].endpoints[1].pon_port: expected a PON port written frame/slot/port, got '0-1-3' "
     "(like 0/1/3 on Huawei SmartAX MA5600T / MA5800 (GPON))"),
    ("onu_serial: HWTC00000002, pon_port: 0/1/3}", f"onu_index: \"{hw(1, 4)}.2\", pon_port: 0/1/3}}",
     f"sites.yaml:19: customers[0].endpoints[1].pon_port: PON port 0/1/3 contradicts onu_index {hw(1, 4)}.2, "
     "which is on PON port 0/1/4"),
    ("pon_port: 3}", "pon_port: 0/3}",
     "sites.yaml:21: customers[0].endpoints[3].pon_port: expected a PON port written port number, got '0/3' "
     "(like 3 on Ubiquiti UFiber OLT (GPON))"),
    ('station_mac: "24:a4:3c:01:02:03"}', 'station_mac: "24:a4:3c:01:02:03", pon_port: 1}',
     "sites.yaml:22: customers[0].endpoints[4].pon_port: table profile 'airos-stations' (Ubiquiti airMAX AP "
     "(station table)) does not say which PON port a row is on"),
    ("{id: cpe-1, kind: cpe, parent: ap-1, station_mac: \"24:a4:3c:01:02:03\"}",
     "{id: cpe-1, kind: cpe, parent: ap-1, address: 127.0.1.1, pon_port: 1}",
     "sites.yaml:22: customers[0].endpoints[4].pon_port: pon_port needs onu_serial or onu_index (the ONU as its "
     "OLT's table lists it)"),
    ("pon_port: 3}", "pon_port: [3]}",
     "sites.yaml:21: customers[0].endpoints[3].pon_port: expected a PON port like 0/1/3 or 3, got a list"),
    ("  - {id: core, kind: router, address: 127.0.0.9}",
     "  - {id: core, kind: router, address: 127.0.0.9}\n  - {id: \"olt-2:pon-3\", kind: switch, address: 127.0.0.8}",
     "sites.yaml:22: customers[0].endpoints[3].pon_port: its PON port node would be 'olt-2:pon-3', which is "
     "already the id of a target (at sites.yaml:7): rename that one"),
])
def test_pon_port_mistakes_are_reported_where_they_are(old: str, new: str, message: str) -> None:
    assert message in problems_of(edited(old, new))


@given(st.sampled_from(sorted(PORT_FORMATS)), st.integers(min_value=-2**40, max_value=2**40))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_port_names_read_back_as_configured(fmt: str, raw: int) -> None:
    """Any number gives a name or None (never an exception), and a name is accepted as written in the config."""
    name = port_name(fmt, raw)
    if name is not None:
        assert normalise_port(fmt, name) == name


@given(st.sampled_from(sorted(PORT_FORMATS)), st.text(max_size=80))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_hostile_pon_port_values_are_a_clear_error(fmt: str, text: str) -> None:
    try:
        port = normalise_port(fmt, text)
    except ValueError as exc:
        assert "expected a PON port written" in str(exc) and len(str(exc)) < 200
    else:
        assert all(p.isdigit() for p in port.split("/"))


def test_vendor_port_numbers() -> None:
    assert [port_name("huawei-gpon-ifindex", n) for n in (HW, hw(0, 1), hw(1, 0), hw(2, 15), HW + (1 << 19))] == [
        "0/0/0", "0/0/1", "0/1/0", "0/2/15", "1/0/0"]
    assert port_name("huawei-gpon-ifindex", 12) is None  # not a GPON port ifIndex
    # ZTE: 268501248 = gpon-olt_1/1/1 (the recording's ONU rows run 1/1/1 .. 1/1/8)
    assert [port_name("zte-gpon-index", n) for n in (268501248, 268501760, 268503040, 268566784)] == [
        "1/1/1", "1/1/3", "1/1/8", "1/2/1"]
    assert port_name("number", 3) == "3"


# -- the engine's existing rules, once the topology has the port level --------------------------------------

def fibre(ports: int, onus: int) -> str:
    lines = [
        "service_classes:\n  residencial: {response_hours: 24, availability_target: 98.0}",
        "credentials:\n  v2: {version: 2c, community: {env: SNMP_COMMUNITY}}",
        "nodes:\n  - {id: core, kind: router, address: 127.0.0.9}",
        "  - {id: olt-1, kind: olt, address: 127.0.0.1, parent: core, "
        "snmp: {profile: generic, credentials: v2, table: huawei-olt}}",
        "customers:\n  - id: C-1\n    name: Uno\n    service_class: residencial\n    endpoints:",
    ]
    for p in range(ports):
        for o in range(onus):
            lines.append(f'      - {{id: onu-{p}-{o}, kind: onu, parent: olt-1, onu_index: "{hw(0, p)}.{o}"}}')
    return "\n".join(lines) + "\n"


def down(tids: list[str], ts: float) -> list[StateChange]:
    return [StateChange(t, State.UP, State.DOWN, ts, "2 consecutive failed polls: offline in olt-1's table, "
                        "last down cause los", cause="los") for t in tids]


def roots(inv: Inventory, changes: list[StateChange], until: float) -> list[tuple[str, str, str, int]]:
    engine = Engine(Topology.from_inventory(inv), CorrelationSettings.for_interval(60))
    events = engine.on_state_changes(changes) + engine.tick(until)
    return [(e.event, e.kind, e.root, len(e.affected_endpoints)) for e in events]


def test_one_ports_onus_failing_are_rooted_at_that_port() -> None:
    inv = load(fibre(4, 4))
    assert roots(inv, down([f"onu-1-{o}" for o in range(4)], 100.0), 400.0) == [
        ("opened", "outage", "olt-1:pon-0-0-1", 4)]  # LOS on them all: a fibre cut at the port (rule 13)


def test_several_ports_failing_are_rooted_at_the_olt() -> None:
    inv = load(fibre(3, 4))
    failed = [f"onu-{p}-{o}" for p in (0, 1) for o in range(4)]
    assert roots(inv, down(failed, 100.0), 400.0) == [("opened", "outage", "olt-1", 8)]  # LOS: a fibre cut


def test_an_unreachable_olt_takes_its_ports_and_onus_into_one_outage() -> None:
    inv = load(fibre(2, 3))
    olt = [StateChange("olt-1", State.UP, State.DOWN, 100.0, "no reply")]
    ports = [StateChange(p, State.UP, State.DOWN, 100.0, "parent olt-1 unreachable")
             for p in ("olt-1:pon-0-0-0", "olt-1:pon-0-0-1")]
    onus = [StateChange(f"onu-{p}-{o}", State.UP, State.DOWN, 100.0, "parent olt-1 unreachable")
            for p in range(2) for o in range(3)]
    assert roots(inv, olt + ports + onus, 400.0) == [("opened", "outage", "olt-1", 6)]


def test_a_port_rooted_incident_goes_to_the_technicians_on_call_for_olts() -> None:
    """On-call rules name node kinds (``kinds: [olt]`` for the fibre crew); a port node is routed as its OLT
    is, or the fibre crew would no longer hear of a fibre cut once it is rooted at the port."""
    from monitor.delivery.planner import Context

    delivery = """
delivery:
  timezone: America/Bogota
  technicians: [{id: fibra, name: Fibra, email: fibra@isp.example}, {id: noc, name: NOC, email: noc@isp.example}]
  oncall:
    - {municipality: "*", kinds: [olt], shifts: [{days: [mon-sun], tiers: [fibra]}]}
    - {municipality: "*", shifts: [{days: [mon-sun], tiers: [noc]}]}
"""
    inv = load(fibre(1, 3) + delivery.replace("\ndelivery:", "delivery:", 1))
    assert inv.delivery is not None
    ctx = Context(inv, inv.delivery)
    assert ctx.oncall("olt-1:pon-0-0-0", 1_795_000_000.0) == ("fibra",)
    assert ctx.oncall("olt-1", 1_795_000_000.0) == ("fibra",)
    assert ctx.oncall("core", 1_795_000_000.0) == ("noc",)


def test_a_port_node_is_in_its_olts_remote_poller_zone() -> None:
    """Ports are observed through their OLT's walks, so they belong to the zone whose poller walks it, even
    when the OLT is claimed by node id in another zone than its site's."""
    text = fibre(1, 3).replace("address: 127.0.0.1, parent: core,", "address: 127.0.0.1, parent: core, site: s1,")
    places = "municipalities: [{id: m1, name: Uno}]\nsites: [{id: s1, municipality: m1, name: S}]\n"
    text = text.replace("nodes:\n", places + "nodes:\n", 1)
    text += """pollers:
  brokers: [{host: 127.0.0.1}]
  zones:
    - {id: town, sites: [s1], nodes: [core]}
    - {id: fibre, nodes: [olt-1], pollers: [p-f]}
"""
    inv = load(text)
    assert inv.pollers is not None
    assert inv.pollers.zone_of["olt-1"] == "fibre" and inv.pollers.zone_of["olt-1:pon-0-0-0"] == "fibre"
