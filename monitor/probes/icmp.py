"""ICMP echo probe: loss, RTT min/avg/max and jitter per target, scaling to tens of thousands of targets.

All pings share one socket per address family (see :mod:`monitor.probes.icmp_socket`), opened once
by :meth:`IcmpProbe.start`: a raw socket when the process has CAP_NET_RAW, otherwise an unprivileged
ICMP datagram socket when ``net.ipv4.ping_group_range`` admits the process's group. When neither works
``start`` says exactly what was tried and how to fix it, because a monitor that cannot ping must not
start and report every target as down.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

from monitor.errors import ProbeError, ProbeSetupError
from monitor.inventory.model import Target
from monitor.logs import event
from monitor.probes.base import IcmpResult
from monitor.probes.icmp_socket import Echo, IcmpSocket

log = logging.getLogger(__name__)
ADDRESS_CACHE = 1_000_000  # parsed addresses kept (the same targets are polled again and again)
SEND_CHUNK = 256  # sends in a batch between chances for the reader to drain replies

Mode = Literal["auto", "raw", "dgram"]
# When nothing came back, the most telling reason wins.
_ERROR_RANK = ("unreachable", "blocked")


class IcmpProbe:
    """Implements :class:`monitor.probes.base.Probe` for ICMP echo."""

    kind = "icmp"

    def __init__(self, *, mode: Mode = "auto", payload_size: int = 56, kernel_timestamps: bool = False) -> None:
        if mode not in ("auto", "raw", "dgram"):
            raise ValueError(f"mode must be auto, raw or dgram, not {mode!r}")
        if payload_size < 8:
            raise ValueError("payload_size must be at least 8 bytes (the reply-matching token)")
        self._want: Mode = mode
        self._payload_size = payload_size
        self._kernel_timestamps = kernel_timestamps
        self._socks: dict[int, IcmpSocket] = {}
        self._v6_error = "IPv6 ICMP is not available"
        self._mode = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._addresses: dict[str, tuple[int, bytes, tuple[str, int]]] = {}
        #: polls through :meth:`poll`, batches through :meth:`poll_many` and the targets in them: how
        #: the caller uses the probe (the daemon batches ICMP-only targets), for tests and benchmarks
        self.single_polls = 0
        self.batches = 0
        self.batched_polls = 0

    @property
    def mode(self) -> str:
        """``"raw"`` or ``"dgram"`` once started; empty before."""
        return self._mode

    async def start(self) -> None:
        if self._socks:
            return
        self._loop = asyncio.get_running_loop()
        v4, self._mode = self._open_v4()
        self._socks[4] = v4
        try:
            self._socks[6] = IcmpSocket.open(6, self._mode == "raw", self._payload_size, self._kernel_timestamps)
        except OSError as exc:
            # Many hosts run without IPv6; IPv4 pings still work, IPv6 targets get an error result.
            self._v6_error = f"IPv6 ICMP socket unavailable: {_describe(exc)}"
            event(log, logging.WARNING, "icmp ipv6 off", reason=self._v6_error)
        for sock in self._socks.values():
            sock.attach(self._loop)
        event(log, logging.INFO, "icmp probe started", mode=self._mode, ipv6="on" if 6 in self._socks else "off")

    def _open_v4(self) -> tuple[IcmpSocket, str]:
        raw_exc: OSError | None = None
        if self._want in ("auto", "raw"):
            try:
                return IcmpSocket.open(4, True, self._payload_size, self._kernel_timestamps), "raw"
            except OSError as exc:
                raw_exc = exc
        dgram_exc: OSError | None = None
        if self._want in ("auto", "dgram"):
            try:
                return IcmpSocket.open(4, False, self._payload_size, self._kernel_timestamps), "dgram"
            except OSError as exc:
                dgram_exc = exc
        raise ProbeSetupError(setup_message(raw_exc, dgram_exc)) from (dgram_exc or raw_exc)

    async def close(self) -> None:
        """Close the sockets; pending pings return at once with their echoes counted as lost."""
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()

    async def poll(self, target: Target, timeout: float) -> IcmpResult:
        """Ping ``target`` as its polling settings say, returning within ``timeout`` seconds."""
        p = target.polling
        deadline = time.monotonic() + timeout
        self.single_polls += 1
        return await self._ping(target.address, p.icmp_count, p.icmp_spacing, p.icmp_timeout, target.id, deadline)

    async def ping(
        self,
        address: str,
        *,
        count: int = 3,
        spacing: float = 0.02,
        per_ping_timeout: float = 1.0,
        target_id: str = "",
    ) -> IcmpResult:
        """Send ``count`` echo requests ``spacing`` s apart; each may take ``per_ping_timeout`` s."""
        return await self._ping(address, count, spacing, per_ping_timeout, target_id, None)

    async def ping_many(
        self,
        addresses: Sequence[str],
        *,
        count: int = 1,
        spacing: float = 0.02,
        per_ping_timeout: float = 1.0,
        target_ids: Sequence[str] | None = None,
    ) -> list[IcmpResult]:
        """Ping many addresses as one batch: same results as :meth:`ping` per address, in order.

        Sends every echo in a tight loop and wakes this coroutine once for the whole batch, which is
        how a scheduler gets fping-like rates out of Python for the polls due in the same tick.
        """
        ids = target_ids if target_ids is not None else [""] * len(addresses)
        return await self._ping_many(addresses, ids, count, spacing, per_ping_timeout, None)

    async def poll_many(self, targets: Sequence[Target], timeout: float) -> list[IcmpResult]:
        """:meth:`poll` for many targets at once (grouped by their ICMP settings), in order."""
        deadline = time.monotonic() + timeout
        self.batches += 1
        self.batched_polls += len(targets)
        by_settings: dict[tuple[int, float, float], list[int]] = {}
        for i, t in enumerate(targets):
            p = t.polling
            by_settings.setdefault((p.icmp_count, p.icmp_spacing, p.icmp_timeout), []).append(i)
        batches = [
            self._ping_many([targets[i].address for i in idx], [targets[i].id for i in idx], c, s, ppt, deadline)
            for (c, s, ppt), idx in by_settings.items()
        ]
        results: list[IcmpResult | None] = [None] * len(targets)
        for idx, batch in zip(by_settings.values(), await asyncio.gather(*batches), strict=True):
            for i, r in zip(idx, batch, strict=True):
                results[i] = r
        return [r for r in results if r is not None]

    async def _ping(
        self, address: str, count: int, spacing: float, per_ping_timeout: float, target_id: str,
        deadline: float | None,
    ) -> IcmpResult:
        """One poll: the per-poll path, without the batch's bookkeeping."""
        family, packed, sockaddr = self._lookup(address)
        sock = self._socks.get(family)
        if sock is None:
            return self._unpingable(address, target_id, family)
        echo = Echo(sockaddr[0], packed, target_id, sockaddr, per_ping_timeout)
        await _exchange([(sock, [echo])], count, spacing, per_ping_timeout, deadline)
        return summarize(echo, per_ping_timeout)

    async def _ping_many(
        self, addresses: Sequence[str], target_ids: Sequence[str], count: int, spacing: float,
        per_ping_timeout: float, deadline: float | None,
    ) -> list[IcmpResult]:
        socks = self._socks
        slots: list[Echo | IcmpResult] = []  # per job, in order: its echo, or its result when not pingable
        by_family: dict[int, list[Echo]] = {4: [], 6: []}
        lookup = self._lookup
        for address, target_id in zip(addresses, target_ids, strict=True):
            family, packed, sockaddr = lookup(address)
            if family in socks:
                echo = Echo(sockaddr[0], packed, target_id, sockaddr, per_ping_timeout)
                slots.append(echo)
                by_family[family].append(echo)
            else:
                slots.append(self._unpingable(address, target_id, family))
        await _exchange([(socks[f], echoes) for f, echoes in by_family.items() if echoes],
                        count, spacing, per_ping_timeout, deadline)
        return [summarize(x, per_ping_timeout) if isinstance(x, Echo) else x for x in slots]

    def _lookup(self, address: str) -> tuple[int, bytes, tuple[str, int]]:
        """:func:`_parse_address`, cached; raises ProbeError when the probe is not running."""
        if not self._socks:
            raise ProbeError("ICMP probe is not started (or already closed)")
        known = self._addresses.get(address)
        if known is None:
            if len(self._addresses) > ADDRESS_CACHE:
                self._addresses.clear()
            known = self._addresses[address] = _parse_address(address)
        return known

    def _unpingable(self, address: str, target_id: str, family: int) -> IcmpResult:
        error = "invalid address" if family == 0 else self._v6_error
        return IcmpResult(target_id, address, 0, 0, error=error)


async def _exchange(
    batches: list[tuple[IcmpSocket, list[Echo]]], count: int, spacing: float, per_ping_timeout: float,
    deadline: float | None,
) -> None:
    """Send ``count`` rounds of echoes ``spacing`` s apart, then wait for the replies (each request
    may take ``per_ping_timeout`` s, the whole exchange no longer than ``deadline``)."""
    try:
        for i in range(count):
            if i:
                if deadline is not None and time.monotonic() + spacing >= deadline:
                    break  # no time left to send more and still wait for them
                await asyncio.sleep(spacing)
            for sock, echoes in batches:
                # In chunks, between which the reader gets to drain replies, so that a big batch
                # cannot overflow the socket's receive buffer.
                for start in range(0, len(echoes), SEND_CHUNK):
                    if start:
                        await asyncio.sleep(0)
                    chunk = echoes if len(echoes) <= SEND_CHUNK else echoes[start:start + SEND_CHUNK]
                    for echo, retry in sock.send_many(chunk):
                        await sock.resend(echo, retry)
        wait_until = time.monotonic() + per_ping_timeout  # the last request went out just before
        for sock, echoes in batches:
            fut = sock.wait(echoes, wait_until if deadline is None else min(wait_until, deadline))
            if fut is not None:
                await fut
    finally:
        for sock, echoes in batches:
            sock.forget_many(echoes)


def summarize(echo: Echo, per_ping_timeout: float) -> IcmpResult:
    """Turn the per-request outcomes into loss, RTT statistics and jitter (a late reply counts as lost)."""
    sent = len(echo.rtts)
    if sent == 1 and echo.rtts[0] is not None and echo.rtts[0] <= per_ping_timeout:  # the common fast path
        ms = echo.rtts[0] * 1000.0
        return IcmpResult(echo.target_id, echo.address, 1, 1, ms, ms, ms, None, None)
    rtts = [r * 1000.0 for r in echo.rtts if r is not None and r <= per_ping_timeout]
    if not rtts:
        errors = echo.errors or []
        error = next((e for e in _ERROR_RANK if e in errors), errors[0] if errors else "timeout")
        return IcmpResult(echo.target_id, echo.address, sent, 0, error=error)
    jitter = sum(abs(b - a) for a, b in pairwise(rtts)) / (len(rtts) - 1) if len(rtts) > 1 else None
    avg = sum(rtts) / len(rtts)
    return IcmpResult(echo.target_id, echo.address, sent, len(rtts), min(rtts), avg, max(rtts), jitter)


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"  # ::ffff:0:0/96


def _parse_address(address: str) -> tuple[int, bytes, tuple[str, int]]:
    """(4 or 6, packed, sendto address with the canonical text as recvfrom reports sources);
    family 0 when not an IP literal.

    An IPv4-mapped IPv6 literal (``::ffff:192.0.2.10``, as some exports write IPv4) is the IPv4 host:
    it is pinged over ICMP. Sent as ICMPv6 it never reaches that host (the kernel routes the mapped
    destination like any IPv6 one, e.g. to the IPv6 default gateway, which must drop it), so the
    target would read DOWN while it answers.
    """
    try:
        # inet_pton accepts only the canonical dotted quad for IPv4, so the text needs no round trip.
        return 4, socket.inet_pton(socket.AF_INET, address), (address, 0)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, address)
    except OSError:
        return 0, b"", (address, 0)
    if packed.startswith(_V4_MAPPED):
        return 4, packed[12:], (socket.inet_ntop(socket.AF_INET, packed[12:]), 0)
    return 6, packed, (socket.inet_ntop(socket.AF_INET6, packed), 0)


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{name} {exc.strerror or exc}"


def _ping_group_range() -> str:
    try:
        with open("/proc/sys/net/ipv4/ping_group_range") as f:
            return " ".join(f.read().split())
    except OSError:
        return "unknown"


def setup_message(raw_exc: OSError | None, dgram_exc: OSError | None) -> str:
    """What was tried, why it failed and how to fix it, for the operator reading the startup error."""
    gid = os.getgid()
    python = os.path.realpath(sys.executable)
    tried = []
    fixes = []
    if raw_exc is not None:
        tried.append(f"raw ICMP socket: {_describe(raw_exc)}")
        fixes.append(
            f"give the process CAP_NET_RAW (run as root, `setcap cap_net_raw+ep {python}`, "
            "or AmbientCapabilities=CAP_NET_RAW in its systemd unit)"
        )
    if dgram_exc is not None:
        tried.append(f"datagram ICMP socket: {_describe(dgram_exc)}")
        fixes.append(
            f"allow unprivileged ICMP for group {gid}: `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` "
            f"(now \"{_ping_group_range()}\")"
        )
    return "cannot open an ICMP socket; tried " + "; ".join(tried) + ". Fix: " + ", or ".join(fixes)
