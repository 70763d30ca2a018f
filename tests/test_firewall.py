"""The loopback firewall helper the daemon tests and the end-to-end benchmark cut targets with."""

from __future__ import annotations

import ipaddress
import json

from tests.firewall import icmp_block
from tests.netns import sh
from tests.servers.common import require_root


def _elements(table: str) -> int:
    listing = json.loads(sh("nft", "-j", "list", "set", "ip", table, "blocked").stdout)
    return sum(len(item["set"].get("elem", [])) for item in listing["nftables"] if "set" in item)


def test_a_whole_tower_is_blocked_and_unblocked_in_one_call() -> None:
    """12,000 addresses (a tower with 10,000 CPEs) used to exceed execve's 128 KiB per argument."""
    require_root()
    first = int(ipaddress.IPv4Address("127.230.0.1"))
    addresses = [str(ipaddress.IPv4Address(first + i)) for i in range(12_000)]
    with icmp_block() as fw:
        fw.block(*addresses)
        assert _elements(fw.table) == 12_000
        fw.unblock(*addresses[:11_999])
        assert _elements(fw.table) == 1
