"""The fast BER path (monitor/probes/snmp_ber.py) against pyasn1 as the oracle (issue 12).

The rule under test: for any datagram, the fast path either declines or gives exactly what pyasn1
gives (same fields; varbind values of the same pysnmp class with the same attributes), and it only
ever raises Decline. Datagrams come from pyasn1's encoder (valid, all value types and their range
ends), from a raw BER builder (tags, lengths and contents pyasn1's encoder never writes: long-form
and indefinite lengths, out-of-range values, bad OIDs), from mutations of both, from a corpus of
hand-written hostile cases, and from a real net-snmp snmpd (v2c and v3 authPriv walks).
Hypothesis is derandomized and bounded (deadline=None, 100-300 examples) so the suite is stable.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import encoder
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.proto.api import v2c

from monitor.errors import ProbeProtocolError
from monitor.probes import snmp_ber, snmp_usm, snmp_v2c
from monitor.probes.snmp_ber import Decline, Pdu
from monitor.probes.snmp_transport import Endpoint, Session, SnmpTransport, WalkLimits, response_varbinds
from monitor.probes.snmp_usm import PeerEngine
from tests.servers.common import free_port
from tests.servers.snmpd import COMMUNITY, V3_AUTH, V3_PRIV, V3_USER, Snmpd, snmpd
from tests.test_snmp_fuzz import mutated as fuzz_mutated

ORACLE = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SECRET = b"s3cret-community"

# ----- pyasn1-encoded messages ------------------------------------------------------------------
U32 = st.one_of(st.sampled_from([0, 1, 127, 128, 255, 256, 2**31 - 1, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
I32 = st.one_of(st.sampled_from([-(2**31), -129, -128, -1, 0, 127, 128, 2**31 - 1]), st.integers(-(2**31), 2**31 - 1))
ARC = st.one_of(st.integers(0, 300), st.sampled_from([127, 128, 16383, 16384, 2**28, 2**32 - 1, 2**35 - 1]))


@st.composite
def oids(draw: st.DrawFn) -> tuple[int, ...]:
    first = draw(st.integers(0, 2))
    second = draw(st.integers(0, 39)) if first < 2 else draw(st.one_of(st.integers(0, 200), ARC))
    return (first, second, *draw(st.lists(ARC, max_size=16)))


VALUES = st.one_of(
    I32.map(rfc1902.Integer32), st.binary(max_size=40).map(rfc1902.OctetString),
    oids().map(rfc1902.ObjectIdentifier), st.binary(min_size=4, max_size=4).map(rfc1902.IpAddress),
    U32.map(rfc1902.Counter32), U32.map(rfc1902.Gauge32), U32.map(rfc1902.Unsigned32), U32.map(rfc1902.TimeTicks),
    st.binary(max_size=20).map(rfc1902.Opaque),
    st.one_of(st.sampled_from([0, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1)).map(rfc1902.Counter64),
    st.sampled_from([v2c.null, rfc1905.noSuchObject, rfc1905.noSuchInstance, rfc1905.endOfMibView]),
)


@st.composite
def pdus(draw: st.DrawFn, cls: Any = None) -> Any:
    pdu = (cls or draw(st.sampled_from([v2c.ResponsePDU, v2c.ReportPDU])))()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_request_id(pdu, draw(I32))
    v2c.apiPDU.set_error_status(pdu, draw(st.sampled_from([0, 0, 1, 5, 16, 99])))
    binds = draw(st.lists(st.tuples(oids(), VALUES), max_size=30))
    v2c.apiPDU.set_error_index(pdu, draw(st.integers(0, len(binds) + 1)))
    v2c.apiPDU.set_varbinds(pdu, binds)
    return pdu


@st.composite
def v2_messages(draw: st.DrawFn) -> bytes:
    pdu = draw(pdus())
    return snmp_v2c.encode_request(int(v2c.apiPDU.get_request_id(pdu)), draw(st.binary(max_size=30)), pdu)


def _encoded(draw: st.DrawFn, user: snmp_usm.UsmUser, peer: PeerEngine) -> bytes:
    return snmp_usm.encode_request(draw(st.integers(1, 2**31 - 1)), user, peer, draw(pdus()), 0.0)


NOAUTH = snmp_usm.make_user("plain", None, None, None, None)
AUTHPRIV = snmp_usm.make_user("noc", "SHA", "authpass123", "AES", "privpass123")
AUTHDES = snmp_usm.make_user("old", "MD5", "authpass123", "DES", "privpass123")
PEER = PeerEngine(b"\x80\x00\x1f\x88\x04test", 3, 1000, 0.0)
for _user in (AUTHPRIV, AUTHDES):
    snmp_usm.localize(_user, PEER)
PEER_AES = PeerEngine(PEER.engine_id, 3, 1000, 0.0)
snmp_usm.localize(AUTHPRIV, PEER_AES)
PEER_DES = PeerEngine(PEER.engine_id, 3, 1000, 0.0)
snmp_usm.localize(AUTHDES, PEER_DES)


@st.composite
def v3_messages(draw: st.DrawFn) -> bytes:
    user, peer = draw(st.sampled_from([(NOAUTH, PEER), (AUTHPRIV, PEER_AES), (AUTHDES, PEER_DES)]))
    return _encoded(draw, user, peer)


# ----- raw BER: what pyasn1's encoder never writes ----------------------------------------------
def tlv(tag: int, content: bytes, form: str = "short") -> bytes:
    """One element; ``form``: short/minimal length, ``long`` (0x82 + 2 octets) or ``indefinite``."""
    n = len(content)
    if form == "indefinite":
        return bytes([tag | 0x20 if tag < 0x40 else tag, 0x80]) + content + b"\x00\x00"
    if form == "long" or n > 127:
        return bytes([tag, 0x82]) + n.to_bytes(2, "big") + content
    return bytes([tag, n]) + content


FORMS = st.sampled_from(["short", "short", "short", "short", "long", "indefinite"])


@st.composite
def raw_ints(draw: st.DrawFn) -> bytes:
    """An INTEGER's contents, sometimes empty, padded (non-minimal) or out of every range."""
    n = draw(st.one_of(I32, U32, st.integers(-(2**70), 2**70)))
    raw = n.to_bytes((n.bit_length() + 8) // 8 or 1, "big", signed=True)
    pad = draw(st.sampled_from([b"", b"", b"\x00", b"\xff"]))
    return draw(st.sampled_from([raw, raw, pad + raw, b""]))


@st.composite
def raw_values(draw: st.DrawFn) -> bytes:
    tag = draw(st.sampled_from([0x02, 0x04, 0x06, 0x40, 0x41, 0x42, 0x43, 0x44, 0x46, 0x05, 0x80, 0x81, 0x82,
                                0x45, 0x47, 0x24, 0x83, 0x30]))
    if tag in (0x02, 0x41, 0x42, 0x43, 0x46):
        content = draw(raw_ints())
    elif tag == 0x06:
        content = draw(st.one_of(st.binary(max_size=12), st.just(b"\x2b\x06\x80\x01"), st.just(b"\x2b\xff\xff")))
    elif tag in (0x05, 0x80, 0x81, 0x82):
        content = draw(st.sampled_from([b"", b"", b"\x00"]))
    else:
        content = draw(st.binary(max_size=8))
    return tlv(tag, content, draw(FORMS))


@st.composite
def raw_oids(draw: st.DrawFn) -> bytes:
    good = bytes(encoder.encode(rfc1902.ObjectIdentifier(draw(oids()))))
    return draw(st.sampled_from([good, good, good, tlv(0x06, b""), tlv(0x06, b"\x2b\x80\x01"),
                                 tlv(0x06, b"\x2b\x81"), tlv(0x06, b"\x81\x80\x80\x80\x80\x80\x01"),
                                 tlv(0x06, good[2:], "long")]))


@st.composite
def raw_v2_messages(draw: st.DrawFn) -> bytes:
    binds = b"".join(tlv(0x30, draw(raw_oids()) + draw(raw_values()), draw(FORMS))
                     for _ in range(draw(st.integers(0, 6))))
    body = tlv(0x02, draw(raw_ints())) + tlv(0x02, draw(raw_ints())) + tlv(0x02, draw(raw_ints()))
    body += tlv(0x30, binds, draw(FORMS))
    kind = draw(st.sampled_from([0xA2, 0xA2, 0xA8, 0xA0, 0xA5, 0xA7, 0xA9]))
    version = draw(st.sampled_from([b"\x01", b"\x01", b"\x00", b"\x03", b"\x00\x01"]))
    msg = tlv(0x02, version) + tlv(0x04, draw(st.binary(max_size=12))) + tlv(kind, body, draw(FORMS))
    return tlv(0x30, msg, draw(FORMS)) + draw(st.sampled_from([b"", b"", b"", b"\x00"]))


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A message with bytes overwritten, cut, inserted or a length field blown up (test_snmp_fuzz's)."""
    return fuzz_mutated(valid.map(lambda data: (None, data)))


# ----- the oracle -------------------------------------------------------------------------------
def _same_value(a: Any, b: Any) -> None:
    assert type(a) is type(b), (type(a), type(b))
    assert vars(a) == vars(b)
    assert a == b and a.tagSet == b.tagSet


def same_pdu(fast: Pdu, slow: Pdu) -> None:
    assert (fast.kind, fast.request_id, fast.error_status, fast.error_index) == (
        slow.kind, slow.request_id, slow.error_status, slow.error_index)
    assert len(fast.varbinds) == len(slow.varbinds)
    for (fo, fv), (so, sv) in zip(fast.varbinds, slow.varbinds, strict=True):
        assert fo == so and type(fo) is tuple and all(type(n) is int for n in fo)
        _same_value(fv, sv)


R = TypeVar("R")


def _attempt(fn: Callable[[], R], errors: type[BaseException] | tuple[type[BaseException], ...]) -> R | None:
    try:
        return fn()
    except errors:
        return None


def check_v2(data: bytes) -> snmp_v2c.V2Reply | None:
    """Fast and pyasn1 agree on ``data``; returns the fast result (None when declined)."""
    fast = _attempt(lambda: snmp_v2c._fast(data), Decline)  # anything else escapes: a bug
    slow = _attempt(lambda: snmp_v2c._pyasn1(data), ProbeProtocolError)
    if fast is not None:
        assert slow is not None, "the fast path accepted a datagram pyasn1 rejects"
        assert (fast.request_id, fast.community, fast.size) == (slow.request_id, slow.community, slow.size)
        same_pdu(fast.pdu, slow.pdu)
    reply = _attempt(lambda: snmp_v2c.decode_message(data), ProbeProtocolError)  # the combined path
    assert (reply is None) == (slow is None)
    return fast


def check_v3(data: bytes) -> snmp_usm.V3Reply | None:
    fast = _attempt(lambda: snmp_usm._fast_message(data), Decline)
    slow = _attempt(lambda: snmp_usm._pyasn1_message(data), ProbeProtocolError)
    if fast is not None:
        assert slow is not None, "the fast path accepted a datagram pyasn1 rejects"
        fields = ("msg_id", "flags", "engine_id", "boots", "time", "auth_params", "priv_params", "encrypted", "whole")
        assert [getattr(fast, f) for f in fields] == [getattr(slow, f) for f in fields]
        assert (fast.plain is None) == (slow.plain is None)
        if fast.plain is not None and slow.plain is not None:
            same_pdu(fast.plain, slow.plain)
    return fast


def check_scoped(plain: bytes) -> Pdu | None:
    fast = _attempt(lambda: snmp_usm._fast_scoped(plain, 0, len(plain))[0], Decline)
    slow = _attempt(lambda: snmp_usm._pyasn1_scoped(plain), Exception)
    if fast is not None:
        assert slow is not None, "the fast path accepted a ScopedPDU pyasn1 rejects"
        same_pdu(fast, slow)
    return fast


# ----- properties -------------------------------------------------------------------------------
@ORACLE
@given(v2_messages())
def test_valid_v2c_messages_take_the_fast_path_and_match_pyasn1(data: bytes) -> None:
    assert check_v2(data) is not None, "the fast path declined a plain Response/Report"


@ORACLE
@given(st.one_of(raw_v2_messages(), mutated(v2_messages()), mutated(raw_v2_messages()), st.binary(max_size=300)))
def test_odd_and_hostile_v2c_datagrams_agree_with_pyasn1(data: bytes) -> None:
    check_v2(data)


@ORACLE
@given(v3_messages())
def test_valid_v3_messages_take_the_fast_path_and_match_pyasn1(data: bytes) -> None:
    assert check_v3(data) is not None, "the fast path declined a plain v3 message"


@ORACLE
@given(st.one_of(mutated(v3_messages()), st.binary(max_size=300)))
def test_hostile_v3_datagrams_agree_with_pyasn1(data: bytes) -> None:
    check_v3(data)


@ORACLE
@given(pdus(), st.binary(max_size=16), st.binary(max_size=16), st.binary(max_size=15))
def test_decrypted_scoped_pdus_match_pyasn1_padding_and_all(pdu: Any, engine: bytes, context: bytes,
                                                           padding: bytes) -> None:
    plain = bytes(encoder.encode(snmp_usm._scoped(engine, pdu, context)))
    assert check_scoped(plain + padding) is not None
    for cut in (1, len(plain) // 2, len(plain) - 1):
        check_scoped(plain[:cut])


@ORACLE
@given(pdus(v2c.ResponsePDU))
def test_encrypted_replies_open_to_the_same_pdu_as_pyasn1_gives(pdu: Any) -> None:
    for user, peer in ((AUTHPRIV, PEER_AES), (AUTHDES, PEER_DES)):
        whole = snmp_usm.encode_request(9, user, peer, pdu, 0.0)
        reply = snmp_usm.decode_message(whole)
        assert snmp_usm.authentic(reply, user, peer)
        opened = snmp_usm.open_reply(reply, user, peer, verified=True)
        sent = snmp_ber.from_pysnmp(pdu)
        assert (opened.kind, opened.request_id, opened.error_status, opened.error_index) == (
            sent.kind, sent.request_id, sent.error_status, sent.error_index)
        assert [(o, _ber(v)) for o, v in opened.varbinds] == [(o, _ber(v)) for o, v in sent.varbinds]


def _ber(value: Any) -> bytes:
    return bytes(encoder.encode(value))


# ----- a corpus of hostile datagrams, each named ----------------------------------------------
def _good_v2() -> bytes:
    pdu = v2c.ResponsePDU()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_varbinds(pdu, [((1, 3, 6, 1, 2, 1, 1, 3, 0), rfc1902.TimeTicks(5)),
                                  ((1, 3, 6, 1, 4, 1, 41112, 1, 4, 5, 1, 5, 1), rfc1902.Counter64(2**64 - 1))])
    return snmp_v2c.encode_request(7, SECRET, pdu)


def _message(pdu_body: bytes, kind: int = 0xA2) -> bytes:
    return tlv(0x30, tlv(0x02, b"\x01") + tlv(0x04, SECRET) + tlv(kind, pdu_body))


def _pdu_body(binds: bytes, rid: bytes = b"\x07", status: bytes = b"\x00", index: bytes = b"\x00") -> bytes:
    return tlv(0x02, rid) + tlv(0x02, status) + tlv(0x02, index) + tlv(0x30, binds)


def _bind(value: bytes, name: bytes = b"\x2b\x06\x01\x02\x01\x01\x03\x00") -> bytes:
    return tlv(0x30, tlv(0x06, name) + value)


def _deep(levels: int) -> bytes:
    """``levels`` SEQUENCEs nested in each other (built inside out, headers only)."""
    headers, inner = [], 0
    for _ in range(levels):
        header = bytes([0x30, inner]) if inner < 128 else bytes([0x30, 0x82]) + inner.to_bytes(2, "big")
        headers.append(header)
        inner += len(header)
    return b"".join(reversed(headers))


CORPUS: dict[str, bytes] = {
    "empty datagram": b"",
    "one byte": b"\x30",
    "length beyond the datagram": b"\x30\x84\x7f\xff\xff\xff" + _good_v2()[2:],
    "indefinite outer length": b"\x30\x80" + _good_v2()[2:] + b"\x00\x00",
    "trailing byte": _good_v2() + b"\x00",
    "v1 version": _good_v2().replace(b"\x02\x01\x01", b"\x02\x01\x00", 1),
    "GetRequest instead of Response": _message(_pdu_body(b""), 0xA0),
    "Trap instead of Response": _message(_pdu_body(b""), 0xA7),
    "empty request-id": _message(tlv(0x02, b"") + tlv(0x02, b"\x00") + tlv(0x02, b"\x00") + tlv(0x30, b"")),
    "request-id of 9 bytes": _message(_pdu_body(b"", rid=b"\x01" * 9)),
    "negative error-index": _message(_pdu_body(b"", index=b"\xff")),
    "error-index beyond the varbinds": _message(_pdu_body(b"", index=b"\x05")),
    "negative Counter32": _message(_pdu_body(_bind(tlv(0x41, b"\xff")))),
    "Counter32 of 2^32": _message(_pdu_body(_bind(tlv(0x41, b"\x01\x00\x00\x00\x00")))),
    "Counter64 of 2^64": _message(_pdu_body(_bind(tlv(0x46, b"\x01" + b"\x00" * 8)))),
    "Integer32 of 2^31": _message(_pdu_body(_bind(tlv(0x02, b"\x00\x80\x00\x00\x00")))),
    "empty TimeTicks": _message(_pdu_body(_bind(tlv(0x43, b"")))),
    "IpAddress of 3 octets": _message(_pdu_body(_bind(tlv(0x40, b"\x0a\x00\x01")))),
    "NULL with contents": _message(_pdu_body(_bind(tlv(0x05, b"\x00")))),
    "endOfMibView with contents": _message(_pdu_body(_bind(tlv(0x82, b"\x01")))),
    "NsapAddress (not in SNMPv2)": _message(_pdu_body(_bind(tlv(0x45, b"\x01\x02")))),
    "constructed OCTET STRING": _message(_pdu_body(_bind(tlv(0x24, tlv(0x04, b"ab") + tlv(0x04, b"cd"))))),
    "high tag number": _message(_pdu_body(_bind(b"\x5f\x81\x00\x01\x00"))),
    "OID with a leading 0x80": _message(_pdu_body(_bind(tlv(0x05, b""), b"\x2b\x06\x80\x01"))),
    "OID cut inside an arc": _message(_pdu_body(_bind(tlv(0x05, b""), b"\x2b\x06\x81"))),
    "empty OID": _message(_pdu_body(_bind(tlv(0x05, b""), b""))),
    "OID arc of 21 continuation octets": _message(_pdu_body(_bind(tlv(0x05, b""), b"\x2b" + b"\xff" * 21 + b"\x01"))),
    "varbind with no value": _message(_pdu_body(tlv(0x30, tlv(0x06, b"\x2b\x06")))),
    "varbind with two values": _message(_pdu_body(tlv(0x30, tlv(0x06, b"\x2b\x06") + tlv(0x05, b"") * 2))),
    "varbind list shorter than its PDU": _message(_pdu_body(b"") + b"\x05\x00"),
    "non-minimal long lengths": tlv(0x30, tlv(0x02, b"\x01", "long") + tlv(0x04, SECRET, "long") + tlv(
        0xA2, _pdu_body(_bind(tlv(0x43, b"\x05", "long")), rid=b"\x07"), "long"), "long"),
    "15,000 nested sequences": _deep(15_000),
    "a Response nested 3,000 deep in its varbind value": _message(_pdu_body(_bind(_deep(3_000)))),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_of_hostile_datagrams(name: str) -> None:
    """Each case: fast and pyasn1 agree, and the combined path gives a reply or our clean error."""
    data = CORPUS[name]
    check_v2(data)
    try:
        reply = snmp_v2c.decode_message(data)
    except ProbeProtocolError as exc:
        assert str(exc).startswith("malformed reply: ") and "s3cr" not in str(exc)
        return
    if snmp_v2c.mismatch(reply, SECRET) is None:
        try:
            response_varbinds(reply.pdu)
        except ProbeProtocolError as exc:
            assert str(exc).startswith("malformed reply: ")


def test_corpus_cases_the_fast_path_must_decline() -> None:
    """The cases outside the narrow subset really go to pyasn1 (else they would be guessed at)."""
    for name in ("indefinite outer length", "trailing byte", "v1 version", "GetRequest instead of Response",
                 "empty request-id", "negative Counter32", "Counter32 of 2^32", "Counter64 of 2^64",
                 "empty TimeTicks", "IpAddress of 3 octets", "NULL with contents", "constructed OCTET STRING",
                 "OID with a leading 0x80", "OID arc of 21 continuation octets", "high tag number"):
        with pytest.raises(Decline):
            snmp_v2c._fast(CORPUS[name])
    assert check_v2(_good_v2()) is not None


def test_every_truncation_of_a_real_walk_reply_is_declined_or_identical() -> None:
    data = _good_v2()
    for cut in range(len(data)):
        assert check_v2(data[:cut]) is None


def test_non_minimal_lengths_are_accepted_by_both_paths_alike() -> None:
    """Long-form lengths where a short one would do are valid BER: both paths accept them and agree."""
    reply = check_v2(CORPUS["non-minimal long lengths"])
    assert reply is not None and reply.community == SECRET and reply.pdu.request_id == 7


# ----- a real agent: every datagram of real walks, both paths ----------------------------------
@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    with snmpd(tmp_path_factory.mktemp("snmpd"), free_port(socket.SOCK_DGRAM)) as a:
        yield a


@pytest.mark.servers
@pytest.mark.parametrize("version", ["2c", "3"])
def test_real_snmpd_walk_replies_decode_identically(
    agent: Snmpd, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk system and interfaces of a real net-snmp agent; each reply (v3: and its decrypted ScopedPDU)
    agrees with pyasn1. Only the first 40 are checked: pyasn1 takes ~2 ms per datagram."""
    seen: list[bytes] = []
    plains: list[bytes] = []
    module: Any = snmp_v2c if version == "2c" else snmp_usm
    original = module.decode_message
    original_scoped = snmp_usm._decode_scoped

    def recording(data: bytes) -> Any:
        seen.append(data)
        return original(data)

    def recording_scoped(plain: bytes) -> Pdu:
        plains.append(plain)
        return original_scoped(plain)

    monkeypatch.setattr(module, "decode_message", recording)
    monkeypatch.setattr(snmp_usm, "_decode_scoped", recording_scoped)

    async def walk() -> int:
        transport = SnmpTransport()
        user = snmp_usm.make_user(V3_USER, "SHA", V3_AUTH, "AES", V3_PRIV) if version == "3" else None
        session = Session(transport, Endpoint("127.0.0.1", agent.port, 5.0, 2),
                          community=COMMUNITY if user is None else None, user=user, cred_key="t",
                          limits=WalkLimits(max_rows=10**6, max_bytes=1 << 30, max_seconds=120))
        try:
            out = await session.walk([(1, 3, 6, 1, 2, 1, 1), (1, 3, 6, 1, 2, 1, 2)])
        finally:
            await transport.close()
        return sum(map(len, out.values()))

    rows = asyncio.run(walk())
    assert rows > 20 and seen
    for data in seen[:40]:
        if version == "2c":
            assert check_v2(data) is not None
        else:
            assert check_v3(data) is not None
    for plain in plains[:40]:
        assert check_scoped(plain) is not None
    assert version == "2c" or plains


def _varbinds(binds: bytes) -> tuple[snmp_ber.VarBind, ...]:
    whole = tlv(0x30, binds)
    return snmp_ber.varbinds(whole, 0, len(whole))


def test_a_repeated_varbind_is_decoded_once_and_a_changed_one_anew() -> None:
    """The varbind cache (issue 12, v3 GET CPU): bytes seen before give the same objects, other bytes new ones."""
    name = b"\x2b\x06\x01\x02\x01\x02\x02\x01\x0a\x01"  # ifInOctets.1
    binds = _bind(b"\x41\x02\x01\x00", name) + _bind(b"\x04\x03abc")
    decoded = [_varbinds(binds) for _ in range(4)]  # seen, kept, then found twice
    assert all(a is b for a, b in zip(decoded[2], decoded[3], strict=True))
    assert check_v2(_message(_pdu_body(binds))) is not None  # and still what pyasn1 says
    changed = _varbinds(_bind(b"\x41\x02\x01\x01", name) + _bind(b"\x04\x03abd"))
    assert [int(changed[0][1]), bytes(changed[1][1])] == [257, b"abd"]
    assert [int(decoded[3][0][1]), bytes(decoded[3][1][1])] == [256, b"abc"]


def test_the_varbind_cache_is_bounded_and_keeps_no_long_varbind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snmp_ber, "_CACHE_MAX_ENTRIES", 50)
    snmp_ber._cache.clear()
    snmp_ber._seen.clear()
    for k in range(300):
        binds = b"".join(_bind(b"\x41\x01\x05", b"\x2b\x06\x01" + bytes((k % 128, k // 128, i))) for i in range(7))
        assert check_v2(_message(_pdu_body(binds))) is not None  # decodes each twice: seen, then kept
        assert 0 < len(snmp_ber._cache) <= 50 and len(snmp_ber._seen) <= 50
    snmp_ber._cache.clear()
    snmp_ber._seen.clear()
    long_bind = _bind(b"\x04\x81\xc8" + b"x" * 200)
    for _ in range(3):
        assert bytes(_varbinds(long_bind)[0][1]) == b"x" * 200
    assert not snmp_ber._cache and not snmp_ber._seen


@example(b"\x30\x03\x02\x01\x01")
@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.binary(max_size=64))
def test_fast_path_raises_only_decline(data: bytes) -> None:
    for fn in (lambda: snmp_v2c._fast(data), lambda: snmp_usm._fast_message(data),
               lambda: snmp_usm._fast_scoped(data, 0, len(data)), lambda: snmp_ber.oid(data),
               lambda: snmp_usm._quick_message(data), lambda: snmp_usm._quick_scoped(data, 0, len(data))):
        with contextlib.suppress(Decline):
            fn()


# ----- the one-pass readings of the outer message and the ScopedPDU (issue 12) ------------------
def _int(n: int) -> bytes:
    return n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)


# an INTEGER's contents at the edges of every range a reading checks (and padded, and empty)
EDGES = [_int(n) for n in (-(2**63) - 1, -(2**63), -(2**31) - 1, -(2**31), -1, 0, 2, 3, 4, 483, 484,
                           2**31 - 1, 2**31, 2**63 - 1, 2**63)] + [b"", b"\x00\x05", b"\xff\xff"]


V3_FIELDS = 11  # the integers and strings of a v3 message's header and security parameters
V3_VALID: list[tuple[int, bytes]] = [  # msgVersion, msgGlobalData's four, UsmSecurityParameters' six
    (0x02, b"\x03"), (0x02, _int(77)), (0x02, _int(65507)), (0x04, b"\x07"), (0x02, b"\x03"),
    (0x04, b"\x80\x00\x1f\x88\x04test"), (0x02, _int(3)), (0x02, _int(1000)), (0x04, b"noc"), (0x04, b"d" * 12),
    (0x04, b"s" * 8),
]


def v3_message(fields: list[tuple[int, bytes]], forms: list[str], data: bytes, trailing: bytes = b"") -> bytes:
    """A v3 message of these header fields, each element's length in ``forms[i]`` (16 of them)."""
    el = [tlv(tag, value, forms[i]) for i, (tag, value) in enumerate(fields)]
    params = tlv(0x04, tlv(0x30, b"".join(el[5:]), forms[V3_FIELDS]), forms[V3_FIELDS + 1])
    whole = el[0] + tlv(0x30, b"".join(el[1:5]), forms[V3_FIELDS + 3]) + params + data
    return tlv(0x30, whole, forms[V3_FIELDS + 4]) + trailing


def v3_oddities() -> Iterator[bytes]:
    """Valid v3 messages with exactly one oddity each: every header field at every edge of its range
    (and empty, padded, too long), every element in the long and the indefinite form, data that is
    neither an OCTET STRING nor a ScopedPDU, trailing bytes."""
    short = ["short"] * (V3_FIELDS + 5)
    data = tlv(0x04, b"x" * 150)
    yield v3_message(V3_VALID, short, data)
    for i, (tag, _) in enumerate(V3_VALID):
        for value in (EDGES if tag == 0x02 else [b"u" * n for n in (0, 1, 2, 32, 33, 127, 128)]):
            yield v3_message([*V3_VALID[:i], (tag, value), *V3_VALID[i + 1:]], short, data)
    for i in range(len(short)):
        for form in ("long", "indefinite"):
            yield v3_message(V3_VALID, [*short[:i], form, *short[i + 1:]], data)
    for odd in (tlv(0x04, b""), tlv(0x04, b"x" * 150, "long"), b"\x04\x81\x05xxxxx", b"\x04\x83\x00\x00\x05xxxxx",
                b"\x04\x84\x00\x00\x00\x05xxxxx", b"\x04\x05xxx", tlv(0x05, b""), b""):
        yield v3_message(V3_VALID, short, odd)
    yield v3_message(V3_VALID, short, data, b"\x00")
    scoped = bytes(encoder.encode(snmp_usm._scoped(b"e", _response())))
    yield v3_message(V3_VALID, short, scoped)
    for cut in range(len(scoped)):
        yield v3_message(V3_VALID, short, scoped[:cut])


def _response() -> Any:
    pdu = v2c.ResponsePDU()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_varbinds(pdu, [((1, 3, 6, 1, 2, 1, 1, 3, 0), rfc1902.TimeTicks(5))])
    return pdu


def scoped_oddities() -> Iterator[bytes]:
    """Valid ScopedPDUs with exactly one oddity each (as :func:`v3_oddities` for the header)."""
    def scoped(ints: list[bytes], forms: list[str], kind: int = 0xA2, inside: bytes = b"", ctx: bytes = b"") -> bytes:
        binds = tlv(0x30, tlv(0x30, tlv(0x06, b"\x2b\x06") + b"\x02\x01\x05"), forms[3])
        body = b"".join(tlv(0x02, n, forms[i]) for i, n in enumerate(ints)) + binds
        head = tlv(0x04, b"e", forms[4]) + tlv(0x04, ctx, forms[5])
        return tlv(0x30, head + tlv(kind, body, forms[6]) + inside, forms[7])

    short, ints = ["short"] * 8, [_int(7), b"\x00", b"\x00"]
    yield scoped(ints, short)
    for i in range(3):
        for value in EDGES:
            yield scoped([*ints[:i], value, *ints[i + 1:]], short)
    for i in range(len(short)):
        for form in ("long", "indefinite"):
            yield scoped(ints, [*short[:i], form, *short[i + 1:]])
    for kind in (0xA0, 0xA1, 0xA3, 0xA5, 0xA7, 0xA8, 0x30):
        yield scoped(ints, short, kind)
    for inside in (b"\x04\x00", b"\x00"):
        yield scoped(ints, short, inside=inside)
    for ctx in (b"c" * 127, b"c" * 128):
        yield scoped(ints, short, ctx=ctx)


def _one_pass_agrees(data: bytes) -> bool:
    """The one-pass reading of ``data`` declines or gives what the element reading gives; accepted?"""
    quick = _attempt(lambda: snmp_usm._quick_message(data), Decline)
    if quick is not None:
        slow = snmp_usm._element_message(data)  # Decline here: the quick reading took what it must not
        assert quick[:8] + quick[9:] == slow[:8] + slow[9:]
        assert (quick.plain is None) == (slow.plain is None)
        if quick.plain is not None and slow.plain is not None:
            same_pdu(quick.plain, slow.plain)
    check_v3(data)  # and the combined fast path against pyasn1
    return quick is not None


def _one_pass_scoped_agrees(data: bytes) -> bool:
    quick = _attempt(lambda: snmp_usm._quick_scoped(data, 0, len(data)), Decline)
    if quick is not None:
        slow = snmp_usm._element_scoped(data, 0, len(data))
        assert quick[1] == slow[1]
        same_pdu(quick[0], slow[0])
    check_scoped(data)
    return quick is not None


def test_every_single_oddity_of_a_v3_header_declines_or_reads_as_the_element_reading_does() -> None:
    taken = [_one_pass_agrees(data) for data in v3_oddities()]
    assert taken[0] and 50 < sum(taken) < len(taken) - 50  # both ways exercised


def test_every_single_oddity_of_a_scoped_pdu_declines_or_reads_as_the_element_reading_does() -> None:
    taken = [_one_pass_scoped_agrees(data) for data in scoped_oddities()]
    assert taken[0] and 20 < sum(taken) < len(taken) - 20


@ORACLE
@given(st.one_of(mutated(st.sampled_from(list(v3_oddities()))), mutated(v3_messages()), v3_messages()))
def test_the_one_pass_message_reading_declines_or_agrees_with_the_element_reading(data: bytes) -> None:
    _one_pass_agrees(data)


@ORACLE
@given(mutated(st.sampled_from(list(scoped_oddities()))))
def test_the_one_pass_scoped_reading_declines_or_agrees_with_the_element_reading(data: bytes) -> None:
    _one_pass_scoped_agrees(data)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(v3_messages(), pdus(), st.binary(max_size=15))
def test_what_agents_send_takes_the_one_pass_readings(data: bytes, pdu: Any, padding: bytes) -> None:
    snmp_usm._quick_message(data)  # never declined: pyasn1 writes every header element in the short form
    plain = bytes(encoder.encode(snmp_usm._scoped(b"\x80\x00\x1f\x88\x04test", pdu))) + padding
    snmp_usm._quick_scoped(plain, 0, len(plain))
