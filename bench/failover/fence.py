"""What fencing costs the outbox (issue 13): the worker's path per row with and without the lease check.

    python -m bench.failover.fence [--rows 500] [--rounds 3]

On a throwaway PostgreSQL 15 (tests/servers/postgres.py), per row what a delivery worker does:
claim it (``take``), mark it sending, record it delivered (``finish``), each a write transaction.
Fenced: this process holds the lease (``monitor.db_postgres.FENCE``), so each of them also checks
the lease row's epoch and expiry after the write lock, in the same round trip. Rounds interleaved;
rows per second.
"""

from __future__ import annotations

import argparse
import statistics
import time

from monitor.db_postgres import FENCE
from monitor.delivery.outbox import NewRow, Outbox
from monitor.ha.store import LeaseStore
from tests.servers.postgres import PostgreSQL as Server
from tests.store_engines import fresh_database


def rows_per_second(server: Server, rows: int, fenced: bool) -> float:
    db = fresh_database(server)
    lease = LeaseStore(db, "bench")
    outbox = Outbox(db)
    try:
        got = lease.acquire(3600.0)
        assert got is not None
        FENCE.epoch = got[0] if fenced else None
        outbox.add([NewRow(f"i/opened/c{i}/1", "i", "opened", f"c{i}", "email", "", {"n": i}) for i in range(rows)],
                   {}, {}, 0.0)
        start = time.perf_counter()
        done = 0
        while done < rows:
            [row] = outbox.take("email", 1.0, 1)
            outbox.finish([], [], [], 1.0, sending=[row.id])
            outbox.finish([(row.id, None)], [], [], 1.0)
            done += 1
        return rows / (time.perf_counter() - start)
    finally:
        FENCE.epoch = None
        outbox.close()
        lease.close()
        db.close_all()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    server = Server()
    server.start(timeout=60)
    results: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(args.rounds):
            for fenced in (False, True):
                results[fenced].append(rows_per_second(server, args.rows, fenced))
                print(f"{'fenced' if fenced else 'plain '}: {results[fenced][-1]:.0f} rows/s", flush=True)
    finally:
        server.remove()
    for fenced, values in results.items():
        print(f"{'fenced' if fenced else 'plain '}: min {min(values):.0f}, median {statistics.median(values):.0f},"
              f" max {max(values):.0f} rows/s")


if __name__ == "__main__":
    main()
