"""The lease on a real PostgreSQL (issue 13): one holder at a time, hand-over on release, fencing of a
deposed daemon's writes (the outbox's hand-over first), and the keeper standing down before a standby
can take over when its path to the database is cut."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from monitor.db_postgres import FENCE, PostgreSQL
from monitor.delivery.outbox import CLAIMED, HANDED_OVER, SENDING, NewRow, Outbox
from monitor.errors import StorageError
from monitor.ha.keeper import Keeper
from monitor.ha.lease import Timing
from monitor.ha.store import LeaseStore
from tests.servers.common import wait_for
from tests.servers.tcp_proxy import TcpProxy
from tests.store_engines import ThrowawayDatabase, connect, pg_database_fixture, pg_server_fixture  # noqa: F401
from tests.test_daemon import ROOT

FAST = Timing(ttl=4.0, renew=0.5, margin=2.0, retry=0.2)  # (margin: room for a loaded machine's scheduling)


@pytest.fixture(autouse=True)
def _no_fence() -> Iterator[None]:
    yield
    FENCE.epoch = None


def test_one_holder_at_a_time_and_a_release_hands_over(pg_database: ThrowawayDatabase) -> None:
    a, b = LeaseStore(pg_database, "a"), LeaseStore(pg_database, "b")
    try:
        assert a.read() is None
        got = a.acquire(30.0)
        assert got is not None and got[0] == 1
        assert b.acquire(30.0) is None
        assert a.renew(1, 30.0)
        lease = b.read()
        assert lease is not None and (lease.holder, lease.epoch, lease.valid) == ("a", 1, True)
        a.release(1)
        assert not a.renew(1, 30.0)  # released: no longer ours
        got = b.acquire(30.0)
        assert got is not None and got[0] == 2
        assert not a.renew(1, 30.0)
        a.release(1)  # a stale release changes nothing
        lease = a.read()
        assert lease is not None and (lease.holder, lease.epoch, lease.valid) == ("b", 2, True)
    finally:
        a.close()
        b.close()


def _claimed_row(outbox: Outbox) -> int:
    outbox.add([NewRow("i1/opened/c1/1", "i1", "opened", "c1", "email", "", {"k": 1})], {}, {}, 100.0)
    [row] = outbox.take("email", 100.0, 10)
    return row.id


def _inflight(db: ThrowawayDatabase, row_id: int) -> int:
    conn = connect(db)
    try:
        return int(conn.execute("SELECT inflight FROM outbox WHERE id = ?", (row_id,)).fetchone()[0])
    finally:
        conn.close()


def test_a_row_claimed_under_a_stale_epoch_is_not_handed_over(pg_database: ThrowawayDatabase) -> None:
    """The outbox's hand-over ("sending") checks the lease in its own transaction: a daemon deposed
    between claiming a row and sending it marks nothing and sends nothing (fails on the code before:
    the row became SENDING)."""
    old, new = LeaseStore(pg_database, "old"), LeaseStore(pg_database, "new")
    outbox = Outbox(pg_database)
    try:
        got = old.acquire(30.0)
        assert got is not None
        FENCE.epoch = got[0]
        row_id = _claimed_row(outbox)  # claimed while the lease was ours
        old.release(got[0])
        assert new.acquire(30.0) is not None  # another daemon took over (epoch 2)
        with pytest.raises(StorageError, match="fenced: lease epoch 1 is not current"):
            outbox.finish([], [], [], 101.0, sending=[row_id])
        assert _inflight(pg_database, row_id) == CLAIMED
        with pytest.raises(StorageError, match="fenced"):  # a plain write transaction too (not pipelined)
            outbox.set_ticket("i1", "rt", "42")
        assert outbox.ticket("i1") is None
        FENCE.epoch = 2  # the current holder's hand-over goes through on the same connection
        outbox.finish([], [], [], 101.0, sending=[row_id])
        assert _inflight(pg_database, row_id) == SENDING
    finally:
        outbox.close()
        old.close()
        new.close()


def test_a_deposed_daemons_hand_over_record_is_refused_and_stands_it_down(pg_database: ThrowawayDatabase) -> None:
    """The hand-over record (sent without waiting, on the outbox's side connection) checks the lease in
    its own transaction like every write: a deposed daemon's record marks nothing, and its refusal, read
    when the answers are, tells the fence (the keeper stands down); the current holder's lands."""
    old, new = LeaseStore(pg_database, "old"), LeaseStore(pg_database, "new")
    outbox = Outbox(pg_database)
    refused: list[bool] = []
    FENCE.refused = lambda: refused.append(True)
    try:
        got = old.acquire(30.0)
        assert got is not None
        FENCE.epoch = got[0]
        row_id = _claimed_row(outbox)
        outbox.finish([], [], [], 101.0, sending=[row_id])
        old.release(got[0])
        assert new.acquire(30.0) is not None  # another daemon took over (epoch 2)
        outbox.handed_over(row_id, 101.5)
        outbox.db.wait_detached()  # type: ignore[attr-defined]
        assert refused == [True]
        assert _inflight(pg_database, row_id) == SENDING
        FENCE.epoch = 2
        outbox.handed_over(row_id, 101.6)
        outbox.db.wait_detached()  # type: ignore[attr-defined]
        assert _inflight(pg_database, row_id) == HANDED_OVER and refused == [True]
    finally:
        FENCE.refused = None
        outbox.close()
        old.close()
        new.close()


def test_hand_over_records_before_and_after_the_lease_is_taken_both_land(pg_database: ThrowawayDatabase) -> None:
    """A record sent unfenced and, its answer not read yet, one sent once the lease is held: the fence's
    statement is prepared on the side connection between them (out of its pipeline, after the first
    answer), and both land."""
    lease = LeaseStore(pg_database, "a")
    outbox = Outbox(pg_database)
    try:
        outbox.add([NewRow(f"i1/opened/c{i}/1", "i1", "opened", f"c{i}", "email", "", {}) for i in (1, 2)],
                   {}, {}, 100.0)
        first, second = outbox.take("email", 100.0, 10)
        outbox.finish([], [], [], 101.0, sending=[first.id, second.id])
        outbox.handed_over(first.id, 101.5)
        got = lease.acquire(30.0)
        assert got is not None
        FENCE.epoch = got[0]
        outbox.handed_over(second.id, 101.6)
        outbox.db.wait_detached()  # type: ignore[attr-defined]
        assert (_inflight(pg_database, first.id), _inflight(pg_database, second.id)) == (HANDED_OVER, HANDED_OVER)
    finally:
        outbox.close()
        lease.close()


def test_an_expired_lease_fences_even_before_anyone_takes_it(pg_database: ThrowawayDatabase) -> None:
    lease = LeaseStore(pg_database, "a")
    outbox = Outbox(pg_database)
    try:
        got = lease.acquire(30.0)
        assert got is not None
        FENCE.epoch = got[0]
        row_id = _claimed_row(outbox)
        lease.release(got[0])  # expired now; nobody holds it
        with pytest.raises(StorageError, match="fenced"):
            outbox.finish([], [], [], 101.0, sending=[row_id])
        assert _inflight(pg_database, row_id) == CLAIMED
    finally:
        outbox.close()
        lease.close()


def test_a_cut_leader_stands_down_before_a_standby_takes_over(pg_database: ThrowawayDatabase) -> None:
    """The active keeper's path to the database goes silent (no error: statements never answered):
    its watchdog stands it down by its deadline, before the lease expires, and the standby takes over
    only after that, within ttl + retry of the last renewal (plus scheduling slack under load)."""
    proxy = TcpProxy(int(pg_database.url.rsplit(":", 1)[1].split("/")[0]))
    via_proxy = PostgreSQL(pg_database.url.replace(
        f":{proxy.target_port}/", f":{proxy.port}/"), pg_database.password)
    stood_down: list[tuple[float, str]] = []
    a = Keeper(LeaseStore(via_proxy, "a"), FAST, stand_down=lambda why: stood_down.append((time.monotonic(), why)))
    b = Keeper(LeaseStore(pg_database, "b"), FAST, stand_down=lambda why: None)
    stop = threading.Event()
    taken: list[float] = []
    try:
        term = a.wait_for_term(stop)
        assert term is not None and term.epoch == 1
        waiter = threading.Thread(target=lambda: taken.append((b.wait_for_term(stop) and time.monotonic()) or 0.0))
        waiter.start()
        wait_for(lambda: a.term is not None and a.term.confirmed > term.confirmed, timeout=30, what="a renewal")
        cut = time.monotonic()
        proxy.cut()
        waiter.join(timeout=60)
        assert taken and taken[0] > 0, "the standby never took over"
        assert stood_down and stood_down[0][1] == "lease not renewed in time"
        assert stood_down[0][0] < taken[0]
        assert stood_down[0][0] - cut <= FAST.ttl - FAST.margin + 3.0  # its deadline (+ slack for a loaded machine)
        assert b.term is not None and b.term.epoch == 2
        assert FENCE.epoch == 2
    finally:
        stop.set()
        proxy.close()
        a.release()
        b.release()


def test_a_keeper_whose_lease_was_taken_stands_down_at_its_next_renewal(pg_database: ThrowawayDatabase) -> None:
    stood_down: list[str] = []
    a = Keeper(LeaseStore(pg_database, "a"), FAST, stand_down=stood_down.append)
    try:
        assert a.wait_for_term(threading.Event()) is not None
        with psycopg.connect(pg_database.url, password=pg_database.password, autocommit=True) as conn:
            conn.execute("UPDATE ha_lease SET epoch = epoch + 1, holder = 'thief'")
        wait_for(lambda: bool(stood_down), timeout=30, what="standing down")
        assert stood_down == ["the lease is no longer ours"]
        assert FENCE.epoch is None
    finally:
        a.release()


def test_status_on_the_embedded_store_says_there_is_no_lease(tmp_path: Path) -> None:
    cfg = tmp_path / "sites.yaml"
    cfg.write_text("nodes: [{id: core, kind: router, address: 127.0.0.1}]\ndaemon: {state_dir: var}\n")
    done = subprocess.run([sys.executable, "-m", "monitor", "status", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 0 and "no lease, the daemon is active whenever it runs" in done.stdout, done.stderr
