"""Request Tracker 5 (Debian's request-tracker5, SQLite, standalone server) as the service desk."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from monitor.clock import SystemClock
from monitor.correlate.incidents import IncidentEvent
from monitor.correlate.store import IncidentStore
from monitor.delivery.config import DeskSettings
from monitor.delivery.outbox import Row
from monitor.delivery.service import DeliveryService
from monitor.desk.base import DeskSender
from monitor.desk.rt import RTDesk
from monitor.ha.gate import GATE, LeaseLapsed
from monitor.web.users import User, hash_password, save_users
from tests.api_support import Env, make_env
from tests.delivery_support import SECRETS, T0, Running, delivery_with, ev, ids, load
from tests.servers.common import until
from tests.servers.rt import RequestTracker, texts
from tests.store_engines import Where, child_argument, pg_server_fixture, where_fixture  # noqa: F401
from tests.test_web_board import PASSWORD, act, login

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RequestTracker]:
    server = RequestTracker(tmp_path_factory.mktemp("rt"))
    server.start(60)
    yield server
    server.stop()


def desk(rt: RequestTracker) -> dict[str, object]:
    return {"kind": "rt", "url": rt.url, "username": "root", "password": {"env": "RT_PASS"},
            "grafana_url": "https://grafana.isp.example/d/noc?var-incident={incident}", "comment_min_interval": 0}


def make(tmp_path: Path, rt: RequestTracker, n: int = 8) -> DeliveryService:
    inv = load(tmp_path, n, delivery_with(desk=desk(rt), smtp=None, mqtt=None, retry={"initial": "0.2s",
                                                                                      "maximum": "0.5s"}))
    assert inv.delivery is not None
    return DeliveryService(inv, tmp_path / "monitor.db", inv.delivery, SystemClock())


def with_opened(tmp_path: Path, rt: RequestTracker, incident: str) -> tuple[DeliveryService, IncidentEvent]:
    """A service and the persisted opening of ``incident`` (six customers), not yet enqueued."""
    svc = make(tmp_path, rt)
    opened = ev("opened", T0, ids(6, 0), incident=incident)
    IncidentStore(tmp_path / "monitor.db").save([opened], {}, set(), [])
    return svc, opened


async def deliver(run: Running, *events: IncidentEvent) -> None:
    run.service.enqueue(list(events))
    await run.drained()


def tagged(rt: RequestTracker, incident: str) -> list[dict[str, object]]:
    return [t for t in rt.tickets(f"Subject LIKE '[{incident}]'") if f"[{incident}]" in str(t["Subject"])]


async def test_one_ticket_commented_resolved_reopened_and_taken_as_ack(tmp_path: Path, rt: RequestTracker) -> None:
    inc = "INC-000101"
    svc, opened = with_opened(tmp_path, rt, inc)
    async with Running(svc) as run:
        await deliver(run, opened)
        await deliver(run, ev("updated", T0 + 60, ids(8, 0), incident=inc))
        await deliver(run, ev("updated", T0 + 90, ids(8, 0), incident=inc, kind="outage"))  # nothing changed
        (ticket,) = tagged(rt, inc)
        tid = str(ticket["id"])
        # staff takes the ticket in RT: that acknowledges the incident (no escalation)
        rt.take(tid)
        await svc.poll_desk_acks(force=True)
        assert IncidentStore(tmp_path / "monitor.db").incident(inc).acked_by == "rt"
        await deliver(run, ev("resolved", T0 + 600, ids(8, 0), incident=inc))
        assert rt.ticket(tid)["Status"] == "resolved"
        # the same root fails again within reopen_within: the same ticket is reopened, then resolved
        await deliver(run, ev("opened", T0 + 900, ids(2, 0), incident="INC-000102"))
        assert rt.ticket(tid)["Status"] == "open" and tagged(rt, "INC-000102") == []
        await deliver(run, ev("resolved", T0 + 1200, ids(2, 0), incident="INC-000102"))
    assert rt.ticket(tid)["Status"] == "resolved"
    body = texts(rt, tid)
    create = body[0]
    assert "Incidente: INC-000101" in create and "Municipio: Arauca" in create and "Sitio: Torre Centro" in create
    assert "Clientes afectados: 6" in create and "corporativo: 2026-11-18 18:06" in create
    assert create.index("C-0005 | Cliente 5 | corporativo") < create.index("C-0006 | Cliente 6 | residencial")
    assert "var-incident=INC-000101" in create
    assert sum("Nuevos afectados (2): C-0007, C-0008" in t for t in body) == 1  # one comment for the change
    assert any("resuelto" in t for t in body) and any("INC-000102" in t for t in body)
    for t in body:
        for value in SECRETS.values():
            assert value not in t


async def test_rt_down_then_up_creates_the_ticket_once(tmp_path: Path, rt: RequestTracker) -> None:
    svc = make(tmp_path, rt)
    rt.stop()
    try:
        async with Running(svc) as run:
            svc.enqueue([ev("opened", T0, ids(3, 0), incident="INC-000201")])
            await until(lambda: any(r["attempts"] >= 2 for r in svc.outbox.rows()), 20, "failed attempts")
            rt.start(60)
            await run.drained(60)
            row = svc.outbox.rows()[0]
    finally:
        if rt.process is None or not rt.process.alive():
            rt.start(60)
    assert row["status"] == "delivered" and row["reason"] == "unreachable"
    assert len(tagged(rt, "INC-000201")) == 1


def comments(rt: RequestTracker, ticket: str) -> int:
    return sum(h["Type"] == "Comment" for h in rt.history(ticket))


def again(svc: DeliveryService, action: str, *, uncertain: bool, attempts: int) -> Row:
    """The delivered row of ``action`` as the next process would take it after a SIGKILL before recording."""
    (r,) = [r for r in svc.outbox.rows() if r["action"] == action]
    assert r["status"] == "delivered"
    return Row(r["key"], r["incident"], r["action"], r["recipient"], "desk", "", r["payload"], id=r["id"],
               attempts=attempts, uncertain=uncertain, created_at=T0)


async def test_notes_repeated_after_a_crash_reach_the_ticket_once(tmp_path: Path, rt: RequestTracker) -> None:
    inc = "INC-000501"
    svc, opened = with_opened(tmp_path, rt, inc)
    async with Running(svc) as run:
        await deliver(run, opened)
        sender = svc.senders["desk"]
        assert isinstance(sender, DeskSender)
        (ticket,) = tagged(rt, inc)
        tid = str(ticket["id"])
        await deliver(run, ev("updated", T0 + 60, ids(8, 0), incident=inc))
        # RT took the comment, the process died before the outbox said so: the row comes back
        await sender.send(again(svc, "ticket_comment", uncertain=True, attempts=0))
        await sender.send(again(svc, "ticket_comment", uncertain=False, attempts=1))  # or a timeout after posting
        assert comments(rt, tid) == 1
        await deliver(run, ev("resolved", T0 + 600, ids(8, 0), incident=inc))
        rt.set_status(tid, "open")  # the note is there but the status is not: the repeat still resolves
        await sender.send(again(svc, "ticket_resolve", uncertain=True, attempts=0))
        assert comments(rt, tid) == 2 and rt.ticket(tid)["Status"] == "resolved"
        await deliver(run, ev("opened", T0 + 900, ids(2, 0), incident="INC-000502"))  # same root: reopens the ticket
        await sender.send(again(svc, "ticket_reopen", uncertain=True, attempts=0))
        assert comments(rt, tid) == 3 and rt.ticket(tid)["Status"] == "open"
    body = texts(rt, tid)
    assert sum("Nuevos afectados (2): C-0007, C-0008" in t for t in body) == 1


def test_crash_between_create_and_record_finds_the_existing_ticket(tmp_path: Path, rt: RequestTracker,
                                                                   where: Where) -> None:
    """On the SQLite store and on PostgreSQL (one RT for both: an incident of its own each)."""
    inc = "INC-000301" if isinstance(where, Path) else "INC-000302"
    inv = load(tmp_path, 3, delivery_with(desk=desk(rt), smtp=None, mqtt=None))
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(dataclasses.asdict(ev("opened", T0, ids(3, 0), incident=inc))) + "\n")
    db, env = child_argument(where)
    env = {**os.environ, **env}
    argv = [sys.executable, "-m", "tests.delivery_child", inv.source, db]
    cwd = Path(__file__).parents[1]
    first = subprocess.run([*argv, str(events), "--die-on-record"], cwd=cwd, capture_output=True, timeout=60,
                           env=env)
    assert first.returncode == -9, first.stderr.decode()[-2000:]
    assert len(tagged(rt, inc)) == 1  # created, but the outbox does not know
    second = subprocess.run([*argv, "-"], cwd=cwd, capture_output=True, timeout=60, env=env)
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    assert len(tagged(rt, inc)) == 1


@pytest.fixture
async def board_env(tmp_path: Path, rt: RequestTracker) -> AsyncIterator[Env]:
    async for e in make_env(tmp_path, desk=desk(rt)):
        save_users(e.db.parent / "users.json", {"ana": User("ana", "operator", hash_password(PASSWORD, cost=4))})
        yield e


async def test_ack_note_and_resolve_from_the_board_are_commented_on_the_ticket_once(
        board_env: Env, rt: RequestTracker) -> None:
    """Issue 15: every staff action reaches the ticket with the user's name, as in the board's audit log."""
    env = board_env
    svc = env.delivery
    async with Running(svc) as run:
        await run.drained()
        (ticket,) = tagged(rt, "INC-000001")
        tid = str(ticket["id"])
        before = comments(rt, tid)
        status, session = await login(env, "ana")
        assert status == 303 and session
        assert await act(env, session, "ack", "voy en camino") == 303
        assert await act(env, session, "note", "cambiando la fuente del nodo") == 303
        assert await act(env, session, "resolve", "fuente cambiada") == 303
        svc.tick()
        svc.tick()  # a second timer pass plans nothing more
        await run.drained()
    assert comments(rt, tid) == before + 3
    body = texts(rt, tid)
    for line in ("Incidente INC-000001 atendido por ana", "voy en camino",
                 "Nota de ana en el incidente INC-000001", "cambiando la fuente del nodo",
                 "Incidente INC-000001 resuelto por ana", "fuente cambiada"):
        assert sum(line in t for t in body) == 1, line
    # a restart (a new service on the same store) tells the desk nothing again
    again = DeliveryService(svc.ctx.inv, env.db, svc.ctx.cfg, env.clock)
    async with Running(again) as run:
        again.tick()
        await run.drained()
    assert comments(rt, tid) == before + 3


def ticket_without_tag(rt: RequestTracker, text: str) -> str:
    """A ticket made behind the monitor's back (a deposed daemon's late create), not tagged yet."""
    made = rt._request("POST", "/REST/2.0/ticket", {"Queue": "General", "Subject": text, "Content": text})
    return str(made["id"])


async def test_a_late_duplicate_ticket_is_merged_into_the_oldest_before_resolving(tmp_path: Path,
                                                                                   rt: RequestTracker) -> None:
    """Issue 13 (HA lab H5): a frozen daemon's create request lands after the standby opened the ticket.
    The resolve looks again, merges the late one into ours (the older) and resolves one ticket."""
    inc = "INC-000601"
    svc, opened = with_opened(tmp_path, rt, inc)
    async with Running(svc) as run:
        await deliver(run, opened)
        (ours,) = [str(t["id"]) for t in tagged(rt, inc)]
        late = ticket_without_tag(rt, f"[{inc}] Falla de servicio (the deposed daemon's)")
        await deliver(run, ev("updated", T0 + 60, ids(8, 0), incident=inc))
        await deliver(run, ev("resolved", T0 + 600, ids(8, 0), incident=inc))
    assert [str(t["id"]) for t in tagged(rt, inc)] == [ours]
    assert rt.ticket(ours)["Status"] == "resolved"
    assert str(rt.ticket(late)["id"]) == ours  # RT leads the merged number to the kept ticket
    assert any("the deposed daemon's" in t for t in texts(rt, ours))  # its history moved along


async def test_after_a_takeover_the_oldest_ticket_is_kept_and_the_newer_merged_into_it(
        tmp_path: Path, rt: RequestTracker) -> None:
    """The other order: the deposed daemon's ticket is the OLDER one (its request reached RT first but was
    not visible to the standby's look-up, which opened a second). The next process (a takeover, here a
    new service on the same store) looks over the incident's tickets at its first note, keeps the oldest
    (every process picks the same one), merges ours into it and records it: notes and the resolve go there."""
    inc = "INC-000701"
    older = ticket_without_tag(rt, "Falla de servicio (request of the frozen daemon)")
    svc, opened = with_opened(tmp_path, rt, inc)
    async with Running(svc) as run:
        await deliver(run, opened)
    (newer,) = [str(t["id"]) for t in tagged(rt, inc)]
    assert int(older) < int(newer)
    rt._request("PUT", f"/REST/2.0/ticket/{older}", {"Subject": f"[{inc}] Falla de servicio"})  # now visible
    taken_over = DeliveryService(svc.ctx.inv, tmp_path / "monitor.db", svc.ctx.cfg, SystemClock())
    async with Running(taken_over) as run:
        await deliver(run, ev("updated", T0 + 60, ids(8, 0), incident=inc))
        assert taken_over.outbox.ticket(inc) == older
        assert [str(t["id"]) for t in tagged(rt, inc)] == [older]
        assert sum("Nuevos afectados (2): C-0007, C-0008" in t for t in texts(rt, older)) == 1
        await deliver(run, ev("resolved", T0 + 600, ids(8, 0), incident=inc))
    assert [str(t["id"]) for t in tagged(rt, inc)] == [older] and rt.ticket(older)["Status"] == "resolved"
    assert str(rt.ticket(newer)["id"]) == older


class FrozenAfterLookUp(RTDesk):
    """RT's look-up answered, then the process froze (SIGSTOP) past its lease's stand-down deadline."""

    def __init__(self, settings: DeskSettings, now: list[float]) -> None:
        super().__init__(settings)
        self.now = now

    async def find_all(self, incident: str) -> list[str]:
        found = await super().find_all(incident)
        self.now[0] += 10.0  # the freeze: the clock ran on, the loop did not
        return found


async def test_a_daemon_frozen_between_look_up_and_create_past_its_deadline_creates_no_ticket(
        tmp_path: Path, rt: RequestTracker) -> None:
    """Issue 13, H5: the thawed loop went on to create the ticket the standby had already opened. Now the
    create is checked against the lease's stand-down deadline right before it goes out: refused."""
    inc = "INC-000801"
    svc = make(tmp_path, rt)
    assert svc.ctx.cfg.desk is not None
    now = [0.0]
    sender = DeskSender(FrozenAfterLookUp(svc.ctx.cfg.desk, now), svc.outbox)
    row = Row(f"{inc}/ticket_open/rt/1", inc, "ticket_open", "rt", "desk", inc,
              {"op": "open", "ticket_incident": inc, "subject": f"[{inc}] Falla", "body": "Falla"}, id=1,
              attempts=0, uncertain=False, created_at=T0)
    GATE.hold(5.5, lambda: now[0])
    try:
        with pytest.raises(LeaseLapsed, match="RT POST /ticket"):
            await sender.send(row)
    finally:
        GATE.lift()
        await sender.close()
    assert tagged(rt, inc) == []
