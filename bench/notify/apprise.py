"""The apprise channel's throughput and its effect on the event loop: N short notices to a local receiver.

    .venv/bin/python -m bench.notify.apprise [--notices 10000] [--scheme json] [--lanes 4]

N customer notices on the ``apprise`` channel (one per customer number, through the customers'
gateway URL) go through the real worker and AppriseSender (Apprise's ntfy / Gotify / JSON plugin,
``requests`` in Apprise's threads; JSON with its Idempotency-Key, so a plugin per send) to an aiohttp
receiver in another process on loopback. Prints notices/s, what the receiver counted, and the event loop's lag while it
ran (a 10 ms ticker's worst and 99th-percentile delay: a blocked loop would show the send times).
Compare with ``bench.notify.run`` (the e-mail path) in the same session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession, web

from monitor.clock import SystemClock
from monitor.delivery.config import AppriseSettings, RetrySettings
from monitor.delivery.outbox import NewRow, Outbox
from monitor.delivery.worker import Worker
from monitor.notify.apprise import AppriseSender, check_url, customer_url
from monitor.secret import Secret
from tests.servers.common import free_port


def receiver(port: int) -> None:
    """A separate process, so its work does not run on the measured loop."""
    count = 0

    async def push(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        return web.json_response({"ok": True})

    async def counted(_: web.Request) -> web.Response:
        return web.json_response({"count": count})

    app = web.Application()
    app.router.add_get("/count", counted)
    app.router.add_route("*", "/{tail:.*}", push)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def lag(samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        samples.append(time.perf_counter() - t - 0.01)


async def run(n: int, url: str, port: int, lanes: int, db: Path) -> tuple[float, int, list[float]]:
    async with ClientSession() as http:
        for _ in range(100):  # the receiver process is up
            with contextlib.suppress(OSError):
                async with http.get(f"http://127.0.0.1:{port}/count"):
                    break
            await asyncio.sleep(0.05)
    outbox = Outbox(db)
    now = time.time()
    phones = [f"57300{i:07d}" for i in range(n)]
    outbox.add([NewRow(f"INC-000001/customer_opened_apprise/{p}/1", "INC-000001", "customer_opened_apprise",
                       p, "apprise", "", {"to": p, "subject": "",
                                          "body": f"Llanos Net: falla en su zona (Arauca) desde 06:06. Ref {i}"})
                for i, p in enumerate(phones)], {}, {}, now)
    gateway = Secret(url, "bench")
    assert check_url(customer_url(gateway, phones[0])) is None  # as the config loader does: plugins load here
    sender = AppriseSender(AppriseSettings(timeout=10.0, customers=gateway), {})
    worker = Worker(outbox, sender, RetrySettings(), SystemClock(), concurrency=lanes, batch=100)
    samples: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(lag(samples, stop))
    t0 = time.perf_counter()
    task = asyncio.create_task(worker.run())
    while sum(c for c, _ in outbox.pending().values()):
        await asyncio.sleep(0.05)
    total = time.perf_counter() - t0
    stop.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await ticker
    await sender.close()
    delivered = len(outbox.rows(status="delivered"))
    outbox.close()
    async with ClientSession() as http, http.get(f"http://127.0.0.1:{port}/count") as resp:
        received = int((await resp.json())["count"])
    assert delivered == n, f"{delivered} of {n} delivered"
    return total, received, samples


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--notices", type=int, default=10_000)
    ap.add_argument("--scheme", choices=("json", "ntfy", "gotify"), default="json")
    ap.add_argument("--lanes", type=int, default=4)
    args = ap.parse_args()
    port = free_port()
    url = {"json": f"json://127.0.0.1:{port}/sms/{{phone}}", "ntfy": f"ntfy://127.0.0.1:{port}/sms{{phone}}",
           "gotify": f"gotify://127.0.0.1:{port}/Abench{{phone}}"}[args.scheme]
    proc = multiprocessing.get_context("spawn").Process(target=receiver, args=(port,), daemon=True)
    proc.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            total, received, samples = asyncio.run(run(args.notices, url, port, args.lanes, Path(tmp) / "o.db"))
    finally:
        proc.terminate()
        proc.join(5)
    samples.sort()
    p99 = samples[int(len(samples) * 0.99)] if samples else 0.0
    print(f"notices={args.notices} scheme={args.scheme} lanes={args.lanes} total_s={total:.2f} "
          f"notices_per_s={args.notices / total:.0f} received={received}")
    print(f"loop_lag_ms max={max(samples) * 1000:.1f} p99={p99 * 1000:.1f} "
          f"median={statistics.median(samples) * 1000:.2f} ticks={len(samples)}")


if __name__ == "__main__":
    main()
