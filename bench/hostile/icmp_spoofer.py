"""Forged ICMP echo replies on loopback: what a spoofer on the path would send (needs root).

    python bench/hostile/icmp_spoofer.py --pps 200 --sources 127.100.3.233 127.100.3.234 ...

Sends echo replies with a forged IPv4 source (one of ``--sources``, or a random 127.100.x.y) to
127.0.0.1, each with a guessed identifier, sequence and 64-bit token and the probe's own payload
pattern after it (the best a blind attacker can do: the pattern is in the source code). Only ever
127.0.0.0/8 addresses. Runs until killed.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import socket
import struct
import time


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def forged_reply(src: str, rnd: random.Random, payload_size: int = 56) -> bytes:
    pad = bytes((0x41 + i % 26) for i in range(payload_size - 8))
    body = struct.pack("!HHQ", rnd.getrandbits(16), rnd.getrandbits(16), rnd.getrandbits(64)) + pad
    icmp = struct.pack("!BBH", 0, 0, 0) + body
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), rnd.getrandbits(16), 0, 64, socket.IPPROTO_ICMP, 0,
                     socket.inet_aton(src), socket.inet_aton("127.0.0.1"))
    return ip + icmp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pps", type=int, default=200)
    ap.add_argument("--sources", nargs="*", default=[], help="forged sources (else random 127.100.x.y)")
    args = ap.parse_args()
    if not all(ipaddress.IPv4Address(s) in ipaddress.IPv4Network("127.0.0.0/8") for s in args.sources):
        raise SystemExit("loopback only")
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    rnd = random.Random(1)
    per_tick = max(1, args.pps // 100)
    while True:
        for _ in range(per_tick):
            src = rnd.choice(args.sources) if args.sources and rnd.random() < 0.8 else \
                f"127.100.{rnd.randrange(4)}.{rnd.randrange(1, 251)}"
            sock.sendto(forged_reply(src, rnd), ("127.0.0.1", 0))
        time.sleep(0.01)


if __name__ == "__main__":
    main()
