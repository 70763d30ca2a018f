"""Shared fixtures of the delivery tests: a tower with N customers, its config, its incident events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import yaml

from monitor.clock import ManualClock
from monitor.correlate.incidents import IncidentEvent
from monitor.delivery.service import DeliveryService
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from tests.servers.common import until

T0 = 1_795_000_000.0  # Wednesday 2026-11-18 06:06:40 in Bogotá (the night shift is on call)
SECRETS = {"SMTP_PASS": "smtp-s3cret-pw", "RT_PASS": "password", "MQTT_PASS": "mqtt-pass-9",
           "HOOK_SECRET": "hook-s3cret-key", "SMS_TOKEN": "sms-t0ken-xyz"}


class ClockFrom:
    """Wall time that stands at ``start`` at the real moment ``origin`` (default: now) and runs at the real rate.

    The tests' events are stamped T0, weeks before the machine's own clock: on SystemClock their
    incident is that old, so its escalation (after 15 min) is due at the delivery timer's first
    tick, and a test lasting over a second on a loaded machine got one more alert than on an idle
    one. With this clock the incident is fresh, as in service, and retries still wait in real time.
    """

    def __init__(self, start: float = T0, origin: float | None = None) -> None:
        self._offset = start - (time.time() if origin is None else origin)

    def now(self) -> float:
        return time.time() + self._offset

    def monotonic(self) -> float:
        return time.monotonic()


def customers(n: int, opted_out: int = 1) -> list[dict[str, Any]]:
    """n customers below ap-1 (first 5 corporate, languages alternate es/en) + opted-out ones."""
    out = []
    for i in range(1, n + opted_out + 1):
        out.append({
            "id": f"C-{i:04d}", "name": f"Cliente {i}",
            "service_class": "corporativo" if i <= 5 else "residencial",
            "contacts": {"email": f"c{i}@example.com", "phone": f"+57300{i:07d}"},
            "language": "en" if i % 2 == 0 else "es",
            "notify": i <= n,
            "endpoints": [{"id": f"cpe-{i:04d}", "kind": "cpe", "address": f"127.0.{100 + i // 250}.{i % 250 + 1}",
                           "parent": "ap-1"}],
        })
    return out


def write_config(root: Path, n: int = 40, delivery: dict[str, Any] | None = None) -> Path:
    doc: dict[str, Any] = {
        "municipalities": [{"id": "arauca", "name": "Arauca"}, {"id": "tame", "name": "Tame"}],
        "sites": [{"id": "twr-centro", "municipality": "arauca", "name": "Torre Centro"},
                  {"id": "twr-tame", "municipality": "tame", "name": "Torre Tame"}],
        "service_classes": {"corporativo": {"response_hours": 12, "availability_target": 99.5},
                            "residencial": {"response_hours": 24, "availability_target": 98.0},
                            "dedicado": {"response_hours": 4, "availability_target": 99.9, "ticket_single": True}},
        "nodes": [
            {"id": "core", "kind": "router", "address": "127.0.0.1", "site": "twr-centro"},
            {"id": "twr-1", "kind": "tower", "address": "127.0.0.2", "parent": "core", "site": "twr-centro"},
            {"id": "ap-1", "kind": "ap", "address": "127.0.0.3", "parent": "twr-1", "site": "twr-centro"},
            {"id": "twr-t", "kind": "tower", "address": "127.0.0.4", "parent": "core", "site": "twr-tame"},
        ],
        "customers": [*customers(n), {
            "id": "D-0001", "name": "Hospital", "service_class": "dedicado",
            "contacts": {"email": "hospital@example.com"},
            "endpoints": [{"id": "cpe-d1", "kind": "router", "address": "127.0.99.1", "parent": "twr-t"}]}],
        "delivery": delivery if delivery is not None else base_delivery(),
    }
    path = root / "sites.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def base_delivery(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "timezone": "America/Bogota",
        "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none", "from": "NOC Llanos <noc@isp.example>"},
        "mqtt": {"host": "127.0.0.1", "port": 1883, "prefix": "isp"},
        "desk": {"kind": "rt", "url": "http://127.0.0.1:9", "username": "root", "password": {"env": "RT_PASS"},
                 "grafana_url": "https://grafana.isp.example/d/noc?var-incident={incident}",
                 "comment_min_interval": "10m"},
        "technicians": [
            {"id": "juan", "name": "Juan Pérez", "email": "juan@isp.example"},
            {"id": "ana", "name": "Ana Gómez", "email": "ana@isp.example", "language": "en"},
            {"id": "noc", "name": "NOC lead", "email": "noc-lead@isp.example"},
            {"id": "luis", "name": "Luis", "email": "luis@isp.example"},
        ],
        "oncall": [
            {"municipality": "arauca", "kinds": ["ap", "tower"],
             "shifts": [{"days": ["mon-fri"], "from": "07:00", "to": "19:00", "tiers": ["ana", "noc"]},
                        {"days": ["mon-sun"], "from": "19:00", "to": "07:00", "tiers": ["juan", "noc"]},
                        {"days": ["sat", "sun"], "from": "07:00", "to": "19:00", "tiers": ["luis", "noc"]}]},
            {"municipality": "*", "shifts": [{"days": ["mon-sun"], "tiers": ["noc"]}]},
        ],
        "escalation": {"after": "15m"},
        "customers": {"company": "Llanos Net", "support_phone": "+57 607 885 0000"},
        "retry": {"initial": "0.2s", "maximum": "1s"},
    }
    d.update(over)
    return d


def load(root: Path, n: int = 40, delivery: dict[str, Any] | None = None) -> Inventory:
    return load_inventory(write_config(root, n, delivery), env=SECRETS)


def ev(event: str, ts: float, customers_: list[str], *, incident: str = "INC-000001", kind: str = "outage",
       root: str = "twr-1", into: str | None = None) -> IncidentEvent:
    eps = tuple(f"cpe-{c.split('-')[1]}" for c in customers_ if c.startswith("C-"))
    nodes = ("twr-1", "ap-1") if root == "twr-1" else (root,)
    return IncidentEvent(ts, event, incident, kind, root, eps, tuple(customers_), nodes, into)  # type: ignore[arg-type]


def ids(n: int, opted_out: int = 1) -> list[str]:
    return [f"C-{i:04d}" for i in range(1, n + opted_out + 1)]


class Running:
    """A DeliveryService whose run() is a task of the test's loop; ``drained()`` = nothing pending."""

    def __init__(self, service: DeliveryService) -> None:
        self.service = service
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.service.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.service.close()

    def pending(self) -> int:
        return sum(n for n, _ in self.service.outbox.pending().values())

    async def drained(self, timeout: float = 30.0, *, advance: bool = True) -> None:
        """Wait until nothing is pending; ``advance=False`` keeps a ManualClock frozen (no back-off ends)."""
        try:
            await until(self._drained_or_advance if advance else lambda: self.pending() == 0, timeout,
                        "the outbox to drain")
        except TimeoutError as exc:
            stuck = [r for r in self.service.outbox.rows() if r["status"] == "pending"]
            raise TimeoutError(f"{exc}; clock={self.service.clock.now()}; pending: {stuck[:5]}") from None

    def _drained_or_advance(self) -> bool:
        """Nothing pending; or, on a manual clock, let virtual time reach the next retry.

        A delivery that failed once (a slow RT on a loaded machine) is retried at ``now + backoff``
        on the service's clock; a frozen ManualClock would keep it waiting forever.
        """
        if self.pending() == 0:
            return True
        clock = self.service.clock
        if isinstance(clock, ManualClock):
            dues = [d for ch in self.service.workers if (d := self.service.outbox.next_due(ch)) is not None]
            if dues and min(dues) > clock.now():
                clock.set(min(dues))
                for worker in self.service.workers.values():
                    worker.wake()
        return False


def delivery_with(**parts: Any) -> dict[str, Any]:
    """base_delivery() with sections replaced (None removes one)."""
    d = base_delivery()
    for k, v in parts.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def sample(name: str, **labels: str) -> float:
    """A metric's current value in the daemon's registry (0 when the series does not exist yet)."""
    from monitor.selfmetrics import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0
