"""The outbox hot path on PostgreSQL with each client, and on SQLite: which client the store uses (issue 13).

    .venv/bin/python -m bench.store.run [--rows 2000] [--rounds 5]

Per row a worker does what ``Outbox.take`` / ``finish`` do: claim it (a write transaction: the store's
write lock, the due-row query, the claim), mark it as sending (one commit), record it delivered (one
commit): three write transactions, each taking the advisory write lock as every write on PostgreSQL
does. Clients: psycopg 3 sync (the real ``Outbox`` on ``monitor.db_postgres``: pipelined transactions,
4 round trips a row), psycopg 3 async and asyncpg (the same statements written for each, a round trip
each: 10 a row, the store before pipelining), and SQLite (the real ``Outbox`` on a file) for
reference. The rounds are interleaved (every client once per round, in turn) so that a machine
shared with other work slows them alike; prints rows/s min/median/max per client and the median
ratios against psycopg sync. A throwaway PostgreSQL 15 is started on loopback (tests/servers/postgres.py),
``fsync=off`` like the tests': this measures the clients and the round trips, not the disk. asyncpg is
not a dependency: ``pip install asyncpg`` to include it, else it is left out (said so).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import psycopg

from monitor.delivery.outbox import CLAIMED, SENDING, NewRow, Outbox
from monitor.store import components
from tests.servers.postgres import PostgreSQL as Server
from tests.store_engines import fresh_database

WRITE_LOCK = "SELECT pg_advisory_xact_lock(7164297279040375)"  # (any key: each client takes the same one)
DUE = ("SELECT id FROM outbox o WHERE channel = {p1} AND status = 'pending' AND inflight = 0 AND next_at <= {p2}"
       " AND (grp = '' OR id = (SELECT MIN(id) FROM outbox p WHERE p.grp = o.grp AND p.status = 'pending'))"
       " ORDER BY id LIMIT 1")
CLAIM = "UPDATE outbox SET inflight = {p1} WHERE id = {p2}"
DELIVERED = ("UPDATE outbox SET status = 'delivered', inflight = 0, attempts = attempts + 1, done_at = {p1},"
             " result = {p2} WHERE id = {p3}")


def rows(n: int, tag: str) -> list[NewRow]:
    return [NewRow(f"I-{tag}/notify/c{i}/1", f"I-{tag}", "notify", f"c{i}", "email", "", {"i": i}) for i in range(n)]


def outbox_path(outbox: Outbox, n: int) -> float:
    """The real Outbox: take one, mark it sending, record it delivered; seconds for ``n`` rows."""
    t0 = time.perf_counter()
    for _ in range(n):
        [row] = outbox.take("email", 10.0, 1)
        outbox.finish([], [], [], 10.0, sending=[row.id])
        outbox.finish([(row.id, "ok")], [], [], 10.0)
    return time.perf_counter() - t0


async def psycopg_async_path(url: str, password: str | None, n: int) -> float:
    conn = await psycopg.AsyncConnection.connect(url, password=password, autocommit=True)
    q = {k: v.format(p1="%s", p2="%s", p3="%s") for k, v in (("due", DUE), ("claim", CLAIM), ("done", DELIVERED))}
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            async with conn.transaction():
                await conn.execute(WRITE_LOCK)
                cur = await conn.execute(q["due"], ("email", 10.0))
                (rid,) = await cur.fetchone() or (None,)
                await conn.execute(q["claim"], (CLAIMED, rid))
            async with conn.transaction():
                await conn.execute(WRITE_LOCK)
                await conn.execute(q["claim"], (SENDING, rid))
            async with conn.transaction():
                await conn.execute(WRITE_LOCK)
                await conn.execute(q["done"], (10.0, "ok", rid))
        return time.perf_counter() - t0
    finally:
        await conn.close()


async def asyncpg_path(url: str, password: str | None, n: int) -> float:
    import asyncpg

    conn = await asyncpg.connect(url, password=password)
    due, claim = DUE.format(p1="$1", p2="$2"), CLAIM.format(p1="$1", p2="$2")
    done = DELIVERED.format(p1="$1", p2="$2", p3="$3")
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            async with conn.transaction():
                await conn.execute(WRITE_LOCK)
                rid = await conn.fetchval(due, "email", 10.0)
                await conn.execute(claim, CLAIMED, rid)
            async with conn.transaction():
                await conn.execute(WRITE_LOCK)
                await conn.execute(claim, SENDING, rid)
            async with conn.transaction():
                await conn.execute(WRITE_LOCK)
                await conn.execute(done, 10.0, "ok", rid)
        return time.perf_counter() - t0
    finally:
        await conn.close()


def have_asyncpg() -> bool:
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return False
    return True


def summary(name: str, rates: list[float], base: float) -> str:
    med = statistics.median(rates)
    return (f"{name:<16} rows/s min {min(rates):8.0f}  median {med:8.0f}  max {max(rates):8.0f}"
            f"   median vs psycopg sync {med / base:5.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000, help="rows through the hot path per client and round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    server = Server()
    try:
        server.start(timeout=60)
        pg = fresh_database(server)
        folder = Path(tempfile.mkdtemp(prefix="bench-store-"))
        sqlite = Outbox(folder / "monitor.db")
        pg_outbox = Outbox(pg)

        def real(outbox: Outbox) -> Callable[[int, str], float]:
            def run(n: int, tag: str) -> float:
                outbox.add(rows(n, tag), {}, {}, 1.0)
                return outbox_path(outbox, n)
            return run

        def other(path: Callable[[str, str | None, int], Coroutine[Any, Any, float]]) -> Callable[[int, str], float]:
            def run(n: int, tag: str) -> float:
                pg_outbox.add(rows(n, tag), {}, {}, 1.0)  # queued the same way; taken by the other client
                return asyncio.run(path(pg.url, pg.password, n))
            return run

        clients: dict[str, Callable[[int, str], float]] = {
            "sqlite": real(sqlite), "psycopg sync": real(pg_outbox), "psycopg async": other(psycopg_async_path)}
        if have_asyncpg():
            clients["asyncpg"] = other(asyncpg_path)
        else:
            print("asyncpg is not installed (pip install asyncpg): left out")
        rates: dict[str, list[float]] = {name: [] for name in clients}
        clients_list = list(clients.items())
        for r in range(args.rounds):
            order = clients_list if r % 2 == 0 else clients_list[::-1]  # interleaved, alternating who goes first
            for name, run in order:
                rates[name].append(args.rows / run(args.rows, f"{name}-{r}".replace(" ", "_")))
        print(f"outbox hot path: claim + mark sending + record delivered, {args.rows} rows x {args.rounds} rounds"
              f" ({len(components())} store components migrated), PostgreSQL {server.psql('SHOW server_version')}"
              f" on loopback, fsync=off")
        base = statistics.median(rates["psycopg sync"])
        for name in clients:
            print(summary(name, rates[name], base))
        sqlite.close()
        pg_outbox.close()
        pg.close_all()
    finally:
        server.remove()


if __name__ == "__main__":
    main()
