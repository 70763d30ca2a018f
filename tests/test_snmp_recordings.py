"""Every profile against snmpsim serving the real device recordings, over v2c and v3 authPriv.

The expected values are computed here from the .snmprec files (not from the profiles), so a wrong
OID, scale, map, index decoding or label in a profile fails the test.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor import selfmetrics
from monitor.clock import ManualClock
from monitor.probes.snmp import SnmpProbe
from tests.servers.common import free_port
from tests.servers.snmpsim import Snmpsim, snmpsim
from tests.snmp_helpers import by_key, column, scalar, target, v2c, v3

pytestmark = pytest.mark.servers
Expected = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _mac(suffix: tuple[int, ...]) -> str:
    return ":".join(f"{o:02x}" for o in suffix[:6])


def airos() -> Expected:
    r = "airos_airos8"
    exp: Expected = {
        ("wireless_signal_dbm", ()): float(scalar(r, ".1.3.6.1.4.1.41112.1.4.5.1.5.1")),
        ("wireless_ccq_pct", ()): float(scalar(r, ".1.3.6.1.4.1.41112.1.4.5.1.7.1")),
        ("wireless_noise_floor_dbm", ()): float(scalar(r, ".1.3.6.1.4.1.41112.1.4.5.1.8.1")),
    }
    assert exp[("wireless_signal_dbm", ())] == -70 and exp[("wireless_ccq_pct", ())] == 33  # README's examples
    names = column(r, ".1.3.6.1.2.1.2.2.1.2")  # no ifXTable: ifDescr names the interfaces
    for idx, (_, status) in column(r, ".1.3.6.1.2.1.2.2.1.8").items():
        exp[("if_oper_status", (("ifname", names[idx][1]),))] = 1.0 if status == "1" else 0.0
    return exp


def airfiber() -> Expected:
    r = "airos-af"
    return {
        ("wireless_signal_dbm", (("chain", "0"),)): float(scalar(r, ".1.3.6.1.4.1.41112.1.3.2.1.11.1")),
        ("wireless_signal_dbm", (("chain", "1"),)): float(scalar(r, ".1.3.6.1.4.1.41112.1.3.2.1.14.1")),
        ("wireless_rx_capacity_bps", ()): float(scalar(r, ".1.3.6.1.4.1.41112.1.3.2.1.5.1")),
    }


def af_ltu() -> Expected:
    exp: Expected = {}
    for col, chain in ((5, "0"), (6, "1")):
        for idx, (_, v) in column("airos-af-ltu", f".1.3.6.1.4.1.41112.1.10.1.4.1.{col}").items():
            exp[("wireless_signal_dbm", (("chain", chain), ("peer", _mac(idx))))] = float(v)
    for idx, (_, v) in column("airos-af-ltu", ".1.3.6.1.4.1.41112.1.10.1.4.1.9").items():
        exp[("wireless_quality_pct", (("chain", "0"), ("peer", _mac(idx))))] = float(v)
    return exp


def routeros() -> Expected:
    r = "routeros"
    exp: Expected = {}
    for idx, (_, v) in column(r, ".1.3.6.1.4.1.14988.1.1.1.2.1.3").items():
        exp[("wireless_signal_dbm", (("peer", _mac(idx)), ("port", str(idx[6]))))] = float(v)
    assert len(exp) == 11
    for idx, (_, v) in column(r, ".1.3.6.1.4.1.14988.1.1.1.3.1.10").items():
        exp[("wireless_ccq_pct", (("port", str(idx[0])),))] = float(v)
    for idx, (_, v) in column(r, ".1.3.6.1.4.1.14988.1.1.19.1.1.10").items():
        exp[("optical_rx_dbm", (("port", str(idx[0])),))] = int(v) / 1000
    names = column(r, ".1.3.6.1.2.1.31.1.1.1.1")  # ifXTable ifName
    for idx, (_, status) in column(r, ".1.3.6.1.2.1.2.2.1.8").items():
        exp[("if_oper_status", (("ifname", names[idx][1]),))] = 1.0 if status == "1" else 0.0
    return exp


def cambium() -> Expected:
    return {("wireless_signal_dbm", (("peer", "2"),)): float(scalar("pmp_450m", ".1.3.6.1.4.1.161.19.3.1.4.1.35.2"))}


def mimosa() -> Expected:
    return {
        ("wireless_signal_dbm", (("chain", str(idx[0])),)): int(v) / 10
        for idx, (_, v) in column("mimosa_b5", ".1.3.6.1.4.1.43356.2.1.2.6.1.1.3").items()
    }


def siklu() -> Expected:
    r = "siklu-mhtg_mh-n366"
    peers = column(r, ".1.3.6.1.4.1.31926.35.1.1.3.1.1.2")
    return {
        ("wireless_signal_dbm", (("peer", peers[idx][1]), ("port", str(idx[0])))): float(v)
        for idx, (_, v) in column(r, ".1.3.6.1.4.1.31926.35.1.1.3.1.1.7").items()
    }


def ufiber() -> Expected:
    exp: Expected = {}
    for col, name in ((9, "onu_rx_dbm"), (8, "onu_tx_dbm")):
        for idx, (_, v) in column("edgeosolt", f".1.3.6.1.4.1.41112.1.5.6.2.1.{col}").items():
            serial = "".join(map(chr, idx[1:1 + idx[0]]))
            if int(v) != 0:  # offline ONUs report 0
                exp[(name, (("onu", serial),))] = int(v) / 100
    for idx, (_, v) in column("edgeosolt", ".1.3.6.1.4.1.41112.1.5.6.2.1.3").items():
        exp[("onu_status", (("onu", "".join(map(chr, idx[1:])),),))] = 1.0 if v == "1" else 0.0
    assert -24.81 in exp.values()  # the README's example ONU
    return exp


def huawei() -> Expected:
    exp: Expected = {}
    for idx, (_, v) in column("smartax", ".1.3.6.1.4.1.2011.6.128.1.1.2.23.1.4").items():
        if int(v) != 2147483647:
            exp[("optical_tx_dbm", (("port", str(idx[0])),))] = int(v) / 100
    for idx, (_, v) in column("smartax", ".1.3.6.1.4.1.2011.6.128.1.1.2.21.1.16").items():
        exp[("onu_count", (("port", str(idx[0])),))] = float(v)
    return exp


def zte() -> Expected:
    return {
        ("onu_distance_m", (("onu", str(idx[1])), ("port", str(idx[0])))): float(v)
        for idx, (_, v) in column("zxa10_c320", ".1.3.6.1.4.1.3902.1012.3.11.4.1.2").items()
    }


def vsol() -> Expected:
    r = "vsolution_v1600d"
    names = column(r, ".1.3.6.1.4.1.37950.1.1.5.12.1.25.1.9")
    exp: Expected = {}
    for idx, (_, text) in column(r, ".1.3.6.1.4.1.37950.1.1.5.12.2.1.8.1.7").items():
        dbm = float(text.split("(")[1].split()[0])  # "0.03 mW (-14.61 dBm)"
        exp[("onu_rx_dbm", (("onu", names[idx][1]), ("port", str(idx[0]))))] = dbm
    return exp


CASES: dict[str, tuple[str, Callable[[], Expected]]] = {
    "airos": ("airos_airos8", airos), "airfiber": ("airos-af", airfiber), "af-ltu": ("airos-af-ltu", af_ltu),
    "routeros": ("routeros", routeros), "cambium-pmp": ("pmp_450m", cambium), "mimosa": ("mimosa_b5", mimosa),
    "siklu": ("siklu-mhtg_mh-n366", siklu), "ufiber-olt": ("edgeosolt", ufiber), "huawei-olt": ("smartax", huawei),
    "zte-olt": ("zxa10_c320", zte), "vsol-olt": ("vsolution_v1600d", vsol),
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpsim]:
    with snmpsim(tmp_path_factory.mktemp("snmpsim"), free_port(socket.SOCK_DGRAM), [r for r, _ in CASES.values()]) as s:
        yield s


@pytest.mark.parametrize("version", ["2c", "3"])
@pytest.mark.parametrize("profile", sorted(CASES))
async def test_profile_values_equal_recording(sim: Snmpsim, profile: str, version: str) -> None:
    rec, expected_of = CASES[profile]
    cred = v2c(rec) if version == "2c" else v3()
    probe = SnmpProbe()
    await probe.start()
    try:
        result = await probe.poll(target(rec, profile, cred, sim.port, context=rec if version == "3" else ""), 10.0)
    finally:
        await probe.close()
    assert result.ok, result.error
    assert result.uptime_s is not None and result.uptime_s > 0
    got = by_key(result.metrics)
    expected = expected_of()
    assert expected, "the recording has values for this profile"
    missing = {k for k in expected if k not in got}
    assert not missing, f"not extracted: {sorted(missing)[:5]}"
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != pytest.approx(v)}
    assert not wrong, f"(got, expected): {wrong}"


async def test_wrong_community_is_a_timeout(sim: Snmpsim) -> None:
    probe = SnmpProbe()
    await probe.start()
    try:
        result = await probe.poll(target("x", "airos", v2c("no-such-community"), sim.port, timeout=0.3, retries=0), 2.0)
    finally:
        await probe.close()
    assert not result.ok and result.error is not None and "timeout" in result.error


async def test_user_profile_overrides_builtin_and_extends_it(sim: Snmpsim, tmp_path: Path) -> None:
    (tmp_path / "airos.yaml").write_text(
        "name: airos\nextends: generic\nscalars:\n"
        "  - {name: wireless_signal_dbm, oid: .1.3.6.1.4.1.41112.1.4.5.1.5.1, scale: 2}\n"
    )
    probe = SnmpProbe(profile_dirs=[tmp_path])
    await probe.start()
    try:
        result = await probe.poll(target("u", "airos", v2c("airos_airos8"), sim.port), 5.0)
    finally:
        await probe.close()
    got = by_key(result.metrics)
    assert got[("wireless_signal_dbm", ())] == -140.0
    assert ("wireless_ccq_pct", ()) not in got  # the override replaced the built-in profile
    assert any(name == "if_oper_status" for name, _ in got)


async def test_reboot_detected_when_uptime_goes_back(sim: Snmpsim) -> None:
    """Same target id, then an agent with a smaller sysUpTime (another recording): a reboot."""
    clock = ManualClock()
    probe = SnmpProbe(clock=clock)
    await probe.start()
    before = selfmetrics.SNMP_REBOOTS._value.get()
    try:
        first = await probe.poll(target("rb", "generic", v2c("airos_airos8"), sim.port), 5.0)
        clock.advance(60.0)
        second = await probe.poll(target("rb", "generic", v2c("airos-af"), sim.port), 5.0)
        clock.advance(60.0)
        third = await probe.poll(target("rb", "generic", v2c("airos-af"), sim.port), 5.0)
    finally:
        await probe.close()
    assert first.ok and second.ok and third.ok
    assert first.uptime_s == int(scalar("airos_airos8", ".1.3.6.1.2.1.1.3.0")) / 100
    assert second.rebooted and not third.rebooted
    assert not any(m.name == "if_in_bps" for m in second.metrics)  # baselines were reset: no bogus rate
    assert any(m.name == "if_in_bps" for m in third.metrics)  # static counters: a rate of 0 again
    assert selfmetrics.SNMP_REBOOTS._value.get() == before + 1
