"""The delivery service around the pure planner: which maintenance windows it hands over, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from monitor.clock import ManualClock
from monitor.delivery.service import DeliveryService
from monitor.notify.email import EmailSender
from tests.delivery_support import T0, delivery_with, ev, ids, load, sample
from tests.servers.common import until
from tests.servers.smtp import SmtpServer


def notices(svc: DeliveryService) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in svc.outbox.rows():
        out[r["action"]] = out.get(r["action"], 0) + 1
    return out


async def test_a_window_removed_while_running_ends_for_the_customers_told_it_started(tmp_path: Path) -> None:
    inv = load(tmp_path, 5, delivery_with(mqtt=None, desk=None))
    assert inv.delivery is not None
    clock = ManualClock(T0)
    svc = DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, clock)
    try:
        running = svc.store.add_window("ap-1", T0 + 10, T0 + 7200, "cambio de radio", "ana", (), T0)
        never = svc.store.add_window("ap-1", T0 + 86400, T0 + 90000, "otro", "ana", (), T0)
        svc.tick(T0)  # advance notices for both
        svc.store.remove_window(never, T0 + 1)  # cancelled after its advance notice, before it started
        svc.tick(T0 + 20)
        assert notices(svc) == {"maintenance_advance": 10, "maintenance_start": 5}
        svc.store.remove_window(running, T0 + 600)  # staff end it early
        svc.tick(T0 + 601)
        assert notices(svc) == {"maintenance_advance": 10, "maintenance_start": 5, "maintenance_end": 5}
        svc.tick(T0 + 7300)  # its original end: nothing more
        svc.tick(T0 + 86400)  # the cancelled one never starts
        assert notices(svc) == {"maintenance_advance": 10, "maintenance_start": 5, "maintenance_end": 5}
    finally:
        await svc.close()


async def test_a_restarted_run_closes_the_last_runs_smtp_connections(tmp_path: Path) -> None:
    (tmp_path / "smtp").mkdir()
    server = SmtpServer(tmp_path / "smtp")
    server.start()
    try:
        inv = load(tmp_path, 3, delivery_with(mqtt=None, desk=None, smtp={
            "host": "127.0.0.1", "port": server.port, "security": "none", "from": "NOC <noc@isp.example>"}))
        assert inv.delivery is not None
        svc = DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, ManualClock(T0))
        task = asyncio.create_task(svc.run())
        svc.enqueue([ev("opened", T0, ids(3, 0))])
        await until(lambda: not svc.outbox.pending(), 20, "the first run to deliver")
        first = svc.senders["email"]
        assert isinstance(first, EmailSender)
        # what the run left open (asyncio's private deque: typeshed does not declare it)
        pooled = [c for c in list(first.pool._queue) if c is not None]  # type: ignore[attr-defined]
        assert pooled and all(c.is_connected for c in pooled)
        task.cancel()  # as the supervisor does after a failure, then runs it again
        with contextlib.suppress(asyncio.CancelledError):
            await task
        task = asyncio.create_task(svc.run())
        await until(lambda: svc.senders.get("email") not in (None, first), 30, "the second run's sender")
        assert not any(c.is_connected for c in pooled)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await svc.close()
    finally:
        server.stop()


async def test_service_metrics_queued_pending_and_age_of_the_oldest_per_channel(tmp_path: Path) -> None:
    inv = load(tmp_path, 5, delivery_with(mqtt=None, desk=None))  # SMTP on a closed port: nothing leaves
    assert inv.delivery is not None
    clock = ManualClock(T0)
    svc = DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, clock)
    try:
        queued = sample("monitor_delivery_queued_total", channel="email")
        svc.enqueue([ev("opened", T0, ids(5, 0))])
        mails = sum(1 for r in svc.outbox.rows() if r["channel"] == "email")
        assert mails == 6  # five customers and the on-call technician
        assert sample("monitor_delivery_queued_total", channel="email") - queued == mails
        clock.set(T0 + 90)
        svc.update_gauges()
        assert sample("monitor_delivery_pending", channel="email") == mails
        assert sample("monitor_delivery_oldest_pending_seconds", channel="email") == 90
        assert sample("monitor_delivery_pending", channel="mqtt") == 0
    finally:
        await svc.close()


async def test_an_outbox_that_refuses_writes_loses_no_event_and_plans_it_when_it_takes_them_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    inv = load(tmp_path, 5, delivery_with(mqtt=None, desk=None))
    assert inv.delivery is not None
    db = tmp_path / "monitor.db"
    svc = DeliveryService(inv, db, inv.delivery, ManualClock(T0), busy_timeout=0.05)
    lock = sqlite3.connect(db, isolation_level=None)
    try:
        events = [ev("opened", T0, ids(5, 0)), ev("updated", T0 + 60, ids(3, 0))]
        svc.store.save(events, {}, set(), [])  # as correlation does before it hands them over
        before = svc.glob.to_dict()
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        svc.enqueue(events[:1])  # returns: polling must go on
        svc.enqueue(events[1:])
        assert svc.outbox.rows() == [] and svc.glob.to_dict() == before  # nothing half-planned
        assert caplog.text.count("cannot queue deliveries") == 1
        lock.execute("ROLLBACK")
        svc.catch_up()  # the service's timer does this every second
        actions = {to: [r["action"] for r in svc.outbox.rows() if r["recipient"] == to]
                   for to in ("c1@example.com", "c4@example.com")}
    finally:
        lock.close()
        await svc.close()
    # both events planned once, in order, from the incident log (c4 was back by the update)
    assert actions == {"c1@example.com": ["customer_opened"],
                       "c4@example.com": ["customer_opened", "customer_restored"]}


async def test_a_straggler_is_restored_from_the_state_log_when_its_cpe_answers_also_after_a_restart(
        tmp_path: Path) -> None:
    """Issue 19: the daemon's path. What is down comes from target_state (written by the EventStore as
    the state machine confirms changes); the resolved incident's memory is loaded for the late
    "restored", by a new process too."""
    from monitor.state import State, StateChange
    from monitor.store import EventStore

    inv = load(tmp_path, 3, delivery_with(mqtt=None, desk=None))
    assert inv.delivery is not None
    db = tmp_path / "monitor.db"
    log = EventStore(db)
    log.append([StateChange(f"cpe-{i:04d}", State.UP, State.DOWN, T0 - 200, "3 failed polls") for i in (1, 2, 3)])
    svc = DeliveryService(inv, db, inv.delivery, ManualClock(T0))
    try:
        svc.enqueue([ev("opened", T0, ids(3, 0))])
        log.append([StateChange(f"cpe-{i:04d}", State.DOWN, State.UP, T0 + 500, "2 good polls") for i in (1, 3)])
        svc.enqueue([ev("updated", T0 + 900, []), ev("resolved", T0 + 1200, ["C-0001", "C-0003"])])
        told = {k: v for k, v in notices(svc).items() if k.startswith("customer_")}
        assert told == {"customer_opened": 3, "customer_restored": 2, "customer_continues": 1}
        svc.tick(T0 + 1300)
        assert notices(svc)["customer_restored"] == 2  # cpe-0002 still down
    finally:
        await svc.close()
    log.append([StateChange("cpe-0002", State.DOWN, State.UP, T0 + 4000, "replaced")])
    svc = DeliveryService(inv, db, inv.delivery, ManualClock(T0 + 4001))  # a new process
    try:
        svc.tick(T0 + 4001)
        svc.tick(T0 + 4002)
        rows = [r for r in svc.outbox.rows() if r["action"] == "customer_restored"]
        assert sorted(r["key"] for r in rows) == [f"INC-000001/customer_restored/c{i}@example.com/1" for i in (1, 2, 3)]
    finally:
        await svc.close()
        log.close()
