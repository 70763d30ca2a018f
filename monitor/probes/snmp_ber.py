"""A narrow, fast BER decoder for the SNMP messages agents send us; pyasn1 decides everything else.

Why: a GETBULK walk spent ~80 % of its time in pyasn1's generic BER decoder (about 60 µs per
varbind), which kept walks at ~0.1x the speed of net-snmp's ``snmpbulkwalk`` (issue 12). An agent's
answers use a tiny part of BER: definite lengths, low tag numbers, primitive strings, and a fixed
message layout. This module decodes exactly that part in a few straight loops and **declines**
(:class:`Decline`) anything else, e.g. an indefinite length, a constructed string, a value out of
its type's range, a PDU other than Response or Report; the caller then hands the datagram to
pyasn1, which accepts or rejects it as it always did. So the fast path never has to be lenient or
strict on its own: whatever it accepts decodes to exactly what pyasn1 gives (the values are the
same pysnmp classes with the same attributes), which ``tests/test_snmp_ber.py`` checks with pyasn1
as the oracle over generated and mutated messages.

Everything here is pure and bounded: each loop advances through the datagram, lengths are
checked against the enclosing element before use, and no recursion depends on the input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.proto.api import v2c

Oid = tuple[int, ...]
VarBind = tuple[Oid, Any]  # (oid, pysnmp value object), as pysnmp's get_varbinds gives them

# PDU kinds (the BER tag byte of each PDU type, RFC 3416)
RESPONSE = 0xA2
REPORT = 0xA8
OTHER = 0  # any other PDU (a request, a trap...): never an answer to us

_INT32 = (-(2**31), 2**31 - 1)
_UINT31 = (0, 2**31 - 1)
_UINT32 = (0, 2**32 - 1)
_MAX_CONTINUATION = 20  # octets with the high bit in one OID arc: pyasn1 rejects more


class Decline(Exception):  # not an error: "not mine, ask pyasn1"
    """The datagram is outside the narrow subset this module decodes; pyasn1 must decide."""


@dataclass(frozen=True, slots=True)
class Pdu:
    """A decoded PDU: what matching and the walk need, with varbinds as pysnmp values."""

    kind: int  # RESPONSE, REPORT or OTHER
    request_id: int
    error_status: int
    error_index: int
    varbinds: tuple[VarBind, ...]


# ----- values -------------------------------------------------------------------------------------
def _prototypes() -> dict[int, Any]:
    """One value per varbind tag, as pyasn1 decodes it inside a Response (class and attributes).

    Taken from pyasn1 itself at import, so a pysnmp/pyasn1 upgrade that changes what a decoded value
    looks like changes our copies too.
    """
    samples = [
        rfc1902.Integer32(1), rfc1902.OctetString(b"x"), rfc1902.ObjectIdentifier((1, 3)),
        rfc1902.IpAddress(b"\x01\x02\x03\x04"), rfc1902.Counter32(1), rfc1902.Gauge32(1),
        rfc1902.TimeTicks(1), rfc1902.Opaque(b"x"), rfc1902.Counter64(1), v2c.null,
        rfc1905.noSuchObject, rfc1905.noSuchInstance, rfc1905.endOfMibView,
    ]
    pdu = v2c.ResponsePDU()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_varbinds(pdu, [((1, 3, i), value) for i, value in enumerate(samples)])
    msg = v2c.Message()
    v2c.apiMessage.set_defaults(msg)
    v2c.apiMessage.set_pdu(msg, pdu)
    whole = bytes(encoder.encode(msg))
    decoded, _ = decoder.decode(whole, asn1Spec=v2c.Message())
    values = [value for _, value in v2c.apiPDU.get_varbinds(v2c.apiMessage.get_pdu(decoded))]
    tags = [bytes(encoder.encode(value))[0] for value in values]
    return dict(zip(tags, values, strict=True))


def _maker(proto: Any) -> Callable[[Any], Any]:
    """Build values of ``proto``'s class without pyasn1's constructor (its checks are ours, below)."""
    cls = type(proto)
    attrs = {k: v for k, v in vars(proto).items() if k != "_value"}
    new = object.__new__

    def make(value: Any) -> Any:
        obj = new(cls)
        d = obj.__dict__
        d.update(attrs)
        d["_value"] = value
        return obj

    return make


def _int_value(make: Callable[[Any], Any], low: int, high: int) -> Callable[[bytes], Any]:
    def value(raw: bytes) -> Any:
        if not raw:
            raise Decline  # pyasn1 reads an empty integer as 0; rare enough to leave to it
        n = int.from_bytes(raw, "big", signed=True)
        if n < low or n > high:
            raise Decline
        return make(n)

    return value


def _str_value(make: Callable[[Any], Any], low: int, high: int) -> Callable[[bytes], Any]:
    def value(raw: bytes) -> Any:
        if len(raw) < low or len(raw) > high:
            raise Decline
        return make(raw)

    return value


def _null_value(make: Callable[[Any], Any]) -> Callable[[bytes], Any]:
    def value(raw: bytes) -> Any:
        if raw:
            raise Decline
        return make(b"")

    return value


def _oid_value(make: Callable[[Any], Any]) -> Callable[[bytes], Any]:
    def value(raw: bytes) -> Any:
        return make(oid(raw))

    return value


def _value_decoders() -> dict[int, Callable[[bytes], Any]]:
    protos = _prototypes()
    m = {tag: _maker(proto) for tag, proto in protos.items()}
    return {
        0x02: _int_value(m[0x02], *_INT32),  # Integer32
        0x04: _str_value(m[0x04], 0, 65535),  # OCTET STRING
        0x06: _oid_value(m[0x06]),  # OBJECT IDENTIFIER
        0x40: _str_value(m[0x40], 4, 4),  # IpAddress
        0x41: _int_value(m[0x41], *_UINT32),  # Counter32
        0x42: _int_value(m[0x42], *_UINT32),  # Gauge32 / Unsigned32
        0x43: _int_value(m[0x43], *_UINT32),  # TimeTicks
        0x44: _str_value(m[0x44], 0, 65535),  # Opaque
        0x46: _int_value(m[0x46], 0, 2**64 - 1),  # Counter64
        0x05: _null_value(m[0x05]),  # NULL (unSpecified)
        0x80: _null_value(m[0x80]),  # noSuchObject
        0x81: _null_value(m[0x81]),  # noSuchInstance
        0x82: _null_value(m[0x82]),  # endOfMibView
    }


VALUES = _value_decoders()


# ----- BER elements -------------------------------------------------------------------------------
def element(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    """(start, stop) of the contents of the element with ``tag`` at ``pos``, inside ``[pos, end)``."""
    if pos + 2 > end or data[pos] != tag:
        raise Decline
    n = data[pos + 1]
    start = pos + 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 3:  # indefinite length, or more than 16 MB: pyasn1's business
            raise Decline
        if start + k > end:
            raise Decline
        n = int.from_bytes(data[start:start + k], "big")
        start += k
    stop = start + n
    if stop > end:
        raise Decline
    return start, stop


def integer(data: bytes, pos: int, end: int, low: int, high: int) -> tuple[int, int]:
    """(value, next position) of the INTEGER at ``pos``, which must lie in ``[low, high]``."""
    start, stop = element(data, pos, end, 0x02)
    if start == stop:
        raise Decline
    n = int.from_bytes(data[start:stop], "big", signed=True)
    if n < low or n > high:
        raise Decline
    return n, stop


def octets(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    """(value, next position) of the primitive OCTET STRING at ``pos``."""
    start, stop = element(data, pos, end, 0x04)
    return data[start:stop], stop


def oid(raw: bytes) -> Oid:
    """An OBJECT IDENTIFIER's contents as pyasn1 decodes them (first two arcs folded in one octet)."""
    if not raw:
        raise Decline
    if max(raw) < 0x80:  # every arc in one octet: the usual case
        first = raw[0]
        head = (0, first) if first < 40 else (1, first - 40) if first < 80 else (2, first - 80)
        return head + tuple(raw[1:])
    arcs: list[int] = []
    arc = more = 0
    for octet in raw:
        if octet == 0x80 and more == 0:
            raise Decline  # a leading 0x80 (pyasn1 rejects it)
        arc = (arc << 7) | (octet & 0x7F)
        if octet & 0x80:
            more += 1
            if more > _MAX_CONTINUATION:
                raise Decline
        else:
            arcs.append(arc)
            arc = more = 0
    if more:
        raise Decline  # the last arc is cut
    first = arcs[0]
    head = (0, first) if first < 40 else (1, first - 40) if first < 80 else (2, first - 80)
    return head + tuple(arcs[1:])


# Decoded varbinds by their encoding (the VarBind's contents, bytes -> (oid, value)). A poller asks
# the same agents for the same OIDs every interval and most values do not change between polls
# (names, types, speeds, states), so the same bytes come back again and again; decoding them anew
# (element, OID arcs, a value object) was about a third of a v3 GET's CPU. The values are pyasn1
# values, which nothing mutates, so sharing one between replies is safe. A varbind is kept only
# the second time its bytes are seen (``_seen`` holds bare bytes, which the cyclic GC does not
# track): a counter that changes every poll never fills the cache with objects, whose retention
# made a walk of changing counters ~1.8x slower in a first version. Bounded: only short varbinds,
# and each map is dropped whole when it is full.
_CACHE_MAX_ENTRIES = 16384
_CACHE_MAX_BYTES = 96  # longest varbind encoding kept: a 16-arc OID and a short string or a counter
_cache: dict[bytes, VarBind] = {}
_seen: set[bytes] = set()


def varbinds(data: bytes, pos: int, end: int) -> tuple[VarBind, ...]:
    """The VarBindList at ``pos`` (it must end exactly at ``end``). The hot loop of a walk."""
    start, stop = element(data, pos, end, 0x30)
    if stop != end:
        raise Decline
    out: list[VarBind] = []
    append = out.append
    values = VALUES
    cache = _cache
    seen = _seen
    pos = start
    while pos < stop:
        # element(data, pos, stop, 0x30) written out for the usual short form: a call per varbind
        # was a third of decoding a reply whose varbinds are all in the cache
        if pos + 2 > stop or data[pos] != 0x30:
            raise Decline
        n = data[pos + 1]
        if n < 0x80:
            vb_start = pos + 2
            vb_stop = vb_start + n
            if vb_stop > stop:
                raise Decline
        else:
            vb_start, vb_stop = element(data, pos, stop, 0x30)
        short = vb_stop - vb_start <= _CACHE_MAX_BYTES
        if short:
            key = data[vb_start:vb_stop]
            hit = cache.get(key)
            if hit is not None:
                append(hit)
                pos = vb_stop
                continue
        name_start, name_stop = element(data, vb_start, vb_stop, 0x06)
        if name_stop + 2 > vb_stop:
            raise Decline
        decode = values.get(data[name_stop])
        if decode is None:
            raise Decline
        value_start, value_stop = element(data, name_stop, vb_stop, data[name_stop])
        if value_stop != vb_stop:
            raise Decline
        bind = (oid(data[name_start:name_stop]), decode(data[value_start:value_stop]))
        append(bind)
        if short:
            if key not in seen:
                if len(seen) >= _CACHE_MAX_ENTRIES:
                    seen.clear()
                seen.add(key)
            else:
                if len(cache) >= _CACHE_MAX_ENTRIES:
                    cache.clear()
                cache[key] = bind
        pos = vb_stop
    return tuple(out)


def pdu(data: bytes, pos: int, end: int) -> tuple[Pdu, int]:
    """(PDU, next position) for a Response or Report PDU at ``pos``; any other PDU declines."""
    if pos >= end:
        raise Decline
    kind = data[pos]
    if kind not in (RESPONSE, REPORT):
        raise Decline
    start, stop = element(data, pos, end, kind)
    request_id, p = integer(data, start, stop, *_INT32)
    status, p = integer(data, p, stop, -(2**63), 2**63 - 1)  # named values, no range (pysnmp's errorStatus)
    index, p = integer(data, p, stop, *_UINT31)
    return Pdu(kind, request_id, status, index, varbinds(data, p, stop)), stop


# ----- pyasn1's answer in the same shape ----------------------------------------------------------
def from_pysnmp(pdu: Any) -> Pdu:
    """The :class:`Pdu` of a PDU pyasn1 decoded (the fallback path); raises what pyasn1 raises."""
    if isinstance(pdu, rfc1905.ResponsePDU):
        kind = RESPONSE
    elif isinstance(pdu, rfc1905.ReportPDU):
        kind = REPORT
    else:
        return Pdu(OTHER, int(v2c.apiPDU.get_request_id(pdu)), 0, 0, ())
    binds = tuple((tuple(int(n) for n in o), v) for o, v in v2c.apiPDU.get_varbinds(pdu))
    return Pdu(kind, int(pdu[0]), int(pdu[1]), int(pdu[2]), binds)


__all__ = ["OTHER", "REPORT", "RESPONSE", "VALUES", "Decline", "Pdu", "VarBind", "element", "from_pysnmp",
           "integer", "octets", "oid", "pdu", "varbinds"]
