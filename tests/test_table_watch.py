"""Judging a subscriber-table row (pure): offline with its cause, thresholds, ping and table together."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.inventory.model import Inventory, PollingSettings, Target, Thresholds
from monitor.polling.table_watch import combine, table_observation
from monitor.probes.base import Metric
from monitor.probes.snmp_table import TableOutcome
from monitor.state import Observation

ONU = Target("onu-1", "onu", "endpoint", "", parents=("olt-1",), table_key=("onu_serial", "HWTC1F14CAAD"),
             polling=PollingSettings(thresholds=Thresholds(ccq_pct_min=60.0)))


def test_offline_row_is_down_evidence_with_the_vendors_cause() -> None:
    obs = table_observation(ONU, TableOutcome("onu-1", True, "offline", "dying_gasp"), "olt-1")
    assert obs == Observation(False, detail="offline in olt-1's table, last down cause dying_gasp", cause="dying_gasp")
    gone = table_observation(ONU, TableOutcome("onu-1", False, "offline", "unknown"), "ap-1")
    assert gone == Observation(False, detail="absent from ap-1's table", cause="unknown")


def test_levels_beyond_the_endpoints_thresholds_are_degraded_reasons() -> None:
    metrics = (Metric("onu_rx_dbm", -28.5), Metric("wireless_signal_dbm", -81.0, (("chain", "0"),)),
               Metric("wireless_signal_dbm", -60.0, (("chain", "1"),)), Metric("wireless_ccq_pct", 45.0))
    obs = table_observation(ONU, TableOutcome("onu-1", True, "online", None, metrics), "olt-1")
    assert obs.reachable and obs.degraded_reasons == (
        "onu rx -28.5dBm < -27dBm", "signal -81dBm < -80dBm", "ccq 45% < 60%")
    fine = table_observation(ONU, TableOutcome("onu-1", True, "online", None, (Metric("onu_rx_dbm", -20.0),)), "o")
    assert fine == Observation(True)


def test_table_offline_wins_over_a_ping_and_reasons_add_up() -> None:
    down = Observation(False, detail="offline in olt-1's table, last down cause los", cause="los")
    assert combine(Observation(True), down) == down
    assert combine(Observation(False, detail="timeout"), Observation(True)) == Observation(False, detail="timeout")
    both = combine(Observation(True, ("loss 30% > 20%",)), Observation(True, ("onu rx -28dBm < -27dBm",)))
    assert both == Observation(True, ("loss 30% > 20%", "onu rx -28dBm < -27dBm"))


def _olt_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoints: str) -> Inventory:
    """One Huawei OLT walking its ONU table, with ``endpoints`` (YAML list items) under one customer."""
    from monitor.inventory.loader import load_inventory

    monkeypatch.setenv("SNMP_COMMUNITY", "x")
    (tmp_path / "sites.yaml").write_text("""
service_classes: {residencial: {response_hours: 24, availability_target: 98.0}}
credentials: {v2: {version: 2c, community: {env: SNMP_COMMUNITY}}}
nodes:
  - {id: olt-1, kind: olt, address: 127.0.0.1, snmp: {profile: generic, credentials: v2, table: huawei-olt}}
customers:
  - id: C-1
    name: Uno
    service_class: residencial
    endpoints:""" + endpoints + "\n")
    return load_inventory(tmp_path / "sites.yaml")


def test_a_failed_walk_is_no_evidence_unless_the_parent_is_unreachable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.polling.table_watch import TableWatch
    from monitor.probes.snmp_table import TableResult

    inv = _olt_inventory(tmp_path, monkeypatch, """
      - {id: onu-1, kind: onu, parent: olt-1, onu_serial: HWTC1F14CAAD}
      - {id: onu-2, kind: onu, parent: olt-1, onu_serial: HWTC1F14CAAE, address: 127.0.1.2}""")
    watch = TableWatch()
    watch.configure(inv)
    failed = TableResult("olt-1", "huawei-olt", False, error="timeout")
    assert watch.fold(inv.targets["olt-1"], failed, 0.0, parent_reachable=True) == []
    [(target, obs, _)] = watch.fold(inv.targets["olt-1"], failed, 0.0, parent_reachable=False)
    assert (target.id, obs) == ("onu-1", Observation(False, detail="parent olt-1 unreachable"))


def test_port_nodes_are_observed_through_their_olts_walks_and_a_moved_onu_is_logged_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A port is UP while its OLT's table walks succeed, DOWN with its ONUs when the OLT answers nothing,
    and an ONU whose row is on another port than its port node is one WARNING (not one per walk)."""
    import logging

    from monitor.polling.table_watch import TableWatch
    from monitor.probes.snmp_table import TableResult, TableRow

    inv = _olt_inventory(tmp_path, monkeypatch, """
      - {id: onu-1, kind: onu, parent: olt-1, onu_serial: HWTC1F14CAAD, pon_port: 0/0/1}""")
    watch = TableWatch()
    watch.configure(inv)
    olt = inv.targets["olt-1"]
    assert [p.id for p in watch.ports["olt-1"]] == ["olt-1:pon-0-0-1"]
    assert [(t.id, o.reachable, o.detail) for t, o, _ in watch.fold(
        olt, TableResult("olt-1", "huawei-olt", False, error="timeout"), 0.0, parent_reachable=False)] == [
        ("olt-1:pon-0-0-1", False, "parent olt-1 unreachable"), ("onu-1", False, "parent olt-1 unreachable")]
    assert watch.fold(olt, TableResult("olt-1", "huawei-olt", False, error="timeout"), 0.0) == []
    moved = TableResult("olt-1", "huawei-olt", True, (TableRow(
        "4194304512.1", (("onu_serial", "HWTC1F14CAAD"),), "online", port="0/0/2"),))
    with caplog.at_level(logging.INFO, logger="monitor.polling.table_watch"):
        for _ in range(3):
            folded = watch.fold(olt, moved, 0.0)
            assert [(t.id, o.reachable) for t, o, _ in folded] == [("olt-1:pon-0-0-1", True), ("onu-1", True)]
        back = TableResult("olt-1", "huawei-olt", True, (TableRow(
            "4194304256.1", (("onu_serial", "HWTC1F14CAAD"),), "online", port="0/0/1"),))
        watch.fold(olt, back, 0.0)
    assert [(r.levelname, r.getMessage(), r.__dict__["kv"]) for r in caplog.records] == [
        ("WARNING", "onu listed on another pon port than configured",
         {"endpoint": "onu-1", "configured": "0/0/1", "table": "0/0/2", "olt": "olt-1"}),
        ("INFO", "onu back on its configured pon port", {"endpoint": "onu-1", "port": "0/0/1"})]
