"""``monitor store copy --from SRC --to DST``: move an installation's store between engines, history and all.

SRC and DST are ``sqlite:PATH`` or ``postgresql://USER@HOST[:PORT]/DATABASE`` (the password from libpq's
own sources, ``PGPASSWORD`` or ``~/.pgpass``: never on the command line). Both are opened like the
daemon opens a store (brought up to this release's tables first); the target must hold no rows. Every
table of every owner is copied with its ids, in ONE transaction on the target (a failure leaves it as
empty as it was), the target's id sequences are moved past the copied ids, and the row counts are
compared. Stop the daemon first: rows it writes meanwhile are not copied. ``monitor report`` gives the
same output on both stores afterwards (tests/test_store_copy.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from monitor.db import (
    ERRORS,
    SQLite,
    StoreConnection,
    Where,
    engine_for,
    open_store,
    transaction,
)
from monitor.errors import ConfigError, StorageError
from monitor.store import components

#: every owner's tables, parents before children, and whether the table has an ``id`` sequence
TABLES: tuple[tuple[str, bool], ...] = (
    ("state_changes", True), ("target_state", False), ("monitor_runs", True), ("zone_blind", True),
    ("incidents", False), ("incident_targets", False), ("incident_events", True), ("incident_actions", True),
    ("maintenance", True), ("maintenance_events", True), ("correlation_meta", False),
    ("outbox", True), ("delivery_state", False), ("delivery_tickets", False), ("delivery_meta", False),
)
BATCH = 5000


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("store", help="the daemon's store: copy it between SQLite and PostgreSQL")
    actions = p.add_subparsers(dest="store_action", required=True)
    copy = actions.add_parser("copy", help="copy every table, with its ids, into a new, empty store")
    copy.add_argument("--from", dest="source", required=True, help="sqlite:PATH or postgresql://USER@HOST/DB")
    copy.add_argument("--to", dest="target", required=True, help="sqlite:PATH or postgresql://USER@HOST/DB")
    copy.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    source, target = parse_store(args.source, "--from"), parse_store(args.target, "--to")
    for table, rows in copy(source, target):
        print(f"store copy: {table}: {rows} rows", file=sys.stderr)
    print(f"store copy: done, {engine_for(source).describe()} -> {engine_for(target).describe()}", file=sys.stderr)
    return 0


def parse_store(text: str, option: str) -> Where:
    """``sqlite:PATH`` or a PostgreSQL URL (checked like ``daemon.store``), as a store location."""
    if text.startswith("sqlite:"):
        path = text.removeprefix("sqlite:")
        if not path:
            raise ConfigError(f"{option}: expected sqlite:PATH, got no path")
        return Path(path)
    from monitor.inventory.settings import STORE_FORM, store_url_problem

    if not text.startswith("postgresql://"):
        shown = f" {text!r}" if "@" not in text else " something else"  # (could hold a password)
        raise ConfigError(f"{option}: expected sqlite:PATH or {STORE_FORM}, got{shown}")
    if (problem := store_url_problem(text)) is not None:
        raise ConfigError(f"{option}: {problem}")
    from monitor.db_postgres import PostgreSQL

    return PostgreSQL(text)  # (password: PGPASSWORD or ~/.pgpass, read by libpq)


def copy(source: Where, target: Where) -> Iterator[tuple[str, int]]:
    """Copy every table; yields (table, rows) as each is done. StorageError: nothing was written."""
    if isinstance(source, Path) and not source.exists():
        raise StorageError(f"{source}: no store here")
    src = open_store(engine_for(source), components(), what="the source store", busy_timeout=5.0)
    try:
        dst = open_store(engine_for(target), components(), what="the target store", busy_timeout=5.0)
        try:
            yield from _copy(src, dst, engine_for(target).describe(), isinstance(engine_for(target), SQLite))
        finally:
            dst.close()
    finally:
        src.close()


def _copy(src: StoreConnection, dst: StoreConnection, where: str, sqlite: bool) -> Iterator[tuple[str, int]]:
    for table, _ in TABLES:
        (n,) = dst.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        if n:
            raise StorageError(f"{where} already holds data ({n} rows in {table}): copy only into a new, empty store")
    done: list[tuple[str, int]] = []
    table = TABLES[0][0]
    try:
        with transaction(dst):
            for table, has_id in TABLES:
                done.append((table, _table(src, dst, table, has_id)))
                if has_id and not sqlite:  # (SQLite's AUTOINCREMENT follows the ids inserted)
                    dst.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                                f" COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")
    except ERRORS as exc:
        raise StorageError(f"cannot copy {table} into {where} (nothing was written): {exc}") from exc
    for table, rows in done:
        (n,) = dst.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        if n != rows:
            raise StorageError(f"{where}: {table} has {n} rows after the copy, expected {rows}")
        yield table, rows


def _table(src: StoreConnection, dst: StoreConnection, table: str, has_id: bool) -> int:
    cur: Any = src.execute(f"SELECT * FROM {table} LIMIT 0")
    names = [d[0] for d in cur.description]
    cur.fetchall()
    columns = ", ".join(f'"{n}"' for n in names)
    insert = f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(names))})"
    rows = 0
    batch: list[tuple[Any, ...]] = []
    for row in src.execute(f"SELECT {columns} FROM {table}" + (" ORDER BY id" if has_id else "")):
        batch.append(tuple(row))
        if len(batch) >= BATCH:
            dst.executemany(insert, batch)
            rows, batch = rows + len(batch), []
    if batch:
        dst.executemany(insert, batch)
        rows += len(batch)
    return rows
