"""Table profiles load strictly, identifiers have one spelling, and hostile rows never raise."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pysnmp.proto import rfc1902

from monitor.errors import ConfigError
from monitor.probes.snmp_table import rows_from_walks
from monitor.probes.table_keys import normalise_key
from monitor.probes.table_profiles import load_table_profiles


def test_builtin_profiles_cite_their_source() -> None:
    profiles = load_table_profiles()
    assert {"ufiber-olt", "vsol-olt", "huawei-olt", "zte-olt", "routeros-wireless", "af-ltu-stations",
            "airos-stations", "cambium-pmp-stations", "epmp-stations"} <= set(profiles)
    for p in profiles.values():
        assert "LibreNMS" in p.source or "MIB" in p.source, p.name


@pytest.mark.parametrize(("kind", "raw", "canonical"), [
    ("onu_serial", "hwtc1f14caad", "HWTC1F14CAAD"),
    ("onu_serial", "485754431F14CAAD", "HWTC1F14CAAD"),
    ("station_mac", "AA-BB-CC-DD-EE-FF", "aa:bb:cc:dd:ee:ff"),
    ("station_mac", "aabb.ccdd.eeff", "aa:bb:cc:dd:ee:ff"),
    ("onu_index", "4194304000.05", "4194304000.5"),
])
def test_identifiers_have_one_spelling(kind: str, raw: str, canonical: str) -> None:
    assert normalise_key(kind, raw) == canonical


@pytest.mark.parametrize(("kind", "raw", "message"), [
    ("station_mac", "aa:bb:cc:dd:ee",
     "station_mac: expected a MAC address like aa:bb:cc:dd:ee:ff, got 'aa:bb:cc:dd:ee'"),
    ("onu_index", "0/1/0:5", "expected a row index of dotted numbers like 4194304000.5, got '0/1/0:5'"),
    ("onu_serial", "HWTC 1234", "onu_serial: expected printable characters without spaces, got 'HWTC 1234'"),
])
def test_bad_identifiers_say_what_is_expected(kind: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        normalise_key(kind, raw)
    assert str(exc.value) == message


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["onu_serial", "onu_index", "station_mac", "station_index"]), st.text(max_size=300))
def test_any_text_is_normalised_or_refused(kind: str, raw: str) -> None:
    try:
        out = normalise_key(kind, raw)
    except ValueError:
        return
    assert 0 < len(out) <= 200 and normalise_key(kind, out) == out


def test_profile_mistakes_name_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "name: bad\ndevice: x\nkind: onu\nsource: x\nindex: [{label: sn, decode: ascii}]\n"
        "keys: {station_mac: {index: sn}, onu_serial: {index: nope}}\n"
        "state: {oid: .1.3.6.1.4.1.1.1, map: {1: up}}\n")
    with pytest.raises(ConfigError) as exc:
        load_table_profiles(tmp_path)
    src = tmp_path / "bad.yaml"
    assert exc.value.problems == [
        f"{src}: keys.station_mac: a onu table identifies endpoints by onu_serial or onu_index",
        f"{src}: keys.onu_serial.index: no index part is labelled 'nope'",
        f"{src}: state.map.1: expected an integer mapped to one of online, offline",
    ]


_VALUES = st.one_of(
    st.integers(-2**31, 2**31 - 1).map(rfc1902.Integer32),
    st.binary(max_size=40).map(rfc1902.OctetString),
    st.integers(0, 2**32 - 1).map(rfc1902.Gauge32),
)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(load_table_profiles())), st.data())
def test_hostile_rows_never_raise(name: str, data: st.DataObject) -> None:
    profile = load_table_profiles()[name]
    walks = {}
    for col in profile.columns():
        suffixes = data.draw(st.lists(st.lists(st.integers(0, 2**32 - 1), max_size=12).map(tuple), max_size=8))
        walks[col] = [(col + s, data.draw(_VALUES)) for s in suffixes]
    rows, _ = rows_from_walks(profile, walks)
    assert all(r.state in ("online", "offline") for r in rows)
    assert all(r.cause in (None, "dying_gasp", "los", "other", "unknown") for r in rows)
