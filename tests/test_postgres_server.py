"""The throwaway PostgreSQL the store tests of issue 13 run against: it starts as a real server on
loopback, enforces its password, keeps data across a restart, and leaves nothing behind."""

from __future__ import annotations

import os

import pytest

from tests.servers.postgres import PostgreSQL

pytestmark = [pytest.mark.servers, pytest.mark.skipif(os.geteuid() != 0, reason="runs postgres as its own user")]


def test_starts_on_loopback_checks_passwords_and_survives_a_restart() -> None:
    pg = PostgreSQL()
    try:
        pg.start()
        assert pg.psql("SHOW server_version").startswith("15.")
        assert pg.psql("SELECT inet_server_addr()") == "127.0.0.1"
        pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        wrong = PostgreSQL.__new__(PostgreSQL)
        wrong.__dict__.update(pg.__dict__, password="wrong")
        with pytest.raises(RuntimeError, match="password authentication failed"):
            wrong.psql("SELECT 1")
        pg.stop()
        assert not pg.ready()
        pg.start()
        assert pg.psql("SELECT x FROM t") == "42"
    finally:
        pg.remove()
    assert not pg.root.exists()
