"""Property tests over the SNMP response path: bytes from the network → decode → match → varbinds →
walk → extract. Whatever arrives, only our own ProbeError comes out (or a result), nothing hangs and
no error text carries bytes of the datagram. Bounded: 60-150 examples each, no deadline.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.proto.api import v2c

from monitor.errors import ProbeError, ProbeProtocolError
from monitor.probes import snmp_ber, snmp_usm, snmp_v2c
from monitor.probes.snmp_extract import extract
from monitor.probes.snmp_profiles import Profile, load_profiles
from monitor.probes.snmp_transport import (
    Endpoint,
    Session,
    SnmpTransport,
    WalkLimits,
    _Receiver,
    _v3_check,
    _Waiter,
    response_varbinds,
)
from monitor.probes.snmp_usm import PeerEngine

COMMUNITY = b"s3cret-community"
PROFILES = load_profiles(())
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_CLEAN_ERROR = re.compile(r"^(malformed reply|walk cut|auth): [\w .,-]+$")

VALUES = [
    rfc1902.Integer32(-5), rfc1902.Integer32(2**31 - 1), rfc1902.OctetString(b"-12.5 dBm"),
    rfc1902.OctetString(b"\xff\x00N/A"), rfc1902.OctetString(b"1e400"), rfc1902.Counter32(7),
    rfc1902.Counter64(2**64 - 1), rfc1902.Gauge32(3), rfc1902.TimeTicks(100), rfc1902.IpAddress("10.1.2.3"),
    rfc1902.ObjectIdentifier((1, 3, 6, 1)), rfc1902.Opaque(b"\x9f\x78\x04\x42\xf6\x00\x00"), v2c.null,
    rfc1905.noSuchObject, rfc1905.noSuchInstance, rfc1905.endOfMibView,
]


def _profile_oids(profile: Profile) -> list[tuple[int, ...]]:
    oids = [s.oid for s in profile.scalars]
    for table in profile.tables:
        oids += [c.oid for c in table.columns] + [lab.oid for lab in table.labels]
    return oids


ALL_OIDS = sorted({o for p in PROFILES.values() for o in _profile_oids(p)})


@st.composite
def responses(draw: st.DrawFn) -> tuple[Any, bytes]:
    """A well-formed Response with profile OIDs (plus index suffixes) and odd values, encoded."""
    n = draw(st.integers(0, 12))
    binds = []
    for _ in range(n):
        oid = draw(st.sampled_from(ALL_OIDS)) + tuple(draw(st.lists(st.integers(0, 300), max_size=8)))
        binds.append((oid, draw(st.sampled_from(VALUES))))
    pdu = v2c.ResponsePDU()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_error_status(pdu, draw(st.sampled_from([0, 0, 0, 1, 5, 16, 99])))
    v2c.apiPDU.set_varbinds(pdu, binds)
    return pdu, snmp_v2c.encode_request(draw(st.integers(1, 2**31 - 1)), COMMUNITY, pdu)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[tuple[Any, bytes]]) -> bytes:
    """A valid message with bytes overwritten, cut, inserted or a length field blown up."""
    data = bytearray(draw(valid)[1])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "cut", "insert", "length"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            data[pos:pos + 1] = bytes([0x84, 0x7F, 0xFF, 0xFF, 0xFF])  # a 2 GB length
    return bytes(data)


def _path(data: bytes, profiles: list[Profile] | None = None) -> None:
    """What one datagram goes through for a v2c poll; only ProbeError may come out before extract."""
    try:
        reply = snmp_v2c.decode_message(data)
        if snmp_v2c.mismatch(reply, COMMUNITY) is not None:
            return
        vbs = response_varbinds(reply.pdu)
    except ProbeError as exc:
        assert _CLEAN_ERROR.match(str(exc)), str(exc)
        assert COMMUNITY[:4].decode() not in str(exc)
        return
    scalars = dict(vbs)
    for profile in PROFILES.values() if profiles is None else profiles:
        walks = {c: [(o, v) for o, v in vbs if o[:len(c)] == c] for c in _profile_oids(profile)}
        extract(profile, scalars, walks)  # skips odd values, never raises


@FUZZ
@given(st.binary(max_size=1500))
def test_arbitrary_bytes_through_the_v2c_path(data: bytes) -> None:
    _path(data)


@FUZZ
@given(mutated(responses()))
def test_mutated_responses_through_the_v2c_path(data: bytes) -> None:
    _path(data)


@FUZZ
@given(responses(), st.sampled_from(sorted(PROFILES)))
def test_valid_responses_decode_and_extract(response: tuple[Any, bytes], profile: str) -> None:
    _pdu, data = response
    reply = snmp_v2c.decode_message(data)
    assert reply.community == COMMUNITY and snmp_v2c.mismatch(reply, COMMUNITY) is None
    _path(data, [PROFILES[profile]])


class _ScriptedAgent:
    """Stands in for the transport under Session.walk: answers each GETBULK with the next reply."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies, self.sent = replies, 0

    async def request_v2c(self, _ep: Endpoint, _community: str, _pdu: Any) -> tuple[Any, int]:
        data = self.replies[self.sent % len(self.replies)]
        self.sent += 1
        return snmp_v2c.decode_message(data).pdu, len(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(responses().map(lambda r: r[1]), mutated(responses())), min_size=1, max_size=5))
def test_walk_over_hostile_replies_ends_with_a_result_or_our_error(replies: list[bytes]) -> None:
    """Replies repeat forever (an endless agent); the walk must still end, within its row limit."""
    agent = _ScriptedAgent(replies)
    limits = WalkLimits(max_rows=500, max_bytes=1 << 20, max_seconds=30.0)
    session = Session(agent, Endpoint("127.0.0.1", 161, 1.0, 0), community="x", limits=limits)  # type: ignore[arg-type]
    bases = ALL_OIDS[:40:4]

    async def walk() -> None:
        try:
            out = await session.walk(bases)
        except ProbeError as exc:
            assert _CLEAN_ERROR.match(str(exc)), str(exc)
            return
        assert sum(map(len, out.values())) <= limits.max_rows

    asyncio.run(walk())
    assert agent.sent <= limits.max_rows + 10


def _v3_message() -> tuple[snmp_usm.UsmUser, PeerEngine, bytes]:
    user = snmp_usm.make_user("noc", "SHA", "authpass123", "AES", "privpass123")
    peer = PeerEngine(b"\x80\x00\x1f\x88\x04test", 3, 1000, 0.0)
    snmp_usm.localize(user, peer)
    pdu = v2c.ResponsePDU()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_varbinds(pdu, [((1, 3, 6, 1, 2, 1, 1, 3, 0), rfc1902.TimeTicks(5))])
    return user, peer, snmp_usm.encode_request(7, user, peer, pdu, 0.0)


V3_USER, V3_PEER, V3_MESSAGE = _v3_message()


@FUZZ
@given(st.one_of(st.binary(max_size=600), mutated(st.just((None, V3_MESSAGE)))))
def test_v3_decode_and_check_raise_only_our_errors(data: bytes) -> None:
    try:
        reply = snmp_usm.decode_message(data)
        reason, _ = _v3_check(V3_USER, V3_PEER)(reply)
    except ProbeError as exc:
        assert _CLEAN_ERROR.match(str(exc)), str(exc)
        return
    assert reason in (None, "malformed", "unauthenticated", "wrong_pdu")


def test_v3_check_accepts_the_genuine_message() -> None:
    reason, (reply, rsp) = _v3_check(V3_USER, V3_PEER)(snmp_usm.decode_message(V3_MESSAGE))
    assert reason is None and rsp.kind == snmp_ber.RESPONSE and reply.msg_id == 7
    assert rsp.varbinds == (((1, 3, 6, 1, 2, 1, 1, 3, 0), rfc1902.TimeTicks(5)),)


@FUZZ
@given(st.one_of(st.binary(max_size=600), mutated(responses())))
def test_receiver_never_raises_and_resolves_only_a_matching_reply(data: bytes) -> None:
    """The socket callback itself: nothing escapes to asyncio's exception handler."""
    loop = asyncio.new_event_loop()
    try:
        transport = SnmpTransport()
        source = ("127.0.0.1", 161)
        transport.waiting[source] = 1
        pending: dict[int, _Waiter] = {}
        try:
            rid = snmp_v2c.decode_message(data).request_id
        except ProbeProtocolError:
            rid = 1
        fut: asyncio.Future[Any] = loop.create_future()
        pending[rid] = _Waiter(fut, source, lambda r: (snmp_v2c.mismatch(r, COMMUNITY), r.pdu))
        _Receiver(transport, snmp_v2c.decode_message, pending).datagram_received(data, source)
        if fut.done():
            assert fut.result().kind == snmp_ber.RESPONSE
    finally:
        loop.close()


def test_truncated_copies_of_our_request_fail_without_a_byte_of_it_in_the_error() -> None:
    """The old leak: pysnmp's traceback showed the first bytes of such a datagram (the community)."""
    pdu = v2c.GetRequestPDU()
    v2c.apiPDU.set_defaults(pdu)
    whole = snmp_v2c.encode_request(5, COMMUNITY, pdu)
    for cut in range(1, len(whole)):
        try:
            snmp_v2c.decode_message(whole[:cut])
        except ProbeProtocolError as exc:
            assert _CLEAN_ERROR.match(str(exc)) and "s3cr" not in str(exc)
        else:
            raise AssertionError(f"a datagram cut at {cut} bytes decoded")
