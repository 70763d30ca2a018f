"""Every table profile against the real snmpsim serving recordings: one outcome per ONU / station.

Expected rows are read here straight from the .snmprec files (LibreNMS recordings from
../shared/snmprec, or the recordings built from vendor definitions in tests/fixtures/snmprec), so a
wrong OID, scale, index decoding, key spelling or state/cause mapping in a profile fails the test.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.probes.snmp import SnmpProbe
from monitor.probes.snmp_table import EndpointKey, TableProbe, TableResult, TableRow, outcomes
from tests.servers.common import free_port
from tests.servers.snmpsim import Snmpsim, recording_path, snmpsim
from tests.snmp_helpers import column, target, v2c, v3

pytestmark = pytest.mark.servers
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "snmprec"
HUAWEI = str(FIXTURES / "huawei_ma5800_onts.snmprec")
ZTE = str(FIXTURES / "zte_c320_onus.snmprec")
AIRMAX = str(FIXTURES / "airos_ap_stations.snmprec")
EPMP = str(FIXTURES / "epmp_ap_stations.snmprec")
Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # {(metric, labels): value}
Row = tuple[tuple[tuple[str, str], ...], str, str | None, Metrics]
Expected = dict[str, Row]  # row index → (keys, state, cause, {(metric, labels): value})


def _mac(octets: tuple[int, ...]) -> str:
    return ":".join(f"{o:02x}" for o in octets)


def _dotted(idx: tuple[int, ...]) -> str:
    return ".".join(map(str, idx))


def ufiber() -> Expected:
    base = ".1.3.6.1.4.1.41112.1.5.6.2.1"
    rx, tx = column("edgeosolt", f"{base}.9"), column("edgeosolt", f"{base}.8")
    exp: Expected = {}
    for idx, (_, online) in column("edgeosolt", f"{base}.3").items():
        serial = "".join(map(chr, idx[1:]))
        metrics: Metrics = {(n, ()): int(c[idx][1]) / 100 for n, c in (("onu_rx_dbm", rx), ("onu_tx_dbm", tx))
                   if int(c[idx][1]) != 0}
        keys = (("onu_serial", serial.upper()), ("onu_index", _dotted(idx)))
        exp[_dotted(idx)] = (keys, "online" if online == "1" else "offline", None, metrics)  # no cause column
    return exp


def vsol() -> Expected:
    base = ".1.3.6.1.4.1.37950.1.1.5.12.2.1.8.1"
    tx = column("vsolution_v1600d", f"{base}.6")
    exp: Expected = {}
    for idx, (_, text) in column("vsolution_v1600d", f"{base}.7").items():
        def dbm(t: str) -> float:
            return float(t.split("(")[1].split()[0])  # "0.03 mW (-14.61 dBm)"
        metrics: Metrics = {("onu_rx_dbm", ()): dbm(text), ("onu_tx_dbm", ()): dbm(tx[idx][1])}
        exp[_dotted(idx)] = ((("onu_index", _dotted(idx)),), "online", None, metrics)
    return exp


HUAWEI_CAUSE = {-1: "unknown", 1: "los", 2: "los", 3: "los", 4: "los", 13: "dying_gasp"}


def huawei() -> Expected:
    base = ".1.3.6.1.4.1.2011.6.128.1.1.2"
    sn, cause = column(HUAWEI, f"{base}.43.1.3"), column(HUAWEI, f"{base}.46.1.24")
    rx, tx, dist = (column(HUAWEI, f"{base}.{c}") for c in ("51.1.4", "51.1.3", "46.1.20"))
    exp: Expected = {}
    for idx, (_, status) in column(HUAWEI, f"{base}.46.1.15").items():
        raw = bytes.fromhex(sn[idx][1])
        keys = (("onu_serial", raw[:4].decode() + raw[4:].hex().upper()), ("onu_index", _dotted(idx)))
        metrics: Metrics = {(n, ()): int(c[idx][1]) * s for n, c, s, na in (
            ("onu_rx_dbm", rx, 0.01, 2147483647), ("onu_tx_dbm", tx, 0.01, 2147483647),
            ("onu_distance_m", dist, 1, -1)) if int(c[idx][1]) != na}
        state = "online" if status == "1" else "offline"
        exp[_dotted(idx)] = (keys, state, None if state == "online" else HUAWEI_CAUSE.get(int(cause[idx][1]), "other"),
                             metrics)
    return exp


ZTE_STATE = {1: ("offline", "other"), 2: ("offline", "los"), 3: ("online", None), 4: ("online", None),
             5: ("offline", "dying_gasp"), 6: ("offline", "other"), 7: ("offline", "unknown")}


def zte() -> Expected:
    base = ".1.3.6.1.4.1.3902.1012.3"
    sn, dist = column(ZTE, f"{base}.28.1.1.5"), column(ZTE, f"{base}.11.4.1.2")
    exp: Expected = {}
    for idx, (_, phase) in column(ZTE, f"{base}.28.2.1.4").items():
        raw = bytes.fromhex(sn[idx][1])
        keys = (("onu_serial", raw[:4].decode() + raw[4:].hex().upper()), ("onu_index", _dotted(idx)))
        state, cause = ZTE_STATE[int(phase)]
        exp[_dotted(idx)] = (keys, state, cause, {("onu_distance_m", ()): float(dist[idx][1])})
    return exp


def routeros() -> Expected:
    return {_dotted(idx): ((("station_mac", _mac(idx[:6])),), "online", None,
                           {("wireless_signal_dbm", ()): float(v)})
            for idx, (_, v) in column("routeros", ".1.3.6.1.4.1.14988.1.1.1.2.1.3").items()}


def af_ltu() -> Expected:
    base = ".1.3.6.1.4.1.41112.1.10.1.4.1"
    cols = {c: column("airos-af-ltu", f"{base}.{c}") for c in (3, 4, 5, 6, 9, 23)}
    return {_dotted(idx): ((("station_mac", _mac(idx)),), "online", None, {
        ("wireless_signal_dbm", (("chain", "0"),)): float(cols[5][idx][1]),
        ("wireless_signal_dbm", (("chain", "1"),)): float(cols[6][idx][1]),
        ("wireless_quality_pct", ()): float(cols[9][idx][1]),
        ("wireless_tx_capacity_bps", ()): int(cols[3][idx][1]) * 1000.0,
        ("wireless_rx_capacity_bps", ()): int(cols[4][idx][1]) * 1000.0,
        ("wireless_distance_m", ()): int(cols[23][idx][1]) / 1000,
    }) for idx in cols[5]}


def airmax() -> Expected:
    base = ".1.3.6.1.4.1.41112.1.4.7.1"
    names = {3: "wireless_signal_dbm", 4: "wireless_noise_floor_dbm", 5: "wireless_distance_m",
             6: "wireless_ccq_pct", 11: "wireless_tx_rate_bps", 12: "wireless_rx_rate_bps", 16: "wireless_snr_db"}
    cols = {c: column(AIRMAX, f"{base}.{c}") for c in names}
    return {_dotted(idx): ((("station_mac", _mac(idx[1:])),), "online", None,
                           {(names[c], ()): float(cols[c][idx][1]) for c in names}) for idx in cols[3]}


def pmp() -> Expected:
    base = ".1.3.6.1.4.1.161.19.3.1.4.1"
    cols = {c: column("pmp_450m", f"{base}.{c}") for c in (35, 87, 88, 84, 74)}
    return {_dotted(idx): ((("station_index", _dotted(idx)),), "online", None, {
        ("wireless_signal_dbm", ()): float(cols[35][idx][1]),
        ("wireless_signal_dbm", (("chain", "h"),)): float(cols[87][idx][1]),
        ("wireless_signal_dbm", (("chain", "v"),)): float(cols[88][idx][1]),
        ("wireless_snr_db", (("chain", "h"),)): float(cols[84][idx][1]),
        ("wireless_snr_db", (("chain", "v"),)): float(cols[74][idx][1]),
    }) for idx in cols[35]}


def epmp() -> Expected:
    base = ".1.3.6.1.4.1.17713.21.1.2.30.1"
    cols = {c: column(EPMP, f"{base}.{c}") for c in (1, 4, 5, 6, 7)}
    return {_dotted(idx): ((("station_mac", cols[1][idx][1]), ("station_index", _dotted(idx))), "online", None, {
        ("wireless_signal_dbm", (("dir", "up"),)): float(cols[4][idx][1]),
        ("wireless_signal_dbm", (("dir", "down"),)): float(cols[5][idx][1]),
        ("wireless_snr_db", (("dir", "up"),)): float(cols[6][idx][1]),
        ("wireless_snr_db", (("dir", "down"),)): float(cols[7][idx][1]),
    }) for idx in cols[1]}


CASES: dict[str, tuple[str, Callable[[], Expected]]] = {
    "ufiber-olt": ("edgeosolt", ufiber), "vsol-olt": ("vsolution_v1600d", vsol), "huawei-olt": (HUAWEI, huawei),
    "zte-olt": (ZTE, zte), "routeros-wireless": ("routeros", routeros), "af-ltu-stations": ("airos-af-ltu", af_ltu),
    "airos-stations": (AIRMAX, airmax), "cambium-pmp-stations": ("pmp_450m", pmp), "epmp-stations": (EPMP, epmp),
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpsim]:
    with snmpsim(tmp_path_factory.mktemp("snmpsim"), free_port(socket.SOCK_DGRAM), [r for r, _ in CASES.values()]) as s:
        yield s


async def _walk(sim: Snmpsim, profile: str, rec: str, version: str = "2c") -> TableResult:
    community = recording_path(rec).stem
    cred = v2c(community) if version == "2c" else v3()
    snmp = SnmpProbe()
    await snmp.start()
    try:
        return await TableProbe(snmp).poll(
            target(community, "generic", cred, sim.port, context=community if version == "3" else ""), profile, 10.0)
    finally:
        await snmp.close()


def _as_expected(rows: tuple[TableRow, ...]) -> Expected:
    return {r.index: (r.keys, r.state, r.cause, {(m.name, m.labels): m.value for m in r.metrics}) for r in rows}


@pytest.mark.parametrize("profile", sorted(CASES))
async def test_table_rows_equal_recording(sim: Snmpsim, profile: str) -> None:
    rec, expected_of = CASES[profile]
    result = await _walk(sim, profile, rec)
    assert result.ok, result.error
    expected = expected_of()
    assert expected, "the recording has rows for this profile"
    got = _as_expected(result.rows)
    assert set(got) == set(expected)
    for index, (keys, state, cause, metrics) in expected.items():
        g_keys, g_state, g_cause, g_metrics = got[index]
        assert (g_keys, g_state, g_cause) == (keys, state, cause), index
        assert g_metrics == pytest.approx(metrics), index


async def test_table_walk_over_v3(sim: Snmpsim) -> None:
    result = await _walk(sim, "ufiber-olt", "edgeosolt", "3")
    assert result.ok and len(result.rows) == 29


async def test_exact_values_the_recordings_contain(sim: Snmpsim) -> None:
    """Spot checks written out by hand (a second opinion on the generic comparison above)."""
    ufiber = await _walk(sim, "ufiber-olt", "edgeosolt")
    onu = ufiber.lookup()[("onu_serial", "UBNT20731888")]
    assert onu.state == "online" and {m.name: m.value for m in onu.metrics} == pytest.approx(
        {"onu_rx_dbm": -24.81, "onu_tx_dbm": 2.28})
    assert sorted(r.state for r in ufiber.rows).count("offline") == 13  # 16 online, 13 offline ONUs

    huawei = await _walk(sim, "huawei-olt", HUAWEI)
    by_ep = {o.endpoint: o for o in outcomes(huawei, [
        EndpointKey("a", "onu_serial", "HWTC1F14CAAD"), EndpointKey("b", "onu_serial", "48575443a1b2c3d4"),
        EndpointKey("c", "onu_index", "4194304000.2"), EndpointKey("d", "onu_serial", "ZTEGC0FFEE01"),
        EndpointKey("e", "onu_index", "4194304256.1"), EndpointKey("f", "onu_serial", "HWTC00000000")])}
    assert (by_ep["a"].state, by_ep["a"].cause) == ("online", None)
    assert {m.name: m.value for m in by_ep["a"].metrics} == pytest.approx(
        {"onu_rx_dbm": -18.23, "onu_tx_dbm": 2.15, "onu_distance_m": 1234})
    assert (by_ep["b"].state, by_ep["b"].cause) == ("offline", "dying_gasp")
    assert (by_ep["c"].state, by_ep["c"].cause) == ("offline", "los")
    assert {m.name: m.value for m in by_ep["d"].metrics}["onu_rx_dbm"] == pytest.approx(-27.95)
    assert (by_ep["e"].state, by_ep["e"].cause) == ("offline", "other")  # reset ONT(9)
    assert (by_ep["f"].present, by_ep["f"].state, by_ep["f"].cause) == (False, "offline", "unknown")

    mikrotik = (await _walk(sim, "routeros-wireless", "routeros")).lookup()
    assert len(mikrotik) == 11
    station = mikrotik[("station_mac", "00:27:10:32:ed:60")]
    assert [(m.name, m.value) for m in station.metrics] == [("wireless_signal_dbm", -63.0)]

    pmp = (await _walk(sim, "cambium-pmp-stations", "pmp_450m")).lookup()
    assert {(m.name, m.labels): m.value for m in pmp[("station_index", "2")].metrics}[
        ("wireless_signal_dbm", ())] == -62.8


async def test_dead_agent_gives_no_outcomes(sim: Snmpsim) -> None:
    snmp = SnmpProbe()
    await snmp.start()
    try:
        result = await TableProbe(snmp).poll(
            target("x", "generic", v2c("no-such-community"), sim.port, timeout=0.3, retries=0), "ufiber-olt", 2.0)
    finally:
        await snmp.close()
    assert not result.ok and result.error is not None
    assert outcomes(result, [EndpointKey("a", "onu_serial", "UBNT20731888")]) == []


async def test_a_cut_walk_pauses_that_tables_walks_for_an_hour(sim: Snmpsim) -> None:
    """Over ``walk_max_rows`` the walk is cut and failed; the next polls do not walk again until the pause
    ends (an agent whose table never ends costs one bounded walk an hour, not one per poll)."""
    from dataclasses import replace

    from monitor.clock import ManualClock
    from monitor.probes.snmp_table import WALK_PAUSE

    clock = ManualClock(1000.0)
    base = target("edgeosolt", "generic", v2c("edgeosolt"), sim.port)
    assert base.snmp is not None
    small = replace(base, snmp=replace(base.snmp, walk_max_rows=10))  # 29 ONUs x 3 columns = 87 values
    snmp = SnmpProbe()
    await snmp.start()
    try:
        probe = TableProbe(snmp, clock=clock)
        cut = await probe.poll(small, "ufiber-olt", 5.0)
        assert not cut.ok and cut.error is not None and "walk cut" in cut.error
        paused = await probe.poll(base, "ufiber-olt", 5.0)  # even with the bound raised: paused
        assert (paused.ok, paused.error) == (False, "table walks paused after a cut walk")
        clock.advance(WALK_PAUSE)
        again = await probe.poll(base, "ufiber-olt", 5.0)
        assert again.ok and len(again.rows) == 29
    finally:
        await snmp.close()


def _ports_expected(profile: str) -> dict[str, str]:
    """Row index → PON port, read from the recordings by hand (the decoding here is independent of the probe's)."""
    if profile == "ufiber-olt":  # ubntOnuOltPort column
        return {_dotted(idx): v for idx, (_, v) in column("edgeosolt", ".1.3.6.1.4.1.41112.1.5.6.2.1.5").items()}
    if profile == "vsol-olt":  # {PON}.{ONU}
        return {_dotted(idx): str(idx[0]) for idx in column(
            "vsolution_v1600d", ".1.3.6.1.4.1.37950.1.1.5.12.2.1.8.1.7")}
    if profile == "huawei-olt":  # 4194304000 + slot * 8192 + port * 256 (frame 0)
        return {_dotted(idx): f"0/{(idx[0] - 4194304000) // 8192}/{(idx[0] - 4194304000) % 8192 // 256}"
                for idx in column(HUAWEI, ".1.3.6.1.4.1.2011.6.128.1.1.2.46.1.15")}
    # zte-olt: 268501248 = gpon-olt_1/1/1, + 256 per port (all rows are on slot 1 of shelf 1)
    return {_dotted(idx): f"1/1/{(idx[0] - 268501248) // 256 + 1}"
            for idx in column(ZTE, ".1.3.6.1.4.1.3902.1012.3.28.2.1.4")}


@pytest.mark.parametrize("profile", ["huawei-olt", "ufiber-olt", "vsol-olt", "zte-olt"])
async def test_onu_rows_name_their_pon_port(sim: Snmpsim, profile: str) -> None:
    rec, _ = CASES[profile]
    result = await _walk(sim, profile, rec)
    assert result.ok, result.error
    got = {r.index: r.port for r in result.rows}
    expected = _ports_expected(profile)
    assert got == expected
    assert len(set(expected.values())) > (profile != "vsol-olt")  # the V-SOL recording has ONUs on PON 1 only
