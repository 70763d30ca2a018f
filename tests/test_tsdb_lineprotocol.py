"""Line-protocol encoding and the schema mapping (pure functions: no server needed)."""

from __future__ import annotations

import math

import pytest

from monitor.inventory.model import Target
from monitor.probes.base import IcmpResult, Metric, SnmpResult
from monitor.tsdb import STATE_CODES, Point, icmp_points, make_point, snmp_points, state_point, to_line_protocol
from monitor.tsdb.lineprotocol import escape_key, escape_measurement, format_value
from monitor.tsdb.point import seconds_to_ns


def lp(point: Point) -> str:
    return to_line_protocol([point]).decode()


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ("two words", "two\\ words"),
        ("a,b", "a\\,b"),
        ("k=v", "k\\=v"),
        ('say "hi"', 'say\\ "hi"'),  # quotes need no escaping outside string fields
        ("Torre Centro, Arauca=1", "Torre\\ Centro\\,\\ Arauca\\=1"),
        ("x\\y", "x\\y"),  # a backslash before an ordinary character is stored verbatim
        ("end\\", "end/"),  # a trailing backslash would escape the separator
        ("a\\,b", "a/\\,b"),  # ...and so would one before an escaped character
        ("line\nbreak\ttab", "line\\ break\\ tab"),
        ("Ferretería ñ", "Ferretería\\ ñ"),
    ],
)
def test_escape_tag_keys_and_values(raw: str, escaped: str) -> None:
    assert escape_key(raw) == escaped


def test_measurement_escapes_commas_and_spaces_but_not_equals() -> None:
    assert escape_measurement("if stats,x=1") == "if\\ stats\\,x=1"


@pytest.mark.parametrize(
    ("value", "text"),
    [(3, "3i"), (-7, "-7i"), (0, "0i"), (3.0, "3.0"), (0.1, "0.1"), (-2.5e-07, "-2.5e-07"), (1e20, "1e+20"),
     (True, "true"), (False, "false"), (2**63, "9.223372036854776e+18"), (2**63 - 1, "9223372036854775807i")],
)
def test_field_values(value: float | int | bool, text: str) -> None:
    assert format_value(value) == text


def test_string_field_values_are_refused() -> None:
    with pytest.raises(TypeError):
        format_value("up")  # type: ignore[arg-type]


def test_whole_line_with_tags_fields_and_timestamp() -> None:
    p = make_point("icmp", {"node": "ap 1", "site": "twr,centro", "empty": "", "none": None},
                   {"rtt": 1.5, "sent": 3, "ok": True, "skip": None}, 1_790_000_000_123_456_000)
    assert lp(p) == "icmp,node=ap\\ 1,site=twr\\,centro rtt=1.5,sent=3i,ok=true 1790000000123456000\n"


def test_tags_are_sorted_and_empty_ones_omitted() -> None:
    p = make_point("m", {"z": "1", "a": "2", "m": ""}, {"v": 1.0}, 1)
    assert p.tags == (("a", "2"), ("z", "1"))


def test_non_finite_fields_are_left_out_and_empty_points_skipped() -> None:
    p = make_point("m", {}, {"a": math.nan, "b": 1.0, "c": math.inf}, 5)
    q = make_point("m", {}, {"a": math.nan}, 6)
    assert to_line_protocol([p, q]) == b"m b=1.0 5\n"
    assert to_line_protocol([q]) == b""


def test_timestamps_are_exact_and_stable() -> None:
    ts = 1_790_000_123.456789
    assert seconds_to_ns(ts) == 1_790_000_123_456_789_000
    assert seconds_to_ns(ts) % 1000 == 0


TARGET = Target(id="cpe-0001", kind="cpe", role="endpoint", address="127.0.1.1", site="twr-centro",
                municipality="arauca", customer="C-0001", service_class="corporativo")
NODE = Target(id="olt-saravena", kind="olt", role="node", address="127.0.0.3", municipality="saravena")


def test_icmp_points_carry_target_tags_and_numbers() -> None:
    result = IcmpResult("cpe-0001", "127.0.1.1", sent=3, received=2, rtt_min_ms=1.0, rtt_avg_ms=2.0,
                        rtt_max_ms=3.0, jitter_ms=0.5)
    [p] = icmp_points(TARGET, result, 1_790_000_000.0)
    assert p.measurement == "icmp"
    assert dict(p.tags) == {"node": "cpe-0001", "kind": "cpe", "role": "endpoint", "site": "twr-centro",
                            "municipality": "arauca", "customer": "C-0001", "service_class": "corporativo"}
    assert dict(p.fields) == {"sent": 3, "received": 2, "ok": 1, "loss_pct": pytest.approx(100 / 3),
                              "rtt_min_ms": 1.0, "rtt_avg_ms": 2.0, "rtt_max_ms": 3.0, "jitter_ms": 0.5}
    assert p.time_ns == 1_790_000_000_000_000_000


def test_icmp_points_of_a_silent_target_leave_rtt_out() -> None:
    [p] = icmp_points(NODE, IcmpResult("olt-saravena", "127.0.0.3", sent=3, received=0, error="timeout"), 1.0)
    assert dict(p.fields) == {"sent": 3, "received": 0, "ok": 0, "loss_pct": 100.0}
    assert "site" not in dict(p.tags) and "customer" not in dict(p.tags)


def test_snmp_points_group_metrics_by_labels() -> None:
    result = SnmpResult("olt-saravena", "127.0.0.3", ok=True, uptime_s=1234.5, duration_s=0.25, metrics=(
        Metric("if_in_bps", 1000.0, (("ifname", "gpon 0/1"),)),
        Metric("if_out_bps", 2000, (("ifname", "gpon 0/1"),)),
        Metric("onu_rx_dbm", -21.5, (("onu", "0/1/5"), ("ifname", "gpon 0/1"))),
        Metric("cpu_pct", 12.0),
    ))
    points = snmp_points(NODE, result, 10.0)
    by_key = {(p.measurement, p.tags): dict(p.fields) for p in points}
    base = (("kind", "olt"), ("municipality", "saravena"), ("node", "olt-saravena"), ("role", "node"))
    assert by_key[("snmp_poll", base)] == {"ok": 1, "rebooted": 0, "uptime_s": 1234.5, "duration_s": 0.25}
    assert by_key[("snmp", tuple(sorted((*base, ("ifname", "gpon 0/1")))))] == {"if_in_bps": 1000.0,
                                                                                 "if_out_bps": 2000.0}
    assert by_key[("snmp", tuple(sorted((*base, ("ifname", "gpon 0/1"), ("onu", "0/1/5")))))] == {
        "onu_rx_dbm": -21.5}
    assert by_key[("snmp", base)] == {"cpu_pct": 12.0}
    assert all(isinstance(v, float) for p in points if p.measurement == "snmp" for _, v in p.fields)


def test_snmp_label_cannot_override_target_tags() -> None:
    result = SnmpResult("olt-saravena", "127.0.0.3", ok=True, metrics=(Metric("x", 1.0, (("node", "evil"),)),))
    snmp = [p for p in snmp_points(NODE, result, 1.0) if p.measurement == "snmp"]
    assert dict(snmp[0].tags)["node"] == "olt-saravena"


@pytest.mark.parametrize(("state", "code", "available"),
                         [("UP", 1, 1), ("DOWN", 0, 0), ("DEGRADED", 2, 1), ("UNKNOWN", -1, None), ("up", 1, 1)])
def test_state_point_is_numeric(state: str, code: int, available: int | None) -> None:
    p = state_point(TARGET, state, 5.0, "3 consecutive failed polls")
    fields = dict(p.fields)
    assert p.measurement == "state"
    assert fields["state"] == code == STATE_CODES[state.upper()]
    assert fields.get("available") == available
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in fields.values())


def test_state_point_rejects_unknown_states() -> None:
    with pytest.raises(ValueError, match="FLAPPING"):
        state_point(TARGET, "FLAPPING", 1.0, "")
