"""Crash benchmark: SIGKILL the delivery process at a random point of a fan-out, restart, count repeats.

    .venv/bin/python -m bench.notify.crash [--trials 20] [--customers 2000] [--pool 8]

Each trial: a fresh outbox and a real local SMTP server (aiosmtpd writing a Maildir); the delivery
process (``tests.delivery_child``) queues one tower outage with N customer notices and sends them;
the benchmark kills it with SIGKILL once a random number of notices in [1, N) is recorded as
delivered (polled from the outbox every millisecond, so the kill lands at an arbitrary point of a
send), then runs the process again until the outbox is empty. Printed per trial and in total:
mails received, distinct Message-IDs (= notices; any shortfall is a lost notice), and mails that
arrived twice (same Message-ID), and mails the restart counted as delivered because the killed
process had handed them over whole (written up to the final ``.``) without reading the reply.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.delivery_support import SECRETS, T0, delivery_with, ev, ids, load
from tests.servers.smtp import SmtpServer

ROOT = Path(__file__).resolve().parents[2]


def delivered(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as con:
            return int(con.execute("SELECT COUNT(*) FROM outbox WHERE status = 'delivered'").fetchone()[0])
    except sqlite3.Error:
        return 0  # not created yet, or busy for a moment


def trial(root: Path, customers: int, pool: int, rng: random.Random) -> dict[str, int]:
    (root / "smtp").mkdir(parents=True)
    smtp = SmtpServer(root / "smtp")
    smtp.start()
    try:
        inv = load(root, customers, delivery_with(
            smtp={"host": "127.0.0.1", "port": smtp.port, "security": "none", "from": "NOC <noc@isp.example>",
                  "pool_size": pool}, mqtt=None, desk=None))
        events = root / "events.jsonl"
        events.write_text(json.dumps(dataclasses.asdict(ev("opened", T0, ids(customers, 0)))) + "\n")
        db = root / "monitor.db"
        argv = [sys.executable, "-m", "tests.delivery_child", inv.source, str(db)]
        env = {**os.environ, **SECRETS}
        kill_at = rng.randrange(1, customers)
        child = subprocess.Popen([*argv, str(events)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while delivered(db) < kill_at and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait()
        before = smtp.count()
        subprocess.run([*argv, "-"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
        counts = smtp.repeats()
        with sqlite3.connect(db) as con:
            expected, assumed = con.execute(
                "SELECT COUNT(*), SUM(result LIKE 'assumed%') FROM outbox WHERE channel = 'email'").fetchone()
    finally:
        smtp.stop()
    return {"kill_after": kill_at, "sent_before_kill": before, "received": sum(counts.values()),
            "notices": len(counts), "expected": expected, "assumed_delivered": assumed or 0,
            "repeated": sum(1 for n in counts.values() if n > 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    results = []
    for i in range(args.trials):
        with tempfile.TemporaryDirectory() as tmp:
            r = trial(Path(tmp), args.customers, args.pool, rng)
        results.append(r)
        print(" ".join(f"{k}={v}" for k, v in {"trial": i + 1, **r}.items()), flush=True)
    lost = sum(r["expected"] - r["notices"] for r in results)
    with_repeat = [r["repeated"] for r in results if r["repeated"]]
    print(f"trials={len(results)} customers={args.customers} pool={args.pool} lost_notices={lost} "
          f"trials_with_a_repeat={len(with_repeat)} repeated_mails_total={sum(with_repeat)} "
          f"max_repeated_in_a_trial={max(with_repeat, default=0)}")


if __name__ == "__main__":
    main()
