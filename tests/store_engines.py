"""The daemon's store on both engines, for tests that must hold on each (issue 13).

``where`` is a fixture parametrized over ``sqlite`` (a file in ``tmp_path``) and ``postgresql`` (a
fresh database of its own on a real PostgreSQL 15 the tests start: one server per test module, see
:func:`pg_server_fixture`). Import both fixtures into a test module::

    from tests.store_engines import pg_server_fixture, where_fixture  # noqa: F401  (fixtures)

A test takes ``where`` and hands it to the stores (``EventStore(where)``, ``Outbox(where)``, a
service's ``db_path``) exactly as it handed them a path before; :func:`connect` opens a plain
connection for looking inside (qmark SQL on both engines), :func:`child_code` rebuilds ``where`` in a
child process (kill -9 tests). Nothing is skipped: without PostgreSQL installed the ``postgresql``
cases fail, naming the command that installs it (tests/servers/postgres.py).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from monitor.db import StoreConnection, engine_for
from monitor.db_postgres import PostgreSQL
from tests.servers.postgres import PostgreSQL as Server

Where = Path | PostgreSQL

ENGINES = ["sqlite", "postgresql"]
_names = itertools.count(1)


@pytest.fixture(name="pg_server", scope="module")
def pg_server_fixture() -> Iterator[Server]:
    """One PostgreSQL per test module (a start costs about a second); each test gets its own database."""
    if os.geteuid() != 0:
        pytest.fail("the PostgreSQL store tests start postgres as its own system user: run them as root")
    server = Server()
    try:
        server.start(timeout=60)
        yield server
    finally:
        server.remove()


class ThrowawayDatabase(PostgreSQL):
    """The engine, remembering its connections: the fixture closes what a test left open."""

    def __init__(self, url: str, password: str | None = None) -> None:
        super().__init__(url, password)
        self.opened: list[psycopg.Connection[Any]] = []

    def raw_connect(self) -> psycopg.Connection[Any]:
        conn = super().raw_connect()
        self.opened.append(conn)
        return conn

    def close_all(self) -> None:
        for conn in self.opened:
            conn.close()


def fresh_database(server: Server) -> ThrowawayDatabase:
    """A new, empty database on ``server`` as an engine (URL without the password, which comes apart,
    as from the configuration's secret sources)."""
    name = f"t{os.getpid()}_{next(_names)}"
    with psycopg.connect(host="127.0.0.1", port=server.port, user=server.user, password=server.password,
                         dbname="postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return ThrowawayDatabase(f"postgresql://{server.user}@127.0.0.1:{server.port}/{name}", password=server.password)


def over_socket(db: ThrowawayDatabase, server: Server) -> ThrowawayDatabase:
    """The same database reached through the server's Unix socket (the config's form for a server on the
    daemon's own machine: no TCP/IP stack in any round trip)."""
    name = db.url.rsplit("/", 1)[1]
    return ThrowawayDatabase(f"postgresql://{server.user}@:{server.port}/{name}?host={server.root}",
                             password=server.password)


@pytest.fixture(name="pg_database")
def pg_database_fixture(pg_server: Server) -> Iterator[ThrowawayDatabase]:
    """A fresh PostgreSQL database of its own; what the test left open is closed after it."""
    db = fresh_database(pg_server)
    try:
        yield db
    finally:
        db.close_all()


@pytest.fixture(name="where", params=ENGINES)
def where_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    """The store on each engine: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "monitor.db"
    db = fresh_database(request.getfixturevalue("pg_server"))
    request.addfinalizer(db.close_all)
    return db


def connect(where: Where) -> StoreConnection:
    """A plain connection to the store (after a store opened it: tables exist), to look inside."""
    return engine_for(where).connect()


def config_keys(where: Where, folder: Path) -> str:
    """The ``daemon:`` keys (after a comma) that put a config's store where ``where`` is: nothing for SQLite
    (the file in state_dir), ``store`` and ``store_password`` (from a file in ``folder``) for PostgreSQL."""
    if isinstance(where, Path):
        return ""
    (folder / "pg-password").write_text(f"{where.password}\n")
    return f", store: '{where.url}', store_password: {{file: pg-password}}"


def configured(where: Where, state_dir: Path) -> Where:
    """The store a daemon configured with :func:`config_keys` writes: for SQLite, the file in its state_dir."""
    return state_dir / "monitor.db" if isinstance(where, Path) else where


def child_argument(where: Where) -> tuple[str, dict[str, str]]:
    """``where`` as a child's command-line argument (a path, or a URL without its password) and the
    environment that carries the password (:func:`from_argument` reads both back)."""
    if isinstance(where, Path):
        return str(where), {}
    return where.url, {"MONITOR_TEST_STORE_PASSWORD": where.password or ""}


def from_argument(arg: str) -> Where:
    """The store a child was given by :func:`child_argument`."""
    if arg.startswith("postgresql://"):
        return PostgreSQL(arg, os.environ.get("MONITOR_TEST_STORE_PASSWORD"))
    return Path(arg)


def child_code(where: Where) -> str:
    """Python source that rebuilds ``where`` as ``db`` in a child process."""
    if isinstance(where, Path):
        return f"from pathlib import Path\ndb = Path({str(where)!r})\n"
    return (f"from monitor.db_postgres import PostgreSQL\n"
            f"db = PostgreSQL({where.url!r}, password={where.password!r})\n")
