"""SNMP request/response over UDP for v2c and v3, with per-agent state in dicts (linear in agents).

Both versions use our own socket per (version, address family) and pure message codecs
(:mod:`monitor.probes.snmp_v2c`, :mod:`monitor.probes.snmp_usm`): pysnmp's ``v1arch`` dispatcher
logged a traceback with part of the community for every garbage datagram and accepted replies
from anyone, and its ``v3arch`` engine is quadratic in the number of distinct agents.

Every datagram is hostile until proven otherwise. A reply is handed to the waiting request only
if it decodes, carries the id of a request in flight, comes from exactly the address and port
that request went to, and (v2c) has the request's community and is a Response PDU, (v3) passes
the user's authentication and is a Response or Report. Anything else is ignored, counted in
``monitor_snmp_ignored_replies_total{reason}``, and the request keeps waiting for the real answer
or times out. Ignored datagrams from an agent with a request in flight are attributed to it
(:meth:`SnmpTransport.take_noise`), so the probe can log one line per target per episode; the
rest are logged at most once an hour. pysnmp/pyasn1 exceptions stop here: callers only see
:class:`ProbeTimeout`, :class:`ProbeAuthError` and :class:`ProbeProtocolError`.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import ipaddress
import logging
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from monitor import selfmetrics
from monitor.errors import ProbeAuthError, ProbeError, ProbeProtocolError, ProbeTimeout
from monitor.logs import event
from monitor.probes import snmp_ber, snmp_usm, snmp_v2c
from monitor.probes.snmp_ber import Pdu
from monitor.probes.snmp_request import GET, GETBULK, Request
from monitor.probes.snmp_usm import PeerEngine, UsmUser, V3Reply
from monitor.probes.snmp_v2c import V2Reply

log = logging.getLogger(__name__)

Oid = tuple[int, ...]
VarBind = tuple[Oid, Any]  # (oid, pysnmp value object)

_ERROR_STATUS = {
    1: "tooBig", 2: "noSuchName", 3: "badValue", 4: "readOnly", 5: "genErr", 6: "noAccess",
    7: "wrongType", 16: "authorizationError",
}
STRANGERS_LOG_EVERY = 3600.0  # s between two log lines about datagrams nobody asked for


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    timeout: float  # per attempt
    retries: int


@dataclass(slots=True)
class _Waiter:
    """A request in flight: who must answer, and what else the answer must satisfy."""

    fut: asyncio.Future[Any]
    source: tuple[str, int]  # (normalised address, port) the request went to
    check: Callable[[Any], tuple[str | None, Any]]  # decoded reply → (reason to ignore | None, result)
    # how it is sent and resent (SnmpTransport._attempt): the message, where, sends left, per attempt
    message: bytes = b""
    destination: tuple[str, int] = ("", 0)
    sock: _Channel | None = None
    left: int = 0
    timeout: float = 0.0
    seq: int = 0  # the attempt in flight: its key in SnmpTransport._armed and in the deadline heap


def _host(address: str) -> str:
    """The address as the kernel reports a datagram's source (``::1``, not ``0:0::1``); remembered."""
    found = _HOSTS.get(address)
    if found is None:
        try:
            found = ipaddress.ip_address(address).compressed
        except ValueError:
            found = address
        if len(_HOSTS) >= 65536:  # one entry per agent address; never unbounded
            _HOSTS.clear()
        _HOSTS[address] = found
    return found


_HOSTS: dict[str, str] = {}


class _Receiver(asyncio.DatagramProtocol):
    """Decodes each datagram of one socket and hands it to its waiter, or ignores and counts it."""

    def __init__(self, owner: SnmpTransport, decode: Callable[[bytes], Any], pending: dict[int, _Waiter]) -> None:
        self.owner, self.decode, self.pending = owner, decode, pending

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        if source not in self.owner.waiting:  # checked before decoding: nobody else costs a decode
            self.owner.ignored("wrong_source", source)
            return
        try:
            reply = self.decode(data)
        except ProbeProtocolError:
            self.owner.ignored("malformed", source)
            return
        msg_id = reply.request_id if isinstance(reply, V2Reply) else reply.msg_id
        waiter = self.pending.get(msg_id)
        if waiter is None or waiter.fut.done():
            self.owner.ignored("unknown_request", source)  # late, duplicate or a guess
            return
        if source != waiter.source:
            self.owner.ignored("wrong_source", source)
            return
        try:
            reason, result = waiter.check(reply)
        except ProbeError as exc:  # e.g. a v3 reply that fails authentication: the request fails
            waiter.fut.set_exception(exc)
            return
        if reason is not None:
            self.owner.ignored(reason, source)
            return
        waiter.fut.set_result(result)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable and the like: the request times out (no traceback, no log line)


_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution  # asyncio's loop.time() is this clock
_DRAIN = 64  # datagrams read per reader callback at most: a flood cannot hold the event loop
_MAX_DATAGRAM = 65536  # bytes read per datagram (UDP carries at most 65,507)
_BACKLOG_MAX = 65536  # datagrams waiting for send buffer space; beyond, the send fails


class _Channel:
    """One UDP socket (a version and an address family), driven without asyncio's datagram transport.

    Why: asyncio's transport reads one datagram per readiness event, so with K requests in flight
    each reply cost a whole pass of the event loop (an ``epoll_wait`` and the loop's bookkeeping);
    here one reader callback drains every datagram queued (at most ``_DRAIN`` per call) into the
    :class:`_Receiver`. Sends go straight to the socket; one the kernel refuses for want of buffer
    space waits, in order, for the socket to become writable (as asyncio's transport buffers it).
    Other send errors and ICMP errors reported on the socket are dropped, as asyncio's transport
    hands them to ``error_received``: the request times out.
    """

    __slots__ = ("backlog", "loop", "receiver", "sock")

    def __init__(self, loop: asyncio.AbstractEventLoop, family: int, receiver: _Receiver) -> None:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            loop.add_reader(sock.fileno(), self._read_ready)
        except BaseException:
            sock.close()
            raise
        self.sock, self.loop, self.receiver = sock, loop, receiver
        self.backlog: deque[tuple[bytes, tuple[str, int]]] = deque()

    def _read_ready(self) -> None:
        recvfrom, received = self.sock.recvfrom, self.receiver.datagram_received
        for _ in range(_DRAIN):
            try:
                data, addr = recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. ICMP port unreachable: the request times out (no traceback, no log line)
            received(data, addr)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.backlog:
            try:
                self.sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self.loop.add_writer(self.sock.fileno(), self._flush)
            except OSError:
                return  # unreachable and the like: the request times out, as before
        if len(self.backlog) >= _BACKLOG_MAX:
            raise OSError(errno.ENOBUFS, "send backlog full")
        self.backlog.append((data, addr))

    def _flush(self) -> None:
        backlog, send = self.backlog, self.sock.sendto
        while backlog:
            try:
                send(*backlog[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            backlog.popleft()
        self.loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
            self.sock.close()
        self.backlog.clear()


class SnmpTransport:
    """Shared sockets and per-agent v3 state for every SNMP poll of the process."""

    def __init__(self) -> None:
        self._sockets: dict[tuple[str, int], _Channel] = {}
        self._pending: dict[str, dict[int, _Waiter]] = {"2c": {}, "3": {}}
        self._peers: dict[tuple[str, int, str], PeerEngine] = {}
        self._inflight: Counter[str] = Counter()  # address → requests waiting for it
        self.waiting: Counter[tuple[str, int]] = Counter()  # (address, port) → requests waiting for it
        self._noise: dict[str, Counter[str]] = {}  # address → ignored datagrams from it, by reason
        self._strangers = 0  # ignored datagrams from addresses nobody was waiting for
        self._strangers_logged_at: float | None = None
        # every attempt's deadline in one heap with one timer for the earliest (not a timer per
        # attempt: making and cancelling one was ~5 % of a GET); entries of answered requests stay
        # until their time comes, then are dropped (bounded by requests per timeout). The heap holds
        # (deadline, attempt number) only, the waiter of an attempt still armed is in _armed: when it
        # held the waiters themselves, every answered GET's waiter, future and check stayed alive for
        # its whole timeout, was promoted to the GC's oldest generation and made full collections of
        # the process run every few thousand GETs (~10 % of a GET's CPU at 8 in flight)
        self._deadlines: list[tuple[float, int]] = []
        self._armed: dict[int, _Waiter] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0

    async def start(self) -> None:
        pass  # sockets are opened on first use, per address family

    async def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        self._peers.clear()

    def forget(self, address: str, port: int) -> None:
        """Drop cached v3 engine state for an agent (e.g. after it rebooted)."""
        for key in [k for k in self._peers if k[0] == address and k[1] == port]:
            del self._peers[key]

    # ----- ignored datagrams -------------------------------------------------------------------
    def ignored(self, reason: str, source: tuple[str, int]) -> None:
        """Count a datagram that is not the answer to anything; attribute it to an agent if we can."""
        selfmetrics.SNMP_IGNORED.labels(reason).inc()
        if self._inflight.get(source[0]):
            self._noise.setdefault(source[0], Counter())[reason] += 1
            return
        self._strangers += 1
        now = time.monotonic()
        if self._strangers_logged_at is None or now - self._strangers_logged_at >= STRANGERS_LOG_EVERY:
            self._strangers_logged_at = now
            event(log, logging.WARNING, "snmp datagrams ignored from sources not polled right now",
                  count=self._strangers, last_reason=reason, last_source=source[0])
            self._strangers = 0

    def take_noise(self, address: str) -> Counter[str]:
        """Ignored datagrams from ``address`` while we were waiting for it, since the last call."""
        return self._noise.pop(_host(address), Counter())

    # ----- v2c ---------------------------------------------------------------------------------
    async def request_v2c(self, ep: Endpoint, community: str, pdu: Request) -> tuple[Any, int]:
        """Send ``pdu``; return the agent's Response PDU and its size (resent on silence, same id)."""
        secret = community.encode()
        pending = self._pending["2c"]
        rid = snmp_v2c.new_request_id(pending)
        message = snmp_v2c.encode_request(rid, secret, pdu)

        def check(reply: V2Reply) -> tuple[str | None, Any]:
            return snmp_v2c.mismatch(reply, secret), (reply.pdu, reply.size)

        answer: tuple[Any, int] = await self._exchange("2c", snmp_v2c.decode_message, ep, rid, message, check)
        return answer

    # ----- v3 ----------------------------------------------------------------------------------
    async def request_v3(
        self, ep: Endpoint, cred_key: str, user: UsmUser, pdu: Request, context: bytes = b""
    ) -> tuple[Any, int]:
        """Send ``pdu`` as ``user``; return the agent's Response PDU and its size."""
        key = (ep.address, ep.port, cred_key)
        peer = self._peers.get(key)
        if peer is None:
            peer = await self._discover(ep, user)
            self._peers[key] = peer
        for attempt in range(3):
            now = time.monotonic()
            msg_id = snmp_usm.next_msg_id()
            message = snmp_usm.encode_request(msg_id, user, peer, pdu, now, context)
            waiter = self._post("3", snmp_usm.decode_message, ep, msg_id, message, _v3_check(user, peer))
            try:
                reply, rsp = await waiter.fut
            finally:
                self._finish("3", msg_id, waiter)
            if not snmp_usm.is_report(rsp):
                return rsp, len(reply.whole)
            reason, text = snmp_usm.report_reason(rsp)
            if reason == "auth":
                raise ProbeAuthError(f"auth: {text}")
            if reason == "time" and attempt < 2:
                peer.boots, peer.time, peer.learned_at = reply.boots, reply.time, time.monotonic()
                continue
            if reason == "engine" and attempt < 2:
                peer = await self._discover(ep, user)
                self._peers[key] = peer
                continue
            raise ProbeProtocolError(f"malformed reply: agent reported {text}")
        raise ProbeProtocolError("malformed reply: agent kept reporting")

    async def _discover(self, ep: Endpoint, user: UsmUser) -> PeerEngine:
        msg_id = snmp_usm.next_msg_id()
        reply: V3Reply = await self._exchange(
            "3", snmp_usm.decode_message, ep, msg_id, snmp_usm.encode_discovery(msg_id),
            lambda r: (None, r),
        )
        if not reply.engine_id:
            raise ProbeProtocolError("malformed reply: discovery gave no engine id")
        peer = PeerEngine(reply.engine_id, reply.boots, reply.time, time.monotonic())
        snmp_usm.localize(user, peer)
        return peer

    # ----- both --------------------------------------------------------------------------------
    def _socket(self, version: str, family: int, decode: Callable[[bytes], Any]) -> _Channel:
        sock = self._sockets.get((version, family))
        if sock is None:
            receiver = _Receiver(self, decode, self._pending[version])
            # opened without an await: concurrent first requests (a daemon's first round) share it
            sock = self._sockets[(version, family)] = _Channel(asyncio.get_running_loop(), family, receiver)
        return sock

    async def _exchange(
        self, version: str, decode: Callable[[bytes], Any], ep: Endpoint, msg_id: int,
        message: bytes, check: Callable[[Any], tuple[str | None, Any]],
    ) -> Any:
        """Send (and resend on silence) one message; return what ``check`` made of the agent's reply."""
        waiter = self._post(version, decode, ep, msg_id, message, check)
        try:
            return await waiter.fut
        finally:
            self._finish(version, msg_id, waiter)

    def _post(
        self, version: str, decode: Callable[[bytes], Any], ep: Endpoint, msg_id: int,
        message: bytes, check: Callable[[Any], tuple[str | None, Any]],
    ) -> _Waiter:
        """Register one message's waiter and send its first attempt; the caller awaits ``waiter.fut``
        and then calls :meth:`_finish`, whatever happened (:meth:`_exchange`, or a GET's hot path
        inline in :meth:`request_v3`: one coroutine level less per request).

        One future for the whole exchange, awaited directly (the task wakes one loop iteration after
        the reply); each attempt's deadline goes into the transport's heap (``_attempt``).
        """
        family = socket.AF_INET6 if ":" in ep.address else socket.AF_INET
        sock = self._sockets.get((version, family)) or self._socket(version, family, decode)
        loop = asyncio.get_running_loop()
        host = _host(ep.address)
        source = (host, ep.port)
        waiter = _Waiter(loop.create_future(), source, check, message, (ep.address, ep.port), sock, ep.retries + 1,
                         ep.timeout)
        self._pending[version][msg_id] = waiter
        self._inflight[host] += 1
        self.waiting[source] += 1
        self._attempt(waiter, loop)
        return waiter

    def _finish(self, version: str, msg_id: int, waiter: _Waiter) -> None:
        """The exchange of :meth:`_post` is over (answered, failed or cancelled): forget its waiter."""
        self._pending[version].pop(msg_id, None)
        self._armed.pop(waiter.seq, None)
        waiter.fut.cancel()
        source = waiter.source
        inflight, waiting = self._inflight, self.waiting
        n = inflight[source[0]] - 1
        if n > 0:
            inflight[source[0]] = n
        else:
            inflight.pop(source[0], None)
        n = waiting[source] - 1
        if n > 0:
            waiting[source] = n
        else:
            waiting.pop(source, None)

    def _attempt(self, w: _Waiter, loop: asyncio.AbstractEventLoop) -> None:
        """Send ``w``'s message once more, or fail it: a timeout when no send is left."""
        if not w.left:
            w.fut.set_exception(ProbeTimeout("timeout"))
            return
        w.left -= 1
        assert w.sock is not None
        try:
            w.sock.sendto(w.message, w.destination)
        except OSError as exc:
            error = ProbeProtocolError(f"send failed: {exc.strerror}")
            error.__cause__ = exc
            w.fut.set_exception(error)
            return
        at = loop.time() + w.timeout
        self._seq += 1
        w.seq = self._seq
        self._armed[w.seq] = w
        heapq.heappush(self._deadlines, (at, w.seq))
        if at < self._timer_at or self._timer_loop is not loop:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at, self._timer_loop = loop.call_at(at, self._expire, loop), at, loop

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The deadline heap's timer: resend or fail every attempt whose time is up; arm for the next."""
        self._timer, self._timer_at = None, float("inf")
        heap, armed = self._deadlines, self._armed
        now = loop.time() + _CLOCK_RESOLUTION  # as the loop itself runs a timer that is due
        while heap and heap[0][0] <= now:
            w = armed.pop(heapq.heappop(heap)[1], None)
            if w is not None and not w.fut.done():
                self._attempt(w, loop)
        while heap and heap[0][1] not in armed:  # answered: no timer for them
            heapq.heappop(heap)
        if heap and self._timer is None:
            at = heap[0][0]
            self._timer, self._timer_at, self._timer_loop = loop.call_at(at, self._expire, loop), at, loop


def _v3_check(user: UsmUser, peer: PeerEngine) -> Callable[[V3Reply], tuple[str | None, Any]]:
    """Verify and open a v3 reply; only a Response or a Report answers a request.

    For a user with authentication, only a Report may come back unauthenticated (that is how an
    agent says "unknown engine", "wrong digest"...); any other reply must carry a valid digest, or
    it is someone else's (ignored, counted). An authentic reply that then fails to decrypt is the
    agent's and fails the request (ProbeAuthError from :func:`snmp_usm.open_reply`).
    """

    def check(reply: V3Reply) -> tuple[str | None, Any]:
        authed = bool(reply.flags & 1)
        if authed and (user.auth_id is None or not snmp_usm.authentic(reply, user, peer)):
            return "unauthenticated", None
        try:
            rsp = snmp_usm.open_reply(reply, user, peer if authed else None, verified=authed)
        except ProbeAuthError:
            if authed:
                raise
            return "malformed", None  # e.g. "encrypted" without authentication: not a valid message
        except ProbeProtocolError:
            return "malformed", None
        if snmp_usm.is_report(rsp):
            return None, (reply, rsp)
        if user.auth_id is not None and not authed:
            return "unauthenticated", None
        if rsp.kind != snmp_ber.RESPONSE:
            return "wrong_pdu", None
        return None, (reply, rsp)

    return check


class WalkCut(ProbeProtocolError):
    """A table walk went over its :class:`WalkLimits` or the agent sent a non-increasing OID."""


@dataclass(frozen=True, slots=True)
class WalkLimits:
    """Bounds of one table walk, so an agent that answers GETBULK without end costs little.

    Rows count over all columns walked together; bytes are the reply datagrams'; the time bound is
    also cut short by the poll's own deadline. Over any bound the walk fails with "walk cut".
    """

    max_rows: int = 10_000
    max_bytes: int = 4 << 20
    max_seconds: float = 30.0


class Session:
    """GET and GETBULK-walk against one agent with one credential; returns raw varbinds."""

    def __init__(self, transport: SnmpTransport, ep: Endpoint, *, community: str | None = None,
                 user: UsmUser | None = None, cred_key: str = "", context: str = "",
                 limits: WalkLimits = WalkLimits()) -> None:
        self.transport, self.ep, self.community, self.user, self.cred_key = transport, ep, community, user, cred_key
        self.context = context.encode()
        self.limits = limits
        self.requests = 0
        self.received = 0  # bytes of replies

    async def _send(self, pdu: Request) -> Any:
        self.requests += 1
        if self.user is not None:
            rsp, size = await self.transport.request_v3(self.ep, self.cred_key, self.user, pdu, self.context)
        else:
            assert self.community is not None
            rsp, size = await self.transport.request_v2c(self.ep, self.community, pdu)
        self.received += size
        return rsp

    async def get(self, oids: Sequence[Oid]) -> list[VarBind]:
        return response_varbinds(await self._send(Request(GET, tuple(oids))))

    async def walk(self, bases: Sequence[Oid], max_repetitions: int = 25) -> dict[Oid, list[VarBind]]:
        """Walk several table columns side by side with GETBULK; partial replies are fine.

        Ends when every column has left its subtree, or fails with :class:`WalkCut` when the agent
        exceeds :class:`WalkLimits` or sends a non-increasing OID (which would loop forever).
        """
        out: dict[Oid, list[VarBind]] = {b: [] for b in bases}
        cursor = {b: b for b in bases}
        reps = max_repetitions
        rows, first_byte = 0, self.received
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.max_seconds
        while cursor:
            if loop.time() > deadline:
                raise WalkCut(f"walk cut: longer than {self.limits.max_seconds:g} s")
            active = list(cursor)[:10]
            rsp = await self._send(Request(GETBULK, tuple(cursor[b] for b in active), 0, reps))
            if self.received - first_byte > self.limits.max_bytes:
                raise WalkCut(f"walk cut: more than {self.limits.max_bytes} bytes")
            if _status(rsp)[0] == 1 and reps > 1:  # tooBig: ask for less
                reps = max(1, reps // 2)
                continue
            vbs = response_varbinds(rsp)
            if not vbs:
                raise ProbeProtocolError("malformed reply: empty GETBULK response")
            for col, base in enumerate(active[: len(vbs)]):
                last = cursor[base]
                finished = False
                for i in range(col, len(vbs), len(active)):
                    oid, val = vbs[i]
                    if oid[: len(base)] != base or _is_end(val):
                        finished = True
                        break
                    if oid <= last:
                        raise WalkCut("walk cut: agent sent a non-increasing OID")
                    out[base].append((oid, val))
                    last = oid
                    rows += 1
                if finished or last == cursor[base]:
                    del cursor[base]
                else:
                    cursor[base] = last
            if rows > self.limits.max_rows:
                raise WalkCut(f"walk cut: more than {self.limits.max_rows} rows")
        return out


def _is_end(value: Any) -> bool:
    return value.__class__.__name__ in ("EndOfMibView", "NoSuchObject", "NoSuchInstance")


def _status(rsp: Pdu) -> tuple[int, int]:
    if rsp.error_index > len(rsp.varbinds):  # pysnmp's get_error_index raised ProtocolError here
        raise ProbeProtocolError("malformed reply: ProtocolError")
    return rsp.error_status, rsp.error_index


def response_varbinds(rsp: Pdu) -> list[VarBind]:
    """The varbinds of a Response PDU, or our error for an error status or a malformed PDU."""
    status, index = _status(rsp)
    if status:
        name = _ERROR_STATUS.get(status, str(status))
        if status == 16:
            raise ProbeAuthError(f"auth: agent answered {name}")
        raise ProbeProtocolError(f"malformed reply: error status {name} at varbind {index}")
    return list(rsp.varbinds)


__all__ = ["Endpoint", "Oid", "Session", "SnmpTransport", "VarBind", "WalkCut", "WalkLimits", "response_varbinds"]
