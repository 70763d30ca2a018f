"""Shared by the status page tests: the example network's inventory with a ``status_page:`` on a free
loopback port, and a real store scripted through the daemon's EventStore and correlation service."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from monitor.clock import ManualClock
from monitor.correlate.service import CorrelationService
from monitor.correlate.settings import CorrelationSettings
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.state import State, StateChange
from monitor.store import EventStore
from monitor.web.config import StatusPageSettings
from tests.servers.common import free_port

CONFIG = Path(__file__).resolve().parents[1] / "config" / "sites.yaml"
DAY = 86_400.0


def example(**settings: Any) -> Inventory:
    """config/sites.yaml (customers.csv included) with the status page on a free port."""
    inv = load_inventory(CONFIG, secrets=False)
    page = StatusPageSettings(listen=f"127.0.0.1:{free_port()}", title="Llanos Net",
                              report_contact="607 885 0000", **settings)
    return dataclasses.replace(inv, status_page=page)


def below(inv: Inventory, node: str) -> list[str]:
    """Every target under ``node`` (its subtree, the node excluded)."""
    out, stack = [], [node]
    while stack:
        cur = stack.pop()
        for t in inv.targets.values():
            if cur in t.parents and t.id not in out:
                out.append(t.id)
                stack.append(t.id)
    return out


class Network:
    """The example network's store, moved the way the daemon moves it (state log + correlation)."""

    def __init__(self, db: Path, inv: Inventory, start: float) -> None:
        self.inv = inv
        self.log = EventStore(db)
        self.clock = ManualClock(start)
        settings = CorrelationSettings.for_interval(60).with_overrides({"settle": "10", "blind_share": "1"})
        self.svc = CorrelationService(inv, db, settings, self.clock)
        self.feed(start, [StateChange(t, State.UNKNOWN, State.UP, start, "first reply") for t in inv.targets])

    def feed(self, ts: float, changes: list[StateChange]) -> None:
        self.clock.set(ts)
        self.log.append(changes)
        self.svc.on_state_changes(changes)

    def settle(self, seconds: float = 300.0) -> None:
        start = self.clock.now()
        for s in range(1, int(seconds // 10) + 1):
            self.svc.tick(start + s * 10)

    def down(self, node: str, ts: float) -> None:
        """``node`` fails at ``ts``, everything below it 30 s later; the incident opens."""
        self.feed(ts, [StateChange(node, State.UP, State.DOWN, ts, "3 consecutive failed polls")])
        rest = below(self.inv, node)
        self.feed(ts + 30, [StateChange(t, State.UP, State.DOWN, ts + 30, "3 consecutive failed polls") for t in rest])
        self.settle()

    def up(self, node: str, ts: float) -> None:
        back = [node, *below(self.inv, node)]
        changes = [StateChange(t, State.DOWN, State.UP, ts, "2 consecutive replies") for t in back]
        self.feed(ts, changes)
        self.settle(600)

    def close(self) -> None:
        self.svc.close()
        self.log.close()
