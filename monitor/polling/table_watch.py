"""The daemon's side of subscriber tables: one walk per parent, one observation per endpoint.

An OLT or AP with ``snmp.table`` is walked when it is polled; each endpoint identified in that
table (``onu_serial``, ``station_mac``, ...) gets an observation from its row: DOWN evidence when
the row is offline or missing (with the vendor's last down cause, so correlation can tell a power cut
from a fibre cut), DEGRADED evidence when its optical or radio levels cross the endpoint's thresholds.
Endpoints without an address are observed only this way; endpoints with an address are still pinged
and the latest table view is folded into each of their polls (the table says what the access
network sees, ping whether traffic passes). Judging is pure (:func:`table_observation`,
:func:`combine`); the walk belongs to :class:`monitor.probes.snmp_table.TableProbe`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor.inventory.model import PON_PORT_KIND, Inventory, Target, Thresholds
from monitor.logs import event
from monitor.probes.base import Metric
from monitor.state import Observation

if TYPE_CHECKING:  # the SNMP stack (pysnmp) is imported only when a table is configured
    from monitor.probes.snmp_table import EndpointKey, TableOutcome, TableProbe, TableResult

log = logging.getLogger(__name__)

FRESH_INTERVALS = 2.5  # a table view older than this many parent intervals is not folded into a ping poll


def table_observation(target: Target, outcome: TableOutcome, parent: str) -> Observation:
    """What the parent's table says about one endpoint, judged against the endpoint's thresholds."""
    if outcome.state == "offline":
        if not outcome.present:
            return Observation(False, detail=f"absent from {parent}'s table", cause=outcome.cause)
        return Observation(False, detail=f"offline in {parent}'s table, last down cause {outcome.cause}",
                           cause=outcome.cause)
    return Observation(True, degraded_reasons=tuple(_reasons(outcome.metrics, target.polling.thresholds)))


def combine(own: Observation, table: Observation) -> Observation:
    """An endpoint both pinged and listed: offline in the table wins (with its cause), then no reply."""
    if not table.reachable:
        return table
    if not own.reachable:
        return own
    return Observation(True, degraded_reasons=own.degraded_reasons + table.degraded_reasons)


def _reasons(metrics: tuple[Metric, ...], th: Thresholds) -> list[str]:
    def values(name: str) -> list[float]:
        return [m.value for m in metrics if m.name == name]

    return level_reasons(values("onu_rx_dbm"), values("wireless_signal_dbm"), values("wireless_ccq_pct"), th)


def level_reasons(rx: Sequence[float], signal: Sequence[float], ccq: Sequence[float], th: Thresholds) -> list[str]:
    """A subscriber's optical and radio levels judged against its thresholds, in the words the engine
    groups by (``monitor.correlate.degraded.shows_levels``); ``monitor replay`` judges its ``metrics`` here too."""
    out: list[str] = []
    if rx and th.optical_rx_dbm_min is not None and min(rx) < th.optical_rx_dbm_min:
        out.append(f"onu rx {min(rx):g}dBm < {th.optical_rx_dbm_min:g}dBm")
    if rx and th.optical_rx_dbm_max is not None and max(rx) > th.optical_rx_dbm_max:
        out.append(f"onu rx {max(rx):g}dBm > {th.optical_rx_dbm_max:g}dBm")
    if signal and th.signal_dbm_min is not None and min(signal) < th.signal_dbm_min:
        out.append(f"signal {min(signal):g}dBm < {th.signal_dbm_min:g}dBm")
    if ccq and th.ccq_pct_min is not None and min(ccq) < th.ccq_pct_min:
        out.append(f"ccq {min(ccq):g}% < {th.ccq_pct_min:g}%")
    return out


@dataclass(frozen=True, slots=True)
class _Seen:
    outcome: TableOutcome
    at: float
    max_age: float


class TableWatch:
    """Which parents to walk, who is listed in each, and the latest view of endpoints that are also pinged."""

    def __init__(self) -> None:
        self.probe: TableProbe | None = None
        self.members: dict[str, list[EndpointKey]] = {}  # parent id → endpoints identified in its table
        self.ports: dict[str, list[Target]] = {}  # OLT id → its PON port nodes (observed through its walks)
        self._targets: dict[str, Target] = {}
        self._view: dict[str, _Seen] = {}
        self._moved: dict[str, str] = {}  # endpoint → the port its row was last seen on, if not its own

    def configure(self, inv: Inventory) -> None:
        """(Re)read who is listed where; forget views of endpoints that are gone or changed."""
        members: dict[str, list[EndpointKey]] = {}
        ports: dict[str, list[Target]] = {}
        for t in inv.targets.values():
            if t.table_key is not None and t.parents:
                from monitor.probes.snmp_table import EndpointKey

                members.setdefault(table_parent(inv.targets, t), []).append(EndpointKey(t.id, *t.table_key))
            elif t.kind == PON_PORT_KIND and t.parents:
                ports.setdefault(t.parents[0], []).append(t)
        self.members = members
        self.ports = ports
        self._view = {k: v for k, v in self._view.items() if self._targets.get(k) == inv.targets.get(k)}
        self._targets = dict(inv.targets)

    def wants(self, target: Target) -> bool:
        return self.probe is not None and target.snmp is not None and bool(target.snmp.table)

    async def poll(self, target: Target, timeout: float) -> TableResult:
        assert self.probe is not None and target.snmp is not None
        return await self.probe.poll(target, target.snmp.table, timeout)

    def fold(self, parent: Target, result: TableResult, now: float,
             parent_reachable: bool = True) -> list[tuple[Target, Observation, TableOutcome]]:
        """Observations for the parent's address-less endpoints (to step now); the view for the others.

        A failed walk is no evidence while the parent answers (its agent may just be slow). A parent
        that does not answer at all takes its address-less endpoints with it, as it would take pinged
        ones: they are unreachable from here, so an outage at the parent includes its customers.
        """
        from monitor.probes.snmp_table import TableOutcome, outcomes

        out: list[tuple[Target, Observation, TableOutcome]] = []
        if not result.ok and not parent_reachable:
            gone = Observation(False, detail=f"parent {parent.id} unreachable")
            for port in self.ports.get(parent.id, ()):
                out.append((port, gone, TableOutcome(port.id, False, "offline", None)))
            for key in self.members.get(parent.id, ()):
                target = self._targets.get(key.endpoint)
                if target is not None and not target.address:
                    out.append((target, gone, TableOutcome(target.id, False, "offline", None)))
            return out
        if result.ok:  # the OLT answers for its ports; their ONUs' rows say the rest (the engine judges them)
            out.extend((port, Observation(True), TableOutcome(port.id, True, "online", None))
                       for port in self.ports.get(parent.id, ()))
        for outcome in outcomes(result, self.members.get(parent.id, ())):
            target = self._targets.get(outcome.endpoint)
            if target is None:
                continue
            self._check_port(target, outcome)
            if target.address:
                self._view[target.id] = _Seen(outcome, now, FRESH_INTERVALS * parent.polling.interval)
            else:
                out.append((target, table_observation(target, outcome, parent.id), outcome))
        return out

    def merged(self, target: Target, own: Observation, now: float) -> Observation:
        """A pinged endpoint's observation with its parent's latest table view, when that is fresh."""
        seen = self._view.get(target.id) if target.table_key is not None else None
        if seen is None or now - seen.at > seen.max_age:
            return own
        return combine(own, table_observation(target, seen.outcome, table_parent(self._targets, target)))

    def _check_port(self, target: Target, outcome: TableOutcome) -> None:
        """An ONU whose row is on another PON port than its port node says: the topology is wrong there
        (a re-patched drop), so a cut of either port would be rooted wrongly. One WARNING per move."""
        parent = self._targets.get(target.parents[0]) if target.parents else None
        if parent is None or parent.kind != PON_PORT_KIND or outcome.port is None:
            return
        if outcome.port == parent.pon_port:
            if self._moved.pop(target.id, None) is not None:
                event(log, logging.INFO, "onu back on its configured pon port", endpoint=target.id,
                      port=parent.pon_port)
        elif self._moved.get(target.id) != outcome.port:
            self._moved[target.id] = outcome.port
            event(log, logging.WARNING, "onu listed on another pon port than configured", endpoint=target.id,
                  configured=parent.pon_port, table=outcome.port, olt=parent.parents[0])


def table_parent(targets: dict[str, Target], target: Target) -> str:
    """The device whose table lists ``target``: its parent, or the OLT above its PON port node."""
    parent = target.parents[0]
    node = targets.get(parent)
    if node is not None and node.kind == PON_PORT_KIND and node.parents:
        return node.parents[0]
    return parent
