"""One shared ICMP socket per address family, with a single receive path that demultiplexes replies.

Like fping: every echo request of every poll goes out through the same non-blocking socket, and one
reader callback (``loop.add_reader``) drains all replies and routes each to the pending ping by its
64-bit token. A socket per ping would not scale: every raw socket receives a copy of every ICMP
packet, so with thousands in flight the kernel drops replies and live hosts look down.

Replies with an unknown token, wrong sequence or identifier, wrong source or altered payload are
ignored and counted in ``monitor_icmp_stray_replies``.
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import struct
import time

from monitor import selfmetrics
from monitor.probes.icmp_packet import EchoTemplate, Parsed, parse

SOL_RAW = 255
ICMP_FILTER = 1  # IPv4 raw: bitmask of ICMP types to drop
ICMP6_FILTER = 1  # IPv6 raw: 256-bit mask of ICMPv6 types to block
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
IP_RECVERR = 11
IPV6_RECVERR = 25
RCVBUF = 8 * 1024 * 1024
RECV_BURST = 4096  # replies handled per reader callback before yielding to the loop
SEND_RETRY_DELAYS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)

# errno of a failed send or a queued socket error -> short error name for the result
SEND_ERRORS = {
    errno.ENETUNREACH: "unreachable",
    errno.EHOSTUNREACH: "unreachable",
    errno.EHOSTDOWN: "unreachable",
    errno.EADDRNOTAVAIL: "unreachable",
    errno.EPERM: "blocked",
    errno.EACCES: "blocked",
}


class Echo:
    """The state of one poll: its echo requests, their replies, and the future its coroutine awaits.

    The coroutine is woken once per poll (all answered or deadline), not once per echo reply.
    """

    __slots__ = ("address", "errors", "fut", "outstanding", "packed", "rtts", "sent", "seqs", "tokens")

    def __init__(self, address: str, packed: bytes) -> None:
        self.address = address
        self.packed = packed
        # Created once every echo is sent, so an early answer cannot end the poll before the rest.
        self.fut: asyncio.Future[None] | None = None
        self.tokens: list[int] = []
        self.seqs: list[int] = []
        self.sent: list[float] = []
        self.rtts: list[float | None] = []
        self.errors: list[str | None] = []
        self.outstanding = 0

    def done(self, index: int, rtt: float | None, error: str | None) -> None:
        self.rtts[index] = rtt
        self.errors[index] = error
        self.outstanding -= 1


class IcmpSocket:
    """One non-blocking ICMP socket (raw or datagram) for one family, and its pending pings."""

    def __init__(self, sock: socket.socket, family: int, raw: bool, payload_size: int) -> None:
        self.sock = sock
        self.family = family
        self.raw = raw
        self.template = EchoTemplate(family, payload_size, want_checksum=raw and family == 4)
        self.ident = random.getrandbits(16)
        self._seq = random.getrandbits(16)
        # token -> (poll, index of the echo within the poll)
        self.pending: dict[int, tuple[Echo, int]] = {}
        # IPv4 raw sockets get the IP header in front of the ICMP message; others do not.
        self._v4raw = family == 4 and raw
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @classmethod
    def open(cls, family: int, raw: bool, payload_size: int) -> IcmpSocket:
        """Open and tune the socket. Raises OSError; the caller translates it."""
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        proto = socket.IPPROTO_ICMP if family == 4 else socket.IPPROTO_ICMPV6
        sock = socket.socket(af, socket.SOCK_RAW if raw else socket.SOCK_DGRAM, proto)
        try:
            sock.setblocking(False)
            _set_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, RCVBUF)
            _set_buffer(sock, socket.SO_SNDBUF, SO_SNDBUFFORCE, RCVBUF // 2)
            if raw and family == 4:
                # Drop everything but echo reply (0), unreachable (3), time exceeded (11): on loopback
                # a raw socket would otherwise also see every echo *request* we send.
                keep = (1 << 0) | (1 << 3) | (1 << 11)
                sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", ~keep & 0xFFFFFFFF))
            elif raw:
                words = [0xFFFFFFFF] * 8
                for t in (129, 1, 3):  # echo reply, destination unreachable, time exceeded
                    words[t >> 5] &= ~(1 << (t & 31)) & 0xFFFFFFFF
                sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *words))
            else:
                # Datagram sockets report ICMP errors only through the error queue.
                if family == 4:
                    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        except OSError:
            sock.close()
            raise
        return cls(sock, family, raw, payload_size)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._on_readable)

    def close(self) -> None:
        """Stop receiving, close the socket and wake every pending poll (its echoes count as lost)."""
        if self.closed:
            return
        self.closed = True
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for echo, index in list(self.pending.values()):
            if echo.rtts[index] is None and echo.errors[index] is None:
                echo.done(index, None, "closed")
            if echo.fut is not None and not echo.fut.done():
                echo.fut.set_result(None)
        self.pending.clear()

    # -- send ---------------------------------------------------------------------------------

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def new_token(self) -> int:
        token = random.getrandbits(64)
        while token in self.pending:
            token = random.getrandbits(64)
        return token

    async def send(self, echo: Echo) -> None:
        """Send one echo request of ``echo``; a failure is recorded in the poll, never raised."""
        seq = self.next_seq()
        token = self.new_token()
        packet = self.template.build(self.ident, seq, token)
        index = len(echo.tokens)
        echo.tokens.append(token)
        echo.seqs.append(seq)
        echo.rtts.append(None)
        echo.errors.append(None)
        echo.sent.append(0.0)
        error = self._try_send(packet, echo, index, token)
        if error == "retry":
            for delay in SEND_RETRY_DELAYS:  # send buffer full (EAGAIN/ENOBUFS): back off briefly
                await asyncio.sleep(delay)
                if self.closed:
                    error = "closed"
                    break
                error = self._try_send(packet, echo, index, token)
                if error != "retry":
                    break
            else:
                error = "send buffer full"
        if error is not None:
            echo.errors[index] = error

    def _try_send(self, packet: bytes, echo: Echo, index: int, token: int) -> str | None:
        echo.sent[index] = time.monotonic()
        # Register before sending: on loopback the reply can be queued before sendto returns.
        self.pending[token] = (echo, index)
        echo.outstanding += 1
        try:
            self.sock.sendto(packet, (echo.address, 0))
        except OSError as exc:
            del self.pending[token]
            echo.outstanding -= 1
            if exc.errno in (errno.EAGAIN, errno.ENOBUFS):
                return "retry"
            return SEND_ERRORS.get(exc.errno or 0, f"send failed: {exc.strerror}")
        return None

    # -- receive ------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        recv = self.sock.recvfrom
        for _ in range(RECV_BURST):
            try:
                data, src = recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # A queued error (datagram sockets with IP_RECVERR): details are in the error queue.
                self._drain_error_queue()
                continue
            now = time.monotonic()
            offset = ((data[0] & 0x0F) * 4) if self._v4raw else 0
            parsed = parse(self.family, data, offset, self.template.pad)
            if parsed is None:
                continue
            if parsed.kind == "reply":
                self._on_reply(parsed, src[0], now)
            else:
                self._on_error(parsed, "unreachable")
        # Budget used up: let other callbacks run; epoll calls us again on the next iteration.

    def _on_reply(self, p: Parsed, source: str, now: float) -> None:
        entry = self.pending.get(p.token) if p.token is not None else None
        if entry is None:
            selfmetrics.ICMP_STRAY_REPLIES.inc()
            return
        echo, index = entry
        if (
            not p.payload_ok
            or p.seq != echo.seqs[index]
            or (self.raw and p.ident != self.ident)  # datagram sockets: the kernel owns the id
            or source != echo.address
        ):
            selfmetrics.ICMP_STRAY_REPLIES.inc()
            return
        del self.pending[p.token]  # type: ignore[arg-type]
        echo.done(index, now - echo.sent[index], None)
        if echo.outstanding == 0 and echo.fut is not None and not echo.fut.done():
            echo.fut.set_result(None)

    def _on_error(self, p: Parsed, error: str) -> None:
        """An ICMP error quoting one of our requests: fail that echo at once."""
        entry = self.pending.get(p.token) if p.token is not None else None
        if entry is None:
            return  # quote too short to carry our token, or not ours: the echo will time out
        echo, index = entry
        if p.seq != echo.seqs[index] or p.address != echo.packed or (self.raw and p.ident != self.ident):
            return
        del self.pending[p.token]  # type: ignore[arg-type]
        echo.done(index, None, error)
        if echo.outstanding == 0 and echo.fut is not None and not echo.fut.done():
            echo.fut.set_result(None)

    def _drain_error_queue(self) -> None:
        """Read ICMP errors the kernel queued for a datagram socket (IP_RECVERR)."""
        for _ in range(RECV_BURST):
            try:
                data, _anc, _flags, dst = self.sock.recvmsg(65536, 512, socket.MSG_ERRQUEUE)
            except OSError:
                return
            if len(data) < 16:
                continue
            seq, token = struct.unpack_from("!HQ", data, 6)
            entry = self.pending.get(token)
            if entry is None:
                continue
            echo, index = entry
            if echo.seqs[index] == seq and dst[0] == echo.address:
                self._on_error(Parsed("unreachable", echo.packed, self.ident, seq, token, True), "unreachable")

    def forget(self, echo: Echo) -> None:
        """Drop the echoes of a finished (answered, timed out or cancelled) poll from the pending map."""
        pending = self.pending
        for token in echo.tokens:
            entry = pending.get(token)
            if entry is not None and entry[0] is echo:
                del pending[token]


def _set_buffer(sock: socket.socket, opt: int, force_opt: int, size: int) -> None:
    """Ask for a big kernel buffer: as root beyond net.core.[rw]mem_max, else up to it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_opt, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, opt, size)
