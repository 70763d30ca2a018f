"""Judge one poll's probe results against the target's thresholds (pure).

Reachability comes from ICMP when the target is pinged (the network's own answer), else from SNMP.
An SNMP failure on a target that answers pings is not an outage: the daemon tracks it separately.

Signal and optical thresholds apply to the device's *own* link only: metrics labelled per peer or
per ONU (an AP's registration table, an OLT's ONU table) describe other devices, and one weak
subscriber must not mark the whole AP or OLT degraded.
"""

from __future__ import annotations

from monitor.inventory.model import Target, Thresholds
from monitor.probes.base import IcmpResult, Metric, SnmpResult
from monitor.state import Observation

_OTHER_DEVICE_LABELS = frozenset({"peer", "onu"})


#: What nearly every poll shows; one shared object instead of a new one per poll.
HEALTHY = Observation(reachable=True)


def assess(target: Target, icmp: IcmpResult | None, snmp: SnmpResult | None) -> Observation:
    th = target.polling.thresholds
    if snmp is None and icmp is not None and icmp.received and _icmp_within(icmp, th):
        return HEALTHY  # the common case, without building a list of reasons
    if icmp is not None:
        if not icmp.ok:
            return Observation(reachable=False, detail=icmp.error or "no reply")
    elif snmp is not None and not snmp.ok:
        return Observation(reachable=False, detail=f"snmp {snmp.error or 'failed'}")

    reasons: list[str] = []
    if icmp is not None:
        reasons.extend(_icmp_reasons(icmp, th))
    if snmp is not None and snmp.ok:
        reasons.extend(_snmp_reasons(snmp.metrics, th))
    return Observation(reachable=True, degraded_reasons=tuple(reasons))


def _icmp_within(r: IcmpResult, th: Thresholds) -> bool:
    """True when :func:`_icmp_reasons` would find nothing (checked without building strings)."""
    return (
        (th.loss_pct is None or r.loss_pct <= th.loss_pct)
        and (th.rtt_ms is None or r.rtt_avg_ms is None or r.rtt_avg_ms <= th.rtt_ms)
        and (th.jitter_ms is None or r.jitter_ms is None or r.jitter_ms <= th.jitter_ms)
    )


def _icmp_reasons(r: IcmpResult, th: Thresholds) -> list[str]:
    out = []
    if th.loss_pct is not None and r.loss_pct > th.loss_pct:
        out.append(f"loss {r.loss_pct:.0f}% > {th.loss_pct:g}%")
    if th.rtt_ms is not None and r.rtt_avg_ms is not None and r.rtt_avg_ms > th.rtt_ms:
        out.append(f"rtt {r.rtt_avg_ms:.1f}ms > {th.rtt_ms:g}ms")
    if th.jitter_ms is not None and r.jitter_ms is not None and r.jitter_ms > th.jitter_ms:
        out.append(f"jitter {r.jitter_ms:.1f}ms > {th.jitter_ms:g}ms")
    return out


def _own(metrics: tuple[Metric, ...], name: str) -> list[float]:
    return [
        m.value for m in metrics
        if m.name == name and not any(k in _OTHER_DEVICE_LABELS for k, _ in m.labels)
    ]


def _snmp_reasons(metrics: tuple[Metric, ...], th: Thresholds) -> list[str]:
    out = []
    signal = _own(metrics, "wireless_signal_dbm")
    if th.signal_dbm_min is not None and signal and min(signal) < th.signal_dbm_min:
        out.append(f"signal {min(signal):g}dBm < {th.signal_dbm_min:g}dBm")
    optical = _own(metrics, "optical_rx_dbm")
    if optical:
        if th.optical_rx_dbm_min is not None and min(optical) < th.optical_rx_dbm_min:
            out.append(f"optical rx {min(optical):g}dBm < {th.optical_rx_dbm_min:g}dBm")
        if th.optical_rx_dbm_max is not None and max(optical) > th.optical_rx_dbm_max:
            out.append(f"optical rx {max(optical):g}dBm > {th.optical_rx_dbm_max:g}dBm")
    return out
