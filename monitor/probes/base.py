"""The contract every probe kind implements, and the small frozen results they return.

A probe never raises for an ordinary failed poll: a target that does not answer is a *result*
(``ok=False`` with an ``error`` naming why), because failure is data for the state machine. Only
setup problems (no ICMP socket possible, unknown SNMP profile) raise :class:`ProbeSetupError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from monitor.inventory.model import Target


@dataclass(frozen=True, slots=True)
class IcmpResult:
    target: str
    address: str
    sent: int
    received: int
    rtt_min_ms: float | None = None
    rtt_avg_ms: float | None = None
    rtt_max_ms: float | None = None
    jitter_ms: float | None = None  # mean absolute difference of consecutive RTTs (RFC 3550 style)
    error: str | None = None  # why nothing came back, when nothing did

    @property
    def ok(self) -> bool:
        return self.received > 0

    @property
    def loss_pct(self) -> float:
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 100.0


@dataclass(frozen=True, slots=True)
class Metric:
    """One SNMP-derived value, e.g. ``("if_in_bps", 1.2e6, (("ifname", "eth0"),))``.

    ``labels`` are sorted (key, value) pairs that become time-series tags (interface, ONU, peer).
    """

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SnmpResult:
    target: str
    address: str
    ok: bool
    uptime_s: float | None = None
    rebooted: bool = False  # sysUpTime went backwards since the previous poll
    metrics: tuple[Metric, ...] = ()
    error: str | None = None
    duration_s: float = 0.0


ProbeResult = IcmpResult | SnmpResult


class Probe(Protocol):
    """Shared signature of every probe kind.

    ``start`` acquires shared resources (the ICMP raw socket, the SNMP dispatcher) and raises
    :class:`monitor.errors.ProbeSetupError` when the probe cannot work on this machine.
    ``poll`` measures one target and must return before ``timeout`` seconds have passed.
    """

    kind: str

    async def start(self) -> None: ...

    async def poll(self, target: Target, timeout: float) -> ProbeResult: ...

    async def close(self) -> None: ...
