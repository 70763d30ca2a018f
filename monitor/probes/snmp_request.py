"""A fast BER encoder for the requests we send (GET, GETNEXT, GETBULK; v2c and SNMPv3 USM).

Why: once replies were decoded by :mod:`monitor.probes.snmp_ber`, building requests with pyasn1 was
the largest CPU cost of a walk or a poll (issue 12): a 20-OID GET took ~1.5 ms to build and encode
as v2c and ~4 ms as v3, for about 400 bytes that follow a fixed layout. Here a request is plain
data (:class:`Request`) and its bytes are concatenated directly: definite lengths, the minimal
two's-complement INTEGERs and base-128 OID arcs that pyasn1 writes.

``tests/test_snmp_request.py`` checks, with pyasn1 and pysnmp's USM services as the oracle, that
every message here is byte for byte what pyasn1 encodes (v3: the same layout, digest and cipher as
pysnmp's services compute). An OID pyasn1 would refuse is refused here with the same kind of error
(``ValueError``), never encoded differently.
"""

from __future__ import annotations

from dataclasses import dataclass

Oid = tuple[int, ...]

GET = 0xA0
GETNEXT = 0xA1
GETBULK = 0xA5
_INT32 = (-(2**31), 2**31 - 1)
_NULL = b"\x05\x00"  # the value of every varbind in a request


@dataclass(frozen=True, slots=True)
class Request:
    """A request PDU as plain data (what :class:`~monitor.probes.snmp_transport.Session` sends)."""

    kind: int  # GET, GETNEXT or GETBULK
    oids: tuple[Oid, ...]
    non_repeaters: int = 0  # GETBULK only (else error-status, 0)
    max_repetitions: int = 0  # GETBULK only (else error-index, 0)


def length(n: int) -> bytes:
    """A BER definite length (short form below 128)."""
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return bytes((tag,)) + length(n) + content


def integer(n: int, tag: int = 0x02) -> bytes:
    """A two's-complement INTEGER as pyasn1 writes it: minimal, except that a negative power of two
    gets one octet more (-128 is ``ff 80``; both are valid BER)."""
    bits = n.bit_length()
    raw = n.to_bytes(bits // 8 + 1, "big", signed=True)
    return bytes((tag, len(raw))) + raw


def octets(value: bytes) -> bytes:
    return tlv(0x04, value)


_VARBIND_CACHE: dict[Oid, bytes] = {}  # oid -> the whole varbind of a request (the OID and NULL)
_CACHE_MAX = 4096  # a poller's OIDs repeat every interval; walk cursors do not: bounded


def oid(value: Oid) -> bytes:
    """The whole OBJECT IDENTIFIER element; ``ValueError`` for one pyasn1 cannot encode either."""
    if len(value) < 2:
        raise ValueError("an OID needs at least two arcs")
    first, second = value[0], value[1]
    if not 0 <= first <= 2 or second < 0 or (first < 2 and second >= 40):
        raise ValueError(f"impossible first arcs {first}.{second}")
    out = bytearray()
    for arc in (first * 40 + second, *value[2:]):
        if arc < 0x80:
            if arc < 0:
                raise ValueError("negative arc")
            out.append(arc)
            continue
        chunk = bytearray((arc & 0x7F,))
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        chunk.reverse()
        out += chunk
    return tlv(0x06, bytes(out))


def varbind(name: Oid) -> bytes:
    """The varbind ``name = NULL`` of a request, remembered (bounded) for the next poll."""
    found = _VARBIND_CACHE.get(name)
    if found is None:
        if len(_VARBIND_CACHE) >= _CACHE_MAX:
            _VARBIND_CACHE.clear()
        found = _VARBIND_CACHE[name] = tlv(0x30, oid(name) + _NULL)
    return found


_LIST_CACHE: dict[tuple[Oid, ...], bytes] = {}  # oids -> the request's whole VarBindList
_LIST_CACHE_MAX = 1024  # a poller GETs the same OID lists every interval; walk cursors move: bounded


def varbind_list(oids: tuple[Oid, ...], remember: bool = True) -> bytes:
    """The VarBindList of a request for ``oids``, remembered (bounded) whole when ``remember``: a GET
    asks for the same OIDs every interval, and one look-up spares a call and a look-up per OID (a
    walk's cursors move on, so GETBULK and GETNEXT lists are not kept)."""
    found = _LIST_CACHE.get(oids) if remember else None
    if found is None:
        binds = tlv(0x30, b"".join([varbind(o) for o in oids]))
        if not remember:
            return binds
        if len(_LIST_CACHE) >= _LIST_CACHE_MAX:
            _LIST_CACHE.clear()
        found = _LIST_CACHE[oids] = binds
    return found


def pdu(request: Request, request_id: int) -> bytes:
    """The PDU of ``request`` with ``request_id``."""
    if not _INT32[0] <= request_id <= _INT32[1]:
        raise ValueError("request-id out of range")
    nr, mr = request.non_repeaters, request.max_repetitions
    body = (integer(request_id) + (_ZEROS if nr == 0 and mr == 0 else integer(nr) + integer(mr))
            + varbind_list(request.oids, request.kind == GET))
    return tlv(request.kind, body)


_ZEROS = b"\x02\x01\x00\x02\x01\x00"  # error-status and error-index of every GET and GETNEXT: 0 and 0


def v2c_message(request_id: int, community: bytes, request: Request) -> bytes:
    """The whole SNMPv2c datagram (RFC 3416): version 1, the community, the PDU."""
    return tlv(0x30, b"\x02\x01\x01" + octets(community) + pdu(request, request_id))


def scoped_pdu(engine_id: bytes, context: bytes, pdu_bytes: bytes) -> bytes:
    """An SNMPv3 ScopedPDU (RFC 3412): context engine id, context name, the PDU."""
    head = _SCOPES.get((engine_id, context))
    if head is None:  # the same two for every request to an agent: laid out once (bounded)
        if len(_SCOPES) >= _SCOPES_MAX:
            _SCOPES.clear()
        head = _SCOPES[(engine_id, context)] = octets(engine_id) + octets(context)
    return tlv(0x30, head + pdu_bytes)


_SCOPES: dict[tuple[bytes, bytes], bytes] = {}  # (engine id, context) -> their two OCTET STRINGs
_SCOPES_MAX = 16384  # one per agent and context polled; dropped whole when full


def usm_parameters(
    engine_id: bytes, boots: int, etime: int, user: bytes, auth: bytes, priv: bytes
) -> tuple[bytes, int]:
    """UsmSecurityParameters (RFC 3414 §2.4), and where the ``auth`` octets start in them."""
    head = octets(engine_id) + integer(boots) + integer(etime) + octets(user)
    auth_element = octets(auth)
    params = tlv(0x30, head + auth_element + octets(priv))
    return params, len(params) - len(head + auth_element + octets(priv)) + len(head) + len(auth_element) - len(auth)


def v3_message(
    msg_id: int, max_size: int, flags: int, params: bytes, data: bytes, encrypted: bool
) -> tuple[bytes, int]:
    """The whole SNMPv3 datagram (RFC 3412 §6), and where ``params`` starts in it.

    ``data`` is the encrypted ScopedPDU (``encrypted``: sent as an OCTET STRING) or its plain bytes.
    """
    header = tlv(0x30, integer(msg_id) + integer(max_size) + octets(bytes((flags,))) + b"\x02\x01\x03")
    params_head = bytes((0x04,)) + length(len(params))
    body = b"\x02\x01\x03" + header + params_head + params + (octets(data) if encrypted else data)
    whole = tlv(0x30, body)
    return whole, len(whole) - len(body) + 3 + len(header) + len(params_head)


__all__ = ["GET", "GETBULK", "GETNEXT", "Request", "integer", "length", "octets", "oid", "pdu", "scoped_pdu",
           "tlv", "usm_parameters", "v2c_message", "v3_message", "varbind", "varbind_list"]
