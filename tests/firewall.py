"""Make chosen loopback addresses stop answering pings, with an nftables table we own.

The table has a unique name per use and is always deleted, also when the test fails, so no rule
outlives the test. Other loopback addresses keep answering.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import Iterator

_counter = itertools.count()


class IcmpBlock:
    """Drops ICMP echo requests to a set of addresses (IPv4 loopback) while active."""

    def __init__(self) -> None:
        self.table = f"monitor_test_{os.getpid()}_{next(_counter)}"
        self.blocked: set[str] = set()

    def _nft(self, script: str) -> None:
        subprocess.run(["nft", "-f", "-"], input=script.encode(), check=True, capture_output=True)

    def create(self) -> None:
        self._nft(
            f"add table ip {self.table}\n"
            f"add chain ip {self.table} out {{ type filter hook output priority 0; policy accept; }}\n"
            f"add set ip {self.table} blocked {{ type ipv4_addr; }}\n"
            f"add rule ip {self.table} out ip daddr @blocked icmp type echo-request drop\n"
        )

    def block(self, *addresses: str) -> None:
        self._nft("".join(f"add element ip {self.table} blocked {{ {a} }}\n" for a in addresses))
        self.blocked.update(addresses)

    def unblock(self, *addresses: str) -> None:
        self._nft("".join(f"delete element ip {self.table} blocked {{ {a} }}\n" for a in addresses))
        self.blocked.difference_update(addresses)

    def delete(self) -> None:
        subprocess.run(["nft", "delete", "table", "ip", self.table], capture_output=True)


@contextlib.contextmanager
def icmp_block() -> Iterator[IcmpBlock]:
    fw = IcmpBlock()
    fw.create()
    try:
        yield fw
    finally:
        fw.delete()
