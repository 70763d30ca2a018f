"""Outbox throughput through the real delivery worker, PostgreSQL against SQLite in one run (issue 13).

    .venv/bin/python -m bench.store.worker [--notices 10000] [--rounds 3] [--concurrency 4] [--tcp-only]

Each round queues ``--notices`` customer notices (one planner transaction, as a burst's fan-out is)
and runs the real :class:`monitor.delivery.worker.Worker` on them until none is pending: claims of
a batch (the email channel's 8 x pool size), the "sending" mark of each row committed before its
send together with the outcomes known so far, the hand-over recorded at the adapter's point of no
return (as the SMTP adapter does at the final "."), the last outcomes at the end. The adapter itself
returns at once: this measures the outbox, not a mail server. Rounds alternate the engines (SQLite
first, then PostgreSQL first), so a machine shared with other work slows both alike; prints
notices/s min/median/max per engine, the ratio of the medians and the ratios round by round
(min/median/max), and the CPU each notice cost: this
process's, and on PostgreSQL its server processes' too (from /proc), a figure the machine's load
does not inflate the way it does the waits for a busy server's answers. PostgreSQL 15 is a throwaway
cluster on this machine (tests/servers/postgres.py, ``fsync=off`` like the tests'): round trips and
server work, not the disk; the SQLite file is in a temporary folder, WAL with ``synchronous=NORMAL``
as the daemon runs it. PostgreSQL is measured twice, through its Unix socket (``postgresql``: how a
daemon on the database's machine reaches it, ``store: postgresql://USER@/DB?host=FOLDER``) and over
TCP on 127.0.0.1 (``postgresql-tcp``: a stand-in for a server on another machine, whose CPU would
then not be this machine's), each with a ratio to SQLite; ``--tcp-only`` leaves the socket out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from monitor.clock import SystemClock
from monitor.db import Where
from monitor.db_postgres import PostgreSQL
from monitor.delivery.config import RetrySettings
from monitor.delivery.outbox import HandedOver, NewRow, Outbox, Row
from monitor.delivery.worker import Worker
from tests.servers.postgres import PostgreSQL as Server
from tests.store_engines import fresh_database, over_socket


class Instant:
    """An adapter that hands each notice over at once, recording its point of no return as SMTP does
    (``handing_over``; else as the channels without one: MQTT, the desks)."""

    channel = "email"

    def __init__(self, handing_over: bool = True) -> None:
        self.sent = 0
        self.handing_over = handing_over

    async def send(self, row: Row, handed_over: HandedOver | None = None) -> str | None:
        if handed_over is not None and self.handing_over:
            handed_over()
        self.sent += 1
        return "ok"

    async def close(self) -> None:
        return None


def notices(n: int, tag: str) -> list[NewRow]:
    return [NewRow(f"INC-{tag}/notify/C-{i:05d}/1", f"INC-{tag}", "notify", f"C-{i:05d}", "email", "",
                   {"to": f"c{i}@example.com", "subject": "Corte de servicio", "body": "Sin servicio " * 20,
                    "language": "es"}) for i in range(n)]


def server_cpu(postmaster: int | None) -> dict[int, float]:
    """CPU seconds (user + system) of each process of the PostgreSQL server started as ``postmaster``."""
    if postmaster is None:
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster or ppid == postmaster:
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def hot_updates(where: PostgreSQL) -> tuple[int, int]:
    """The outbox's row updates on PostgreSQL and how many were HOT (no index written), once the server's
    statistics have them (a session's counts reach them at its end, not at once: read until they hold)."""
    with psycopg.connect(where.url, password=where.password, autocommit=True) as conn:
        last: tuple[int, int] | None = None
        deadline = time.monotonic() + 10
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                               " WHERE relname = 'outbox'").fetchone()
            now = (int(row[0]), int(row[1])) if row else (0, 0)
            if now == last or time.monotonic() > deadline:
                return now
            last = now
            time.sleep(0.5)


async def deliver(outbox: Outbox, n: int, tag: str, concurrency: int, handing_over: bool = True) -> float:
    """Seconds from the worker's start until every one of ``n`` queued notices is recorded delivered."""
    outbox.add(notices(n, tag), {}, {}, time.time())
    sender = Instant(handing_over)
    worker = Worker(outbox, sender, RetrySettings(), SystemClock(), concurrency=concurrency, batch=8 * concurrency)
    t0 = time.perf_counter()
    task = asyncio.create_task(worker.run())
    try:
        while sender.sent < n:  # (counted in memory: polling the store would be measured too)
            await asyncio.sleep(0.005)
        while outbox.pending():  # the last outcomes recorded
            await asyncio.sleep(0.001)
        return time.perf_counter() - t0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert sender.sent == n, (sender.sent, n)


def summary(name: str, rates: list[float]) -> str:
    return (f"{name:<14} notices/s min {min(rates):8.0f}  median {statistics.median(rates):8.0f}"
            f"  max {max(rates):8.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--notices", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4, help="the worker's lanes (the SMTP pool size)")
    ap.add_argument("--tcp-only", action="store_true", help="PostgreSQL over 127.0.0.1 only, not its Unix socket too")
    ap.add_argument("--no-hand-over", action="store_true",
                    help="the adapter records no point of no return (as MQTT and the desks): no hand-over records")
    args = ap.parse_args()
    server = Server()
    try:
        server.start(timeout=60)
        folder = Path(tempfile.mkdtemp(prefix="bench-store-worker-"))
        database = fresh_database(server)
        stores: dict[str, Where] = {"sqlite": folder / "monitor.db"}
        if not args.tcp_only:
            stores["postgresql"] = over_socket(fresh_database(server), server)
        stores["postgresql-tcp"] = database
        outboxes = {name: Outbox(where) for name, where in stores.items()}
        rates: dict[str, list[float]] = {name: [] for name in stores}
        cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in stores}  # (ours, server's) per notice
        names = list(stores)
        postmaster = server.process.pid if server.process is not None else None
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                pg = postmaster if name != "sqlite" else None
                ours, theirs = time.process_time(), server_cpu(pg)
                seconds = asyncio.run(deliver(outboxes[name], args.notices, f"{name}-{r}", args.concurrency,
                                                  not args.no_hand_over))
                after = server_cpu(pg)
                spent = sum(after.values()) - sum(v for pid, v in theirs.items() if pid in after)
                cpu[name].append(((time.process_time() - ours) / args.notices, spent / args.notices))
                rates[name].append(args.notices / seconds)
        print(f"outbox through the real worker: {args.notices} notices x {args.rounds} rounds, {args.concurrency}"
              f" lanes, PostgreSQL {server.psql('SHOW server_version')} on this machine (fsync=off), SQLite WAL,"
              f" {'no hand-over records' if args.no_hand_over else 'a hand-over record a notice'}")
        for name in names:
            print(summary(name, rates[name]))
        for name in names:
            mine = statistics.median(c[0] for c in cpu[name]) * 1e6
            server_us = statistics.median(c[1] for c in cpu[name]) * 1e6
            print(f"{name:<14} CPU per notice (median): this process {mine:6.0f} us, server {server_us:6.0f} us,"
                  f" together {mine + server_us:6.0f} us")
        for name in names[1:]:
            ratio = statistics.median(rates["sqlite"]) / statistics.median(rates[name])
            how = "over TCP on 127.0.0.1" if name.endswith("-tcp") else "through its Unix socket"
            print(f"SQLite / PostgreSQL {how} (medians): {ratio:.2f}x")
            # (each round's pair ran back to back: a slow spell of the shared machine slows both alike)
            pairs = [fast / slow for fast, slow in zip(rates["sqlite"], rates[name], strict=True)]
            print(f"  round by round: min {min(pairs):.2f}x  median {statistics.median(pairs):.2f}x"
                  f"  max {max(pairs):.2f}x")
        for outbox in outboxes.values():
            outbox.close()
        updates, hot = hot_updates(database)
        print(f"postgresql-tcp outbox updates {updates}, HOT (no index entry written) {hot}"
              f" = {hot / max(updates, 1):.0%}")
    finally:
        server.remove()


if __name__ == "__main__":
    main()
