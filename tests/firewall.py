"""Make chosen loopback addresses stop answering pings, while the test runs.

Built on :func:`tests.netns.nft_table` (a table we own, always deleted): an output-hook rule drops
echo requests to the addresses in a set, and the test adds and removes addresses as it goes.
Other loopback addresses keep answering.

The rule hooks the whole host's output, not only this process's: a test that silences 127.77.0.3
silences it for every test run on the machine at that moment (several developers' suites, a
benchmark), and a daemon of theirs polling that address sees a false DOWN. So the addresses tests
block come from :func:`lab_address`, a block of loopback addresses of this process's own.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator

from tests.netns import nft_table, sh

_BODY = """
set blocked { type ipv4_addr; }
chain out { type filter hook output priority 0; policy accept; ip daddr @blocked icmp type echo-request drop; }
"""


#: Per-process blocks are 127.X.Y.0/22 with X in 140..199: clear of the fixed test addresses
#: (127.0-127.79), the benchmarks' (127.100.x from bench/daemon, 127.200+ from bench/e2e) and 127.230.x.
_FIRST_X, _XS = 140, 60
LAB_SIZE = 1022


def lab_address(i: int, pid: int | None = None) -> str:
    """The ``i``-th (0..1021) loopback address of this test process's own block.

    Two processes share a block only if their pids are equal modulo 3,840.
    """
    if not 0 <= i < LAB_SIZE:
        raise ValueError(f"lab address index {i} outside 0..{LAB_SIZE - 1}")
    slot = (os.getpid() if pid is None else pid) % (_XS * 64)
    base = ipaddress.IPv4Address(f"127.{_FIRST_X + slot // 64}.{slot % 64 * 4}.0")
    return str(base + 1 + i)


class IcmpBlock:
    """Drops ICMP echo requests to a set of IPv4 addresses while active."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.blocked: set[str] = set()

    def block(self, *addresses: str) -> None:
        """All of them in one nftables transaction (they stop answering at the same instant)."""
        self._elements("add", addresses)
        self.blocked.update(addresses)

    def unblock(self, *addresses: str) -> None:
        self._elements("delete", addresses)
        self.blocked.difference_update(addresses)

    def _elements(self, verb: str, addresses: tuple[str, ...]) -> None:
        # through stdin: one argument may not exceed 128 KiB (execve), ~9,000 addresses
        sh("nft", "-f", "-", input=f"{verb} element ip {self.table} blocked {{ {', '.join(addresses)} }}\n")


@contextlib.contextmanager
def icmp_block() -> Iterator[IcmpBlock]:
    with nft_table(_BODY, family="ip") as table:
        yield IcmpBlock(table)
