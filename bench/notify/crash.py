"""Crash benchmark: SIGKILL the delivery process at a random point of a fan-out, restart, count repeats.

    .venv/bin/python -m bench.notify.crash [--trials 20] [--customers 2000] [--pool 8] [--channel email|apprise]

Each trial: a fresh outbox and a real local SMTP server (aiosmtpd writing a Maildir) — or, with
``--channel apprise``, an HTTP receiver (aiohttp, in a thread) behind the customers' ``json://``
gateway URL, which counts notices by their ``Idempotency-Key`` (the outbox key); the delivery
process (``tests.delivery_child``) queues one tower outage with N customer notices and sends them;
the benchmark kills it with SIGKILL once a random number of notices in [1, N) is recorded as
delivered (polled from the outbox every millisecond, so the kill lands at an arbitrary point of a
send), then runs the process again until the outbox is empty. Printed per trial and in total:
mails received, distinct Message-IDs (= notices; any shortfall is a lost notice), and mails that
arrived twice (same Message-ID), and mails the restart counted as delivered because the killed
process had handed them over whole (written up to the final ``.``, or an HTTP request's last byte)
without reading the reply.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from monitor.inventory.loader import load_inventory
from tests.delivery_support import SECRETS, T0, delivery_with, ev, ids, write_config
from tests.servers.common import free_port
from tests.servers.smtp import SmtpServer

ROOT = Path(__file__).resolve().parents[2]


def delivered(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as con:
            return int(con.execute("SELECT COUNT(*) FROM outbox WHERE status = 'delivered'").fetchone()[0])
    except sqlite3.Error:
        return 0  # not created yet, or busy for a moment


class PushCounter:
    """An HTTP receiver on loopback, in a thread of its own, counting requests per Idempotency-Key."""

    def __init__(self) -> None:
        self.port = free_port()
        self.keys: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        async def push(request: web.Request) -> web.Response:
            await request.read()
            self.keys[request.headers.get("Idempotency-Key", "")] += 1
            return web.json_response({"ok": True})

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", push)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner

        runner = self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def count(self) -> int:
        return sum(self.keys.values())

    def repeats(self) -> Counter[str]:
        return Counter(dict(self.keys))


def trial(root: Path, customers: int, pool: int, rng: random.Random, channel: str = "email") -> dict[str, int]:
    server: Any
    extra: dict[str, str] = {}
    if channel == "email":
        (root / "smtp").mkdir(parents=True)
        server = SmtpServer(root / "smtp")
        server.start()
        settings: dict[str, Any] = {"smtp": {"host": "127.0.0.1", "port": server.port, "security": "none",
                                             "from": "NOC <noc@isp.example>", "pool_size": pool}}
    else:  # the customers' SMS gateway through Apprise, 4 lanes as the channel registry sets
        root.mkdir(parents=True, exist_ok=True)
        server = PushCounter()
        server.start()
        extra["CUSTOMER_SMS"] = f"json://127.0.0.1:{server.port}/sms/{{phone}}"
        settings = {"smtp": None, "apprise": {"customers": {"env": "CUSTOMER_SMS"}},
                    "customers": {"company": "Llanos Net", "channels": ["apprise"]}}
    try:
        inv = load_inventory(write_config(root, customers, delivery_with(mqtt=None, desk=None, **settings)),
                             env={**SECRETS, **extra})
        events = root / "events.jsonl"
        events.write_text(json.dumps(dataclasses.asdict(ev("opened", T0, ids(customers, 0)))) + "\n")
        db = root / "monitor.db"
        argv = [sys.executable, "-m", "tests.delivery_child", inv.source, str(db)]
        env = {**os.environ, **SECRETS, **extra}
        kill_at = rng.randrange(1, customers)
        child = subprocess.Popen([*argv, str(events)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while delivered(db) < kill_at and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait()
        before = server.count()
        subprocess.run([*argv, "-"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
        counts = server.repeats()
        with sqlite3.connect(db) as con:
            expected, assumed = con.execute(
                "SELECT COUNT(*), SUM(result LIKE 'assumed%') FROM outbox WHERE channel = ?", (channel,)).fetchone()
    finally:
        server.stop()
    return {"kill_after": kill_at, "sent_before_kill": before, "received": sum(counts.values()),
            "notices": len(counts), "expected": expected, "assumed_delivered": assumed or 0,
            "repeated": sum(1 for n in counts.values() if n > 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--channel", choices=("email", "apprise"), default="email")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    results = []
    for i in range(args.trials):
        with tempfile.TemporaryDirectory() as tmp:
            r = trial(Path(tmp), args.customers, args.pool, rng, args.channel)
        results.append(r)
        print(" ".join(f"{k}={v}" for k, v in {"trial": i + 1, **r}.items()), flush=True)
    lost = sum(r["expected"] - r["notices"] for r in results)
    with_repeat = [r["repeated"] for r in results if r["repeated"]]
    lanes = f"pool={args.pool}" if args.channel == "email" else "lanes=4"
    print(f"channel={args.channel} trials={len(results)} customers={args.customers} {lanes} "
          f"lost_notices={lost} "
          f"trials_with_a_repeat={len(with_repeat)} repeated_mails_total={sum(with_repeat)} "
          f"max_repeated_in_a_trial={max(with_repeat, default=0)}")


if __name__ == "__main__":
    main()
