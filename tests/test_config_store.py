"""``daemon.store`` (issue 13): absent is the SQLite file in state_dir; a PostgreSQL URL names the database,
its password comes from the usual secret sources and never from the URL, nor into any message."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.db import store_location
from monitor.db_postgres import PostgreSQL
from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.inventory.settings import store_url_problem
from tests.test_config_numbers import CUSTOMERS_LINE, section_problems
from tests.test_inventory import BASE, ENV

PASSWORD = "pg-s3cret-value"


def load(folder: Path, section: str, env: dict[str, str] | None = None, secrets: bool = True) -> Inventory:
    (folder / "sites.yaml").write_text(BASE.replace("customers:\n", f"{section}\ncustomers:\n"), encoding="utf-8")
    return load_inventory(folder / "sites.yaml", env={**ENV, **(env or {})}, secrets=secrets)


def test_absent_is_the_sqlite_file_in_state_dir(tmp_path: Path) -> None:
    inv = load(tmp_path, "daemon: {state_dir: here}")
    assert (inv.daemon.store, inv.daemon.store_password) == ("", None)
    assert store_location(inv.daemon) == tmp_path / "here" / "monitor.db"


def test_a_postgresql_url_with_its_password_from_a_secret(tmp_path: Path) -> None:
    (tmp_path / "pg").write_text(PASSWORD + "\n")
    for ref in ("{env: PG_PASSWORD}", "{file: pg}"):
        inv = load(tmp_path, f"daemon: {{store: 'postgresql://monitor@db.example:5433/monitor?sslmode=require',"
                             f" store_password: {ref}}}", {"PG_PASSWORD": PASSWORD})
        where = store_location(inv.daemon)
        assert isinstance(where, PostgreSQL)
        assert (where.url, where.password) == ("postgresql://monitor@db.example:5433/monitor?sslmode=require",
                                               PASSWORD)
        assert where.describe() == "postgresql://monitor@db.example:5433/monitor"
        assert PASSWORD not in repr(inv.daemon) and PASSWORD not in repr(where)


def test_a_server_on_this_machine_by_its_unix_socket(tmp_path: Path) -> None:
    """libpq's form: no host in the URL, the socket's folder as ``host=`` (the port names the socket file)."""
    for url in ("postgresql://monitor@/monitor?host=/run/postgresql",
                "postgresql://monitor@:5433/monitor?host=/var/run/postgresql&sslmode=disable"):
        inv = load(tmp_path, f"daemon: {{store: '{url}', store_password: {{env: PG_PASSWORD}}}}",
                   {"PG_PASSWORD": PASSWORD})
        where = store_location(inv.daemon)
        assert isinstance(where, PostgreSQL) and where.url == url
        assert where.describe() == url.removesuffix("&sslmode=disable")


def test_the_tools_that_send_nothing_still_get_the_stores_password(tmp_path: Path) -> None:
    """``monitor incidents``/``report`` load without secrets, but they read the store too."""
    inv = load(tmp_path, "daemon: {store: 'postgresql://monitor@db/monitor', store_password: {env: PG_PASSWORD}}",
               {"PG_PASSWORD": PASSWORD}, secrets=False)
    assert inv.daemon.store_password is not None and inv.daemon.store_password.reveal() == PASSWORD


EXACT = [
    ("daemon: {store: /var/lib/monitor/monitor.db}",
     "daemon.store: expected postgresql://USER@HOST[:PORT]/DATABASE (PostgreSQL; leave store out for the SQLite "
     "file in state_dir), got '/var/lib/monitor/monitor.db'"),
    ("daemon: {store: 'mysql://monitor:hunter2@db/monitor'}",
     "daemon.store: expected postgresql://USER@HOST[:PORT]/DATABASE (PostgreSQL; leave store out for the SQLite "
     "file in state_dir), got something else"),
    (f"daemon: {{store: 'postgresql://monitor:{PASSWORD}@db/monitor'}}",
     "daemon.store: a password does not belong in the URL (the config is copied, diffed and pasted): give it as "
     "store_password: {env: NAME}, {file: PATH} or {credential: NAME}"),
    ("daemon: {store: 'postgresql://monitor@/monitor'}",
     "daemon.store: missing the host (or, for a server on this machine, its socket's folder: "
     "postgresql://USER@/DATABASE?host=/run/postgresql) (expected postgresql://USER@HOST[:PORT]/DATABASE)"),
    ("daemon: {store: 'postgresql://monitor@db/monitor?host=/run/postgresql'}",
     "daemon.store: the host is given twice (in the URL and as host=) (expected postgresql://USER@HOST[:PORT]/DATABASE)"),
    ("daemon: {store: 'postgresql://monitor@/monitor?host=run/postgresql'}",
     "daemon.store: host= takes the folder of the server's Unix socket, an absolute path such as /run/postgresql"
     " (expected postgresql://USER@HOST[:PORT]/DATABASE)"),
    ("daemon: {store: 'postgresql://monitor@/monitor?host=/a,/b'}",
     "daemon.store: the socket's folder must be one printable path (no commas: one server)"
     " (expected postgresql://USER@HOST[:PORT]/DATABASE)"),
    (f"daemon: {{store: 'postgresql://monitor@/monitor?host=/{'d' * 100}'}}",
     "daemon.store: the socket's folder is too long for a Unix socket (92 bytes at most)"
     " (expected postgresql://USER@HOST[:PORT]/DATABASE)"),
    ("daemon: {store: 'postgresql://monitor@/monitor?host=/run&host=/tmp'}",
     "daemon.store: parameter 'host' given twice (expected postgresql://USER@HOST[:PORT]/DATABASE)"),
    ("daemon: {store: 'postgresql://monitor@db'}",
     "daemon.store: missing the database name (expected postgresql://USER@HOST[:PORT]/DATABASE)"),
    ("daemon: {store: 'postgresql://monitor@db/a/b'}",
     "daemon.store: bad database name 'a/b' (one path segment) (expected postgresql://USER@HOST[:PORT]/DATABASE)"),
    ("daemon: {store: 'postgresql://monitor@db:70000/monitor'}",
     "daemon.store: bad URL (Port out of range 0-65535; expected postgresql://USER@HOST[:PORT]/DATABASE)"),
    ("daemon: {store: 'postgresql://monitor@db:0/monitor'}",
     "daemon.store: a port must be between 1 and 65535 (expected postgresql://USER@HOST[:PORT]/DATABASE)"),
    ("daemon: {store: 'postgresql://monitor@db/monitor?password=x'}",
     "daemon.store: unknown parameter 'password' (only sslmode, and host for a Unix socket's folder) (expected"
     " postgresql://USER@HOST[:PORT]/DATABASE)"),
    ("daemon: {store: 'postgresql://monitor@db/monitor?sslmode=maybe'}",
     "daemon.store: bad sslmode 'maybe' (expected one of: disable, allow, prefer, require, verify-ca, verify-full)"
     " (expected postgresql://USER@HOST[:PORT]/DATABASE)"),
    ("daemon: {store: 5432}", "daemon.store: expected a string, got an integer"),
    (f"daemon: {{store: 'postgresql://monitor@db/monitor', store_password: {PASSWORD}}}",
     "daemon.store_password: secrets cannot be written inline; use {env: NAME}, {file: PATH} or {credential: NAME}"),
    ("daemon: {store: 'postgresql://monitor@db/monitor', store_password: {env: NOT_SET}}",
     "daemon.store_password: environment variable NOT_SET is not set"),
    ("daemon: {store_password: {env: PG_PASSWORD}}",
     "daemon.store_password: given without store: (the SQLite default has no password; expected store: "
     "postgresql://USER@HOST[:PORT]/DATABASE beside it)"),
]


@pytest.mark.parametrize(("section", "expected"), EXACT, ids=[e[0] for e in EXACT])
def test_a_mistaken_store_is_reported_exactly(tmp_path: Path, section: str, expected: str) -> None:
    assert section_problems(tmp_path, section) == [f"sites.yaml:{CUSTOMERS_LINE}: {expected}"]  # (no password)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(user=st.text(max_size=20), password=st.text(min_size=1, max_size=20), rest=st.text(max_size=40))
def test_no_message_ever_quotes_a_password_written_into_the_url(user: str, password: str, rest: str) -> None:
    """Whatever follows ``user:password@``, the answer is a problem that does not contain the password."""
    for url in (f"postgresql://{user}:{password}@{rest}", f"postgres://{user}:{password}@{rest}",
                f"{rest}://{user}:{password}@db/x"):
        problem = store_url_problem(url)
        assert problem is not None
        if len(password) >= 4:  # (shorter ones occur in the fixed wording by chance)
            assert password not in problem
        if url.startswith("postgresql://") and ":" in user + password and "@" in url:
            assert problem.startswith("a password does not belong in the URL")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(folder=st.text(max_size=120))
def test_a_socket_folder_is_taken_only_when_a_server_could_listen_there(folder: str) -> None:
    """Whatever ``host=`` holds, it is accepted only as one absolute, printable path short enough for the
    socket's own path (sun_path, 107 bytes with the server's file name), never a list of servers."""
    url = f"postgresql://monitor@/monitor?{urlencode({'host': folder})}"
    problem = store_url_problem(url)
    usable = (folder.startswith("/") and folder.isprintable() and "," not in folder
              and len(f"{folder}/.s.PGSQL.65535".encode()) <= 107)
    assert (problem is None) == usable, (folder, problem)


def test_a_config_error_loses_nothing_else(tmp_path: Path) -> None:
    """Every other problem of the file is still reported beside the store's."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "daemon: {store: 'postgresql://monitor@db', concurrency: 0}")
    assert len(info.value.problems) == 2
