"""SNMP request/response over UDP for v2c and v3, with per-agent state in dicts (linear in agents).

v2c goes through pysnmp's ``v1arch`` :class:`SnmpDispatcher` (one dispatcher, one socket for all
agents; measured linear for the issue). v3 uses our own socket per address family and the USM
client of :mod:`monitor.probes.snmp_usm`, because pysnmp's ``v3arch`` engine is quadratic in the
number of distinct agents. pysnmp exceptions and error indications stop here: callers only see
:class:`ProbeTimeout`, :class:`ProbeAuthError` and :class:`ProbeProtocolError`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pysnmp.hlapi.v1arch.asyncio import CommunityData, SnmpDispatcher
from pysnmp.hlapi.v1arch.asyncio.transport import Udp6TransportTarget, UdpTransportTarget
from pysnmp.proto.api import v2c

from monitor.errors import ProbeAuthError, ProbeProtocolError, ProbeTimeout
from monitor.probes import snmp_usm
from monitor.probes.snmp_usm import PeerEngine, UsmUser, V3Reply

Oid = tuple[int, ...]
VarBind = tuple[Oid, Any]  # (oid, pysnmp value object)

_ERROR_STATUS = {
    1: "tooBig", 2: "noSuchName", 3: "badValue", 4: "readOnly", 5: "genErr", 6: "noAccess",
    7: "wrongType", 16: "authorizationError",
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    timeout: float  # per attempt
    retries: int


class _V3Protocol(asyncio.DatagramProtocol):
    """Receives v3 replies and hands each to the request waiting for its msgID and source."""

    def __init__(self, pending: dict[int, tuple[asyncio.Future[V3Reply], tuple[str, int]]]) -> None:
        self.pending = pending
        self.stray = 0

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            reply = snmp_usm.decode_message(data)
        except ProbeProtocolError:
            self.stray += 1
            return
        waiting = self.pending.get(reply.msg_id)
        if waiting is None or (addr[0], addr[1]) != waiting[1] or waiting[0].done():
            self.stray += 1  # late, duplicate or spoofed: the source must be the agent we asked
            return
        waiting[0].set_result(reply)


class SnmpTransport:
    """Shared sockets and per-agent v3 state for every SNMP poll of the process."""

    def __init__(self) -> None:
        self._dispatcher: SnmpDispatcher | None = None
        self._v2_targets: dict[Endpoint, Any] = {}
        self._communities: dict[str, Any] = {}
        self._v3_sockets: dict[int, asyncio.DatagramTransport] = {}
        self._v3_pending: dict[int, tuple[asyncio.Future[V3Reply], tuple[str, int]]] = {}
        self._peers: dict[tuple[str, int, str], PeerEngine] = {}
        self._protocol = _V3Protocol(self._v3_pending)

    async def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = SnmpDispatcher()

    async def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.close()
            self._dispatcher = None
        for sock in self._v3_sockets.values():
            sock.close()
        self._v3_sockets.clear()
        self._v2_targets.clear()
        self._peers.clear()

    def forget(self, address: str, port: int) -> None:
        """Drop cached v3 engine state for an agent (e.g. after it rebooted)."""
        for key in [k for k in self._peers if k[0] == address and k[1] == port]:
            del self._peers[key]

    # ----- v2c ---------------------------------------------------------------------------------
    async def request_v2c(self, ep: Endpoint, community: str, pdu: Any) -> Any:
        if self._dispatcher is None:
            await self.start()
        assert self._dispatcher is not None
        target = self._v2_targets.get(ep)
        if target is None:
            cls = Udp6TransportTarget if ":" in ep.address else UdpTransportTarget
            target = await cls.create((ep.address, ep.port), timeout=ep.timeout, retries=ep.retries)
            self._v2_targets[ep] = target
        auth = self._communities.get(community)
        if auth is None:
            auth = self._communities[community] = CommunityData(community, mpModel=1)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(_d: Any, _rid: Any, error_indication: Any, rsp_pdu: Any = None, _ctx: Any = None) -> None:
            if fut.done():
                return
            if error_indication or rsp_pdu is None:  # timed out, or the dispatcher closed
                fut.set_exception(ProbeTimeout("timeout"))
            else:
                fut.set_result(rsp_pdu)

        try:
            self._dispatcher.send_pdu(auth, target, pdu, cbFun=done)
        except OSError as exc:
            raise ProbeProtocolError(f"send failed: {exc.strerror}") from exc
        return await fut

    # ----- v3 ----------------------------------------------------------------------------------
    async def request_v3(self, ep: Endpoint, cred_key: str, user: UsmUser, pdu: Any, context: bytes = b"") -> Any:
        key = (ep.address, ep.port, cred_key)
        peer = self._peers.get(key)
        if peer is None:
            peer = await self._discover(ep, user)
            self._peers[key] = peer
        for attempt in range(3):
            now = time.monotonic()
            msg_id = snmp_usm.next_msg_id()
            message = snmp_usm.encode_request(msg_id, user, peer, pdu, now, context)
            reply = await self._exchange(ep, msg_id, lambda m=message: m)
            rsp = snmp_usm.open_reply(reply, user, peer if reply.flags & 1 else None)
            if not snmp_usm.is_report(rsp):
                return rsp
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
        reply = await self._exchange(ep, msg_id, lambda: snmp_usm.encode_discovery(msg_id))
        if not reply.engine_id:
            raise ProbeProtocolError("malformed reply: discovery gave no engine id")
        peer = PeerEngine(reply.engine_id, reply.boots, reply.time, time.monotonic())
        snmp_usm.localize(user, peer)
        return peer

    async def _exchange(self, ep: Endpoint, msg_id: int, build: Any) -> V3Reply:
        """Send (and resend on silence) one message; return the reply from that agent."""
        family = socket.AF_INET6 if ":" in ep.address else socket.AF_INET
        sock = self._v3_sockets.get(family)
        loop = asyncio.get_running_loop()
        if sock is None:
            sock, _ = await loop.create_datagram_endpoint(
                lambda: self._protocol, family=family, local_addr=("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
            )
            self._v3_sockets[family] = sock
        fut: asyncio.Future[V3Reply] = loop.create_future()
        self._v3_pending[msg_id] = (fut, (ep.address, ep.port))
        try:
            for _ in range(ep.retries + 1):
                try:
                    sock.sendto(build(), (ep.address, ep.port))
                except OSError as exc:
                    raise ProbeProtocolError(f"send failed: {exc.strerror}") from exc
                done, _ = await asyncio.wait((fut,), timeout=ep.timeout)
                if done:
                    return fut.result()
            raise ProbeTimeout("timeout")
        finally:
            self._v3_pending.pop(msg_id, None)
            fut.cancel()


class Session:
    """GET and GETBULK-walk against one agent with one credential; returns raw varbinds."""

    def __init__(self, transport: SnmpTransport, ep: Endpoint, *, community: str | None = None,
                 user: UsmUser | None = None, cred_key: str = "", context: str = "") -> None:
        self.transport, self.ep, self.community, self.user, self.cred_key = transport, ep, community, user, cred_key
        self.context = context.encode()
        self.requests = 0

    async def _send(self, pdu: Any) -> Any:
        self.requests += 1
        if self.user is not None:
            return await self.transport.request_v3(self.ep, self.cred_key, self.user, pdu, self.context)
        assert self.community is not None
        return await self.transport.request_v2c(self.ep, self.community, pdu)

    async def get(self, oids: Sequence[Oid]) -> list[VarBind]:
        pdu = v2c.GetRequestPDU()
        v2c.apiPDU.set_defaults(pdu)
        v2c.apiPDU.set_varbinds(pdu, [(o, v2c.null) for o in oids])
        rsp = await self._send(pdu)
        _check_status(rsp)
        return [(tuple(o), v) for o, v in v2c.apiPDU.get_varbinds(rsp)]

    async def walk(
        self, bases: Sequence[Oid], max_repetitions: int = 25, max_rounds: int = 400
    ) -> dict[Oid, list[VarBind]]:
        """Walk several table columns side by side with GETBULK; partial replies are fine."""
        out: dict[Oid, list[VarBind]] = {b: [] for b in bases}
        cursor = {b: b for b in bases}
        reps = max_repetitions
        for _ in range(max_rounds):
            active = list(cursor)[:10]
            if not active:
                return out
            pdu = v2c.GetBulkRequestPDU()
            v2c.apiBulkPDU.set_defaults(pdu)
            v2c.apiBulkPDU.set_non_repeaters(pdu, 0)
            v2c.apiBulkPDU.set_max_repetitions(pdu, reps)
            v2c.apiBulkPDU.set_varbinds(pdu, [(cursor[b], v2c.null) for b in active])
            rsp = await self._send(pdu)
            if int(v2c.apiPDU.get_error_status(rsp)) == 1 and reps > 1:  # tooBig: ask for less
                reps = max(1, reps // 2)
                continue
            _check_status(rsp)
            vbs = [(tuple(o), v) for o, v in v2c.apiBulkPDU.get_varbinds(rsp)]
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
                        finished = True  # non-increasing OID: a broken agent would loop forever
                        break
                    out[base].append((oid, val))
                    last = oid
                if finished or last == cursor[base]:
                    del cursor[base]
                else:
                    cursor[base] = last
        raise ProbeProtocolError("malformed reply: table walk did not end")


def _is_end(value: Any) -> bool:
    return value.__class__.__name__ in ("EndOfMibView", "NoSuchObject", "NoSuchInstance")


def _check_status(rsp: Any) -> None:
    status = int(v2c.apiPDU.get_error_status(rsp))
    if status:
        index = int(v2c.apiPDU.get_error_index(rsp))
        name = _ERROR_STATUS.get(status, str(status))
        if status == 16:
            raise ProbeAuthError(f"auth: agent answered {name}")
        raise ProbeProtocolError(f"malformed reply: error status {name} at varbind {index}")


__all__ = ["Endpoint", "Oid", "Session", "SnmpTransport", "VarBind"]
