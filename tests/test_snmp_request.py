"""The fast request encoder (monitor/probes/snmp_request.py) against pyasn1 and pysnmp's USM services.

The rule under test: every GET/GETNEXT/GETBULK we send is byte for byte what pyasn1 encodes (the
PDU, the v2c message, the SNMPv3 message with its USM parameters), an OID pyasn1 refuses is
refused, and for v3 the digest and the AES cipher are what pysnmp's own services compute and
accept (pysnmp verifies and decrypts what we send; we decrypt what it encrypts). Hypothesis is
derandomized and bounded.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder
from pyasn1.type import univ
from pysnmp.proto.api import v2c
from pysnmp.proto.mpmod.rfc3412 import SNMPv3Message
from pysnmp.proto.secmod.rfc3414.service import SnmpUSMSecurityModel, UsmSecurityParameters

from monitor.probes import snmp_request, snmp_usm, snmp_v2c
from monitor.probes.snmp_request import GET, GETBULK, GETNEXT, Request
from monitor.probes.snmp_usm import PeerEngine
from tests.test_snmp_ber import ARC, oids

ORACLE = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
INT32 = st.integers(-(2**31), 2**31 - 1) | st.sampled_from([-(2**31), -129, -128, -1, 0, 127, 128, 255, 2**31 - 1])
COUNT = st.integers(0, 2**31 - 1) | st.sampled_from([0, 1, 25, 127, 128, 2**31 - 1])


@st.composite
def requests(draw: st.DrawFn) -> Request:
    kind = draw(st.sampled_from([GET, GETNEXT, GETBULK]))
    names = tuple(draw(st.lists(oids(), max_size=40)))
    if kind == GETBULK:
        return Request(kind, names, draw(COUNT), draw(COUNT))
    return Request(kind, names)


def pysnmp_pdu(request: Request, request_id: int) -> Any:
    """The same request built the way we built it before, with pysnmp's API."""
    if request.kind == GETBULK:
        pdu = v2c.GetBulkRequestPDU()
        v2c.apiBulkPDU.set_defaults(pdu)
        v2c.apiBulkPDU.set_non_repeaters(pdu, request.non_repeaters)
        v2c.apiBulkPDU.set_max_repetitions(pdu, request.max_repetitions)
    else:
        pdu = (v2c.GetRequestPDU if request.kind == GET else v2c.GetNextRequestPDU)()
        v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_varbinds(pdu, [(o, v2c.null) for o in request.oids])
    v2c.apiPDU.set_request_id(pdu, request_id)
    return pdu


@ORACLE
@given(requests(), INT32, st.binary(max_size=40))
def test_pdus_and_v2c_messages_are_what_pyasn1_encodes(request: Request, request_id: int, community: bytes) -> None:
    pdu = pysnmp_pdu(request, request_id)
    assert snmp_request.pdu(request, request_id) == bytes(encoder.encode(pdu))
    assert snmp_v2c.encode_request(request_id, community, request) == snmp_v2c.encode_request(
        request_id, community, pdu)  # a pysnmp PDU object still goes through pyasn1: the old path


@ORACLE
@given(st.lists(st.integers(-3, 5) | ARC | st.integers(-(2**70), 2**70), max_size=6).map(tuple))
def test_an_oid_is_encoded_exactly_when_pyasn1_encodes_it(value: tuple[int, ...]) -> None:
    try:
        want = bytes(encoder.encode(univ.ObjectIdentifier(value)))
    except Exception:  # pyasn1 refuses it (too few arcs, impossible first arcs, negative arcs)
        with pytest.raises(ValueError):
            snmp_request.oid(value)
        return
    assert snmp_request.oid(value) == want


def _peer(user: snmp_usm.UsmUser, engine_id: bytes, boots: int, etime: int) -> PeerEngine:
    peer = PeerEngine(engine_id, boots, etime, 0.0)
    snmp_usm.localize(user, peer)
    return peer


USERS = {
    "noAuthNoPriv": snmp_usm.make_user("public-ro", None, None, None, None),
    "SHA": snmp_usm.make_user("noc", "SHA", "authpass123", None, None),
    "MD5/AES": snmp_usm.make_user("noc", "MD5", "authpass123", "AES", "privpass123"),
    "SHA/AES": snmp_usm.make_user("noc", "SHA", "authpass123", "AES", "privpass123"),
    "SHA256/AES256": snmp_usm.make_user("a-longer-user-name", "SHA256", "authpass123", "AES256", "privpass123"),
    "SHA512/AES192C": snmp_usm.make_user("noc", "SHA512", "authpass123", "AES192C", "privpass123"),
    "SHA/DES": snmp_usm.make_user("noc", "SHA", "authpass123", "DES", "privpass123"),
}
ENGINE_IDS = st.binary(min_size=5, max_size=32) | st.just(b"\x80\x00\x1f\x88\x80" + b"\x00" * 12)


def _oracle_message(msg_id: int, flags: int, peer: PeerEngine, user: snmp_usm.UsmUser, etime: int, auth: bytes,
                    priv: bytes, data: Any) -> bytes:
    """The SNMPv3 message as pyasn1 lays it out (the code before the fast encoder)."""
    p = UsmSecurityParameters()
    p["msgAuthoritativeEngineId"] = peer.engine_id
    p["msgAuthoritativeEngineBoots"] = peer.boots
    p["msgAuthoritativeEngineTime"] = etime
    p["msgUserName"] = user.name
    p["msgAuthenticationParameters"] = auth
    p["msgPrivacyParameters"] = priv
    msg = SNMPv3Message()
    msg["msgVersion"] = 3
    header = msg["msgGlobalData"]
    header["msgID"] = msg_id
    header["msgMaxSize"] = 65507
    header["msgFlags"] = bytes([flags])
    header["msgSecurityModel"] = 3
    msg["msgSecurityParameters"] = bytes(encoder.encode(p))
    if isinstance(data, bytes):
        msg["msgData"]["encryptedPDU"] = data
    else:
        msg["msgData"]["plaintext"] = data
    return bytes(encoder.encode(msg))


@ORACLE
@given(st.sampled_from(sorted(USERS)), requests(), st.integers(1, 2**31 - 1), ENGINE_IDS,
       st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.binary(max_size=12))
def test_v3_requests_are_pyasn1_layout_with_pysnmp_digest_and_cipher(
    level: str, request: Request, msg_id: int, engine_id: bytes, boots: int, etime: int, context: bytes
) -> None:
    """Same bytes as pyasn1 around the digest and the cipher; pysnmp's services accept the digest and
    decrypt the ScopedPDU to exactly pyasn1's encoding of the request."""
    user = USERS[level]
    peer = _peer(user, engine_id, boots, etime)
    whole = snmp_usm.encode_request(msg_id, user, peer, request, 0.0, context)
    got, _ = decoder.decode(whole, asn1Spec=SNMPv3Message())
    params, _ = decoder.decode(bytes(got["msgSecurityParameters"]), asn1Spec=UsmSecurityParameters())
    auth, priv = bytes(params["msgAuthenticationParameters"]), bytes(params["msgPrivacyParameters"])
    scoped = bytes(encoder.encode(snmp_usm._scoped(engine_id, pysnmp_pdu(request, msg_id), context)))
    if user.priv_id:
        cipher = bytes(got["msgData"]["encryptedPDU"])
        plain = SnmpUSMSecurityModel.PRIV_SERVICES[user.priv_id].decrypt_data(
            peer.priv_key, (boots, etime, univ.OctetString(priv)), univ.OctetString(cipher))
        assert bytes(plain)[: len(scoped)] == scoped  # DES pads to its block; AES does not
        data: Any = cipher
    else:
        assert priv == b""
        data = snmp_usm._scoped(engine_id, pysnmp_pdu(request, msg_id), context)
    if user.auth_id:
        service = SnmpUSMSecurityModel.AUTH_SERVICES[user.auth_id]
        assert len(auth) == service.digest_length
        service.authenticate_incoming_message(peer.auth_key, univ.OctetString(auth), whole)  # raises if wrong
        zeros = b"\x00" * len(auth)
        assert whole.replace(auth, zeros, 1) == _oracle_message(msg_id, user.flags | 4, peer, user, etime, zeros,
                                                                priv, data)
        assume(zeros not in whole[: whole.find(auth)])  # pysnmp signs the first run of zeros it finds
        assert service.authenticate_outgoing_message(peer.auth_key, whole.replace(auth, zeros, 1)) == whole
    else:
        assert whole == _oracle_message(msg_id, 4, peer, user, etime, b"", b"", data)


@ORACLE
@given(st.sampled_from(sorted(k for k in USERS if "AES" in k)), st.binary(max_size=300), ENGINE_IDS,
       st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_aes_decrypts_what_pysnmp_encrypts(level: str, scoped: bytes, engine_id: bytes, boots: int, etime: int) -> None:
    user = USERS[level]
    peer = _peer(user, engine_id, boots, etime)
    assert user.priv_id is not None
    cipher, salt = SnmpUSMSecurityModel.PRIV_SERVICES[user.priv_id].encrypt_data(peer.priv_key, (boots, etime, None),
                                                                                scoped)
    dec = snmp_usm._aes(peer.aes, boots, etime, bytes(salt)).decryptor()
    assert dec.update(bytes(cipher)) + dec.finalize() == scoped
    # the path replies take: CFB decryption through the peer's long-lived ECB context, twice in a row
    # (the context must carry nothing from one message to the next)
    iv = boots.to_bytes(4, "big") + etime.to_bytes(4, "big") + bytes(salt)
    for _ in range(2):
        assert snmp_usm._cfb_decrypt(peer.ecb, iv, bytes(cipher)) == scoped


@ORACLE
@given(st.sampled_from(sorted(k for k in USERS if USERS[k].auth_id)), st.binary(max_size=200), ENGINE_IDS,
       st.integers(0, 60), st.integers(0, 255))
def test_authentic_agrees_with_pysnmp(level: str, body: bytes, engine_id: bytes, where: int, flip: int) -> None:
    """On our own messages and on any byte of them changed, our digest check says what pysnmp's does."""
    user = USERS[level]
    peer = _peer(user, engine_id, 3, 1000)
    whole = snmp_usm.encode_request(7, user, peer, Request(GET, ((1, 3, 6, 1, 2, 1, 1, 3, 0),)), 0.0, body[:20])
    mangled = bytearray(whole)
    mangled[where % len(whole)] ^= flip
    service = SnmpUSMSecurityModel.AUTH_SERVICES[user.auth_id]
    for message in (whole, bytes(mangled)):
        try:
            reply = snmp_usm.decode_message(message)
        except Exception:
            continue  # not a message at all
        try:
            service.authenticate_incoming_message(peer.auth_key, univ.OctetString(reply.auth_params), message)
            want = True
        except Exception:
            want = False
        assert snmp_usm.authentic(reply, user, peer) is want


def test_a_repeated_get_reuses_its_varbind_list_and_walks_keep_none() -> None:
    """A GET's whole VarBindList is remembered (a poller repeats its OIDs every interval; issue 12's v3
    GET cost): the second encoding is still pyasn1's, and a walk's moving GETBULK cursors add nothing."""
    oids_ = ((1, 3, 6, 1, 2, 1, 1, 3, 0), (1, 3, 6, 1, 2, 1, 2, 2, 1, 10, 70001))
    get = Request(GET, oids_)
    for request_id in (7, 2**31 - 1, -5):
        assert snmp_request.pdu(get, request_id) == bytes(encoder.encode(pysnmp_pdu(get, request_id)))
    assert snmp_request.varbind_list(oids_) is snmp_request.varbind_list(oids_)
    kept = len(snmp_request._LIST_CACHE)
    for row in range(100):
        bulk = Request(GETBULK, ((1, 3, 6, 1, 2, 1, 2, 2, 1, 10, row),), 0, 25)
        assert snmp_request.pdu(bulk, row) == bytes(encoder.encode(pysnmp_pdu(bulk, row)))
    assert len(snmp_request._LIST_CACHE) == kept


@settings(max_examples=50, deadline=None, derandomize=True)
@given(key=st.binary(min_size=16, max_size=16), iv=st.binary(min_size=16, max_size=16), data=st.binary(max_size=600))
def test_the_request_cipher_maker_encrypts_as_the_public_cipher(key: bytes, iv: bytes, data: bytes) -> None:
    """The encryption context a request uses (cryptography's maker behind ``Cipher``) gives the bytes
    the public ``Cipher`` gives, and is decrypted back by it."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    CFB = type(snmp_usm._aes(algorithms.AES(key), 0, 0, bytes(8)).mode)  # wherever this cryptography keeps it
    enc = snmp_usm._new_cfb_encryptor(algorithms.AES(key), CFB(iv))
    ours = enc.update(data) + enc.finalize()
    public = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    assert ours == public.update(data) + public.finalize()
    dec = Cipher(algorithms.AES(key), CFB(iv)).decryptor()
    assert dec.update(ours) + dec.finalize() == data


def test_without_cryptographys_private_maker_requests_use_the_public_cipher(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cryptography.hazmat.bindings._rust", None)  # an import now fails
    assert snmp_usm._cfb_encryptor_maker() is snmp_usm._public_encryptor


def test_message_ids_are_in_range_and_differ() -> None:
    ids = [snmp_usm.next_msg_id() for _ in range(5000)]  # ten draws from the OS's random source
    assert all(1 <= i <= 2**31 - 1 for i in ids)
    assert len(set(ids)) > 4990  # 31 random bits: a repeat among 5,000 is rare, ten are impossible


def test_what_is_laid_out_once_per_agent_is_bounded_and_keyed_by_all_it_depends_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ScopedPDU's head and the security parameters' ends are laid out once per agent and user
    (issue 12's v3 GET cost); bounded, and never reused for another agent, user or context."""
    monkeypatch.setattr(snmp_request, "_SCOPES_MAX", 4)
    monkeypatch.setattr(snmp_usm, "_PARAMS_ENDS_MAX", 4)
    get = Request(GET, ((1, 3, 6, 1, 2, 1, 1, 3, 0),))
    for i in range(20):
        for level in ("SHA/AES", "SHA256/AES256"):
            user = USERS[level]
            engine_id = b"\x80\x00\x1f\x88\x04engine-%d" % (i % 7)
            peer = _peer(user, engine_id, 1, 2)
            context = b"vrf-%d" % (i % 3)
            whole = snmp_usm.encode_request(i + 1, user, peer, get, 0.0, context)
            got, _ = decoder.decode(whole, asn1Spec=SNMPv3Message())
            params, _ = decoder.decode(bytes(got["msgSecurityParameters"]), asn1Spec=UsmSecurityParameters())
            assert (bytes(params["msgAuthoritativeEngineId"]), bytes(params["msgUserName"])) == (engine_id, user.name)
            assert snmp_usm.open_reply(snmp_usm.decode_message(whole), user, peer).request_id == i + 1
            assert snmp_request.scoped_pdu(engine_id, context, b"") == snmp_request.tlv(
                0x30, snmp_request.octets(engine_id) + snmp_request.octets(context))
    assert len(snmp_request._SCOPES) <= 4 and len(snmp_usm._PARAMS_ENDS) <= 4
