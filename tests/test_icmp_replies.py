"""Hypothesis over the ICMP reply path: whatever bytes arrive, nothing raises and no request is
answered by a packet that is not its reply.

The bytes go through the real receive path, :meth:`IcmpSocket._on_readable`, reading from a real
socket: a UDP socket on loopback stands in for the ICMP socket (the reader only calls ``recv_into``
and ``recvfrom_into``), so any byte string can be delivered from any loopback source address
without root. In "v4raw" mode the datagram is read as a raw IPv4 socket reads it (IP header
first, the source taken from that header); in "v4dgram" and "v6raw" modes the source is the sender's
real address. Three requests wait: two to 127.0.0.2 (same address, different tokens) and one to
127.0.0.3 (for IPv6: ::1 twice, and an address nothing here can send from).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.probes.icmp_packet import ECHO_REPLY, ECHO_REQUEST, UNREACHABLE, parse
from monitor.probes.icmp_socket import Echo, IcmpSocket
from tests.test_icmp import ipv6_loopback

PAYLOAD = 56
MODES = {"v4raw": (4, True), "v4dgram": (4, False), "v6raw": (6, True)}
SOURCES = {4: ["127.0.0.2", "127.0.0.3", "127.0.0.4"], 6: ["::1"]}
TARGETS = {4: ["127.0.0.2", "127.0.0.2", "127.0.0.3"], 6: ["::1", "::1", "2001:db8::1"]}
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass
class Waiting:
    echo: Echo
    seq: int
    token: int


class Rig:
    """A receiving socket wrapped in an IcmpSocket, senders bound to each source, three waiting requests."""

    def __init__(self, mode: str) -> None:
        self.family, raw = MODES[mode]
        af = socket.AF_INET if self.family == 4 else socket.AF_INET6
        lo = "127.0.0.1" if self.family == 4 else "::1"
        rx = socket.socket(af, socket.SOCK_DGRAM)
        rx.bind((lo, 0))
        rx.setblocking(False)
        self.to = rx.getsockname()[:2]
        self.sock = IcmpSocket(rx, self.family, raw, PAYLOAD)
        self.v4raw = self.family == 4 and raw
        self.senders: dict[str, socket.socket] = {}
        for src in SOURCES[self.family]:
            tx = socket.socket(af, socket.SOCK_DGRAM)
            tx.bind((src, 0))
            self.senders[src] = tx
        self.waiting: list[Waiting] = []

    def arm(self, tokens: list[int], seqs: list[int]) -> None:
        """Fresh waiting requests (as send_many leaves them: in the pending map, one outstanding each)."""
        self.sock.pending.clear()
        self.waiting = []
        af = socket.AF_INET if self.family == 4 else socket.AF_INET6
        for address, token, seq in zip(TARGETS[self.family], tokens, seqs, strict=True):
            echo = Echo(address, socket.inet_pton(af, address))
            echo.rtts.append(None)
            echo.tokens.append(token)
            echo.outstanding = 1
            self.sock.pending[token] = (echo, 0, seq, time.monotonic())
            self.waiting.append(Waiting(echo, seq, token))

    def deliver(self, source: str, data: bytes) -> None:
        self.senders[source].sendto(data, self.to)  # loopback: queued before sendto returns
        self.sock._on_readable()

    def close(self) -> None:
        self.sock.sock.close()
        for tx in self.senders.values():
            tx.close()


@pytest.fixture(params=list(MODES))
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    if request.param == "v6raw" and not ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    r = Rig(request.param)
    try:
        yield r
    finally:
        r.close()


def ip_header(src: str, dst: str = "127.0.0.1", proto: int = 1, ihl: int = 5) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 0, 0, 0, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    return head + b"\0" * (ihl * 4 - 20)


def reply_for(rig: Rig, w: Waiting, source: str) -> bytes:
    """The exact bytes the socket would read for a genuine reply to ``w`` sent by ``source``."""
    icmp = struct.pack("!BBHHHQ", ECHO_REPLY[rig.family], 0, 0, rig.sock.ident, w.seq, w.token) + rig.sock.template.pad
    return ip_header(source) + icmp if rig.v4raw else icmp


def unreachable_for(rig: Rig, w: Waiting, router: str) -> bytes:
    """An ICMP error from ``router`` quoting our request to ``w``'s address (IP header + 16 bytes)."""
    request = struct.pack("!BBHHHQ", ECHO_REQUEST[rig.family], 0, 0, rig.sock.ident, w.seq, w.token)
    if rig.family == 4:
        quote = ip_header("127.0.0.1", w.echo.address) + request
    else:
        quote = struct.pack("!IHBB16s16s", 6 << 28, len(request), 58, 64,
                            socket.inet_pton(socket.AF_INET6, "::1"), w.echo.packed) + request
    icmp = struct.pack("!BBHI", UNREACHABLE[rig.family][0], 1, 0, 0) + quote
    return ip_header(router) + icmp if rig.v4raw else icmp


def source_of(rig: Rig, data: bytes, sender: str) -> bytes | None:
    """Who the reply claims to come from: the IP header's source (raw IPv4) or the real sender."""
    if rig.v4raw:
        return data[12:16] if len(data) >= 16 else None
    return socket.inet_pton(socket.AF_INET if rig.family == 4 else socket.AF_INET6, sender)


def is_reply_to(rig: Rig, w: Waiting, data: bytes, sender: str) -> bool:
    """The oracle, written apart from the code: every field the probe promises to check."""
    off = (data[0] & 0x0F) * 4 if rig.v4raw and data else 0
    icmp = data[off:]
    return (
        len(icmp) == 16 + len(rig.sock.template.pad)
        and icmp[0] == ECHO_REPLY[rig.family]
        and (not rig.sock.raw or icmp[4:6] == rig.sock.ident.to_bytes(2, "big"))
        and icmp[6:8] == w.seq.to_bytes(2, "big")
        and icmp[8:16] == w.token.to_bytes(8, "big")
        and icmp[16:] == rig.sock.template.pad
        and source_of(rig, data, sender) == w.echo.packed
    )


def quotes(rig: Rig, w: Waiting, data: bytes) -> bool:
    """Whether an error message carries ``w``'s token, sequence and destination at all (necessary to fail it)."""
    return (
        w.token.to_bytes(8, "big") in data
        and w.seq.to_bytes(2, "big") in data
        and w.echo.packed in data
    )


def check(rig: Rig, data: bytes, sender: str) -> list[int]:
    """Deliver ``data`` from ``sender``; assert nothing was wrongly matched; return the answered requests."""
    rig.deliver(sender, data)
    answered = []
    for i, w in enumerate(rig.waiting):
        if w.echo.outstanding:
            assert w.token in rig.sock.pending
            continue
        assert w.token not in rig.sock.pending
        if w.echo.rtts[0] is not None:
            assert is_reply_to(rig, w, data, sender), f"request {i} answered by a packet that is not its reply"
            answered.append(i)
        else:
            assert w.echo.errors == ["unreachable"]
            assert quotes(rig, w, data), f"request {i} failed by an error that does not quote it"
    return answered


tokens = st.lists(st.integers(0, 2**64 - 1), min_size=3, max_size=3, unique=True)
seqs = st.lists(st.integers(0, 0xFFFF), min_size=3, max_size=3)


@SETTINGS
@given(data=st.binary(max_size=300), source=st.integers(0, 2), toks=tokens, sq=seqs)
def test_arbitrary_bytes_never_raise_and_never_answer_a_request(
    rig: Rig, data: bytes, source: int, toks: list[int], sq: list[int]
) -> None:
    rig.arm(toks, sq)
    sources = SOURCES[rig.family]
    check(rig, data, sources[source % len(sources)])


Mutation = tuple[str, int, int]  # (what, position from the ICMP header, value)
# Positions of every field the probe checks, counted from the ICMP header (negative: the IPv4 header
# in front of it, e.g. -8 is the source address): type, code, checksum, identifier, sequence,
# token, pad; in an error, the quoted destination, type, identifier, sequence and token.
FIELDS = [-20, -11, -8, -5, 0, 1, 2, 4, 5, 6, 7, 8, 11, 15, 16, 30, 71, 8 + 9, 8 + 16, 8 + 19, 8 + 20,
          8 + 24, 8 + 26, 8 + 27, 8 + 28, 8 + 35]
mutations = st.lists(
    st.tuples(
        st.sampled_from(["set", "xor", "cut", "add"]),
        st.one_of(st.sampled_from(FIELDS), st.integers(-20, 400)),
        st.integers(1, 255),
    ),
    max_size=4,
)


def mutate(data: bytes, plan: list[Mutation], base: int) -> bytes:
    """Apply ``plan``; ``base`` is where the ICMP header starts (20 behind a raw IPv4 header, else 0)."""
    b = bytearray(data)
    for what, pos, value in plan:
        if what == "cut":
            del b[(base + pos) % (len(b) + 1):]
        elif what == "add":
            b += bytes([value]) * (pos % 9 + 1)
        elif b:
            i = (base + pos) % len(b)
            b[i] = value if what == "set" else b[i] ^ value
    return bytes(b)


def pick_sender(rig: Rig, w: Waiting, other: int | None) -> str:
    """The request's own address when it can send from it and ``other`` is None, else another source."""
    sources = SOURCES[rig.family]
    if other is None and w.echo.address in sources:
        return w.echo.address
    return sources[(other or 0) % len(sources)]


@SETTINGS
@given(
    which=st.integers(0, 2), other=st.one_of(st.none(), st.integers(0, 2)),
    kind=st.sampled_from(["reply", "unreachable"]), plan=mutations, toks=tokens, sq=seqs,
)
def test_mutated_replies_and_errors_answer_only_their_own_request(
    rig: Rig, which: int, other: int | None, kind: str, plan: list[Mutation], toks: list[int], sq: list[int]
) -> None:
    rig.arm(toks, sq)
    w = rig.waiting[which]
    sender = pick_sender(rig, w, other)
    packet = reply_for(rig, w, sender) if kind == "reply" else unreachable_for(rig, w, sender)
    data = mutate(packet, plan, 20 if rig.v4raw else 0)
    answered = check(rig, data, sender)
    if kind == "reply" and data == packet and source_of(rig, data, sender) == w.echo.packed:
        assert answered == [which]  # positive control: the genuine reply is taken
    if kind == "unreachable" and data == packet:
        assert rig.waiting[which].echo.errors == ["unreachable"]
        assert [i for i, x in enumerate(rig.waiting) if not x.echo.outstanding] == [which]


# (position from the ICMP header, length) of each field a reply must get right
REPLY_FIELDS = {"type": (0, 1), "identifier": (4, 2), "sequence": (6, 2), "token": (8, 8), "pad": (16, 8),
                "source": (-8, 4)}


@SETTINGS
@given(
    which=st.integers(0, 2), field=st.sampled_from([*REPLY_FIELDS, "longer", "shorter", "sender"]),
    noise=st.binary(min_size=8, max_size=8), toks=tokens, sq=seqs,
)
def test_a_reply_with_one_field_wrong_answers_nothing(
    rig: Rig, which: int, field: str, noise: bytes, toks: list[int], sq: list[int]
) -> None:
    rig.arm(toks, sq)
    w = rig.waiting[which]
    sender = pick_sender(rig, w, None)
    if sender != w.echo.address:
        return  # a request to an address nothing here sends from: no genuine reply to spoil
    packet = bytearray(reply_for(rig, w, sender))
    base = 20 if rig.v4raw else 0
    if field in REPLY_FIELDS:
        pos, n = REPLY_FIELDS[field]
        if (field == "source" and not rig.v4raw) or (field == "identifier" and not rig.sock.raw):
            return  # the source is the real sender's / the kernel owns the identifier (datagram)
        old = packet[base + pos:base + pos + n]
        new = bytes(a ^ (b or 1) for a, b in zip(old, noise, strict=False))  # every byte changed
        packet[base + pos:base + pos + n] = new
    elif field == "longer":
        packet += noise[:1]
    elif field == "shorter":
        del packet[-1:]
    else:  # from another address (raw IPv4 reads that in the IP header: the "source" case)
        others = [s for s in SOURCES[rig.family] if s != w.echo.address]
        if rig.v4raw or not others:
            return
        sender = others[0]
    assert check(rig, bytes(packet), sender) == []


@settings(max_examples=500, deadline=None)
@given(family=st.sampled_from([4, 6]), data=st.binary(max_size=200), offset=st.integers(0, 80))
def test_parse_takes_any_bytes(family: int, data: bytes, offset: int) -> None:
    pad = bytes(range(40))
    p = parse(family, data, offset, pad)
    assert p is None or p.kind in ("reply", "unreachable")
    if p is not None and p.kind == "reply" and p.token is not None:
        assert p.token == int.from_bytes(data[offset + 8:offset + 16], "big")
        assert p.payload_ok == (data[offset + 16:] == pad)
