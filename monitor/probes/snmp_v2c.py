"""SNMPv2c messages for the client side: build a request, decode a reply (pure; no sockets).

Why not pysnmp's v1arch dispatcher: it decodes every datagram inside an asyncio callback, so a
garbage or truncated datagram ends in asyncio's exception handler as a ~30-line traceback whose
first line shows the datagram, i.e. part of our community; and it accepted Set/Trap/Report PDUs,
a wrong community and other source addresses as the answer. Here decoding is total (anything
that is not a v2c message raises :class:`ProbeProtocolError` with no payload in the text) and the
matching rules live in :func:`mismatch`, so the transport can ignore and count what does not fit.
Replies are decoded by :mod:`monitor.probes.snmp_ber`'s fast path; whatever it declines goes to
pyasn1, so acceptance and results are pyasn1's either way.
"""

from __future__ import annotations

import secrets
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto.api import v2c

from monitor.errors import ProbeProtocolError
from monitor.probes import snmp_ber, snmp_request
from monitor.probes.snmp_ber import Pdu
from monitor.probes.snmp_request import Request

_VERSION_2C = 1  # the msgVersion field of a v2c message (0 is v1, 3 is v3)


@dataclass(frozen=True, slots=True)
class V2Reply:
    """A decoded v2c message: enough to match it to the request that it claims to answer."""

    request_id: int
    community: bytes
    pdu: Pdu  # any PDU type: the matching decides what is acceptable
    size: int  # bytes of the datagram (walks are bounded in bytes)


def new_request_id(taken: Container[int] = ()) -> int:
    """An unpredictable request id (1..2^31-1) not in ``taken``: a blind spoofer has to guess 31 bits."""
    while True:
        rid = secrets.randbelow(0x7FFFFFFF) + 1
        if rid not in taken:
            return rid


def encode_request(request_id: int, community: bytes, pdu: Request | Any) -> bytes:
    """The whole datagram for ``pdu`` with ``request_id``.

    ``pdu``: a :class:`Request`, laid out by :mod:`monitor.probes.snmp_request` (pyasn1 took ~1.5 ms
    for a 20-OID GET); or a pysnmp PDU object, encoded by pyasn1 (the tests forge odd ones that way).
    """
    if isinstance(pdu, Request):
        return snmp_request.v2c_message(request_id, community, pdu)
    v2c.apiPDU.set_request_id(pdu, request_id)
    msg = v2c.Message()
    v2c.apiMessage.set_defaults(msg)
    v2c.apiMessage.set_community(msg, community)
    v2c.apiMessage.set_pdu(msg, pdu)
    return bytes(encoder.encode(msg))


def decode_message(data: bytes) -> V2Reply:
    """Decode one datagram as a v2c message, or raise ProbeProtocolError (never anything else).

    The error text names only the kind of problem, never bytes of the datagram: a truncated copy of
    our own request carries the community.
    """
    try:
        return _fast(data)
    except Exception:  # Decline, or a bug in the fast path: pyasn1 decides either way
        return _pyasn1(data)


def _pyasn1(data: bytes) -> V2Reply:
    """pyasn1's decoding (the oracle the fast path is tested against): any BER, any PDU type."""
    try:
        msg, rest = decoder.decode(data, asn1Spec=v2c.Message())
        if rest:
            raise ProbeProtocolError("malformed reply: trailing bytes")
        if int(msg["version"]) != _VERSION_2C:
            raise ProbeProtocolError("malformed reply: not SNMPv2c")
        pdu = snmp_ber.from_pysnmp(v2c.apiMessage.get_pdu(msg))
        return V2Reply(pdu.request_id, bytes(msg["community"]), pdu, len(data))
    except ProbeProtocolError:
        raise
    except Exception as exc:  # pyasn1 raises many kinds (and RecursionError on deep nesting)
        raise ProbeProtocolError(f"malformed reply: {type(exc).__name__}") from None


def _fast(data: bytes) -> V2Reply:
    """The common case (a Response or Report in plain definite-length BER), or Decline."""
    end = len(data)
    start, stop = snmp_ber.element(data, 0, end, 0x30)
    if stop != end:
        raise snmp_ber.Decline  # trailing bytes: pyasn1's path names the error
    _, pos = snmp_ber.integer(data, start, stop, _VERSION_2C, _VERSION_2C)  # another version: pyasn1 path
    community, pos = snmp_ber.octets(data, pos, stop)
    pdu, pos = snmp_ber.pdu(data, pos, stop)
    if pos != stop:
        raise snmp_ber.Decline
    return V2Reply(pdu.request_id, community, pdu, end)


def mismatch(reply: V2Reply, community: bytes) -> str | None:
    """Why ``reply`` (already matched by request id and source) is not our answer, or None.

    Only a Response PDU with the request's community is accepted: an agent never answers with a
    Set, Trap, Report or another request, and a different community is someone else's reply.
    """
    if not secrets.compare_digest(reply.community, community):
        return "wrong_community"
    if reply.pdu.kind != snmp_ber.RESPONSE:
        return "wrong_pdu"
    return None


__all__ = ["V2Reply", "decode_message", "encode_request", "mismatch", "new_request_id"]
