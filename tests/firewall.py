"""Make chosen loopback addresses stop answering pings, while the test runs.

Built on :func:`tests.netns.nft_table` (a table we own, always deleted): an output-hook rule drops
echo requests to the addresses in a set, and the test adds and removes addresses as it goes.
Other loopback addresses keep answering.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.netns import nft_table, sh

_BODY = """
set blocked { type ipv4_addr; }
chain out { type filter hook output priority 0; policy accept; ip daddr @blocked icmp type echo-request drop; }
"""


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
