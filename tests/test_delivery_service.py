"""The delivery service around the pure planner: which maintenance windows it hands over."""

from __future__ import annotations

from pathlib import Path

from monitor.clock import ManualClock
from monitor.delivery.service import DeliveryService
from tests.delivery_support import T0, delivery_with, load


def notices(svc: DeliveryService) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in svc.outbox.rows():
        out[r["action"]] = out.get(r["action"], 0) + 1
    return out


async def test_a_window_removed_while_running_ends_for_the_customers_told_it_started(tmp_path: Path) -> None:
    inv = load(tmp_path, 5, delivery_with(mqtt=None, desk=None))
    assert inv.delivery is not None
    clock = ManualClock(T0)
    svc = DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, clock)
    try:
        running = svc.store.add_window("ap-1", T0 + 10, T0 + 7200, "cambio de radio", "ana", (), T0)
        never = svc.store.add_window("ap-1", T0 + 86400, T0 + 90000, "otro", "ana", (), T0)
        svc.tick(T0)  # advance notices for both
        svc.store.remove_window(never, T0 + 1)  # cancelled after its advance notice, before it started
        svc.tick(T0 + 20)
        assert notices(svc) == {"maintenance_advance": 10, "maintenance_start": 5}
        svc.store.remove_window(running, T0 + 600)  # staff end it early
        svc.tick(T0 + 601)
        assert notices(svc) == {"maintenance_advance": 10, "maintenance_start": 5, "maintenance_end": 5}
        svc.tick(T0 + 7300)  # its original end: nothing more
        svc.tick(T0 + 86400)  # the cancelled one never starts
        assert notices(svc) == {"maintenance_advance": 10, "maintenance_start": 5, "maintenance_end": 5}
    finally:
        await svc.close()
