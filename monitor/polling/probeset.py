"""The probes one polling process runs with: started once, polled per target, closed once.

``monitor probe``, the daemon and a separate poller process all start the same probes the same
way: the real ICMP probe always, SNMP only when a target has SNMP, the subscriber-table walker on
top of the SNMP probe when a target has a table. Given probes (``monitor demo``, tests) replace
the real ones by their ``kind``.

Closing is best effort (the process is stopping), but a probe that fails to close is said once,
with the probe's kind and the error, not swallowed: a socket or transport that cannot be released
is worth one line in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from monitor.clock import Clock, SystemClock
from monitor.inventory.model import Inventory, Target
from monitor.logs import event
from monitor.probes.base import IcmpResult, Probe, SnmpResult
from monitor.probes.icmp import IcmpProbe

if TYPE_CHECKING:
    from monitor.probes.snmp_table import TableProbe

log = logging.getLogger("monitor.daemon")


@runtime_checkable
class BatchProbe(Protocol):
    """A probe that polls many targets as one batch (:meth:`IcmpProbe.poll_many`)."""

    async def poll_many(self, targets: Sequence[Target], timeout: float) -> list[IcmpResult]: ...


def poll_deadline(target: Target) -> float:
    """The whole poll (ICMP and SNMP together) must end well inside the target's interval."""
    p = target.polling
    icmp_need = p.icmp_count * p.icmp_spacing + p.icmp_timeout + 0.5
    snmp_need = 0.0
    if target.snmp is not None:
        snmp_need = target.snmp.timeout * (target.snmp.retries + 1) * 3
    return min(0.8 * p.interval, max(icmp_need, snmp_need))


class ProbeSet:
    """The ICMP and SNMP probes (and the table walker) of one process."""

    def __init__(self, clock: Clock | None = None, given: Sequence[Probe] | None = None) -> None:
        self.clock = clock or SystemClock()
        self._given = given
        self.icmp: Probe | None = None
        self.snmp: Probe | None = None
        #: walks subscriber tables with the SNMP probe's sessions (None: no target has a table)
        self.table: TableProbe | None = None
        self._batch_probe: tuple[Probe | None, bool] | None = None  # (the ICMP probe, polls batches)

    async def start(self, inv: Inventory) -> None:
        """Start what ``inv`` needs and is not running yet (a reload may need SNMP for the first time).
        ProbeSetupError when a probe cannot work on this machine: fatal, with its own clear message."""
        if self._given is not None:
            if self.icmp is None and self.snmp is None:  # once; a reload keeps them
                by_kind = {p.kind: p for p in self._given}
                self.icmp, self.snmp = by_kind.get("icmp"), by_kind.get("snmp")
                for probe in (self.icmp, self.snmp):
                    if probe is not None:
                        await probe.start()
            return
        if self.icmp is None and inv.targets:  # a core whose every target a remote poller polls needs none
            self.icmp = IcmpProbe()  # (its raw socket would take a copy of every ICMP packet the host gets)
            await self.icmp.start()
        if self.snmp is None and any(t.snmp is not None for t in inv.targets.values()):
            from monitor.probes.snmp import SnmpProbe

            self.snmp = SnmpProbe(clock=self.clock)
            await self.snmp.start()
        if self.table is None and any(t.snmp is not None and t.snmp.table for t in inv.targets.values()):
            from monitor.probes.snmp import SnmpProbe
            from monitor.probes.snmp_table import TableProbe

            if isinstance(self.snmp, SnmpProbe):  # walks share its sessions, credentials and bounds
                self.table = TableProbe(self.snmp, clock=self.clock)

    async def close(self) -> None:
        """Close every started probe; one warning per probe that fails to close, then go on."""
        for probe in (self.icmp, self.snmp):
            if probe is None:
                continue
            try:
                await probe.close()
            except Exception as exc:  # stopping: say it once, close the others
                event(log, logging.WARNING, "probe not closed cleanly", probe=probe.kind, error=exc)

    async def poll_once(self, target: Target) -> tuple[IcmpResult | None, SnmpResult | None]:
        """Run the target's probes concurrently under one deadline."""
        deadline = poll_deadline(target)
        icmp_task = self.icmp.poll(target, deadline) if self.icmp is not None else None
        snmp_task = self.snmp.poll(target, deadline) if self.snmp is not None and target.snmp else None
        coros = [c for c in (icmp_task, snmp_task) if c is not None]
        results = await asyncio.gather(*coros)
        icmp = next((r for r in results if isinstance(r, IcmpResult)), None)
        snmp = next((r for r in results if isinstance(r, SnmpResult)), None)
        return icmp, snmp

    def batches(self) -> bool:
        """The ICMP probe polls batches (the demo's scripted one does not)."""
        return isinstance(self.icmp, BatchProbe)

    def batchable(self, target: Target) -> bool:
        """ICMP alone, on a probe that polls batches: the scheduler may group it with others. (Asked
        for every due target: the isinstance check on the Protocol, ~2 µs, is made once per probe.)"""
        if self._batch_probe is None or self._batch_probe[0] is not self.icmp:
            self._batch_probe = (self.icmp, isinstance(self.icmp, BatchProbe))
        return target.snmp is None and self._batch_probe[1]

    async def poll_many(self, targets: Sequence[Target]) -> list[tuple[list[Target], list[IcmpResult]]]:
        """One ICMP batch per poll deadline for targets polled by ICMP alone: (targets, results) in order."""
        probe = self.icmp
        assert isinstance(probe, BatchProbe)
        by_deadline: dict[float, list[Target]] = {}
        for t in targets:
            by_deadline.setdefault(poll_deadline(t), []).append(t)
        batches = [probe.poll_many(group, deadline) for deadline, group in by_deadline.items()]
        results = await asyncio.gather(*batches)
        return list(zip(by_deadline.values(), results, strict=True))
