"""Planned maintenance windows: failures inside them are *planned* incidents, not alarms.

A window covers its node and everything below it. The engine only needs ``node``, ``start`` and
``end``; the store also keeps who planned it and why, and the customers it covers, which is what
advance, start and end notices are written from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from monitor.inventory.model import MaintenanceSpec


@dataclass(frozen=True, slots=True)
class Window:
    id: int
    node: str
    start: float
    end: float
    reason: str = ""

    def active(self, now: float) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True, slots=True)
class WindowEvent:
    """A window started or ended (for start/end notices; advance notices are computed from start)."""

    ts: float
    window: int
    node: str
    event: str  # "started" | "ended"


def config_specs(specs: Iterable[MaintenanceSpec]) -> list[MaintenanceSpec]:
    """The config's ``maintenance:`` list as the daemon keeps it: each distinct window once, in the
    order it adds them to the store (so ``monitor replay`` plans exactly what the daemon plans)."""
    return sorted(set(specs), key=lambda m: (m.start, m.node, m.end, m.reason))


def config_windows(specs: Iterable[MaintenanceSpec]) -> list[Window]:
    """The windows the daemon makes from the config's list, numbered from 1 (for a store-less replay)."""
    return [Window(i, m.node, m.start, m.end, m.reason) for i, m in enumerate(config_specs(specs), 1)]
