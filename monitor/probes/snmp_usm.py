"""SNMPv3 User-based Security Model (RFC 3414/3826) for the client side, built on pysnmp's codecs.

Why not pysnmp's ``v3arch`` engine: it registers every target in the engine's LCD tables and
clones a USM user row per discovered engine, and its user lookup rebuilds a map over the whole
usmUserTable whenever that table changes; the first pass over N distinct agents is then O(N²)
(measured for the issue: 5,000 targets took 182 s with 1,320 false timeouts). Here the per-agent
state (engine id, boots, time, localized keys) lives in plain dicts keyed by agent address, and the
expensive password-to-key hash runs once per credential, so the cost per new agent is constant.

Everything in this module is pure message building and parsing; the sockets live in
:mod:`monitor.probes.snmp_transport`. Messages are laid out by :mod:`monitor.probes.snmp_request`
(pyasn1 took ~4 ms per 20-OID GET); privacy and key localization are pysnmp's own services; the
HMAC digests (RFC 3414 §6-7, RFC 7860) are the standard library's ``hmac``, computed exactly where
and how pysnmp's services compute them (``tests/test_snmp_request.py`` checks both against them):
pysnmp's HMAC-SHA-1 and MD5 build the padded keys with a Python ``map`` on every message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pyasn1.codec.ber import decoder, encoder
from pyasn1.type import univ
from pysnmp.entity import config as pconfig
from pysnmp.proto.error import StatusInformation
from pysnmp.proto.mpmod.rfc3412 import ScopedPDU, SNMPv3Message
from pysnmp.proto.secmod.rfc3414.service import SnmpUSMSecurityModel, UsmSecurityParameters
from pysnmp.proto.secmod.rfc3826.priv.aes import Aes

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # cryptography < 47, where CFB had not moved yet
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from monitor.errors import ProbeAuthError, ProbeProtocolError, ProbeSetupError
from monitor.probes import snmp_ber, snmp_request
from monitor.probes.snmp_ber import Pdu
from monitor.probes.snmp_request import Request

ber_decline = snmp_ber.Decline

AUTH_PROTOCOLS: dict[str, tuple[int, ...]] = {
    "MD5": pconfig.USM_AUTH_HMAC96_MD5,
    "SHA": pconfig.USM_AUTH_HMAC96_SHA,
    "SHA1": pconfig.USM_AUTH_HMAC96_SHA,
    "SHA224": pconfig.USM_AUTH_HMAC128_SHA224,
    "SHA256": pconfig.USM_AUTH_HMAC192_SHA256,
    "SHA384": pconfig.USM_AUTH_HMAC256_SHA384,
    "SHA512": pconfig.USM_AUTH_HMAC384_SHA512,
}
PRIV_PROTOCOLS: dict[str, tuple[int, ...]] = {
    "DES": pconfig.USM_PRIV_CBC56_DES,
    "3DES": pconfig.USM_PRIV_CBC168_3DES,
    "AES": pconfig.USM_PRIV_CFB128_AES,
    "AES128": pconfig.USM_PRIV_CFB128_AES,
    "AES192": pconfig.USM_PRIV_CFB192_AES_BLUMENTHAL,
    "AES256": pconfig.USM_PRIV_CFB256_AES_BLUMENTHAL,
    "AES192C": pconfig.USM_PRIV_CFB192_AES,  # Cisco-style key extension
    "AES256C": pconfig.USM_PRIV_CFB256_AES,
}

# usmStats report OIDs (RFC 3414 §5) → what they mean for us
_REPORT_NOT_IN_TIME = (1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0)
_REPORT_UNKNOWN_ENGINE = (1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0)
_REPORT_AUTH = {
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 1, 0): "unsupported security level",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 3, 0): "unknown user name",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 5, 0): "wrong digest (auth key or protocol)",
    (1, 3, 6, 1, 6, 3, 15, 1, 1, 6, 0): "decryption error (priv key or protocol)",
}
# the HMAC of each auth protocol: hash and digest length (RFC 3414: 96 bits; RFC 7860: SHA-2)
_DIGESTS: dict[tuple[int, ...], tuple[Any, int]] = {
    pconfig.USM_AUTH_HMAC96_MD5: (hashlib.md5, 12),
    pconfig.USM_AUTH_HMAC96_SHA: (hashlib.sha1, 12),
    pconfig.USM_AUTH_HMAC128_SHA224: (hashlib.sha224, 16),
    pconfig.USM_AUTH_HMAC192_SHA256: (hashlib.sha256, 24),
    pconfig.USM_AUTH_HMAC256_SHA384: (hashlib.sha384, 32),
    pconfig.USM_AUTH_HMAC384_SHA512: (hashlib.sha512, 48),
}
_FLAG_AUTH, _FLAG_PRIV, _FLAG_REPORTABLE = 1, 2, 4


def _aes_key_sizes() -> dict[tuple[int, ...], int]:
    """Priv protocols that are RFC 3826 AES-CFB as pysnmp runs it (key extension aside) -> key size.

    Their cipher is run here with ``cryptography`` directly: pysnmp's wrapper builds pyasn1 objects
    for the key, the IV and the result of every message (about half of a v3 GET's encoding).
    """
    sizes = {}
    for priv_id in PRIV_PROTOCOLS.values():
        service = SnmpUSMSecurityModel.PRIV_SERVICES[priv_id]
        kind = type(service)
        if isinstance(service, Aes) and kind.encrypt_data is Aes.encrypt_data and kind.decrypt_data is Aes.decrypt_data:
            sizes[priv_id] = int(service.KEY_SIZE)
    return sizes


_AES_KEY_SIZES = _aes_key_sizes()
_salts = iter(range(secrets.randbits(64), 2**200))  # RFC 3826 §3.1.2.1: a 64-bit counter from a random start


def _aes(key: algorithms.AES, boots: int, etime: int, salt: bytes) -> Cipher[CFB]:
    """AES-CFB128 with the IV of RFC 3826 §3.1.2.1: engine boots, engine time, the salt."""
    return Cipher(key, CFB(boots.to_bytes(4, "big") + etime.to_bytes(4, "big") + salt))


def _public_encryptor(key: algorithms.AES, mode: CFB) -> Any:
    return Cipher(key, mode).encryptor()


def _cfb_encryptor_maker() -> Callable[[algorithms.AES, CFB], Any]:
    """How a request's AES-CFB encryption context is made: ``cryptography``'s own context maker,
    without its ``Cipher`` front (~4 µs of ~10 per context in ABC ``isinstance`` checks and
    interface tests for an algorithm and mode that are always the same two classes here).

    That maker is not public API, so it is used only if it exists and encrypts a test message to
    exactly what the public ``Cipher`` gives; otherwise (a later ``cryptography``) the public way.
    """
    try:
        from cryptography.hazmat.bindings._rust import openssl as rust_openssl

        make = rust_openssl.ciphers.create_encryption_ctx
        key, iv, data = algorithms.AES(bytes(range(16))), bytes(range(16, 32)), bytes(range(45))
        ours = make(key, CFB(iv))
        theirs = _public_encryptor(key, CFB(iv))
        if ours.update(data) + ours.finalize() == theirs.update(data) + theirs.finalize():
            return cast(Callable[[algorithms.AES, CFB], Any], make)
    except Exception:  # anything unexpected in a private module: the public way
        pass
    return _public_encryptor


_new_cfb_encryptor = _cfb_encryptor_maker()


def _cfb_decrypt(ecb: Any, iv: bytes, data: bytes) -> bytes:
    """AES-CFB128 decryption (NIST SP 800-38A §6.3) through a peer's long-lived ECB context.

    Why: setting up a CFB cipher in ``cryptography`` (context, key schedule, mode checks) cost
    ~13 µs per message, several times the decryption itself. CFB decryption needs only the block
    cipher's forward direction on blocks it already has: P_i = C_i XOR E(C_{i-1}), C_0 = IV, so one
    ECB pass over IV || C_1..C_{n-1} gives the whole key stream, and ECB keeps no state between
    calls. (Encryption chains each block's output into the next input, so it stays a CFB cipher.)
    """
    n = len(data)
    if not n:
        return b""
    blocks = (n + 15) // 16
    stream = ecb.update(iv + data[:16 * (blocks - 1)])
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream[:n], "big")).to_bytes(n, "big")
_MAX_SIZE = 65507
_MAX_INT = 2**31 - 1


_ids: list[int] = []  # unpredictable msgIDs drawn ahead, 512 per read of the OS's random source


def next_msg_id() -> int:
    """An unpredictable msgID (1..2^31-1): a blind spoofer has to guess 31 bits, not count up.

    Drawn from ``os.urandom`` 512 at a time (``secrets.randbelow`` read it once per id: a system
    call and ~1 µs of each GET); a forked child draws its own (the parent's are dropped there).
    """
    if not _ids:
        _ids.extend(n for n in memoryview(os.urandom(2048)).cast("I") if n & 0x7FFFFFFF)
    return _ids.pop() & 0x7FFFFFFF


os.register_at_fork(after_in_child=_ids.clear)


@dataclass(frozen=True, slots=True)
class UsmUser:
    """A v3 credential with its master keys (hashed from the passphrases once, here)."""

    name: bytes
    auth_id: tuple[int, ...] | None
    priv_id: tuple[int, ...] | None
    auth_master: Any  # univ.OctetString
    priv_master: Any

    @property
    def flags(self) -> int:
        return (_FLAG_AUTH if self.auth_id else 0) | (_FLAG_PRIV if self.priv_id else 0)


def make_user(
    name: str, auth_protocol: str | None, auth_key: str | None, priv_protocol: str | None, priv_key: str | None
) -> UsmUser:
    """Hash the passphrases (the slow ~1 MB digest of RFC 3414 A.2) once per credential."""
    auth_id = priv_id = None
    auth_master = priv_master = None
    if auth_protocol:
        auth_id = AUTH_PROTOCOLS.get(auth_protocol.upper())
        if auth_id is None or not auth_key:
            raise ProbeSetupError(f"SNMPv3 user {name}: unsupported auth protocol {auth_protocol!r} or no key")
        auth_master = SnmpUSMSecurityModel.AUTH_SERVICES[auth_id].hash_passphrase(auth_key)
    if priv_protocol:
        priv_id = PRIV_PROTOCOLS.get(priv_protocol.upper())
        if priv_id is None or not priv_key or auth_id is None:
            raise ProbeSetupError(f"SNMPv3 user {name}: unsupported priv protocol {priv_protocol!r}, no key or no auth")
        priv_master = SnmpUSMSecurityModel.PRIV_SERVICES[priv_id].hash_passphrase(auth_id, priv_key)
    return UsmUser(name.encode(), auth_id, priv_id, auth_master, priv_master)


@dataclass(slots=True)
class PeerEngine:
    """What discovery taught us about one agent, plus keys localized to its engine id."""

    engine_id: bytes
    boots: int
    time: int
    learned_at: float  # local monotonic time when ``time`` was read
    auth_key: Any = None
    priv_key: Any = None
    auth_raw: bytes = b""  # auth_key's octets, for hmac
    priv_raw: bytes = b""  # the AES key (priv_key's first key-size octets), for an AES priv protocol
    aes: Any = None  # algorithms.AES(priv_raw), made once per peer
    ecb: Any = None  # an AES-ECB encryptor with that key: decrypting a reply's CFB (see _cfb_decrypt)
    auth_hmac: Any = None  # hmac keyed with auth_raw, copied per message (the padded keys hashed once)

    def engine_time(self, now: float) -> int:
        return min(self.time + int(now - self.learned_at), 0x7FFFFFFF)


def localize(user: UsmUser, peer: PeerEngine) -> None:
    """Localize the user's keys to the peer's engine id (cheap: one hash)."""
    if user.auth_id:
        peer.auth_key = SnmpUSMSecurityModel.AUTH_SERVICES[user.auth_id].localize_key(
            user.auth_master, univ.OctetString(peer.engine_id)
        )
        peer.auth_raw = bytes(peer.auth_key)
        digest = _DIGESTS.get(user.auth_id)
        peer.auth_hmac = hmac.new(peer.auth_raw, digestmod=digest[0]) if digest is not None else None
    if user.priv_id and user.auth_id:
        peer.priv_key = SnmpUSMSecurityModel.PRIV_SERVICES[user.priv_id].localize_key(
            user.auth_id, user.priv_master, univ.OctetString(peer.engine_id)
        )
        size = _AES_KEY_SIZES.get(user.priv_id)
        peer.priv_raw = bytes(peer.priv_key)[:size] if size else b""
        peer.aes = algorithms.AES(peer.priv_raw) if size else None
        peer.ecb = Cipher(peer.aes, modes.ECB()).encryptor() if size else None  # the block function for CFB


def encode_discovery(msg_id: int) -> bytes:
    """An unauthenticated, empty GET that makes the agent report its engine id, boots and time."""
    params, _ = snmp_request.usm_parameters(b"", 0, 0, b"", b"", b"")
    scoped = snmp_request.scoped_pdu(b"", b"", snmp_request.pdu(Request(snmp_request.GET, ()), msg_id))
    return snmp_request.v3_message(msg_id, _MAX_SIZE, _FLAG_REPORTABLE, params, scoped, False)[0]


def encode_request(
    msg_id: int, user: UsmUser, peer: PeerEngine, pdu: Request | Any, now: float, context: bytes = b""
) -> bytes:
    """A request PDU wrapped for ``peer``: encrypted and authenticated as the user's level asks.

    ``pdu``: a :class:`Request` (its request-id is ``msg_id``), or a pysnmp PDU object encoded by
    pyasn1 as it is (the tests forge odd messages that way).
    """
    boots, etime = peer.boots, peer.engine_time(now)
    pdu_bytes = snmp_request.pdu(pdu, msg_id) if isinstance(pdu, Request) else bytes(encoder.encode(pdu))
    data = snmp_request.scoped_pdu(peer.engine_id, context, pdu_bytes)
    priv_params = b""
    if user.priv_id and peer.aes is not None:
        priv_params = (next(_salts) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
        enc = _new_cfb_encryptor(peer.aes, CFB(boots.to_bytes(4, "big") + etime.to_bytes(4, "big") + priv_params))
        data = enc.update(data) + enc.finalize()
    elif user.priv_id:  # DES, 3DES: pysnmp's service
        cipher, salt = SnmpUSMSecurityModel.PRIV_SERVICES[user.priv_id].encrypt_data(
            peer.priv_key, (boots, etime, None), data
        )
        data, priv_params = bytes(cipher), salt.asOctets()
    digest = _DIGESTS.get(user.auth_id) if user.auth_id else None
    if user.auth_id and digest is None:
        raise ProbeSetupError(f"SNMPv3 user {user.name!r}: no digest for auth protocol {user.auth_id}")
    size = digest[1] if digest is not None else 0
    head, tail = _layout(msg_id, user.flags | _FLAG_REPORTABLE, peer.engine_id, boots, etime, user.name, size,
                         priv_params, data, bool(user.priv_id))
    if digest is None:
        return head + tail
    return head + _hmac(peer, digest[0], head + b"\x00" * size + tail)[:size] + tail


def _layout(
    msg_id: int, flags: int, engine_id: bytes, boots: int, etime: int, user: bytes, size: int, priv: bytes,
    data: bytes, encrypted: bool,
) -> tuple[bytes, bytes]:
    """The whole message as (head, tail) around its ``size`` digest octets (RFC 3412 §6, RFC 3414 §2.4).

    The same bytes as ``snmp_request.v3_message`` around ``usm_parameters`` (``tests/test_snmp_request.py``
    checks both against pyasn1), laid out in one pass: the digest's place is where the two parts
    meet, so it is neither searched for nor spliced in afterwards.
    """
    octets, integer, length = snmp_request.octets, snmp_request.integer, snmp_request.length
    ends = _PARAMS_ENDS.get((engine_id, user, size))
    if ends is None:  # the same for every request to an agent as one user: laid out once (bounded)
        if len(_PARAMS_ENDS) >= _PARAMS_ENDS_MAX:
            _PARAMS_ENDS.clear()
        ends = _PARAMS_ENDS[(engine_id, user, size)] = (octets(engine_id), octets(user) + b"\x04" + length(size))
    before = ends[0] + integer(boots) + integer(etime) + ends[1]
    after = b"\x04\x08" + priv if len(priv) == 8 else octets(priv)
    n = len(before) + size + len(after)
    params_head = b"\x30" + length(n)
    m = len(params_head) + n
    header = snmp_request.tlv(0x30, integer(msg_id) + _HEADER_TAIL[flags])
    body_head = b"\x02\x01\x03" + header + b"\x04" + length(m) + params_head + before
    body_tail = after + (octets(data) if encrypted else data)
    return b"\x30" + length(len(body_head) + size + len(body_tail)) + body_head, body_tail


# (engine id, user name, digest size) -> msgAuthoritativeEngineID, and msgUserName with the head of
# msgAuthenticationParameters: one entry per agent and user polled, dropped whole when full
_PARAMS_ENDS: dict[tuple[bytes, bytes, int], tuple[bytes, bytes]] = {}
_PARAMS_ENDS_MAX = 16384
# msgGlobalData after the msgID, per flags: msgMaxSize, msgFlags, msgSecurityModel (USM)
_HEADER_TAIL = {f: snmp_request.integer(_MAX_SIZE) + bytes((0x04, 1, f)) + b"\x02\x01\x03" for f in range(256)}


def _hmac(peer: PeerEngine, hash_kind: Any, data: bytes) -> bytes:
    """HMAC of ``data`` with the peer's localized auth key: a copy of its keyed template if it has one."""
    if peer.auth_hmac is None:
        return hmac.new(peer.auth_raw, data, hash_kind).digest()
    h = peer.auth_hmac.copy()
    h.update(data)
    return bytes(h.digest())


class V3Reply(NamedTuple):
    """The outer SNMPv3 message, decoded but not yet verified or decrypted.

    A named tuple, not a frozen dataclass: made for every datagram, and a frozen dataclass's ten
    ``object.__setattr__`` calls cost ~1.5 µs of a GET.
    """

    msg_id: int
    flags: int
    engine_id: bytes
    boots: int
    time: int
    auth_params: bytes  # msgAuthenticationParameters (the digest)
    priv_params: bytes  # msgPrivacyParameters (the salt)
    encrypted: bytes | None  # msgData when it is an encryptedPDU
    plain: Pdu | None  # msgData when it is a plaintext ScopedPDU: its PDU
    whole: bytes


def decode_message(whole: bytes) -> V3Reply:
    """Decode the outer SNMPv3 message (no crypto yet): enough to match it to a request.

    The fast path (:mod:`monitor.probes.snmp_ber`) takes the usual datagram; pyasn1 decides the rest.
    """
    try:
        return _fast_message(whole)
    except Exception:  # Decline, or a bug in the fast path: pyasn1 decides either way
        return _pyasn1_message(whole)


def _pyasn1_message(whole: bytes) -> V3Reply:
    """pyasn1's decoding (the oracle the fast path is tested against)."""
    try:
        msg, _ = decoder.decode(whole, asn1Spec=SNMPv3Message())
        params, _ = decoder.decode(bytes(msg["msgSecurityParameters"]), asn1Spec=UsmSecurityParameters())
        header = msg["msgGlobalData"]
        data = msg["msgData"]
        encrypted = plain = None
        if data.getName() == "encryptedPDU":
            encrypted = bytes(data["encryptedPDU"])
        else:
            plain = snmp_ber.from_pysnmp(data["plaintext"]["data"].getComponent())
        return V3Reply(
            msg_id=int(header["msgID"]),
            flags=bytes(header["msgFlags"])[0],
            engine_id=bytes(params["msgAuthoritativeEngineId"]),
            boots=int(params["msgAuthoritativeEngineBoots"]),
            time=int(params["msgAuthoritativeEngineTime"]),
            auth_params=bytes(params["msgAuthenticationParameters"]),
            priv_params=bytes(params["msgPrivacyParameters"]),
            encrypted=encrypted,
            plain=plain,
            whole=whole,
        )
    except Exception as exc:  # pyasn1 raises many kinds; all mean "not a v3 message we understand"
        raise ProbeProtocolError(f"malformed reply: {type(exc).__name__}") from exc


def _fast_message(whole: bytes) -> V3Reply:
    """The usual v3 datagram in plain definite-length BER, or Decline (RFC 3412 §6, RFC 3414 §2.4).

    :func:`_quick_message` first (the header as agents send it, in one pass), then the general
    element-by-element reading of :func:`_element_message` for anything it declines.
    """
    try:
        return _quick_message(whole)
    except ber_decline:
        return _element_message(whole)


def _quick_message(w: bytes) -> V3Reply:  # noqa: C901 - one pass, no calls, on purpose (a GET's hot path)
    """The outer message read in one pass, every header element in BER's short form, or Decline.

    Why: read element by element through :mod:`snmp_ber`'s helpers (15 calls) the outer message
    was ~6 µs of a v3 GET's client CPU. What this accepts it decodes exactly as
    :func:`_element_message` does (``tests/test_snmp_ber.py`` checks the two against each other and
    both against pyasn1): the same elements in the same order, the same ranges; any long-form
    length inside the header (legal, but not what agents send) declines to the general reading.
    Children are read one after the other and each SEQUENCE must end exactly where its last child
    does, so no element can reach past its parent; an index past the datagram's end declines.
    """
    try:
        end = len(w)
        if w[0] != 0x30:
            raise ber_decline
        n, p = w[1], 2
        if n & 0x80:
            k = n & 0x7F
            if k == 0 or k > 3 or 2 + k > end:
                raise ber_decline
            n, p = int.from_bytes(w[2:2 + k], "big"), 2 + k
        if p + n != end:
            raise ber_decline
        # msgVersion INTEGER, then msgGlobalData SEQUENCE
        n = w[p + 1]
        if w[p] != 0x02 or n == 0 or n & 0x80:
            raise ber_decline
        p += 2 + n
        if not 0 <= int.from_bytes(w[p - n:p], "big", signed=True) <= _MAX_INT or w[p] != 0x30 or w[p + 1] & 0x80:
            raise ber_decline
        h_stop = p + 2 + w[p + 1]
        p += 2
        n = w[p + 1]  # msgID
        if w[p] != 0x02 or n == 0 or n & 0x80:
            raise ber_decline
        p += 2 + n
        msg_id = int.from_bytes(w[p - n:p], "big", signed=True)
        n = w[p + 1]  # msgMaxSize
        if not 0 <= msg_id <= _MAX_INT or w[p] != 0x02 or n == 0 or n & 0x80:
            raise ber_decline
        p += 2 + n
        if not 484 <= int.from_bytes(w[p - n:p], "big", signed=True) <= _MAX_INT:
            raise ber_decline
        if w[p] != 0x04 or w[p + 1] != 1:  # msgFlags: exactly one octet
            raise ber_decline
        flags = w[p + 2]
        p += 3
        n = w[p + 1]  # msgSecurityModel
        if w[p] != 0x02 or n == 0 or n & 0x80:
            raise ber_decline
        p += 2 + n
        if not 3 <= int.from_bytes(w[p - n:p], "big", signed=True) <= _MAX_INT or p != h_stop:
            raise ber_decline
        # msgSecurityParameters: an OCTET STRING holding the UsmSecurityParameters SEQUENCE
        if w[p] != 0x04 or w[p + 1] & 0x80 or w[p + 2] != 0x30 or w[p + 3] & 0x80:
            raise ber_decline
        s_stop = p + 2 + w[p + 1]
        if p + 4 + w[p + 3] != s_stop:
            raise ber_decline
        p += 4
        n = w[p + 1]  # msgAuthoritativeEngineID
        if w[p] != 0x04 or n & 0x80:
            raise ber_decline
        p += 2 + n
        engine_id = w[p - n:p]
        n = w[p + 1]  # msgAuthoritativeEngineBoots
        if w[p] != 0x02 or n == 0 or n & 0x80:
            raise ber_decline
        p += 2 + n
        boots = int.from_bytes(w[p - n:p], "big", signed=True)
        n = w[p + 1]  # msgAuthoritativeEngineTime
        if not 0 <= boots <= _MAX_INT or w[p] != 0x02 or n == 0 or n & 0x80:
            raise ber_decline
        p += 2 + n
        etime = int.from_bytes(w[p - n:p], "big", signed=True)
        n = w[p + 1]  # msgUserName
        if not 0 <= etime <= _MAX_INT or w[p] != 0x04 or n > 32:
            raise ber_decline
        p += 2 + n
        n = w[p + 1]  # msgAuthenticationParameters
        if w[p] != 0x04 or n & 0x80:
            raise ber_decline
        p += 2 + n
        auth = w[p - n:p]
        n = w[p + 1]  # msgPrivacyParameters
        if w[p] != 0x04 or n & 0x80:
            raise ber_decline
        p += 2 + n
        if p != s_stop or p > end:
            raise ber_decline
        priv = w[p - n:p]
        if p < end and w[p] == 0x04:  # msgData: the encryptedPDU
            n, q = w[p + 1], p + 2
            if n & 0x80:
                k = n & 0x7F
                if k == 0 or k > 3 or q + k > end:
                    raise ber_decline
                n, q = int.from_bytes(w[q:q + k], "big"), q + k
            if q + n != end:
                raise ber_decline
            return V3Reply(msg_id, flags, engine_id, boots, etime, auth, priv, w[q:end], None, w)
        plain, p = _fast_scoped(w, p, end)
        if p != end:
            raise ber_decline
        return V3Reply(msg_id, flags, engine_id, boots, etime, auth, priv, None, plain, w)
    except IndexError:
        raise ber_decline from None


def _element_message(whole: bytes) -> V3Reply:
    """The outer message element by element through :mod:`snmp_ber`'s helpers, or Decline."""
    ber = snmp_ber
    start, stop = ber.element(whole, 0, len(whole), 0x30)
    if stop != len(whole):
        raise ber.Decline  # trailing bytes: pyasn1 ignores them, so does the old path
    _, pos = ber.integer(whole, start, stop, 0, _MAX_INT)  # msgVersion
    h_start, h_stop = ber.element(whole, pos, stop, 0x30)  # msgGlobalData
    msg_id, p = ber.integer(whole, h_start, h_stop, 0, _MAX_INT)
    _, p = ber.integer(whole, p, h_stop, 484, _MAX_INT)  # msgMaxSize
    flags, p = ber.octets(whole, p, h_stop)
    _, p = ber.integer(whole, p, h_stop, 3, _MAX_INT)  # msgSecurityModel
    if p != h_stop or len(flags) != 1:
        raise ber.Decline
    s_start, pos = ber.element(whole, h_stop, stop, 0x04)  # msgSecurityParameters
    p_start, p_stop = ber.element(whole, s_start, pos, 0x30)
    if p_stop != pos:
        raise ber.Decline
    engine_id, p = ber.octets(whole, p_start, p_stop)
    boots, p = ber.integer(whole, p, p_stop, 0, _MAX_INT)
    etime, p = ber.integer(whole, p, p_stop, 0, _MAX_INT)
    user, p = ber.octets(whole, p, p_stop)
    auth, p = ber.octets(whole, p, p_stop)
    priv, p = ber.octets(whole, p, p_stop)
    if p != p_stop or len(user) > 32:
        raise ber.Decline
    encrypted = plain = None
    if pos < stop and whole[pos] == 0x04:
        encrypted, pos = ber.octets(whole, pos, stop)
    else:
        plain, pos = _fast_scoped(whole, pos, stop)
    if pos != stop:
        raise ber.Decline
    return V3Reply(msg_id, flags[0], engine_id, boots, etime, auth, priv, encrypted, plain, whole)


def _fast_scoped(data: bytes, pos: int, end: int) -> tuple[Pdu, int]:
    """(PDU, next position) of the ScopedPDU at ``pos``, or Decline: :func:`_quick_scoped` first,
    :func:`_element_scoped` for anything it declines."""
    try:
        return _quick_scoped(data, pos, end)
    except ber_decline:
        return _element_scoped(data, pos, end)


def _quick_scoped(data: bytes, pos: int, end: int) -> tuple[Pdu, int]:
    """The ScopedPDU and its PDU's header in one pass, short-form elements only, or Decline.

    As :func:`_quick_message` is to the outer message (~2.5 µs of a GET's decoding were the
    helpers' calls here): the same elements, ranges and result as :func:`_element_scoped`; the PDU
    must end exactly where the ScopedPDU does, so nothing before it can reach past that end.
    """
    try:
        if data[pos] != 0x30:
            raise ber_decline
        n, p = data[pos + 1], pos + 2
        if n & 0x80:
            k = n & 0x7F
            if k == 0 or k > 3 or p + k > end:
                raise ber_decline
            n, p = int.from_bytes(data[p:p + k], "big"), p + k
        stop = p + n
        n = data[p + 1]  # contextEngineID
        if stop > end or data[p] != 0x04 or n & 0x80:
            raise ber_decline
        p += 2 + n
        n = data[p + 1]  # contextName
        if data[p] != 0x04 or n & 0x80:
            raise ber_decline
        p += 2 + n
        kind = data[p]
        if kind != snmp_ber.RESPONSE and kind != snmp_ber.REPORT:
            raise ber_decline
        n, p = data[p + 1], p + 2
        if n & 0x80:
            k = n & 0x7F
            if k == 0 or k > 3 or p + k > end:
                raise ber_decline
            n, p = int.from_bytes(data[p:p + k], "big"), p + k
        if p + n != stop:
            raise ber_decline
        n = data[p + 1]  # request-id
        if data[p] != 0x02 or n == 0 or n & 0x80:
            raise ber_decline
        p += 2 + n
        request_id = int.from_bytes(data[p - n:p], "big", signed=True)
        n = data[p + 1]  # error-status
        if not -(2**31) <= request_id <= 2**31 - 1 or data[p] != 0x02 or n == 0 or n & 0x80:
            raise ber_decline
        p += 2 + n
        status = int.from_bytes(data[p - n:p], "big", signed=True)
        n = data[p + 1]  # error-index
        if not -(2**63) <= status <= 2**63 - 1 or data[p] != 0x02 or n == 0 or n & 0x80:
            raise ber_decline
        p += 2 + n
        index = int.from_bytes(data[p - n:p], "big", signed=True)
        if not 0 <= index <= _MAX_INT or p > stop:
            raise ber_decline
        return Pdu(kind, request_id, status, index, snmp_ber.varbinds(data, p, stop)), stop
    except IndexError:
        raise ber_decline from None


def _element_scoped(data: bytes, pos: int, end: int) -> tuple[Pdu, int]:
    """The ScopedPDU element by element through :mod:`snmp_ber`'s helpers, or Decline."""
    start, stop = snmp_ber.element(data, pos, end, 0x30)
    _, p = snmp_ber.octets(data, start, stop)  # contextEngineId
    _, p = snmp_ber.octets(data, p, stop)  # contextName
    pdu, p = snmp_ber.pdu(data, p, stop)
    if p != stop:
        raise snmp_ber.Decline
    return pdu, stop


def _decode_scoped(plain: bytes) -> Pdu:
    """The PDU of a decrypted ScopedPDU; bytes after it (DES padding) are ignored, as pyasn1 did."""
    try:
        return _fast_scoped(plain, 0, len(plain))[0]
    except Exception:  # Decline, or a bug in the fast path: pyasn1 decides either way
        return _pyasn1_scoped(plain)


def _pyasn1_scoped(plain: bytes) -> Pdu:
    scoped, _ = decoder.decode(plain, asn1Spec=ScopedPDU())
    return snmp_ber.from_pysnmp(scoped["data"].getComponent())


def authentic(reply: V3Reply, user: UsmUser, peer: PeerEngine) -> bool:
    """Whether an authenticated reply's digest is right for the user's key localized to ``peer``.

    As pysnmp's services check it (RFC 3414 §6.3.2, §7.3.2): the digest's first occurrence in the
    message is zeroed and the HMAC over the whole compared, in constant time.
    """
    digest = _DIGESTS.get(user.auth_id) if user.auth_id else None
    if digest is None or not peer.auth_raw:
        return False
    got, size = reply.auth_params, digest[1]
    if len(got) != size:
        return False
    at = reply.whole.find(got)
    if at < 0:
        return False
    whole = reply.whole[:at] + b"\x00" * size + reply.whole[at + size:]
    return hmac.compare_digest(_hmac(peer, digest[0], whole)[:size], got)


def open_reply(reply: V3Reply, user: UsmUser, peer: PeerEngine | None, verified: bool = False) -> Pdu:
    """Verify (unless ``verified`` by :func:`authentic`) and decrypt ``reply``; return its PDU.

    Raises ProbeAuthError for USM failures.
    """
    if reply.flags & _FLAG_AUTH and not verified:
        if peer is None or user.auth_id is None:
            raise ProbeAuthError("auth: unexpected authenticated reply")
        if not authentic(reply, user, peer):
            raise ProbeAuthError("auth: reply failed authentication (wrong auth key)")
    try:
        if reply.flags & _FLAG_PRIV:
            if peer is None or user.priv_id is None:
                raise ProbeAuthError("auth: unexpected encrypted reply")
            if reply.encrypted is None:
                raise ProbeProtocolError("malformed reply: plaintext with the privacy flag")
            if peer.aes is not None and len(reply.priv_params) == 8:  # AES (else pysnmp's error or service)
                iv = reply.boots.to_bytes(4, "big") + reply.time.to_bytes(4, "big") + reply.priv_params
                if peer.ecb is not None:
                    return _decode_scoped(_cfb_decrypt(peer.ecb, iv, reply.encrypted))
                dec = _aes(peer.aes, reply.boots, reply.time, reply.priv_params).decryptor()
                return _decode_scoped(dec.update(reply.encrypted) + dec.finalize())
            salt = univ.OctetString(reply.priv_params)
            plain = SnmpUSMSecurityModel.PRIV_SERVICES[user.priv_id].decrypt_data(
                peer.priv_key, (reply.boots, reply.time, salt), univ.OctetString(reply.encrypted)
            )
            return _decode_scoped(plain)
        if reply.plain is None:
            raise ProbeProtocolError("malformed reply: encrypted without the privacy flag")
        return reply.plain
    except (ProbeAuthError, ProbeProtocolError):
        raise
    except StatusInformation as exc:
        raise ProbeAuthError("auth: cannot decrypt reply (wrong priv key)") from exc
    except Exception as exc:
        raise ProbeProtocolError(f"malformed reply: {type(exc).__name__}") from exc


def report_reason(pdu: Pdu) -> tuple[str, str]:
    """Classify a Report PDU: ('time'|'engine'|'auth'|'other', text)."""
    oids = [oid for oid, _ in pdu.varbinds]
    for oid in oids:
        if oid == _REPORT_NOT_IN_TIME:
            return "time", "not in time window"
        if oid == _REPORT_UNKNOWN_ENGINE:
            return "engine", "unknown engine id"
        if oid in _REPORT_AUTH:
            return "auth", _REPORT_AUTH[oid]
    return "other", "report " + ",".join(".".join(map(str, o)) for o in oids)


def is_report(pdu: Pdu) -> bool:
    return pdu.kind == snmp_ber.REPORT


def _scoped(engine_id: bytes, pdu: Any, context: bytes = b"") -> Any:
    """The pyasn1 ScopedPDU of a pysnmp PDU object: the tests' oracle for what we send and decrypt."""
    scoped = ScopedPDU()
    scoped["contextEngineId"] = engine_id
    scoped["contextName"] = context
    scoped["data"].setComponentByType(pdu.tagSet, pdu)
    return scoped
