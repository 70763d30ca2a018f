"""A small hand-made network for report tests, with times named in minutes of October 2026 (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.inventory.model import Customer, Inventory, Municipality, ServiceClass, Site, Target
from monitor.report.model import Period

OCT = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
NOV = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
SEP = datetime(2026, 9, 1, tzinfo=UTC).timestamp()
MONTH_MIN = 31 * 24 * 60  # minutes in October: 44,640
OCTOBER = Period(OCT, NOV, "2026-10")
SEPTEMBER = Period(SEP, OCT, "2026-09")


def at(day: int, hour: float = 0, minute: float = 0) -> float:
    """October ``day`` at ``hour:minute`` UTC (day 0 = 30 September)."""
    return OCT + (day - 1) * 86400 + hour * 3600 + minute * 60


def inventory() -> Inventory:
    """core → ap1 → cpe1 (C1, corporativo), cpe2 (C2, residencial), cpe3 (C1, a second link); twr2 in Tame."""
    targets = [
        Target("core", "router", "node", "127.0.0.1", site="s1", municipality="arauca"),
        Target("ap1", "ap", "node", "127.0.0.2", parents=("core",), site="s1", municipality="arauca"),
        Target("cpe1", "cpe", "endpoint", "127.0.1.1", parents=("ap1",), site="s1", municipality="arauca",
               customer="C1", service_class="corporativo"),
        Target("cpe2", "cpe", "endpoint", "127.0.1.2", parents=("ap1",), site="s1", municipality="arauca",
               customer="C2", service_class="residencial"),
        Target("cpe3", "cpe", "endpoint", "127.0.1.3", parents=("ap1",), site="s1", municipality="arauca",
               customer="C1", service_class="corporativo"),
        Target("twr2", "tower", "node", "127.0.0.3", parents=("core",), site="s2", municipality="tame"),
    ]
    return Inventory(
        source="test",
        municipalities={"arauca": Municipality("arauca", "Arauca"), "tame": Municipality("tame", "Tame")},
        sites={"s1": Site("s1", "arauca", "Torre Centro", 7.08, -70.76), "s2": Site("s2", "tame", "Torre Tame")},
        service_classes={"corporativo": ServiceClass("corporativo", 12, 99.5),
                         "residencial": ServiceClass("residencial", 24, 98.0)},
        credentials={},
        targets={t.id: t for t in targets},
        customers={"C1": Customer("C1", "Ferretería El Llano", "corporativo", endpoints=("cpe1", "cpe3")),
                   "C2": Customer("C2", "Casa Pérez", "residencial", endpoints=("cpe2",))},
    )


def up_all_month(*ids: str) -> dict[str, list[tuple[float, str]]]:
    """Each target UP since before October (the state the month starts in)."""
    return {i: [(OCT - 86400, "up")] for i in ids}
