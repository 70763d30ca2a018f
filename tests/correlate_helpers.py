"""Generated topologies for correlation tests and benchmarks (model dataclasses, no YAML)."""

from __future__ import annotations

from monitor.inventory.model import Customer, Inventory, PollingSettings, ServiceClass, Target


def tree_inventory(
    towers: int, aps_per_tower: int, cpes_per_ap: int, interval: float = 60.0, *, gateway: bool = False
) -> Inventory:
    """core -> towers -> APs -> CPEs; every 10th customer corporate.

    ``gateway``: the monitor's own gateway ``gw`` above the core, so that a core failure leaves
    something answering (without it, everything failing at once is the monitor going blind).
    """
    polling = PollingSettings(interval=interval)
    targets: dict[str, Target] = {}
    if gateway:
        targets["gw"] = Target("gw", "router", "node", "127.0.0.1", polling=polling)
    targets["core"] = Target("core", "router", "node", "127.0.0.1", ("gw",) if gateway else (), polling=polling)
    customers: dict[str, Customer] = {}
    n = 0
    for t in range(towers):
        tid = f"twr-{t:03d}"
        targets[tid] = Target(tid, "tower", "node", "127.0.0.1", ("core",), polling=polling)
        for a in range(aps_per_tower):
            aid = f"ap-{t:03d}-{a:02d}"
            targets[aid] = Target(aid, "ap", "node", "127.0.0.1", (tid,), polling=polling)
            for _ in range(cpes_per_ap):
                n += 1
                eid, cid = f"cpe-{n:06d}", f"C-{n:06d}"
                cls = "corporativo" if n % 10 == 0 else "residencial"
                targets[eid] = Target(
                    eid, "cpe", "endpoint", "127.0.0.1", (aid,), customer=cid, service_class=cls, polling=polling
                )
                customers[cid] = Customer(cid, cid, cls, endpoints=(eid,))
    classes = {
        "residencial": ServiceClass("residencial", 24, 98.0),
        "corporativo": ServiceClass("corporativo", 12, 99.5, ticket_single=True),
    }
    return Inventory("generated", {}, {}, classes, {}, targets, customers, polling=polling)
