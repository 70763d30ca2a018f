"""One poller's first pass over many agents, runnable as a whole process (``bench.snmp.run --whole-process``).

    python -m bench.snmp.firstpass VERSION PORT TARGETS CONCURRENCY [USER AUTH_MASTER_HEX PRIV_MASTER_HEX]

What a user times when they compare us with a script of ``snmpget`` processes: the interpreter
starting, importing the SNMP client, building the transport and doing one GET of the 20 OIDs of
bench/snmp/run.py per target (v3: engine discovery and key localization per agent first), then
exiting. Given the master keys as net-snmp is (``-3m/-3M``), so neither side hashes passphrases.
Imports nothing of the tests or the bench's agents, so the process pays only what a poller pays.
Prints ``ok failed seconds`` (the pass alone, after the imports) on stdout.
"""

from __future__ import annotations

import asyncio
import sys
import time

from monitor.probes.snmp_transport import Endpoint, Session, SnmpTransport
from monitor.probes.snmp_usm import AUTH_PROTOCOLS, PRIV_PROTOCOLS, UsmUser

OIDS = [(1, 3, 6, 1, 2, 1, 1, i, 0) for i in range(1, 8)] + [
    (1, 3, 6, 1, 2, 1, 2, 2, 1, c, 1) for c in (2, 3, 4, 5, 6, 7, 8, 10, 11, 14, 16, 17, 20)
]


def addresses(n: int) -> list[str]:
    """The bench's agent addresses, 127.50.x.y: every target a distinct address."""
    return [f"127.50.{i // 250}.{i % 250 + 1}" for i in range(n)]


def master_user(name: str, auth_master_hex: str, priv_master_hex: str) -> UsmUser:
    """An SHA/AES user from master keys already hashed (what net-snmp's ``-3m/-3M`` take)."""
    from pyasn1.type import univ

    return UsmUser(name.encode(), AUTH_PROTOCOLS["SHA"], PRIV_PROTOCOLS["AES"],
                   univ.OctetString(bytes.fromhex(auth_master_hex)), univ.OctetString(bytes.fromhex(priv_master_hex)))


async def first_pass(addrs: list[str], port: int, community: str | None, user: UsmUser | None,
                     concurrency: int) -> tuple[float, int, int]:
    """(seconds, GETs answered in full, GETs failed) of one GET per address on a fresh transport."""
    transport = SnmpTransport()
    await transport.start()
    sem = asyncio.Semaphore(concurrency)
    ok = fail = 0

    async def one(addr: str) -> None:
        nonlocal ok, fail
        session = Session(transport, Endpoint(addr, port, 2.0, 1), community=community, user=user, cred_key="bench")
        async with sem:
            try:
                vbs = await session.get(OIDS)
                ok += len(vbs) == len(OIDS)
            except Exception:  # any failure counts
                fail += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(a) for a in addrs))
    elapsed = time.perf_counter() - t0
    await transport.close()
    return elapsed, ok, fail


def main(argv: list[str]) -> None:
    version, port, targets, concurrency, *cred = argv
    community, user = (cred[0], None) if version == "2c" else (None, master_user(*cred))
    elapsed, ok, fail = asyncio.run(first_pass(addresses(int(targets)), int(port), community, user, int(concurrency)))
    print(ok, fail, f"{elapsed:.6f}")


if __name__ == "__main__":
    main(sys.argv[1:])
