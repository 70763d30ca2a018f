"""Judging a subscriber-table row (pure): offline with its cause, thresholds, ping and table together."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.inventory.model import PollingSettings, Target, Thresholds
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


def test_a_failed_walk_is_no_evidence_unless_the_parent_is_unreachable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.inventory.loader import load_inventory
    from monitor.polling.table_watch import TableWatch
    from monitor.probes.snmp_table import TableResult

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
    endpoints:
      - {id: onu-1, kind: onu, parent: olt-1, onu_serial: HWTC1F14CAAD}
      - {id: onu-2, kind: onu, parent: olt-1, onu_serial: HWTC1F14CAAE, address: 127.0.1.2}
""")
    inv = load_inventory(tmp_path / "sites.yaml")
    watch = TableWatch()
    watch.configure(inv)
    failed = TableResult("olt-1", "huawei-olt", False, error="timeout")
    assert watch.fold(inv.targets["olt-1"], failed, 0.0, parent_reachable=True) == []
    [(target, obs, _)] = watch.fold(inv.targets["olt-1"], failed, 0.0, parent_reachable=False)
    assert (target.id, obs) == ("onu-1", Observation(False, detail="parent olt-1 unreachable"))
