"""One shared ICMP socket per address family, with a single receive path that demultiplexes replies.

Like fping: every echo request of every poll goes out through the same non-blocking socket, and one
reader callback (``loop.add_reader``) drains all replies and routes each to the pending ping by its
64-bit token. A socket per ping would not scale: every raw socket receives a copy of every ICMP
packet, so with thousands in flight the kernel drops replies and live hosts look down.

Tokens are unpredictable: 64 bits from ``os.urandom`` per request, never derived from another
request's. Anyone who sees our requests to some targets (the same broadcast domain, a mirrored port)
learns nothing about the token sent to a silent target, so cannot make it look UP by answering for
it; the sequence and identifier, which an on-path observer can guess, are checked but are not what
keeps forgeries out. (Tokens used to be one counter from a random start: requests to neighbours gave
away a DOWN target's token within ±8, and forged replies turned it UP.)

Replies with an unknown token, wrong sequence or identifier, wrong source or altered payload are
ignored and counted in ``monitor_icmp_stray_replies``; those among them that carry the token of a
request still waiting (right token, but from the wrong address, or with a wrong sequence, identifier
or payload: forged or misrouted) are also counted in ``monitor_icmp_rejected_replies``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import heapq
import itertools
import math
import os
import random
import secrets
import socket
import struct
import time
from collections.abc import Iterator

from monitor import selfmetrics
from monitor.probes.icmp_packet import ECHO_REPLY, HEADER, ID_SEQ_TOKEN, EchoTemplate, Parsed, parse

SOL_RAW = 255
ICMP_FILTER = 1  # IPv4 raw: bitmask of ICMP types to drop
ICMP6_FILTER = 1  # IPv6 raw: 256-bit mask of ICMPv6 types to block
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
IP_RECVERR = 11
IPV6_RECVERR = 25
SO_TIMESTAMPNS = 35  # Linux: each datagram carries its kernel receive time (CLOCK_REALTIME, ns)
TIMESTAMP_ANC = socket.CMSG_SPACE(16)  # one struct timespec
TIMESPEC = struct.Struct("qq")
SIOCGSTAMPNS = 0x8907  # ioctl: kernel receive time of the last datagram read (struct timespec)
NO_STAMP = bytes(TIMESPEC.size)
RCVBUF = 8 * 1024 * 1024
RECV_SIZE = 65536  # an ICMP message can quote a whole IP packet
TOKEN_POOL = 4096  # tokens drawn per os.urandom call, handed out one per request
RECV_BURST = 4096  # replies handled per reader callback before yielding to the loop
DRAIN_BURSTS = 8  # reader bursts a due deadline may take first to read what the kernel already holds
Retry = tuple[bytes, int, int, int]  # packet, index, sequence, token of a request to send again
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


class Group:
    """Echo sets awaited together (one poll, or a batch of polls): one future, one deadline.

    The awaiting coroutine is woken once, when every member is answered or failed or the deadline
    passes, not once per echo reply.
    """

    __slots__ = ("fut", "remaining")

    def __init__(self, fut: asyncio.Future[None], remaining: int) -> None:
        self.fut = fut
        self.remaining = remaining


class Echo:
    """The echo requests of one poll of one address, and what became of each.

    Kept small because a batch creates one per address: per-request sequence and send time live in
    the socket's pending map, which is all the receive path needs.
    """

    __slots__ = (
        "address", "errors", "group", "limit", "outstanding", "packed", "rtts", "sockaddr", "target_id",
        "tokens",
    )

    def __init__(
        self, address: str, packed: bytes, target_id: str = "", sockaddr: tuple[str, int] | None = None,
        limit: float = math.inf,
    ) -> None:
        self.address = address  # canonical text, as recvfrom reports the source
        self.packed = packed
        self.target_id = target_id
        self.sockaddr = sockaddr or (address, 0)  # callers pass a cached one: no tuple per poll
        #: each request's timeout (s): a reply read later than this is judged by its kernel receive time
        self.limit = limit
        # Set once every echo is sent, so an early answer cannot end the poll before the rest.
        self.group: Group | None = None
        self.tokens: list[int] = []
        self.rtts: list[float | None] = []  # seconds, per request in send order; None = no reply
        self.errors: list[str] | None = None  # why requests failed, when some did
        self.outstanding = 0

    def fail(self, error: str) -> None:
        if self.errors is None:
            self.errors = []
        self.errors.append(error)

    def done(self, index: int, rtt: float | None, error: str | None) -> None:
        self.rtts[index] = rtt
        if error is not None:
            self.fail(error)
        self.outstanding -= 1
        group = self.group
        if self.outstanding == 0 and group is not None:
            group.remaining -= 1
            if group.remaining == 0 and not group.fut.done():
                group.fut.set_result(None)


class IcmpSocket:
    """One non-blocking ICMP socket (raw or datagram) for one family, its pending echoes and deadlines."""

    def __init__(self, sock: socket.socket, family: int, raw: bool, payload_size: int,
                 kernel_timestamps: bool = False) -> None:
        self.sock = sock
        #: round trips from the kernel's receive time, not from when the loop got round to reading the
        #: reply: a busy event loop does not read as network latency (see :func:`_kernel_rtt`)
        self.kernel_timestamps = kernel_timestamps
        self.family = family
        self.raw = raw
        self.template = EchoTemplate(family, payload_size, want_checksum=raw and family == 4)
        self._packet = self.template.packet()  # patched and sent for every request (one at a time)
        self._recv_buf = bytearray(RECV_SIZE)  # every reply is read into this, never a new bytes
        self.ident = ident = random.getrandbits(16)
        t = self.template
        # What send_many needs per request that never changes: type, identifier, checksum base.
        self._request = (t.request_type, ident, t.checksum_base(ident), t.want_checksum)
        self._seq = random.getrandbits(16)
        # Unpredictable tokens drawn ahead in bulk (see send_many): one getrandom() per TOKEN_POOL
        # requests instead of one per call, which the per-poll path makes for every ping.
        self._tokens = _token_pool()
        # token -> (poll, index of the request within the poll, sequence, send time)
        self.pending: dict[int, tuple[Echo, int, int, float]] = {}
        # Deadlines of waiting groups: a heap of plain tuples (compared in C) and one loop timer for
        # the earliest, instead of an asyncio TimerHandle per poll (their Python-level ordering was
        # the biggest cost in profiles). Finished groups stay until their deadline and are skipped.
        self._deadlines: list[tuple[float, int, asyncio.Future[None]]] = []
        self._deadline_ids = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # IPv4 raw sockets get the IP header in front of the ICMP message; others do not.
        self._v4raw = family == 4 and raw
        self._reply_type = ECHO_REPLY[family]
        # What the reader checks every reply against: payload pad, exact reply size (ICMP header +
        # token + pad), type, whether the identifier is ours to check (datagram sockets: the kernel
        # owns it) and the identifier.
        pad = self.template.pad
        self._reply = (pad, 16 + len(pad), self._reply_type, raw, ident)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @classmethod
    def open(cls, family: int, raw: bool, payload_size: int, kernel_timestamps: bool = False) -> IcmpSocket:
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
            if kernel_timestamps:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            else:
                _keep_receive_times(sock)
        except OSError:
            sock.close()
            raise
        return cls(sock, family, raw, payload_size, kernel_timestamps)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._on_readable)

    def close(self) -> None:
        """Stop receiving, close the socket and wake every waiting poll (its open echoes: "closed")."""
        if self.closed:
            return
        self.closed = True
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        if self._timer is not None:
            self._timer.cancel()
        self.sock.close()
        for echo, index, _, _ in list(self.pending.values()):
            echo.done(index, None, "closed")
        self.pending.clear()
        for _, _, fut in self._deadlines:
            if not fut.done():
                fut.set_result(None)
        self._deadlines.clear()

    # -- send ---------------------------------------------------------------------------------

    def send_many(self, echoes: list[Echo]) -> list[tuple[Echo, Retry]]:
        """Send the next echo request of every echo in ``echoes`` without waiting.

        The hot path of a batch: one tight loop that patches sequence, token and checksum into one
        preallocated packet, so a request costs little more than its ``sendto``. Failures are
        recorded in their echo; returns what :meth:`resend` needs for requests that met a full send
        buffer.
        """
        retries: list[tuple[Echo, Retry]] = []
        if self.closed:
            return retries
        packet = self._packet
        pack_header = HEADER.pack_into
        request_type, ident, base, checksummed = self._request
        pending = self.pending
        sendto = self.sock.sendto
        monotonic = time.monotonic
        seq = self._seq
        # One unpredictable 64-bit token per request, from a pool drawn from os.urandom in bulk: the
        # per-poll path calls this once per ping, and a getrandom() call, a memoryview, its cast and
        # a zip(strict=True) per call were ~4k of its ~107k instructions (keyword arguments to zip
        # alone ~1k).
        tokens = self._tokens
        try:
            for echo in echoes:
                token = next(tokens, None)
                if token is None:  # the pool is used up: draw the next
                    tokens = self._tokens = _token_pool()
                    token = next(tokens)
                seq = (seq + 1) & 0xFFFF
                if token in pending:  # 1 in 2**64 / in-flight: never seen, but must not steal an entry
                    token = _fresh_token(pending)
                # See EchoTemplate.checksum_base.
                csum = 0xFFFF - (base + seq + token) % 0xFFFF if checksummed else 0
                pack_header(packet, 0, request_type, 0, csum, ident, seq, token)
                rtts = echo.rtts
                index = len(rtts)
                echo.tokens.append(token)
                rtts.append(None)
                now = monotonic()
                # Register before sending: on loopback the reply can be queued before sendto returns.
                pending[token] = (echo, index, seq, now)
                echo.outstanding += 1
                try:
                    sendto(packet, echo.sockaddr)
                except OSError as exc:
                    del pending[token]
                    echo.outstanding -= 1
                    if exc.errno in (errno.EAGAIN, errno.ENOBUFS):
                        retries.append((echo, (bytes(packet), index, seq, token)))
                    else:
                        echo.fail(SEND_ERRORS.get(exc.errno or 0, f"send failed: {exc.strerror}"))
        finally:
            self._seq = seq
        return retries

    async def resend(self, echo: Echo, retry: Retry) -> None:
        for delay in SEND_RETRY_DELAYS:  # EAGAIN/ENOBUFS: raw sockets give no writability signal
            await asyncio.sleep(delay)
            if self.closed:
                echo.fail("closed")
                return
            if self._try_send(*retry, echo):
                return
        echo.fail("send buffer full")

    def _try_send(self, packet: bytes, index: int, seq: int, token: int, echo: Echo) -> bool:
        """Send one prepared packet again; False only when the send buffer is still full."""
        now = time.monotonic()
        self.pending[token] = (echo, index, seq, now)
        echo.outstanding += 1
        try:
            self.sock.sendto(packet, echo.sockaddr)
        except OSError as exc:
            del self.pending[token]
            echo.outstanding -= 1
            if exc.errno in (errno.EAGAIN, errno.ENOBUFS):
                return False
            echo.fail(SEND_ERRORS.get(exc.errno or 0, f"send failed: {exc.strerror}"))
        return True

    # -- wait ---------------------------------------------------------------------------------

    def wait(self, echoes: list[Echo], deadline: float) -> asyncio.Future[None] | None:
        """A future done when every echo of ``echoes`` is answered or failed, or at ``deadline``
        (time.monotonic); None when nothing is left to wait for. (A plain method returning the
        future rather than a coroutine: one object less per poll on the per-poll path.)"""
        waiting = [e for e in echoes if e.outstanding]
        if not waiting or self.closed:
            return None
        assert self._loop is not None
        fut = self._loop.create_future()
        group = Group(fut, len(waiting))
        for e in waiting:
            e.group = group
        heapq.heappush(self._deadlines, (deadline, next(self._deadline_ids), fut))
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        return fut

    def _arm(self, deadline: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(self._loop.time() + (deadline - time.monotonic()), self._expire)

    def _expire(self) -> None:
        self._timer = None
        heap = self._deadlines
        now = time.monotonic()
        due = []
        while heap and heap[0][0] <= now:
            fut = heapq.heappop(heap)[2]
            if not fut.done():  # finished groups stay in the heap until their deadline: skipped
                due.append(fut)
        if due:
            # Replies the kernel queued before now are not late, however late the loop got round to
            # them: read them before giving their polls up. The reader takes RECV_BURST per callback,
            # and a starved loop may hold more than that (every raw socket gets every ICMP reply on
            # the machine), so without this a deadline could fire with its replies still queued.
            for _ in range(DRAIN_BURSTS):
                if self._on_readable():
                    break
            for fut in due:
                if not fut.done():
                    fut.set_result(None)
        if heap:
            self._arm(heap[0][0])

    def forget_many(self, echoes: list[Echo]) -> None:
        """Drop the requests of finished (answered, timed out or cancelled) polls from the pending map."""
        pending = self.pending
        for echo in echoes:
            if not echo.outstanding:
                continue  # every request answered or failed: already gone from the map
            for token in echo.tokens:
                entry = pending.get(token)
                if entry is not None and entry[0] is echo:
                    del pending[token]

    # -- receive ------------------------------------------------------------------------------

    def _on_readable(self) -> bool:
        """Drain the socket: match echo replies inline (the hot path), hand anything else to parse.
        True once the socket is empty, False when the burst's budget ran out first.

        Every reply is read into one preallocated buffer and checked in place (no bytes object, no
        slice): at fping-like rates the per-reply Python work is what limits the probe. Raw IPv4
        replies carry their IP header, so their source is checked there and ``recv_into`` spares
        building an address tuple per reply; other sockets take the source from ``recvfrom_into``.
        A reply read after its request's timeout asks the kernel when it arrived (one ioctl, only
        then): a starved process must not turn replies that came in time into lost ones.
        """
        sock = self.sock
        src: tuple[str, int] = ("", 0)
        buf = self._recv_buf
        stamped = self.kernel_timestamps
        v4raw = self._v4raw
        # Only what this socket's mode reads with: the per-poll path runs this set-up about once per
        # reply, so each bound method or list made here for nothing is paid per ping.
        anc: list[tuple[int, int, bytes]] | tuple[()] = ()
        if stamped:
            recvmsg_into = sock.recvmsg_into
            bufs = [buf]
            realtime_offset = time.time() - time.monotonic()
        elif v4raw:
            recv_into = sock.recv_into
        else:
            recvfrom_into = sock.recvfrom_into
        pending = self.pending
        pad, reply_len, reply_type, check_ident, ident = self._reply
        unpack = ID_SEQ_TOKEN.unpack_from
        monotonic = time.monotonic
        for _ in range(RECV_BURST):
            try:
                if stamped:
                    n, anc, _, src = recvmsg_into(bufs, TIMESTAMP_ANC)
                elif v4raw:
                    n = recv_into(buf)
                else:
                    n, src = recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                # A queued error (datagram sockets with IP_RECVERR): details are in the error queue.
                self._drain_error_queue()
                continue
            now = monotonic()
            off = (buf[0] & 0x0F) * 4 if v4raw else 0
            if n >= off + 16 and buf[off] == reply_type:
                r_ident, seq, token = unpack(buf, off + 4)
                entry = pending.get(token)
                if entry is None:
                    selfmetrics.ICMP_STRAY_REPLIES.inc()
                    continue
                if (
                    seq != entry[2]
                    or (check_ident and r_ident != ident)
                    or (not buf.startswith(entry[0].packed, 12) if v4raw else src[0] != entry[0].address)
                    or n - off != reply_len
                    or not buf.startswith(pad, off + 16)
                ):
                    # A waiting request's token, but not its reply: forged, or answered by another host.
                    selfmetrics.ICMP_STRAY_REPLIES.inc()
                    selfmetrics.ICMP_REJECTED_REPLIES.inc()
                    continue
                del pending[token]
                echo = entry[0]
                rtt = now - entry[3]
                if anc:
                    rtt = _kernel_rtt(anc, entry[3], realtime_offset, rtt)
                elif rtt > echo.limit:
                    rtt = self._arrival_rtt(entry[3], rtt)
                echo.done(entry[1], rtt, None)
                continue
            parsed = parse(self.family, bytes(buf[:n]), off, pad)
            if parsed is None:
                continue
            if parsed.kind == "reply":  # too short to carry our token
                selfmetrics.ICMP_STRAY_REPLIES.inc()
            else:
                self._on_error(parsed)
        # Budget used up: let other callbacks run; epoll reports the socket again next iteration.
        return False

    def _arrival_rtt(self, sent: float, read_rtt: float) -> float:
        """The round trip up to the kernel's receive time of the datagram just read (SIOCGSTAMPNS);
        ``read_rtt`` when the kernel has none (see :func:`_keep_receive_times`) or it is implausible."""
        try:
            stamp = fcntl.ioctl(self.sock.fileno(), SIOCGSTAMPNS, NO_STAMP)
        except OSError:
            return read_rtt
        sec, nsec = TIMESPEC.unpack(stamp)
        rtt: float = sec + nsec * 1e-9 - (time.time() - time.monotonic()) - sent
        return rtt if 0.0 <= rtt <= read_rtt else read_rtt

    def _on_error(self, p: Parsed) -> None:
        """An ICMP error quoting one of our requests: fail that echo at once."""
        entry = self.pending.get(p.token) if p.token is not None else None
        if entry is None:
            return  # quote too short to carry our token, or not ours: the echo will time out
        echo, index, seq, _ = entry
        if p.seq != seq or p.address != echo.packed or (self.raw and p.ident != self.ident):
            return
        del self.pending[p.token]  # type: ignore[arg-type]
        echo.done(index, None, "unreachable")

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
            if entry is not None and dst[0] == entry[0].address:
                self._on_error(Parsed("unreachable", entry[0].packed, self.ident, seq, token, True))


def _kernel_rtt(anc: list[tuple[int, int, bytes]], sent: float, realtime_offset: float, read_rtt: float) -> float:
    """The round trip up to the kernel's receive time of the reply (SO_TIMESTAMPNS).

    The send time is monotonic and the kernel's stamp is wall-clock time, so the stamp is moved onto
    the monotonic clock with the offset between the two taken when the burst was read. Should the
    wall clock step in between (or the stamp be missing or odd), the result would fall outside
    [0, the round trip up to reading]: then the read time is used, as without timestamps.
    """
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(data)
            rtt: float = sec + nsec * 1e-9 - realtime_offset - sent
            if 0.0 <= rtt <= read_rtt:
                return rtt
    return read_rtt


def _keep_receive_times(sock: socket.socket) -> None:
    """Have the kernel note each datagram's receive time for SIOCGSTAMPNS (no cost per read).

    The first SIOCGSTAMPNS on a socket turns this on (and, having nothing yet, fails with ENOENT);
    the kernel then stamps datagrams on arrival once its deferred work has enabled timestamps, until
    which the ioctl returns the read time, i.e. no correction. Unlike SO_TIMESTAMPNS (the
    ``kernel_timestamps`` option) no ancillary data is built per datagram.
    """
    with contextlib.suppress(OSError):
        fcntl.ioctl(sock.fileno(), SIOCGSTAMPNS, NO_STAMP)


def _token_pool() -> Iterator[int]:
    """TOKEN_POOL unpredictable 64-bit tokens from one os.urandom call."""
    return iter(memoryview(os.urandom(8 * TOKEN_POOL)).cast("Q"))


def _fresh_token(pending: dict[int, tuple[Echo, int, int, float]]) -> int:
    """A random token no request in flight carries."""
    while True:
        token = secrets.randbits(64)
        if token not in pending:
            return token


def _set_buffer(sock: socket.socket, opt: int, force_opt: int, size: int) -> None:
    """Ask for a big kernel buffer: as root beyond net.core.[rw]mem_max, else up to it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_opt, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, opt, size)
