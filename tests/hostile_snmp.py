"""A tiny hostile SNMP v2c "agent" on loopback UDP, for tests and the hostile soak benchmark.

Each request it receives is answered according to its ``mode``:

- ``garbage``: random bytes (deterministic per request);
- ``truncated``: a well-formed Response carrying the request's community, cut short;
- ``wrong-community``, ``wrong-id``, ``wrong-pdu`` (Set/Trap/Report/Get in turn): one field off;
- ``other-port``/``other-address``: a perfect Response, but sent from another socket (another port,
  or 127.0.0.2) than the one that was asked;
- ``endless``: answers GET with fake values and GETBULK with ever-increasing rows, forever;
- ``repeat``: answers GETBULK with the very OIDs asked (a walk that would never advance);
- ``proxy``: relays the request to a real agent (``upstream``) and its answer back, after first
  sending ``noise`` bad datagrams of the kinds above (each with a fake value, :data:`FAKE_TICKS`),
  so a test can tell whether the poller took the bait or waited for the real answer. Works for v3
  too (garbage noise only); ``replay_from`` also sends a copy of the real answer, first, from the
  ``other-port`` or ``other-address`` socket.

Run standalone for the benchmark: ``python -m tests.hostile_snmp --mode endless --port 16100``, or
``--mode proxy --upstream 127.0.0.1:161 --noise garbage garbage --spray 50``.
Only ever binds loopback addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Sequence
from typing import Any

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import rfc1902
from pysnmp.proto.api import v2c

ROW0 = 1_000_000  # first row number an endless agent invents
FAKE_TICKS = 4242  # the value every forged answer carries for sysUpTime
NOISE_KINDS = ("garbage", "truncated", "wrong-community", "wrong-id", "wrong-pdu", "other-port", "other-address",
               "wrong-community-other-port")
_WRONG_PDUS = (v2c.SetRequestPDU, v2c.SNMPv2TrapPDU, v2c.ReportPDU, v2c.GetRequestPDU)


def parse_request(data: bytes) -> tuple[bytes, Any] | None:
    """(community, pdu) of a v2c request, or None for anything else."""
    try:
        msg, _ = decoder.decode(data, asn1Spec=v2c.Message())
        return bytes(v2c.apiMessage.get_community(msg)), v2c.apiMessage.get_pdu(msg)
    except Exception:
        return None


def message(community: bytes, pdu: Any) -> bytes:
    msg = v2c.Message()
    v2c.apiMessage.set_defaults(msg)
    v2c.apiMessage.set_community(msg, community)
    v2c.apiMessage.set_pdu(msg, pdu)
    return bytes(encoder.encode(msg))


def fake_response(request: Any, cls: Any = v2c.ResponsePDU, request_id: int | None = None,
                  endless_reps: int = 0) -> Any:
    """A Response (or another PDU class) answering ``request`` with fake values.

    For a GETBULK with ``endless_reps`` < 0, the OIDs asked come back as they are; with > 0, every
    column gets that many ever-increasing rows below it
    (row numbers from :data:`ROW0` up, so OIDs do not grow longer from one request to the next).
    """
    pdu = cls()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_request_id(pdu, v2c.apiPDU.get_request_id(request) if request_id is None else request_id)
    oids = [tuple(o) for o, _ in v2c.apiPDU.get_varbinds(request)]
    binds: list[tuple[Any, Any]] = []
    if endless_reps < 0 and isinstance(request, v2c.GetBulkRequestPDU):
        binds = [(o, rfc1902.Counter32(1)) for o in oids]
    elif endless_reps and isinstance(request, v2c.GetBulkRequestPDU):
        for rep in range(endless_reps):
            for o in oids:
                row = (*o[:-1], o[-1] + rep + 1) if o[-1] >= ROW0 else (*o, ROW0 + rep)
                binds.append((row, rfc1902.Counter32(rep)))
    else:
        binds = [(o, rfc1902.TimeTicks(FAKE_TICKS)) for o in oids]
    v2c.apiPDU.set_varbinds(pdu, binds)
    return pdu


def forge(kind: str, community: bytes, request: Any, serial: int) -> bytes:
    """One bad datagram of ``kind`` in answer to ``request`` (the socket trick is the caller's)."""
    if kind == "garbage":
        rnd = random.Random(serial)
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
    rid = int(v2c.apiPDU.get_request_id(request))
    if kind == "truncated":
        whole = message(community, fake_response(request))
        return whole[: random.Random(serial).randrange(1, len(whole))]
    if kind.startswith("wrong-community"):
        return message(community[::-1] + b"x", fake_response(request))
    if kind == "wrong-id":
        return message(community, fake_response(request, request_id=(rid + 1 + serial % 7) & 0x7FFFFFFF))
    if kind == "wrong-pdu":
        return message(community, fake_response(request, cls=_WRONG_PDUS[serial % len(_WRONG_PDUS)]))
    return message(community, fake_response(request))  # other-port / other-address: perfect, wrong socket


class HostileAgent(asyncio.DatagramProtocol):
    """See the module docstring. ``stats`` counts requests seen and datagrams sent."""

    def __init__(self, mode: str, noise: Sequence[str] = (), upstream: tuple[str, int] | None = None,
                 reps: int = 25, replay_from: str = "") -> None:
        self.mode, self.noise, self.upstream, self.reps = mode, tuple(noise), upstream, reps
        self.replay_from = replay_from
        self.transport: asyncio.DatagramTransport | None = None
        self.side: dict[str, asyncio.DatagramTransport] = {}
        self.requests = 0
        self.sent = 0
        self.last_requester: tuple[str, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, mode: str, *, host: str = "127.0.0.1", port: int = 0, noise: Sequence[str] = (),
                    upstream: tuple[str, int] | None = None, reps: int = 25, replay_from: str = "") -> HostileAgent:
        loop = asyncio.get_running_loop()
        agent = cls(mode, noise, upstream, reps, replay_from)
        await loop.create_datagram_endpoint(lambda: agent, local_addr=(host, port))
        for name, addr in (("other-port", host), ("other-address", "127.0.0.2")):
            side, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(addr, 0))
            agent.side[name] = side
        return agent

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's transport

    def close(self) -> None:
        for t in (self.transport, *self.side.values()):
            if t is not None:
                t.close()
        for task in self._tasks:
            task.cancel()

    def _send(self, data: bytes, addr: tuple[str, int], kind: str = "") -> None:
        via = next((name for name in self.side if kind.endswith(name)), "")
        sock = self.side.get(via) or self.transport
        if sock is None or sock.is_closing():
            return  # closed while a relay was on its way
        sock.sendto(data, addr)
        self.sent += 1

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.requests += 1
        self.last_requester = addr
        serial = self.requests
        parsed = parse_request(data)
        if self.mode == "proxy":
            for i, kind in enumerate(self.noise):
                if parsed is not None:
                    self._send(forge(kind, parsed[0], parsed[1], serial * 31 + i), addr, kind)
                elif kind == "garbage":  # v3: we cannot read the request, but garbage needs no reading
                    self._send(forge(kind, b"", None, serial * 31 + i), addr)
            if self.upstream is not None:
                task = asyncio.get_running_loop().create_task(self._relay(data, addr))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        if parsed is None:
            return
        community, request = parsed
        if self.mode in ("endless", "repeat"):
            reps = self.reps if self.mode == "endless" else -1
            self._send(message(community, fake_response(request, endless_reps=reps)), addr)
            return
        self._send(forge(self.mode, community, request, serial), addr, self.mode)

    async def _relay(self, data: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()

        class _Up(asyncio.DatagramProtocol):
            def datagram_received(self, reply: bytes, _a: tuple[str, int]) -> None:
                if not answer.done():
                    answer.set_result(reply)

        assert self.upstream is not None
        up, _ = await loop.create_datagram_endpoint(_Up, remote_addr=self.upstream)
        try:
            up.sendto(data)
            reply = await asyncio.wait_for(answer, 5.0)
            if self.replay_from:
                self._send(reply, addr, self.replay_from)
            self._send(reply, addr)
        except TimeoutError:
            pass
        finally:
            up.close()


    async def spray(self, per_second: int) -> None:
        """Unsolicited garbage at whoever asked last, ``per_second`` datagrams a second, forever."""
        serial = 0
        while True:
            await asyncio.sleep(0.1)
            if self.last_requester is not None:
                for _ in range(max(1, per_second // 10)):
                    serial += 1
                    self._send(forge("garbage", b"", None, serial), self.last_requester)


async def _serve(args: argparse.Namespace) -> None:
    upstream = None
    if args.upstream:
        host, _, port = args.upstream.rpartition(":")
        upstream = (host, int(port))
    agent = await HostileAgent.start(args.mode, host=args.host, port=args.port, reps=args.reps,
                                     noise=args.noise, upstream=upstream)
    try:
        if args.spray:
            await agent.spray(args.spray)
        await asyncio.Event().wait()
    finally:
        agent.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", required=True, choices=(*NOISE_KINDS, "endless", "repeat", "proxy"))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--noise", nargs="*", default=[], choices=NOISE_KINDS, help="proxy: bad replies first")
    ap.add_argument("--upstream", default="", help="proxy: the real agent, 127.x.y.z:port")
    ap.add_argument("--spray", type=int, default=0, help="unsolicited garbage datagrams/s at the last requester")
    args = ap.parse_args()
    if not args.host.startswith("127.") or not (args.upstream or "127.").startswith("127."):
        raise SystemExit("loopback only")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
