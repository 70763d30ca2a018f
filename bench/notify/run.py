"""Notification benchmark: a mass outage affecting N customers, delivered to a real local SMTP server.

    .venv/bin/python -m bench.notify.run [--customers 10000] [--pool 8] [--rt]

A tower with N customers below it fails (one "opened" lifecycle event); the delivery service plans,
renders and queues every notice (one transaction), then the email worker sends them through a pool
of persistent aiosmtplib connections to aiosmtpd (a separate process writing a Maildir). With
``--rt`` a real Request Tracker 5 is the desk as well. Prints planning time, delivery time, mails/s,
messages received (with distinct Message-IDs) and tickets created. Goal: 10,000 in <= 30 s, 1 ticket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import tempfile
import time
from pathlib import Path

from monitor.clock import SystemClock
from monitor.delivery.service import DeliveryService
from tests.delivery_support import SECRETS, T0, delivery_with, ev, ids, load
from tests.servers.rt import RequestTracker
from tests.servers.smtp import SmtpServer


async def deliver(svc: DeliveryService, n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    svc.enqueue([ev("opened", T0, ids(n, 0))])
    planned = time.perf_counter() - t0
    task = asyncio.create_task(svc.run())
    while sum(c for c, _ in svc.outbox.pending().values()):
        await asyncio.sleep(0.05)
    total = time.perf_counter() - t0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await svc.close()
    return planned, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--rt", action="store_true", help="also open the ticket in a real RT 5")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "smtp").mkdir()
        smtp = SmtpServer(root / "smtp")
        rt = None
        if args.rt:
            (root / "rt").mkdir()
            rt = RequestTracker(root / "rt")
            rt.start(60)
        smtp.start()
        try:
            desk = {"kind": "rt", "url": rt.url, "username": "root", "password": {"env": "RT_PASS"}} if rt else None
            t = time.perf_counter()
            inv = load(root, args.customers, delivery_with(
                smtp={"host": "127.0.0.1", "port": smtp.port, "security": "none", "from": "NOC <noc@isp.example>",
                      "pool_size": args.pool},
                mqtt=None, desk=desk))
            load_s = time.perf_counter() - t
            assert inv.delivery is not None
            svc = DeliveryService(inv, root / "monitor.db", inv.delivery, SystemClock())
            planned, total = asyncio.run(deliver(svc, args.customers))
            mails = smtp.count()
            distinct = len(smtp.repeats())
            tickets = len(rt.tickets("Subject LIKE 'INC-000001'")) if rt else 0
        finally:
            smtp.stop()
            if rt is not None:
                rt.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"customers={args.customers} pool={args.pool} inventory_load_s={load_s:.2f}")
    print(f"plan_render_queue_s={planned:.2f} total_s={total:.2f} mails_per_s={mails / total:.0f}")
    print(f"mails_received={mails} distinct_message_ids={distinct} tickets={tickets if rt else 'n/a'} "
          f"rss_mb={rss:.0f}")
    assert SECRETS  # the config's secrets come from tests.delivery_support


if __name__ == "__main__":
    main()
