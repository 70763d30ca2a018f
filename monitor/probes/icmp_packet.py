"""Building and parsing ICMP echo packets by hand, for IPv4 and IPv6.

Hand-written with ``struct`` instead of icmplib's classes because this is the hot path: tens of
thousands of packets per second go through :func:`build_echo` and :func:`parse`. Every echo request
carries a random 64-bit token right after the 8-byte header; replies are matched on that token (plus
sequence, identifier, source and the rest of the payload), which stays unique with any number of
pings in flight, even when the 16-bit sequence counter wraps or the kernel rewrites the identifier
(datagram sockets).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
# Errors that quote our request and mean "this address cannot be reached".
UNREACHABLE = {4: (3, 11), 6: (1, 3)}  # destination unreachable, time exceeded
TOKEN_LEN = 8
HEADER = struct.Struct("!BBHHHQ")  # type, code, checksum, identifier, sequence, token
ID_SEQ_TOKEN = struct.Struct("!HHQ")


def checksum_partial(data: bytes) -> int:
    """Ones' complement sum of ``data`` modulo 0xFFFF.

    Uses 2**16 ≡ 1 (mod 0xFFFF): the sum of 16-bit big-endian words equals the whole byte string read
    as one big integer, modulo 0xFFFF. One C-level conversion instead of a Python loop per word.
    """
    if len(data) % 2:
        data += b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


class EchoTemplate:
    """Everything about an echo request that is the same for every ping of one socket."""

    __slots__ = ("family", "pad", "pad_sum", "request_type", "want_checksum")

    def __init__(self, family: int, payload_size: int, want_checksum: bool) -> None:
        if payload_size < TOKEN_LEN:
            raise ValueError(f"payload_size must be at least {TOKEN_LEN} bytes (the matching token)")
        self.family = family
        self.request_type = ECHO_REQUEST[family]
        # A fixed recognisable pattern after the token, checked on every reply.
        self.pad = bytes((0x41 + i % 26) for i in range(payload_size - TOKEN_LEN))
        self.pad_sum = checksum_partial(self.pad)
        # Raw ICMPv4 needs our checksum; the kernel fills it for ICMPv6 and for datagram sockets.
        self.want_checksum = want_checksum

    def packet(self) -> bytearray:
        """A reusable request: the sender patches type, checksum, identifier, sequence and token
        (:data:`HEADER`) in place before each ``sendto``; the pad after them never changes."""
        return bytearray(HEADER.size) + self.pad

    def checksum_base(self, ident: int) -> int:
        """The part of the checksum sum that is the same for every request of one socket.

        The request's checksum is then ``0xFFFF - (base + seq + token) % 0xFFFF`` (0 when the kernel
        fills it in): the sum of 16-bit words mod 0xFFFF without touching bytes, because a 64-bit
        integer is congruent to the sum of its words (2**16 ≡ 1) and the 16-byte header keeps the pad
        aligned.
        """
        return (self.request_type << 8) + ident + self.pad_sum


class Parsed(NamedTuple):
    """One received ICMP message we may care about.

    ``kind`` is "reply" or "unreachable". For unreachables, ``address`` is the destination quoted
    from our original request (not the router that sent the error) and ``token`` is None when the
    quote was too short to contain it.
    """

    kind: str
    address: bytes  # packed destination/source address, compared with the pending ping's
    ident: int
    seq: int
    token: int | None
    payload_ok: bool


def parse(family: int, data: bytes, offset: int, pad: bytes) -> Parsed | None:
    """Parse the ICMP message starting at ``offset``; None for anything that is not ours to judge.

    For replies ``address`` is left empty: the caller takes the source from ``recvfrom``.
    """
    if len(data) < offset + 8:
        return None
    icmp_type = data[offset]
    if icmp_type == ECHO_REPLY[family]:
        if len(data) < offset + 16:
            return Parsed("reply", b"", -1, -1, None, False)
        ident, seq, token = ID_SEQ_TOKEN.unpack_from(data, offset + 4)
        return Parsed("reply", b"", ident, seq, token, data[offset + 16:] == pad)
    if icmp_type in UNREACHABLE[family]:
        return _parse_error(family, data, offset + 8)
    return None


def _parse_error(family: int, data: bytes, quote: int) -> Parsed | None:
    """An ICMP error quotes the IP header of our request and at least its first 8 bytes."""
    if family == 4:
        if len(data) < quote + 20:
            return None
        ihl = (data[quote] & 0x0F) * 4
        proto, dst = data[quote + 9], data[quote + 16:quote + 20]
        inner = quote + ihl
        if proto != 1:
            return None
    else:
        if len(data) < quote + 40:
            return None
        proto, dst = data[quote + 6], data[quote + 24:quote + 40]
        inner = quote + 40
        if proto != 58:
            return None
    if len(data) < inner + 8 or data[inner] != ECHO_REQUEST[family]:
        return None
    ident, seq = struct.unpack_from("!HH", data, inner + 4)
    token = struct.unpack_from("!Q", data, inner + 8)[0] if len(data) >= inner + 16 else None
    return Parsed("unreachable", dst, ident, seq, token, True)
