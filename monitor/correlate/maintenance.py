"""Planned maintenance windows: failures inside them are *planned* incidents, not alarms.

A window covers its node and everything below it. The engine only needs ``node``, ``start`` and
``end``; the store also keeps who planned it and why, and the customers it covers, which is what
advance, start and end notices are written from.
"""

from __future__ import annotations

from dataclasses import dataclass


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
