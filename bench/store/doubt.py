"""What asking for the transaction id at BEGIN costs (issue 13: a COMMIT whose answer is lost is settled
by ``pg_xact_status`` on that id, monitor/db_postgres.py).

    .venv/bin/python -m bench.store.doubt [--appends 200] [--rounds 20]

``EventStore.append`` of one change (a ``BEGIN IMMEDIATE`` transaction: BEGIN, the write lock and now
the id in one round trip, the rows, COMMIT) with the BEGIN of before and of now, rounds interleaved
(alternating which goes first) on a throwaway PostgreSQL 15 on loopback (tests/servers/postgres.py).
Prints µs per append, wall and this process's CPU, median over the rounds. The outbox's pipelined
transactions are not concerned (they ask for no id).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import psycopg

from monitor.db_postgres import _BEGIN_WRITE, FENCE, Connection
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.servers.postgres import PostgreSQL as Server
from tests.store_engines import fresh_database


def _begin_before(self: Connection, conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    """The BEGIN of before: the write lock and the fence, no transaction id."""
    fence = FENCE.statement() if self.engine.fenced else None
    try:
        return conn.execute(_BEGIN_WRITE if fence is None else f"{_BEGIN_WRITE}; {fence}")
    except psycopg.Error:
        self._rollback()
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    now_begin = Connection._begin_write
    server = Server()
    server.start(timeout=60)
    try:
        store = EventStore(fresh_database(server))
        wall: dict[str, list[float]] = {"before": [], "now": []}
        cpu: dict[str, list[float]] = {"before": [], "now": []}
        ts = 0.0
        for rnd in range(args.rounds):
            order = [("before", _begin_before), ("now", now_begin)]
            for name, begin in order if rnd % 2 else order[::-1]:
                Connection._begin_write = begin  # type: ignore[method-assign]
                t0, c0 = time.perf_counter(), time.process_time()
                for i in range(args.appends):
                    ts += 1
                    store.append([StateChange(f"t{i % 50}", State.UP, State.DOWN, ts, "x")])
                wall[name].append((time.perf_counter() - t0) / args.appends * 1e6)
                cpu[name].append((time.process_time() - c0) / args.appends * 1e6)
        Connection._begin_write = now_begin  # type: ignore[method-assign]
        for name in ("before", "now"):
            print(f"{name:6} wall median {statistics.median(wall[name]):7.1f} us/append"
                  f" (min {min(wall[name]):.1f}, max {max(wall[name]):.1f}),"
                  f" client CPU median {statistics.median(cpu[name]):6.1f} us/append")
        store.close()
    finally:
        server.remove()


if __name__ == "__main__":
    main()
