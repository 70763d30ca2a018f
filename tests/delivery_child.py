"""A delivery process the crash tests kill: ``python -m tests.delivery_child CONFIG DB EVENTS [--die-on-record[=N]]``.

It loads the config, enqueues the events (JSON lines of IncidentEvent fields) and runs the service
until the outbox is empty. With ``--die-on-record`` it SIGKILLs itself when a worker is about to
record its N-th delivered row (default 1): after that send, before its record, while the other
lanes are mid-send — the window the outbox must survive without a second ticket or a second
logical email.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from monitor.clock import SystemClock
from monitor.correlate.incidents import IncidentEvent
from monitor.delivery.outbox import Outbox
from monitor.delivery.service import DeliveryService
from monitor.inventory.loader import load_inventory
from tests.delivery_support import SECRETS


def main() -> None:
    config, db, events_file = sys.argv[1:4]
    die = next((int(a.partition("=")[2] or 1) for a in sys.argv if a.startswith("--die-on-record")), 0)
    if die:
        real = Outbox.finish
        seen = [0]

        def finish(self: Outbox, delivered, retries, failed, now, sending=()):  # type: ignore[no-untyped-def]
            seen[0] += len(delivered)
            if seen[0] >= die:
                os.kill(os.getpid(), signal.SIGKILL)
            real(self, delivered, retries, failed, now, sending)

        Outbox.finish = finish  # type: ignore[method-assign]
    inv = load_inventory(config, env={**os.environ, **SECRETS})
    assert inv.delivery is not None
    events = [IncidentEvent(**{**d, "affected_endpoints": tuple(d["affected_endpoints"]),
                               "affected_customers": tuple(d["affected_customers"]),
                               "affected_nodes": tuple(d["affected_nodes"])})
              for d in map(json.loads, Path(events_file).read_text().splitlines())] if events_file != "-" else []

    async def run() -> None:
        svc = DeliveryService(inv, Path(db), inv.delivery, SystemClock())  # type: ignore[arg-type]
        svc.enqueue(events)
        task = asyncio.create_task(svc.run())
        while sum(n for n, _ in svc.outbox.pending().values()):
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await svc.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
