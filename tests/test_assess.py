"""Judging probe results against thresholds."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.inventory.model import PollingSettings, Target, Thresholds
from monitor.polling.assess import _icmp_reasons, assess
from monitor.probes.base import IcmpResult, Metric, SnmpResult

T = Target(id="ap-1", kind="ap", role="node", address="127.0.0.2")


def icmp(received: int = 3, avg: float = 1.0, jitter: float = 0.1, error: str | None = None) -> IcmpResult:
    if received == 0:
        return IcmpResult("ap-1", "127.0.0.2", 3, 0, error=error or "timeout")
    return IcmpResult("ap-1", "127.0.0.2", 3, received, 0.5, avg, 2 * avg, jitter)


def snmp(*metrics: Metric, ok: bool = True, error: str | None = None) -> SnmpResult:
    return SnmpResult("ap-1", "127.0.0.2", ok, 100.0, metrics=tuple(metrics), error=error)


def test_no_reply_is_unreachable_with_the_probe_reason() -> None:
    obs = assess(T, icmp(0, error="unreachable"), None)
    assert not obs.reachable and obs.detail == "unreachable"


def test_icmp_decides_reachability_even_when_snmp_fails() -> None:
    obs = assess(T, icmp(), snmp(ok=False, error="timeout"))
    assert obs.reachable and obs.degraded_reasons == ()


def test_snmp_alone_decides_when_there_is_no_icmp() -> None:
    assert not assess(T, None, snmp(ok=False, error="timeout")).reachable
    assert assess(T, None, snmp()).reachable


def test_loss_latency_and_jitter_thresholds() -> None:
    t = replace(T, polling=PollingSettings(thresholds=Thresholds(loss_pct=20, rtt_ms=100, jitter_ms=10)))
    assert assess(t, icmp(received=2), None).degraded_reasons == ("loss 33% > 20%",)
    assert assess(t, icmp(avg=150.0), None).degraded_reasons == ("rtt 150.0ms > 100ms",)
    assert assess(t, icmp(jitter=12.5), None).degraded_reasons == ("jitter 12.5ms > 10ms",)
    assert assess(t, icmp(), None).degraded_reasons == ()


def test_signal_and_optical_thresholds_apply_to_the_device_own_link_only() -> None:
    weak_own = Metric("wireless_signal_dbm", -85.0)
    weak_client = Metric("wireless_signal_dbm", -90.0, (("peer", "aa:bb"),))
    bad_onu = Metric("onu_rx_dbm", -30.0, (("onu", "UBNT1"),))
    low_sfp = Metric("optical_rx_dbm", -28.5, (("port", "sfp1"),))
    assert assess(T, icmp(), snmp(weak_client, bad_onu)).degraded_reasons == ()
    assert assess(T, icmp(), snmp(weak_own)).degraded_reasons == ("signal -85dBm < -80dBm",)
    assert assess(T, icmp(), snmp(low_sfp)).degraded_reasons == ("optical rx -28.5dBm < -27dBm",)
    hot = Metric("optical_rx_dbm", -6.0)
    assert assess(T, icmp(), snmp(hot)).degraded_reasons == ("optical rx -6dBm > -8dBm",)


def test_disabled_thresholds_never_degrade() -> None:
    off = Thresholds(loss_pct=None, rtt_ms=None, jitter_ms=None, signal_dbm_min=None,
                     optical_rx_dbm_min=None, optical_rx_dbm_max=None)
    t = replace(T, polling=PollingSettings(thresholds=off))
    assert assess(t, icmp(received=1, avg=900), snmp(Metric("wireless_signal_dbm", -95))).degraded_reasons == ()


_LIMIT = st.one_of(st.none(), st.floats(0, 300))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 3), st.floats(0, 400), st.one_of(st.none(), st.floats(0, 100)), _LIMIT, _LIMIT, _LIMIT)
def test_the_shortcut_for_healthy_replies_agrees_with_the_reasons(
        received: int, avg: float, jitter: float | None, loss: float | None, rtt: float | None, jit: float | None
) -> None:
    """assess() answers the common poll without building reasons; the answer is the same."""
    t = replace(T, polling=PollingSettings(thresholds=Thresholds(loss_pct=loss, rtt_ms=rtt, jitter_ms=jit)))
    r = replace(icmp(received, avg), jitter_ms=jitter)
    obs = assess(t, r, None)
    assert obs.reachable and obs.degraded_reasons == tuple(_icmp_reasons(r, t.polling.thresholds))
