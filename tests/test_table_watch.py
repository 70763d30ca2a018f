"""Judging a subscriber-table row (pure): offline with its cause, thresholds, ping and table together."""

from __future__ import annotations

from monitor.inventory.model import PollingSettings, Target, Thresholds
from monitor.probes.base import Metric
from monitor.probes.snmp_table import TableOutcome
from monitor.state import Observation
from monitor.table_watch import combine, table_observation

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
