"""Staff actions from the board reach the real Request Tracker ticket naming who did them (issue 15:
"every staff action in an audit log with the user's name, shown in the ticket comment too")."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from monitor.delivery.service import DeliveryService
from monitor.web.users import User, hash_password, save_users
from tests.api_support import Env, make_env
from tests.delivery_support import Running
from tests.servers.rt import RequestTracker, texts
from tests.test_desk_rt import comments, desk, tagged
from tests.test_web_board import PASSWORD, act, login

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RequestTracker]:
    server = RequestTracker(tmp_path_factory.mktemp("rt"))
    server.start(60)
    yield server
    server.stop()


@pytest.fixture
async def env(tmp_path: Path, rt: RequestTracker) -> AsyncIterator[Env]:
    async for e in make_env(tmp_path, desk=desk(rt)):
        save_users(e.db.parent / "users.json", {"ana": User("ana", "operator", hash_password(PASSWORD, cost=4))})
        yield e


async def test_ack_note_and_resolve_from_the_board_are_commented_on_the_ticket_once(
        env: Env, rt: RequestTracker) -> None:
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
