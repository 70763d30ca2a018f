"""The event store: append-only log, consistent current states, migrations."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.errors import StorageError
from monitor.state import State, StateChange
from monitor.store import MIGRATIONS, EventStore


def test_append_and_read_back(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "m.db")
    store.append([StateChange("a", State.UNKNOWN, State.UP, 10.0, "first reply")])
    store.append([StateChange("a", State.UP, State.DOWN, 20.0, "3 consecutive failed polls")])
    store.append([StateChange("b", State.UNKNOWN, State.DOWN, 15.0, "x")])
    assert store.load_states() == {"a": (State.DOWN, 20.0), "b": (State.DOWN, 15.0)}
    assert [c.new for c in store.changes(targets=["a"])] == [State.UP, State.DOWN]
    assert [c.target for c in store.changes(since=12, until=30)] == ["a", "b"]
    store.close()
    reopened = EventStore(tmp_path / "m.db")
    assert reopened.schema_version == len(MIGRATIONS)
    assert len(list(reopened.changes())) == 3


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    EventStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = ? WHERE component = 'events'", (len(MIGRATIONS) + 1,))
    db.commit()
    db.close()
    with pytest.raises(StorageError, match="newer than this program knows"):
        EventStore(path)


def test_kill_minus_nine_mid_write_leaves_log_and_states_consistent(tmp_path: Path) -> None:
    """A writer process killed at a random point: every logged change has its state row and vice versa."""
    path = tmp_path / "m.db"
    EventStore(path).close()
    code = f"""
import itertools
from monitor.store import EventStore
from monitor.state import State, StateChange
s = EventStore(__import__('pathlib').Path({str(path)!r}))
print('ready', flush=True)
for i in itertools.count():
    new = State.DOWN if i % 2 else State.UP
    s.append([StateChange(f't{{j}}', State.UNKNOWN, new, float(i), 'x') for j in range(50)])
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    db = sqlite3.connect(path)
    deadline_rows = 0
    while deadline_rows < 2000:  # let it write a few batches, then kill it hard
        deadline_rows = db.execute("SELECT count(*) FROM state_changes").fetchone()[0]
    proc.kill()
    proc.wait()
    proc.stdout.close()
    db.close()
    store = EventStore(path)
    changes = list(store.changes())
    assert len(changes) % 50 == 0  # whole transactions only
    last = {}
    for c in changes:
        last[c.target] = (c.new, c.ts)
    assert store.load_states() == last


def test_processes_opening_a_new_store_at_once_migrate_it_once(tmp_path: Path) -> None:
    """The daemon and a CLI may create the store together: one migrates, the other sees it done."""
    path = tmp_path / "m.db"
    code = f"""
import sys
from pathlib import Path
from monitor.store import EventStore
sys.stdin.readline()  # start together
s = EventStore(Path({str(path)!r}))
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
