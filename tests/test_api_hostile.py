"""Hostile and careless requests against the real server: every one gets a 4xx with a clear message,
nothing is recorded, and nothing logs a traceback (issue 10, "HTTP API / ack links")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api_support import AUTH, Env, acked_by, make_env
from tests.delivery_support import T0

INC = "/api/v1/incidents/INC-000001"
ETA_ERROR = "at: expected ISO-8601 like 2026-11-24T15:00:00-05:00, or epoch seconds"


@pytest.fixture
async def env(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Env]:
    caplog.set_level(logging.DEBUG)
    async for e in make_env(tmp_path):
        yield e
    tracebacks = [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]


def actions(env: Env) -> list[tuple[str, str]]:
    store = env.store()
    try:
        return [(a[1], a[2]) for a in store.actions("INC-000001")]
    finally:
        store.close()


async def raw(env: Env, request: bytes) -> tuple[int, bytes]:
    """Status and body of one hand-written HTTP/1.1 request (bytes no client library would send)."""
    host, port = env.base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def post(path: str, body: bytes, content_type: str = "application/json", auth: bool = True) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n" + (f"Authorization: {AUTH['Authorization']}\r\n" if auth else ""))
    return head.encode() + b"\r\n" + body


# ---------------------------------------------------------------------------------------------- eta


@pytest.mark.parametrize(("at", "error"), [
    ("NaN", "at: expected a finite time"),
    ("Infinity", "at: expected a finite time"),
    ("-Infinity", "at: expected a finite time"),
    ("1e300", "ETA is more than 366 days ahead"),
    ("1e400", "at: expected a finite time"),  # json.loads makes it inf
    ("1" + "0" * 400, "ETA is more than 366 days ahead"),  # an int too large for a float
    ('"9999-12-31T23:00:00-05:00"', "ETA is more than 366 days ahead"),  # past year 9999 in UTC
    ('"0001-01-01T00:00:00+05:00"', "ETA is not in the future"),  # before year 1 in UTC
    ('"2026-11-18T12:00:00+99:00"', ETA_ERROR),
    ('"2026-11-18T12:00:00' + "0" * 5000 + '"', ETA_ERROR),
    ("true", ETA_ERROR),
    ("[1795010000]", ETA_ERROR),
    ('{"ts": 1795010000}', ETA_ERROR),
    ("null", ETA_ERROR),
    ("-1e300", "ETA is not in the future"),
])
async def test_eta_out_of_range_is_a_400_and_records_nothing(env: Env, at: str, error: str) -> None:
    status, body = await raw(env, post(INC + "/eta", b'{"by": "ana", "at": ' + at.encode() + b"}"))
    assert (status, body.decode()) == (400, f'{{"error": "{error}"}}')
    assert actions(env) == []


async def test_eta_a_year_ahead_is_fine_and_a_day_more_is_not(env: Env) -> None:
    async with env.http.post(env.base + INC + "/eta", headers=AUTH, json={"by": "ana", "at": T0 + 366 * 86400}) as r:
        assert r.status == 200
    async with env.http.post(env.base + INC + "/eta", headers=AUTH,
                             json={"by": "ana", "at": T0 + 367 * 86400}) as r:
        assert (r.status, await r.json()) == (400, {"error": "ETA is more than 366 days ahead"})
    assert actions(env) == [("eta", "ana")]


# ---------------------------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(("body", "content_type", "error"), [
    (b"[" * 30_000 + b"]" * 30_000, "application/json", "the body is not JSON"),
    (b'{"by": "\xff\xfe"}', "application/json", "the body is not JSON"),
    (b'{"by": "ana", "by": "eve"}', "application/json", "by: given twice"),
    (b'{"by": "ana", "note": 5}', "application/json", "note: expected a string"),
    (b'{"by": "ana", "note": "x' + b"y" * 5000 + b'"}', "application/json",
     "note: expected at most 2000 characters"),
    (b'{"by": "ana", "note": "a\\u0000b"}', "application/json", "note: control characters are not allowed"),
    (b'{"by": "ana\\u0000"}', "application/json", "by: expected who does it, a name of 1 to 100 printable characters"),
    (b'{"by": ["ana"]}', "application/json", "by: expected who does it, a name of 1 to 100 printable characters"),
    (b'"ana"', "application/json", "expected a JSON object"),
    (b"", "application/json", "the body is not JSON"),
])
async def test_bad_ack_bodies_are_400s(env: Env, body: bytes, content_type: str, error: str) -> None:
    status, answer = await raw(env, post(INC + "/ack", body, content_type))
    assert (status, answer.decode()) == (400, f'{{"error": "{error}"}}'), answer[:200]
    assert acked_by(env) is None


async def test_bodies_over_64_kib_are_refused_before_reading(env: Env) -> None:
    body = b'{"by": "ana", "note": "' + b"x" * 70_000 + b'"}'
    assert await raw(env, post(INC + "/ack", body)) == (413, b'{"error": "the body is over 65536 bytes"}')
    assert acked_by(env) is None


async def test_note_text_is_bounded_like_ack_notes(env: Env) -> None:
    async with env.http.post(env.base + INC + "/note", headers=AUTH, json={"by": "luis", "text": "x" * 2001}) as r:
        assert (r.status, await r.json()) == (400, {"error": "text: expected at most 2000 characters"})
    async with env.http.post(env.base + INC + "/note", headers=AUTH,
                             json={"by": "luis", "text": "line 1\nline 2\ttab"}) as r:
        assert r.status == 200
    assert actions(env) == [("note", "luis")]


# ---------------------------------------------------------------------------------------------- queries, paths, headers


@pytest.mark.parametrize(("path", "status", "error"), [
    ("/api/v1/incidents?status=all&limit=5", 400, "unknown query parameter 'limit' (allowed: status)"),
    ("/api/v1/incidents?status=open&status=all", 400, "status: given twice"),
    (INC + "?verbose=1", 400, "unknown query parameter 'verbose' (allowed: none)"),
    ("/api/v1/incidents/%FF", 400, "incident id: expected an id like INC-000001"),
    ("/api/v1/incidents/" + "I" * 500, 400, "incident id: expected an id like INC-000001"),
    ("/api/v1/incidents/%ED%A0%80", 400, "incident id: expected an id like INC-000001"),
])
async def test_bad_queries_and_ids_are_400s(env: Env, path: str, status: int, error: str) -> None:
    code, answer = await raw(env, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  f"Authorization: {AUTH['Authorization']}\r\n\r\n".encode())
    assert (code, answer.decode()) == (status, f'{{"error": "{error}"}}')


@pytest.mark.parametrize("auth", [b"Bearer \xff\xfe", b"Bearer " + b"x" * 6000, b"\xc3\xa9 x"])
async def test_odd_authorization_headers_are_401s(env: Env, auth: bytes) -> None:
    code, answer = await raw(env, b"GET /api/v1/incidents HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  b"Authorization: " + auth + b"\r\n\r\n")
    assert (code, answer) == (401, b'{"error": "missing or wrong bearer token"}')


# ---------------------------------------------------------------------------------------------- ack links


def with_exp(url: str, exp: str) -> str:
    path, query = url.split("?", 1)
    fields = dict(p.split("=", 1) for p in query.split("&"))
    fields["exp"] = exp
    return path + "?" + "&".join(f"{k}={v}" for k, v in fields.items())


@pytest.mark.parametrize("exp", ["%C2%B2", "1" * 5000, "%D9%A3", "-1", "1e10", "%FF", "0x10", " 1", "1" * 13])
async def test_link_with_a_malformed_exp_is_refused(env: Env, exp: str) -> None:
    url = with_exp(env.link(), exp)
    for method in ("GET", "POST"):
        async with env.http.request(method, url) as r:
            assert r.status == 403 and "este enlace no es válido" in await r.text(), exp
    assert acked_by(env) is None


@pytest.mark.parametrize(("body", "content_type"), [
    (b"by=juan&exp=\xff\xfe&sig=00", "application/x-www-form-urlencoded"),
    (b"by=juan&exp=1&sig=00", "application/x-www-form-urlencoded; charset=no-such-charset"),
    (b"--x\r\nContent-Disposition: form-data\r\n\r\nbroken", "multipart/form-data; boundary=x"),
    (b"garbage", "multipart/form-data"),
])
async def test_link_post_with_an_unreadable_form_is_a_400(env: Env, body: bytes, content_type: str) -> None:
    path = env.link().removeprefix(env.base)
    status, answer = await raw(env, post(path, body, content_type, auth=False))
    assert status == 400 and "no se puede leer este formulario" in answer.decode()
    assert acked_by(env) is None


async def test_link_fields_twice_or_too_long_are_refused(env: Env) -> None:
    url = env.link()
    for bad in (url + "&by=ana", url.replace("by=juan", "by=" + "j" * 5000)):
        for method in ("GET", "POST"):
            async with env.http.request(method, bad) as r:
                assert r.status in (400, 403, 414), bad[:80]
    assert acked_by(env) is None
