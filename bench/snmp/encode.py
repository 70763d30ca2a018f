"""Encoding our requests: pyasn1 (how it was done before) against the fast encoder, interleaved.

    .venv/bin/python -m bench.snmp.encode [--rounds 7] [--n 500]

Three requests a poller sends all the time: a v2c GET of bench/snmp/run.py's 20 OIDs, a v2c
GETBULK of 10 table columns (max-repetitions 25, what a walk sends), and the same GET as SNMPv3
authPriv SHA/AES. "pyasn1" builds the PDU with pysnmp's API and encodes the message with pyasn1 and
pysnmp's USM services (the code before this encoder, kept as the tests' oracle); "fast" is
``snmp_v2c.encode_request``/``snmp_usm.encode_request`` with a ``Request``. Each round times both
on the same request (CPU seconds of this process); prints µs per request and the speed-up,
min/median/max over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from pyasn1.codec.ber import encoder
from pyasn1.type import univ
from pysnmp.proto.api import v2c
from pysnmp.proto.secmod.rfc3414.service import SnmpUSMSecurityModel

from bench.snmp.run import OIDS
from monitor.probes import snmp_usm, snmp_v2c
from monitor.probes.snmp_request import GET, GETBULK, Request
from monitor.probes.snmp_usm import PeerEngine
from tests.test_snmp_request import _oracle_message, pysnmp_pdu

USER = snmp_usm.make_user("noc", "SHA", "authpass123", "AES", "privpass123")
PEER = PeerEngine(b"\x80\x00\x1f\x88\x80bench-engine", 3, 100_000, 0.0)
snmp_usm.localize(USER, PEER)
GET_20 = Request(GET, tuple(OIDS))
BULK_10 = Request(GETBULK, tuple((1, 3, 6, 1, 2, 1, 2, 2, 1, c, 5) for c in range(2, 12)), 0, 25)


def pyasn1_v2c(request: Request) -> bytes:
    pdu = pysnmp_pdu(request, 12345)
    msg = v2c.Message()
    v2c.apiMessage.set_defaults(msg)
    v2c.apiMessage.set_community(msg, b"public-test")
    v2c.apiMessage.set_pdu(msg, pdu)
    return bytes(encoder.encode(msg))


def pyasn1_v3(request: Request) -> bytes:
    pdu = pysnmp_pdu(request, 12345)
    etime = PEER.engine_time(0.0)
    scoped = encoder.encode(snmp_usm._scoped(PEER.engine_id, pdu))
    assert USER.priv_id is not None and USER.auth_id is not None
    cipher, salt = SnmpUSMSecurityModel.PRIV_SERVICES[USER.priv_id].encrypt_data(
        PEER.priv_key, (PEER.boots, etime, None), scoped)
    whole = _oracle_message(12345, USER.flags | 4, PEER, USER, etime, b"\x00" * 12, salt.asOctets(), bytes(cipher))
    return bytes(SnmpUSMSecurityModel.AUTH_SERVICES[USER.auth_id].authenticate_outgoing_message(PEER.auth_key, whole))


CASES: dict[str, tuple[Callable[[], bytes], Callable[[], bytes]]] = {
    "v2c GET, 20 OIDs": (lambda: pyasn1_v2c(GET_20), lambda: snmp_v2c.encode_request(12345, b"public-test", GET_20)),
    "v2c GETBULK, 10 columns x 25": (lambda: pyasn1_v2c(BULK_10),
                                     lambda: snmp_v2c.encode_request(12345, b"public-test", BULK_10)),
    "v3 authPriv SHA/AES GET, 20 OIDs": (lambda: pyasn1_v3(GET_20),
                                         lambda: snmp_usm.encode_request(12345, USER, PEER, GET_20, 0.0)),
}


def per_call(fn: Callable[[], bytes], n: int) -> float:
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=500, help="requests per side per round")
    args = ap.parse_args()
    assert univ.OctetString(pyasn1_v2c(GET_20)) == univ.OctetString(CASES["v2c GET, 20 OIDs"][1]())
    for name, (old, new) in CASES.items():
        olds, news, ratios = [], [], []
        for k in range(args.rounds):
            pair = (old, new) if k % 2 == 0 else (new, old)
            a, b = (per_call(fn, args.n) for fn in pair)
            o, f = (a, b) if k % 2 == 0 else (b, a)
            olds.append(o)
            news.append(f)
            ratios.append(o / f)
        print(f"{name}: pyasn1 {1e6 * statistics.median(olds):.0f} µs, fast {1e6 * statistics.median(news):.1f} µs "
              f"(medians); speed-up min/median/max {min(ratios):.1f} / {statistics.median(ratios):.1f} / "
              f"{max(ratios):.1f}x")


if __name__ == "__main__":
    main()
