"""SNMPv2c messages for the client side: build a request, decode a reply (pure; no sockets).

Why not pysnmp's v1arch dispatcher: it decodes every datagram inside an asyncio callback, so a
garbage or truncated datagram ends in asyncio's exception handler as a ~30-line traceback whose
first line shows the datagram, i.e. part of our community; and it accepted Set/Trap/Report PDUs,
a wrong community and other source addresses as the answer. Here decoding is total (anything
that is not a v2c message raises :class:`ProbeProtocolError` with no payload in the text) and the
matching rules live in :func:`mismatch`, so the transport can ignore and count what does not fit.
"""

from __future__ import annotations

import secrets
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto.api import v2c

from monitor.errors import ProbeProtocolError

_VERSION_2C = 1  # the msgVersion field of a v2c message (0 is v1, 3 is v3)


@dataclass(frozen=True, slots=True)
class V2Reply:
    """A decoded v2c message: enough to match it to the request that it claims to answer."""

    request_id: int
    community: bytes
    pdu: Any  # a pysnmp PDU object (any type: the matching decides what is acceptable)
    size: int  # bytes of the datagram (walks are bounded in bytes)


def new_request_id(taken: Container[int] = ()) -> int:
    """An unpredictable request id (1..2^31-1) not in ``taken``: a blind spoofer has to guess 31 bits."""
    while True:
        rid = secrets.randbelow(0x7FFFFFFF) + 1
        if rid not in taken:
            return rid


def encode_request(request_id: int, community: bytes, pdu: Any) -> bytes:
    """The whole datagram for ``pdu`` (its request-id is set here)."""
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
        msg, rest = decoder.decode(data, asn1Spec=v2c.Message())
        if rest:
            raise ProbeProtocolError("malformed reply: trailing bytes")
        if int(msg["version"]) != _VERSION_2C:
            raise ProbeProtocolError("malformed reply: not SNMPv2c")
        pdu = v2c.apiMessage.get_pdu(msg)
        return V2Reply(int(v2c.apiPDU.get_request_id(pdu)), bytes(msg["community"]), pdu, len(data))
    except ProbeProtocolError:
        raise
    except Exception as exc:  # pyasn1 raises many kinds (and RecursionError on deep nesting)
        raise ProbeProtocolError(f"malformed reply: {type(exc).__name__}") from None


def mismatch(reply: V2Reply, community: bytes) -> str | None:
    """Why ``reply`` (already matched by request id and source) is not our answer, or None.

    Only a Response PDU with the request's community is accepted: an agent never answers with a
    Set, Trap, Report or another request, and a different community is someone else's reply.
    """
    if not secrets.compare_digest(reply.community, community):
        return "wrong_community"
    if not isinstance(reply.pdu, v2c.ResponsePDU):
        return "wrong_pdu"
    return None


__all__ = ["V2Reply", "decode_message", "encode_request", "mismatch", "new_request_id"]
