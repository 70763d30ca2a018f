"""Hypothesis over the real API server: arbitrary bodies, query strings and ids to every route get a
2xx or a 4xx, never a 500, and nothing logs a traceback (issue 10; bounded: ~100 examples a route).

The server runs on its own event loop in a thread for the whole module (one store, one incident),
so each example is one plain HTTP/1.1 request on loopback, as a client would send it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.api.links import AckLinks
from monitor.secret import Secret
from tests.api_support import AUTH, LINK_KEY, make_env

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Tracebacks(logging.Handler):
    """Every record that carries a traceback or is an error: the fuzz tests allow none."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None or record.levelno >= logging.ERROR:
            self.seen.append(f"{record.name}: {record.getMessage()}")


@dataclass
class Server:
    host: str
    port: int
    log: Tracebacks

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def check(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
              ok: tuple[int, ...] = (200, 400, 403, 404, 409, 413, 414)) -> int:
        status, answer = self.request(method, path, body, headers)
        assert status in ok, (status, method, path[:200], (body or b"")[:200], answer[:300])
        assert self.log.seen == [], self.log.seen
        if path.startswith("/api/") and status != 200:
            assert set(json.loads(answer)) == {"error"}  # a clear JSON error, not an HTML page
        return status


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["stop"] = stop
        async for env in make_env(Path(tmp_path_factory.mktemp("fuzz"))):
            box["base"] = env.base
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    handler = Tracebacks()
    logging.getLogger().addHandler(handler)
    thread.start()
    try:
        assert started.wait(30), "the API server did not start"
        host, port = str(box["base"]).removeprefix("http://").rsplit(":", 1)
        yield Server(host, int(port), handler)
    finally:
        stop = box.get("stop")
        if isinstance(stop, asyncio.Event):
            loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
        logging.getLogger().removeHandler(handler)


# ---------------------------------------------------------------------------------------------- strategies

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**400), max_value=10**400)
           | st.floats() | st.text(max_size=30) | st.sampled_from(["", " ", "ana", "INC-000001", "\u2028", "\x00"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
offsets = st.integers(-1500, 1500).map(lambda m: f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}")
times = (st.datetimes().map(lambda d: d.isoformat()) | st.tuples(st.datetimes(), offsets).map(lambda p: p[0].isoformat()
                                                                                             + p[1]))
fields = {"by": values | st.text(max_size=120), "note": values | st.text(max_size=2100),
          "text": values | st.text(max_size=2100), "at": values | times, "clear": values,
          "nota": values}
objects = st.fixed_dictionaries({}, optional=fields)  # every combination of known, unknown and missing keys


def json_bytes(doc: object) -> bytes:
    """JSON as a client may send it: NaN and Infinity included, lone surrogates as \\u escapes."""
    return json.dumps(doc).encode()


bodies = objects.map(json_bytes) | values.map(json_bytes) | st.binary(max_size=200)
query_text = st.lists(st.tuples(st.sampled_from(["status", "by", "exp", "sig", "x", ""]) | st.text(max_size=6),
                                st.sampled_from(["open", "all", ""]) | st.text(max_size=20)), max_size=4)
raw_queries = st.binary(max_size=40).map(lambda b: quote_from_bytes(b, safe="=&"))
queries = query_text.map(lambda pairs: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)) \
    | raw_queries
ids = st.sampled_from(["INC-000001", "INC-999999"]) | st.text(min_size=1, max_size=80).map(
    lambda t: quote(t, safe="")) | st.binary(min_size=1, max_size=20).map(lambda b: quote_from_bytes(b, safe=""))
content_types = st.sampled_from(["application/json", "application/json; charset=latin-1", "text/plain",
                                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                 "application/json; charset=no-such"])

JSON = {"Content-Type": "application/json", **AUTH}


# ---------------------------------------------------------------------------------------------- /api/v1


@FUZZ
@given(query=queries)
def test_list_with_any_query_string(server: Server, query: str) -> None:
    server.check("GET", "/api/v1/incidents?" + query, headers=AUTH)


@FUZZ
@given(inc=ids, query=queries)
def test_show_with_any_id_and_query(server: Server, inc: str, query: str) -> None:
    server.check("GET", f"/api/v1/incidents/{inc}?{query}", headers=AUTH)


@FUZZ
@given(action=st.sampled_from(["ack", "note", "eta"]), body=bodies, content_type=content_types)
def test_actions_with_any_body(server: Server, action: str, body: bytes, content_type: str) -> None:
    server.check("POST", f"/api/v1/incidents/INC-000001/{action}", body, {**AUTH, "Content-Type": content_type})


@FUZZ
@given(doc=objects)
def test_eta_with_any_object(server: Server, doc: dict[str, object]) -> None:
    server.check("POST", "/api/v1/incidents/INC-000001/eta", json_bytes(doc), JSON)


@FUZZ
@given(inc=ids, body=bodies)
def test_actions_on_any_id(server: Server, inc: str, body: bytes) -> None:
    server.check("POST", f"/api/v1/incidents/{inc}/note", body, JSON)


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)


@FUZZ
@given(token=header_text, scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]))
def test_any_authorization_is_a_401(server: Server, token: str, scheme: str) -> None:
    """Header bytes 0x80-0xFF too (http.client sends latin-1; the server decodes them as UTF-8)."""
    server.check("GET", "/api/v1/incidents", headers={"Authorization": scheme + token}, ok=(401,))


# ---------------------------------------------------------------------------------------------- /ack links

LINKS = AckLinks(Secret(LINK_KEY, "test"), 86_400)
signed = st.tuples(st.sampled_from(["INC-000001", "INC-999999"]) | st.text(min_size=1, max_size=30),
                   st.text(min_size=1, max_size=120), st.integers(0, 10**13))


def link_query(inc: str, by: str, exp: int) -> str:
    """A correctly signed link for whatever values: the pages' checks past the signature."""
    return f"by={quote(by, safe='')}&exp={exp}&sig={LINKS.sign(inc, by, exp)}"


@FUZZ
@given(inc=ids, query=queries)
def test_link_pages_with_any_query(server: Server, inc: str, query: str) -> None:
    for method in ("GET", "POST"):
        server.check(method, f"/ack/{inc}?{query}")


@FUZZ
@given(parts=signed, method=st.sampled_from(["GET", "POST"]))
def test_link_pages_with_any_signed_values(server: Server, parts: tuple[str, str, int], method: str) -> None:
    inc, by, exp = parts
    try:
        query = link_query(inc, by, exp)
    except UnicodeEncodeError:  # a lone surrogate cannot be signed (nor sent): not a link anyone has
        return
    server.check(method, f"/ack/{quote(inc, safe='')}?{query}")


@FUZZ
@given(body=bodies | queries.map(str.encode), content_type=content_types, query=queries)
def test_link_post_with_any_form(server: Server, body: bytes, content_type: str, query: str) -> None:
    server.check("POST", f"/ack/INC-000001?{query}", body, {"Content-Type": content_type})
