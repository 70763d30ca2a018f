"""The RT adapter against a desk that answers nonsense (a proxy's error page with 200, a broken or
hostile RT): every answer gives a result or our DeliveryError, never another exception, and the
delivery timer that polls "taken" tickets keeps running. The server is a small aiohttp app on
loopback playing the broken desk (a real RT never answers like this, which is the point)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.delivery.config import DeskSettings
from monitor.delivery.retry import DeliveryError
from monitor.desk.base import Ref
from monitor.desk.rt import MAX_ANSWER, RTDesk
from monitor.secret import Secret
from tests.servers.common import free_port


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    seen: list[str] = field(default_factory=list)


@dataclass
class BrokenDesk:
    """Answers every request with ``answer``, in a thread with its own loop (so sync tests can use it)."""

    port: int = field(default_factory=free_port)
    answer: Answer = field(default_factory=Answer)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.answer.seen.append(f"{request.method} {request.path_qs}")
        await request.read()
        return web.Response(status=self.answer.status, body=self.answer.body,
                            headers={"Content-Type": self.answer.content_type})

    def run(self) -> Iterator[BrokenDesk]:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        stop: dict[str, asyncio.Event] = {}

        async def serve() -> None:
            app = web.Application(client_max_size=1 << 20)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            stop["event"] = asyncio.Event()
            ready.set()
            await stop["event"].wait()
            await runner.cleanup()

        thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
        thread.start()
        assert ready.wait(10)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(stop["event"].set)
            thread.join(10)
            loop.close()


@pytest.fixture(scope="module")
def broken() -> Iterator[BrokenDesk]:
    yield from BrokenDesk().run()


Call = Callable[[RTDesk], Awaitable[object]]
CALLS: dict[str, Call] = {
    "find": lambda d: d.find("INC-000001"),
    "find_all": lambda d: d.find_all("INC-000001"),
    "merge": lambda d: d.merge("8", "7"),
    "open": lambda d: d.open("INC-000001", "[INC-000001] outage", "body"),
    "taken": lambda d: d.taken("7"),
    "comment (repeat)": lambda d: d.comment("7", "body", Ref("INC-000001", "abc", repeat=True)),
    "update": lambda d: d.update("7", "subject"),
}


def attempt(desk: BrokenDesk, answer: Answer, call: Call) -> object:
    """The call's result, or the DeliveryError it raised (anything else fails the test)."""
    desk.answer = answer

    async def go() -> object:
        rt = RTDesk(DeskSettings(kind="rt", url=f"http://127.0.0.1:{desk.port}", token=Secret("t0k", "test")))
        try:
            return await call(rt)
        except DeliveryError as exc:
            return exc
        finally:
            await rt.close()

    return asyncio.run(go())


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize(("body", "content_type"), [
    (b"<html>502 Bad Gateway</html>", "text/html"),  # a proxy's error page with 200
    (b"[1, 2, 3]", "application/json"),
    (b'"items"', "application/json"),
    (b'{"items": "none", "id": [7], "Owner": "root"}', "application/json"),
    (b'{"items": [1, "x", null], "id": {"n": 7}, "Owner": 5}', "application/json"),
    (b'{"items": [{"Subject": "[INC-000001]", "id": "../../ticket/1"}], "id": "7/../8", "Owner": ["x"]}',
     "application/json"),
    (b'{"id": true, "Owner": {"id": {"a": 1}}}', "application/json"),
    (b"\xff\xfe{}", "application/json; charset=utf-8"),
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json"),
    (b"{}", "application/json; charset=no-such-charset"),
])
def test_nonsense_answers_are_our_errors(broken: BrokenDesk, name: str, body: bytes, content_type: str) -> None:
    got = attempt(broken, Answer(body=body, content_type=content_type), CALLS[name])
    assert_result_or_our_error(got)


def assert_result_or_our_error(got: object) -> None:
    assert got is None or isinstance(got, DeliveryError | bool | str | list), repr(got)
    for ticket in got if isinstance(got, list) else [got] if isinstance(got, str) else []:
        assert isinstance(ticket, str) and ticket.isdigit() and ticket.isascii()  # it goes into URL paths


def test_an_endless_answer_is_cut_off(broken: BrokenDesk) -> None:
    got = attempt(broken, Answer(body=b'{"items": [' + b'{"Subject": "x"}, ' * (MAX_ANSWER // 10) + b"{}]}"),
                  CALLS["find"])
    assert isinstance(got, DeliveryError) and "too large" in str(got)


def test_taken_reads_the_owner_in_both_shapes(broken: BrokenDesk) -> None:
    assert attempt(broken, Answer(body=b'{"Owner": {"id": "Nobody"}}'), CALLS["taken"]) is False
    assert attempt(broken, Answer(body=b'{"Owner": {"id": "juan"}}'), CALLS["taken"]) is True
    assert attempt(broken, Answer(body=b'{"Owner": "Nobody"}'), CALLS["taken"]) is False


answers = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
                       | st.sampled_from(["Nobody", "[INC-000001]", "7", "../1"]),
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.sampled_from(["items", "id", "Subject", "Owner", "x"]), inner, max_size=4),
                       max_leaves=10)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(doc=answers, name=st.sampled_from(list(CALLS)), status=st.sampled_from([200, 201, 204, 302, 400, 404, 500]))
def test_any_json_answer_is_a_result_or_our_error(broken: BrokenDesk, doc: Any, name: str, status: int) -> None:
    assert_result_or_our_error(attempt(broken, Answer(status=status, body=json.dumps(doc).encode()), CALLS[name]))
