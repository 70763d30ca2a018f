"""The event store: append-only log, consistent current states, migrations; on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.errors import StorageError
from monitor.state import State, StateChange
from monitor.store import MAX_ROWS, MIGRATIONS, EventStore
from tests.store_engines import Where, child_code, connect, pg_server_fixture, where_fixture  # noqa: F401


def test_append_and_read_back(where: Where) -> None:
    store = EventStore(where)
    store.append([StateChange("a", State.UNKNOWN, State.UP, 10.0, "first reply")])
    store.append([StateChange("a", State.UP, State.DOWN, 20.0, "3 consecutive failed polls")])
    store.append([StateChange("b", State.UNKNOWN, State.DOWN, 15.0, "x")])
    assert store.load_states() == {"a": (State.DOWN, 20.0), "b": (State.DOWN, 15.0)}
    assert [c.new for c in store.changes(targets=["a"])] == [State.UP, State.DOWN]
    assert [c.target for c in store.changes(since=12, until=30)] == ["a", "b"]
    first = store.run_started(5.0)
    store.run_alive(first, 6.0)
    store.run_stopped(store.run_started(7.0), 8.0)
    store.close()
    reopened = EventStore(where)
    assert reopened.schema_version == len(MIGRATIONS)
    assert len(list(reopened.changes())) == 3
    assert reopened.runs() == [(5.0, 6.0), (7.0, 8.0)]  # the first crashed: it ends at its last heartbeat
    reopened.close()


def test_a_big_batch_with_repeated_targets_keeps_every_change_in_order_and_each_last_state(where: Where) -> None:
    """A batch is written many rows a statement (a burst of 100,000 remote changes): every change in the
    log in its order, across the statements' boundaries, and each target's state its last change's, even
    when a target changes twice in one batch (PostgreSQL refuses an upsert touching a row twice)."""
    store = EventStore(where)
    batch = [StateChange(f"t{i % 50}", State.UP if i % 100 < 50 else State.DOWN,
                         State.DOWN if i % 100 < 50 else State.UP, 100.0 + i, f"change {i}",
                         "los" if i % 100 < 50 and i % 7 == 0 else None) for i in range(MAX_ROWS * 3 + 77)]
    store.append(batch)
    store.append(batch[:1])  # one row alone after it
    assert list(store.changes()) == [*batch, batch[0]]
    last = {c.target: (c.new, c.ts) for c in batch}
    assert store.load_states() == {**last, "t0": (batch[0].new, batch[0].ts)}
    store.close()


def test_newer_schema_is_refused(where: Where) -> None:
    EventStore(where).close()
    db = connect(where)
    db.execute("UPDATE schema_version SET version = ? WHERE component = 'events'", (len(MIGRATIONS) + 1,))
    db.close()
    with pytest.raises(StorageError, match="newer than this program knows"):
        EventStore(where)


def test_kill_minus_nine_mid_write_leaves_log_and_states_consistent(where: Where) -> None:
    """A writer process killed at a random point: every logged change has its state row and vice versa."""
    EventStore(where).close()
    code = child_code(where) + """
import itertools
from monitor.store import EventStore
from monitor.state import State, StateChange
s = EventStore(db)
print('ready', flush=True)
for i in itertools.count():
    new = State.DOWN if i % 2 else State.UP
    s.append([StateChange(f't{j}', State.UNKNOWN, new, float(i), 'x') for j in range(50)])
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    db = connect(where)
    deadline_rows = 0
    while deadline_rows < 2000:  # let it write a few batches, then kill it hard
        deadline_rows = db.execute("SELECT count(*) FROM state_changes").fetchone()[0]
        assert proc.poll() is None, "the writer died by itself"  # (a loop that would never end)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    db.close()
    store = EventStore(where)
    changes = list(store.changes())
    assert len(changes) % 50 == 0  # whole transactions only
    last = {}
    for c in changes:
        last[c.target] = (c.new, c.ts)
    assert store.load_states() == last
    store.close()


def test_processes_opening_a_new_store_at_once_migrate_it_once(where: Where) -> None:
    """The daemon and a CLI may create the store together: one migrates, the other sees it done."""
    code = child_code(where) + """
import sys
from monitor.store import EventStore
sys.stdin.readline()  # start together
s = EventStore(db, busy_timeout=30.0)
print(s.schema_version)
"""
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=30) for p in procs]
    assert [(p.returncode, out.strip()) for p, (out, _) in zip(procs, results, strict=True)] == [
        (0, str(len(MIGRATIONS)))
    ] * 6, [err for _, err in results]


_SWITCH_RACE = """
import os, sys
from pathlib import Path
from monitor.db import SQLite
root, rounds = Path(sys.argv[1]), int(sys.argv[2])
failed = 0
for n in range(rounds):
    path = root / f"{n}.db"
    gate_r, gate_w = os.pipe()
    kids = []
    for _ in range(6):
        pid = os.fork()
        if pid == 0:
            os.close(gate_w)
            os.read(gate_r, 1)  # start together
            try:
                SQLite(path).connect().close()
            except Exception as exc:
                print(type(exc).__name__, exc, file=sys.stderr)
                os._exit(1)
            os._exit(0)
        kids.append(pid)
    os.close(gate_r)
    os.write(gate_w, b"g" * 6)
    os.close(gate_w)
    failed += sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0 for pid in kids)
print(failed)
"""


def test_openings_racing_to_switch_a_new_file_to_wal_all_succeed(tmp_path: Path) -> None:
    """Six forked openings of one new file, 60 times: SQLite refuses one switch to WAL at once when
    another's switch holds the lock (no busy wait: it would deadlock); ~3 % of openings failed so."""
    done = subprocess.run([sys.executable, "-c", _SWITCH_RACE, str(tmp_path), "60"], capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == "0", done.stderr[-2000:]


def test_a_failed_migration_leaves_no_half_schema_and_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import monitor.store as store_module

    path = tmp_path / "m.db"
    broken = (*MIGRATIONS, "CREATE TABLE ok_so_far (x); CREATE TABLE broken (;")
    monkeypatch.setattr(store_module, "MIGRATIONS", broken)
    with pytest.raises(StorageError, match="cannot open the event store"):
        EventStore(path)
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    db = sqlite3.connect(path, timeout=0.1)  # would fail with "database is locked" if left open
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    # all or nothing: the migrations of this opening were one transaction
    assert tables == set() and db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.execute("BEGIN IMMEDIATE")
    db.execute("ROLLBACK")
    db.close()
