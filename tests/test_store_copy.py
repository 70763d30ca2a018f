"""``monitor store copy`` (issue 13): an installation's store moves from SQLite to PostgreSQL and back without
losing its history; ``monitor report`` says the same before and after."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from monitor.correlate.store import IncidentStore
from monitor.delivery.outbox import NewRow, Outbox
from monitor.inventory.loader import load_inventory
from monitor.report.source import load_input
from monitor.store import EventStore
from monitor.store_copy import TABLES
from tests.report_support import NOV, OCT, OCTOBER, at, october_store
from tests.store_engines import (  # noqa: F401  (fixtures)
    ThrowawayDatabase,
    Where,
    child_argument,
    connect,
    pg_database_fixture,
    pg_server_fixture,
)

CONFIG = Path(__file__).resolve().parents[1] / "config" / "sites.yaml"


def report(db: Path, out: Path) -> dict[str, Any]:
    assert main(["report", "--config", str(CONFIG), "--db", str(db), "--month", "2026-10", "--by", "node",
                 "--output", str(out), "--quiet"]) == 0
    return {k: v for k, v in json.loads(out.read_text()).items() if k != "generated_at"}


def counts(where: Path | ThrowawayDatabase) -> dict[str, int]:
    db = connect(where)
    try:
        return {t: int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t, _ in TABLES}
    finally:
        db.close()


def source_store(path: Path) -> Path:
    """A SQLite store with rows in every owner's tables: October's history, runs, incidents, the outbox."""
    october_store(path, load_inventory(CONFIG), vantage_outage=True)
    log = EventStore(path)  # the daemon stopped on the 15th 00:00-06:00 (a gap reports count as unknown)
    log.run_stopped(log.run_started(OCT - 86400), at(15, 0))
    log.run_alive(log.run_started(at(15, 6)), NOV)
    log.close()
    outbox = Outbox(path)
    outbox.add([NewRow("I/ticket_open/desk/1", "I", "ticket_open", "desk", "desk", "desk", {"x": "ñ"})],
               {"I": ("open", {"n": 1})}, {"cursor": "5"}, 1.0)
    outbox.close()
    return path


def dump(path: Path) -> list[str]:
    """Every row and table definition of a SQLite store, as SQL text."""
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def test_sqlite_to_postgresql_and_back_keeps_every_row_and_the_report(
        tmp_path: Path, pg_database: ThrowawayDatabase, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    inv = load_inventory(CONFIG)
    first = source_store(tmp_path / "first.db")
    before = counts(first)
    assert all(before[t] for t in ("state_changes", "monitor_runs", "incidents", "incident_targets",
                                   "incident_events", "maintenance", "outbox", "delivery_state"))
    monkeypatch.setenv("PGPASSWORD", pg_database.password or "")
    assert main(["store", "copy", "--from", f"sqlite:{first}", "--to", pg_database.url]) == 0
    assert "store copy: done" in capsys.readouterr().err
    assert counts(pg_database) == before
    back = tmp_path / "back.db"
    assert main(["store", "copy", "--from", pg_database.url, "--to", f"sqlite:{back}"]) == 0
    assert counts(back) == before
    original = report(first, tmp_path / "a.json")
    assert original == report(back, tmp_path / "b.json")
    assert original["totals"]["unknown_min"] and original["totals"]["blind_min"]
    a, b = (load_input(where, inv, OCTOBER, until=NOV) for where in (first, pg_database))  # and on PostgreSQL
    assert (a.history, a.incidents, a.blind, a.maintenance) == (b.history, b.incidents, b.blind, b.maintenance)

    # the copy goes on where the original left off: new rows get new ids on PostgreSQL too
    store = IncidentStore(pg_database)
    window = store.add_window("ap-centro-1", 1.0, 2.0, "after the move", "ana", [], 0.5)
    assert window > max(m.id for m in store.maintenance(include_removed=True) if m.id != window)
    store.close()
    log = EventStore(pg_database)
    run = log.run_started(2e9)
    assert run == before["monitor_runs"] + 1
    log.close()


def test_a_target_that_holds_data_is_refused_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, target = tmp_path / "a.db", tmp_path / "b.db"
    october_store(source, load_inventory(CONFIG))
    october_store(target, load_inventory(CONFIG))
    kept = counts(target)
    assert main(["store", "copy", "--from", f"sqlite:{source}", "--to", f"sqlite:{target}"]) == 1
    assert capsys.readouterr().err == (f"monitor: {target} already holds data ({kept['state_changes']} rows in"
                                       " state_changes): copy only into a new, empty store\n")
    assert counts(target) == kept


@pytest.mark.parametrize(("args", "expected"), [
    (["--from", "/var/lib/monitor/monitor.db", "--to", "sqlite:x"],
     "--from: expected sqlite:PATH or postgresql://USER@HOST[:PORT]/DATABASE, got '/var/lib/monitor/monitor.db'"),
    (["--from", "sqlite:x", "--to", "postgresql://monitor:s3cret@db/monitor"],
     "--to: a password does not belong in the URL (the config is copied, diffed and pasted): give it as "
     "store_password: {env: NAME}, {file: PATH} or {credential: NAME}"),
    (["--from", "sqlite:", "--to", "sqlite:x"], "--from: expected sqlite:PATH, got no path"),
])
def test_mistaken_stores_are_named(args: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "copy", *args]) == 2
    err = capsys.readouterr().err
    assert err == expected + "\n" and "s3cret" not in err


#: the target refuses one table's rows, in SQL each engine runs (a row of outbox: tables before it are copied)
REFUSE = {
    "sqlite": "CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    "postgresql": "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                  " RAISE EXCEPTION 'refused by the test'; END $$;"
                  " CREATE TRIGGER refuse BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse()",
}
#: the target's server cuts the copy's connection while it inserts the first incident event
CUT = ("CREATE FUNCTION cut() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
       " PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$;"
       " CREATE TRIGGER cut BEFORE INSERT ON incident_events FOR EACH ROW EXECUTE FUNCTION cut()")


def prepared_target(where: Where, sql: str) -> None:
    """``where`` brought up to this release's tables (as the copy opens it), then ``sql`` run on it."""
    Outbox(where).close()
    db = connect(where)
    try:
        db.execute(sql)
    finally:
        db.close()


def store_argument(where: Where) -> str:
    return f"sqlite:{where}" if isinstance(where, Path) else child_argument(where)[0]


@pytest.mark.parametrize(("engine", "failure"), [
    ("sqlite", "refused row"), ("postgresql", "refused row"), ("postgresql", "connection cut")])
def test_a_copy_that_fails_part_way_leaves_the_target_empty_and_the_source_untouched(
        tmp_path: Path, engine: str, failure: str, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    source = source_store(tmp_path / "source.db")
    before, rows = counts(source), dump(source)
    target: Path | ThrowawayDatabase = (tmp_path / "target.db" if engine == "sqlite"
                                        else request.getfixturevalue("pg_database"))
    prepared_target(target, REFUSE[engine] if failure == "refused row" else CUT)
    if isinstance(target, ThrowawayDatabase):
        monkeypatch.setenv("PGPASSWORD", target.password or "")
    assert main(["store", "copy", "--from", f"sqlite:{source}", "--to", store_argument(target)]) == 1
    err = capsys.readouterr().err
    table = "outbox" if failure == "refused row" else "incident_events"
    shown = target if isinstance(target, Path) else target.describe()
    assert err.startswith(f"monitor: cannot copy {table} into {shown} (nothing was written): "), err
    said = ("refused by the test",) if failure == "refused row" else ("terminating connection", "server closed")
    assert any(words in err for words in said), err  # (the driver's words, depending on when it noticed the cut)
    assert counts(target) == dict.fromkeys(before, 0)  # (state_changes... went in before the failure)
    assert counts(source) == before and dump(source) == rows
