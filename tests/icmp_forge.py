"""An ICMP spoofer for tests (needs root): forge echo replies from any loopback source, sniff our
requests, and the "neighbour" attack of issue 10 that guesses a silent target's token and sequence
from the requests sent to other targets.

Used by tests/test_icmp.py (raw sockets) and, inside a network namespace, by the datagram-mode test
in tests/test_icmp_netns.py (there the kernel rewrites the identifier, which the spoofer sniffs).
"""

from __future__ import annotations

import asyncio
import socket
import struct

from monitor import selfmetrics
from monitor.probes.base import IcmpResult
from monitor.probes.icmp import IcmpProbe
from monitor.probes.icmp_packet import checksum_partial
from tests.servers.common import until

MASK64 = 0xFFFFFFFFFFFFFFFF


def stray_count() -> float:
    return selfmetrics.REGISTRY.get_sample_value("monitor_icmp_stray_replies_total") or 0.0


def forge_reply(src: str, ident: int, seq: int, token: int, pad: bytes) -> None:
    """Send an ICMP echo reply to 127.0.0.1 that claims to come from ``src`` (IP_HDRINCL raw socket)."""
    header = struct.pack("!BBHHHQ", 0, 0, 0, ident, seq, token)
    csum = 0xFFFF - (checksum_partial(header + pad) % 0xFFFF)
    icmp = struct.pack("!BBHHHQ", 0, 0, csum, ident, seq, token) + pad
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0x1234, 0, 64, socket.IPPROTO_ICMP, 0,
        socket.inet_aton(src), socket.inet_aton("127.0.0.1"),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
        s.sendto(ip + icmp, ("127.0.0.1", 0))


def sniffed_requests(spy: socket.socket, destinations: set[str]) -> list[tuple[int, int, int, bytes]]:
    """(identifier, sequence, token, payload after the token) of echo requests to ``destinations``
    that ``spy`` (a raw ICMP socket) has read so far."""
    out: list[tuple[int, int, int, bytes]] = []
    while True:
        try:
            data = spy.recv(65536)
        except BlockingIOError:
            return out
        icmp = data[(data[0] & 0x0F) * 4:]
        dst = socket.inet_ntoa(data[16:20])
        if len(icmp) >= 16 and icmp[0] == 8 and dst in destinations:
            ident, seq, token = struct.unpack_from("!HHQ", icmp, 4)
            out.append((ident, seq, token, icmp[16:]))


async def neighbour_attack(
    probe: IcmpProbe, neighbours: tuple[str, str], silent: str, per_ping_timeout: float = 1.5,
) -> list[IcmpResult]:
    """Ping ``[neighbours[0], silent, neighbours[1]]`` as one batch while an attacker who sees the
    requests to the neighbours (same segment, mirrored port) answers for ``silent`` with every
    sequence and token within ±8 of theirs, from ``silent``'s own address, with the sniffed identifier
    and payload. Returns the batch's results once every forgery was judged or the batch ended."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as spy:
        spy.setblocking(False)
        before = stray_count()
        batch = asyncio.create_task(
            probe.ping_many([neighbours[0], silent, neighbours[1]], count=1, per_ping_timeout=per_ping_timeout)
        )
        seen: list[tuple[int, int, int, bytes]] = []

        def both_sniffed() -> bool:
            seen.extend(sniffed_requests(spy, set(neighbours)))
            return len(seen) >= 2

        await until(both_sniffed, what="requests to both neighbours on the wire")
        guesses = {
            (ident, (seq + k) & 0xFFFF, (token + k) & MASK64, pad)
            for ident, seq, token, pad in seen for k in range(-8, 9)
        }
        for ident, seq, token, pad in guesses:
            forge_reply(silent, ident, seq, token, pad)
        # every guess judged (all ignored), or the batch ended early because one was taken
        await until(lambda: stray_count() >= before + len(guesses) or batch.done(), what="forgeries judged")
        return await batch
