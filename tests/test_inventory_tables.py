"""Endpoints without an address: known by their parent's subscriber table (ONU serial/index, station MAC).

Every mistake is a config error at its file:line with the exact message: a value that can never
match a row of that vendor's table would otherwise be an endpoint DOWN forever.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory, summarize

BASE = """\
service_classes:
  residencial: {response_hours: 24, availability_target: 98.0}
credentials:
  v2: {version: 2c, community: {env: SNMP_COMMUNITY}}
nodes:
  - {id: olt-1, kind: olt, address: 127.0.0.1, snmp: {profile: generic, credentials: v2, table: huawei-olt}}
  - {id: ap-1, kind: ap, address: 127.0.0.2, snmp: {profile: generic, credentials: v2, table: routeros-wireless}}
  - {id: sw-1, kind: switch, address: 127.0.0.3}
customers:
  - id: C-1
    name: Uno
    service_class: residencial
    endpoints:
      - {id: onu-1, kind: onu, parent: olt-1, onu_serial: HWTC1F14CAAD}
      - {id: onu-2, kind: onu, parent: olt-1, onu_index: "4194304000.1", address: 127.0.1.2}
      - {id: cpe-1, kind: cpe, parent: ap-1, station_mac: 00-27-10-32-ED-60}
"""


@pytest.fixture(autouse=True)
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(os.environ, "SNMP_COMMUNITY", "sup3rs3cret")
    return tmp_path


def problems_of(text: str) -> list[str]:
    Path("sites.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_inventory(Path("sites.yaml"))
    return info.value.problems


def edited(old: str, new: str) -> str:
    assert BASE.count(old) == 1
    return BASE.replace(old, new)


def test_endpoints_without_address_carry_their_canonical_table_key() -> None:
    Path("sites.yaml").write_text(BASE, encoding="utf-8")
    inv = load_inventory(Path("sites.yaml"))
    onu1, onu2, cpe1 = (inv.targets[t] for t in ("onu-1", "onu-2", "cpe-1"))
    assert (onu1.address, onu1.table_key, onu1.parents) == ("", ("onu_serial", "HWTC1F14CAAD"), ("olt-1",))
    assert (onu2.address, onu2.table_key) == ("127.0.1.2", ("onu_index", "4194304000.1"))
    assert cpe1.table_key == ("station_mac", "00:27:10:32:ed:60")
    assert inv.targets["olt-1"].snmp is not None and inv.targets["olt-1"].snmp.table == "huawei-olt"
    assert ("subscriber tables: 2 parents (huawei-olt 1, routeros-wireless 1), 3 endpoints identified in them, "
            "2 of those without an address") in summarize(inv).splitlines()


@pytest.mark.parametrize(("old", "new", "message"), [
    ("onu_serial: HWTC1F14CAAD}", "}",
     "sites.yaml:14: customers[0].endpoints[0]: missing required key 'address' (or one of onu_serial, onu_index, "
     "station_mac, station_index: what its parent's subscriber table knows it by)"),
    ("onu_serial: HWTC1F14CAAD", "onu_serial: HWTC-1F14",
     "sites.yaml:14: customers[0].endpoints[0].onu_serial: 'HWTC-1F14' is not a onu_serial of Huawei SmartAX "
     "MA5600T / MA5800 (GPON) (expected like HWTC1F14CAAD)"),
    ("parent: ap-1, station_mac: 00-27-10-32-ED-60", "parent: ap-1, station_mac: 00-27-10-32-ED",
     "sites.yaml:16: customers[0].endpoints[2].station_mac: '00-27-10-32-ED' is not a station_mac of MikroTik "
     "RouterOS wireless AP (registration table) (expected like c4:ad:34:01:02:03)"),
    ("parent: ap-1, station_mac: 00-27-10-32-ED-60", "parent: ap-1, onu_serial: HWTC1F14CAAE",
     "sites.yaml:16: customers[0].endpoints[2].onu_serial: table profile 'routeros-wireless' (MikroTik RouterOS "
     "wireless AP (registration table)) has no onu_serial (it identifies stations by station_mac)"),
    ("parent: olt-1, onu_serial: HWTC1F14CAAD", "parent: sw-1, onu_serial: HWTC1F14CAAD",
     "sites.yaml:14: customers[0].endpoints[0].onu_serial: onu_serial needs a parent whose snmp section names "
     "a table profile (node 'sw-1' has no snmp.table)"),
    ("onu_index: \"4194304000.1\"", "onu_index: \"4194304000.1\", onu_serial: HWTC1F14CAAF",
     "sites.yaml:15: customers[0].endpoints[1].onu_index: give one of onu_serial, onu_index, not several"),
    ("onu_index: \"4194304000.1\"", "onu_serial: 485754431f14caad",
     "sites.yaml:15: customers[0].endpoints[1].onu_serial: onu_serial 'HWTC1F14CAAD' under 'olt-1' is already "
     "endpoint 'onu-1' (at sites.yaml:14)"),
    ("onu_index: \"4194304000.1\"", "onu_index: 4194304000.1",
     "sites.yaml:15: customers[0].endpoints[1].onu_index: expected a string, got a number "
     "(quote it: 1.10 read as a number would become 1.1)"),
    ("table: huawei-olt", "table: huawei",
     "sites.yaml:6: nodes[0].snmp.table: unknown table profile 'huawei' (expected one of: af-ltu-stations, "
     "airos-stations, cambium-pmp-stations, epmp-stations, huawei-olt, routeros-wireless, ufiber-olt, vsol-olt, "
     "zte-olt)"),
])
def test_table_key_mistakes_are_reported_where_they_are(old: str, new: str, message: str) -> None:
    assert message in problems_of(edited(old, new))
