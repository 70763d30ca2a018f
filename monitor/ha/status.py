"""``monitor status``: which daemon is active, since when, and the lease's epoch (issue 13).

Read from the store itself (the lease row), so it answers the same on every machine and whether
or not a daemon runs here. Exit status: 0 a daemon is active, 3 none is (the lease expired or was
never taken), 1 the store cannot be read. On the embedded SQLite store there is no lease: the one
daemon is active whenever it runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from monitor.db import store_location
from monitor.inventory.loader import load_inventory

EXIT_NONE_ACTIVE = 3


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="which daemon is active (active/standby on PostgreSQL), since when, epoch")
    p.add_argument("--config", type=Path, default=Path("config/sites.yaml"),
                   help="inventory and settings (YAML; default: config/sites.yaml)")
    p.set_defaults(handler=main)


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def main(args: argparse.Namespace) -> int:
    where = store_location(load_inventory(args.config).daemon)
    if isinstance(where, Path):
        print(f"store: SQLite {where}: no lease, the daemon is active whenever it runs")
        return 0
    from monitor.db_postgres import PostgreSQL
    from monitor.ha.store import LeaseStore

    assert isinstance(where, PostgreSQL)
    store = LeaseStore(where)
    try:
        lease = store.read()
    finally:
        store.close()
    print(f"store: {where.describe()}")
    if lease is None:
        print("active: none (no daemon has taken the lease yet)")
        return EXIT_NONE_ACTIVE
    who = f"{lease.holder} (pid {lease.pid})"
    if not lease.valid:
        print(f"active: none: the lease of {who}, epoch {lease.epoch}, expired {lease.now - lease.expires:.1f} s ago")
        return EXIT_NONE_ACTIVE
    print(f"active: {who}\nsince: {_when(lease.since)} ({lease.now - lease.since:.0f} s)\nepoch: {lease.epoch}\n"
          f"lease: valid {lease.expires - lease.now:.1f} s more")
    return 0
