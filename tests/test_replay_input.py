"""``monitor replay`` refuses hostile or careless input lines: exit status 2 with ``FILE:LINE: what is
wrong``, never a traceback and never a silently accepted value (issue 10, "monitor replay")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.cli import main
from monitor.replay_input import UNSET, ReplayError, parse_line, record, record_decoder, timestamp

CONFIG = Path(__file__).resolve().parents[1] / "config" / "sites.yaml"
GOOD = b'{"ts": "2026-11-01T00:00:00Z", "target": "core-arauca", "ok": true}'


def line(**fields: str) -> bytes:
    """A replay line with the given raw JSON values over a good one's."""
    base = {"ts": '"2026-11-01T00:00:01Z"', "target": '"core-arauca"', "ok": "true", **fields}
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in base.items()) + "}").encode()


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes) -> str:
    """Replay ``data``; assert exit status 2, no output file, no traceback; the error message."""
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(data)
    assert main(["replay", "--config", str(CONFIG), "--input", str(inp), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
    return err


@pytest.mark.parametrize(("data", "message"), [
    (line(target='["core-arauca"]'), "in.jsonl:2: target must be a node or endpoint id (a string), got a list"),
    (line(target='{"id": "x"}'), "in.jsonl:2: target must be a node or endpoint id (a string), got an object"),
    (line(target="5"), "in.jsonl:2: target must be a node or endpoint id (a string), got a number"),
    (b"[" * 200_000, "in.jsonl:2: line longer than 4096 bytes"),
    (b"[" * 1_500 + b"]" * 1_500, "in.jsonl:2: not a JSON object: nested too deep"),
    (b'{"ts": ' + b"[" * 2_000 + b"]" * 2_000 + b"}", "in.jsonl:2: not a JSON object: nested too deep"),
    (line(target='"core-X"').replace(b"X", b"\xff"), "in.jsonl:2: not UTF-8 (byte 0xff at column 48)"),
    (line(rtt_ms="NaN"), "in.jsonl:2: rtt_ms must be a finite number from 0 to 3600000, got NaN"),
    (line(rtt_ms="Infinity"), "in.jsonl:2: rtt_ms must be a finite number from 0 to 3600000, got Infinity"),
    (line(rtt_ms="true"), "in.jsonl:2: rtt_ms must be a finite number from 0 to 3600000, got true"),
    (line(rtt_ms="1e300"), "in.jsonl:2: rtt_ms must be a finite number from 0 to 3600000, got 1e+300"),
    (line(rtt_ms="-1"), "in.jsonl:2: rtt_ms must be a finite number from 0 to 3600000, got -1"),
    (line(rtt_ms='"4.2"'), "in.jsonl:2: rtt_ms must be a finite number from 0 to 3600000, got \"4.2\""),
    (line(loss="NaN"), "in.jsonl:2: loss must be a fraction from 0 to 1, got NaN"),
    (line(loss="true"), "in.jsonl:2: loss must be a fraction from 0 to 1, got true"),
    (line(loss="false"), "in.jsonl:2: loss must be a fraction from 0 to 1, got false"),
    (line(ok="false", rtt_ms="NaN"), "in.jsonl:2: rtt_ms must be a finite number from 0 to 3600000, got NaN"),
    (line(ok="false", loss="2"), "in.jsonl:2: loss must be a fraction from 0 to 1, got 2"),
    (line(ok="1"), "in.jsonl:2: ok must be true or false, got 1"),
    # the full check refused a null cause; the fast path took it for no cause
    (line(ok="false", cause="null"), "in.jsonl:2: cause must be one of dying_gasp, los, other, unknown, got null"),
    (line(rtt="5"), "in.jsonl:2: unknown key 'rtt' (expected ts, target, ok, rtt_ms, loss, cause, metrics, poller)"),
    (line(ok="false", Ok="true"),
     "in.jsonl:2: unknown key 'Ok' (expected ts, target, ok, rtt_ms, loss, cause, metrics, poller)"),
    # an ONU's or station's levels (issue 17): on answered polls only, known names, finite and in range
    (line(ok="false", metrics='{"onu_rx_dbm": -28.5}'), "in.jsonl:2: metrics are only for an answered poll (ok true)"),
    (line(metrics="-28.5"), 'in.jsonl:2: metrics must be an object like {"onu_rx_dbm": -28.5}, got a number'),
    (line(metrics='{"rx_dbm": -28.5}'),
     "in.jsonl:2: unknown metric 'rx_dbm' (expected onu_rx_dbm, wireless_signal_dbm, wireless_ccq_pct)"),
    (line(metrics='{"onu_rx_dbm": NaN}'), "in.jsonl:2: metrics.onu_rx_dbm must be a finite number from -100 to 30, "
     "got NaN"),
    (line(metrics='{"onu_rx_dbm": -1e300}'),
     "in.jsonl:2: metrics.onu_rx_dbm must be a finite number from -100 to 30, got -1e+300"),
    (line(metrics='{"wireless_ccq_pct": true}'),
     "in.jsonl:2: metrics.wireless_ccq_pct must be a finite number from 0 to 100, got true"),
    (line(poller="5"), "in.jsonl:2: poller must be a poller id of at most 128 characters (like p-saravena-1), "
                       "got 5"),
    (line(poller='"p saravena"'), "in.jsonl:2: poller must be a poller id of at most 128 characters (like "
                                  "p-saravena-1), got \"p saravena\""),
    (line(poller='"p-nowhere"'), "in.jsonl:2: 'core-arauca' has outcomes with and without a poller (tag every "
                                 "outcome of a target with the poller that saw it, or none)"),
    (line(metrics='{"wireless_signal_dbm": 3}'),
     "in.jsonl:2: metrics.wireless_signal_dbm must be a finite number from -150 to 0, got 3"),
    (line(ts='"9999-12-31T23:00:00-05:00"'),
     "in.jsonl:2: ts '9999-12-31T23:00:00-05:00' is outside 1970-01-01 to 2099-12-31"),
    (line(ts='"2026-11-01T00:00:01' + "0" * 3000 + '"'), "in.jsonl:2: ts '2026-11-01T00:00:0100000"),
    (line(ts="1793491201"), "in.jsonl:2: ts must be an ISO-8601 string like 2026-11-01T03:00:00Z"),
    (b'"just a string"', "in.jsonl:2: expected an object with ts, target and ok"),
])
def test_bad_lines_exit_2_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes,
                                             message: str) -> None:
    assert message in run(tmp_path, capsys, GOOD + b"\n" + data + b"\n" + GOOD.replace(b"00Z", b"02Z") + b"\n")


def test_a_bad_byte_is_reported_on_its_own_line_far_into_the_file(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Decoding is per line, not per 8 KiB chunk, so the line number is the byte's own."""
    good = [GOOD.replace(b"00:00:00Z", f"00:{i // 60:02d}:{i % 60:02d}Z".encode()) for i in range(1000)]
    good[700] = good[700].replace(b"core", b"c\xe9re")
    assert "in.jsonl:701: not UTF-8 (byte 0xe9 at column 44)" in run(tmp_path, capsys, b"\n".join(good) + b"\n")


def test_good_lines_with_every_field_still_replay(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(b"\n".join([GOOD, line(rtt_ms="0", loss="0"), b"  " + line(ok="false", rtt_ms="null", loss="1.0")
                                .replace(b"01Z", b"02Z"), b"", line(rtt_ms="3600000", loss="0.5")
                                .replace(b"01Z", b"03Z")]) + b"\n")
    assert main(["replay", "--config", str(CONFIG), "--input", str(inp), "--output", str(tmp_path / "o")]) == 0


def test_a_null_ts_on_the_first_line_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by Hypothesis: null equalled the loop's "no time yet", skipped the check, and crashed."""
    err = run(tmp_path, capsys, line(ts="null") + b"\n" + GOOD + b"\n")
    assert "in.jsonl:1: ts must be an ISO-8601 string like 2026-11-01T03:00:00Z" in err


def test_an_output_that_cannot_be_written_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(GOOD + b"\n")
    out = tmp_path / "no-such-dir" / "o.jsonl"
    assert main(["replay", "--config", str(CONFIG), "--input", str(inp), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out}: cannot write: No such file or directory" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- the fast decoder

_ODD = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
        | st.sampled_from([-0.0, 2**64, "\ud800", "02026-11-01T00:00:00Z", [], {}, [1]]))
_EDGES: dict[str, list[object]] = {  # each optional field's values at and around the ends of its range
    "rtt_ms": [0, -0.0, 3_600_000, 3_600_001, 3_600_000.0, 3_600_000.0000000005, 3_600_000.5, 1e300, -1e-300, -1,
               2**64],
    "loss": [0, 1, 2, 1.0, 1.0000000000000002, 5e-324, -0.0, -1e-9, -1],
    "cause": ["los", "dying_gasp", "other", "unknown", "LOS", "", None],
    "poller": ["p-1", "p 1", "", "p-1\n", "x" * 128, "x" * 129, None, 5],
    "metrics": [{}, None, {"onu_rx_dbm": -100}, {"onu_rx_dbm": -100.00000000000001}, {"onu_rx_dbm": 30.5},
                {"wireless_ccq_pct": 100}, {"wireless_ccq_pct": -0.0}, {"wireless_signal_dbm": 0.1},
                {"onu_rx_dbm": True}, {"rx": -20}, {"onu_rx_dbm": None}, [], "x"],
}
_TYPICAL = {"rtt_ms": st.integers(0, 10) | st.floats(0, 500), "loss": st.floats(0, 1),
            "cause": st.sampled_from(["los", "other"]), "poller": st.sampled_from(["p-saravena-1", "p-noc"]),
            "metrics": st.fixed_dictionaries({}, optional={
                "onu_rx_dbm": st.integers(-40, 0) | st.floats(-40, 0), "wireless_signal_dbm": st.integers(-95, -40),
                "wireless_ccq_pct": st.floats(0, 100)})}


@st.composite
def _records(draw: st.DrawFn) -> list[tuple[str, object]]:
    """A good record (each optional field half the time, typical or at the edge of its range), then
    sometimes one field made odd, written twice (the last one counts) or an unknown key added."""
    pairs: list[tuple[str, object]] = [
        ("ts", "2026-11-01T00:00:00Z"), ("target", "core-arauca"), ("ok", draw(st.booleans()))]
    for key in ("rtt_ms", "loss", "cause", "metrics", "poller"):
        if draw(st.booleans()):
            pairs.append((key, draw(st.sampled_from(_EDGES[key]) if draw(st.booleans()) else _TYPICAL[key])))
    match draw(st.integers(0, 7)):
        case 0:
            i = draw(st.integers(0, len(pairs) - 1))
            pairs[i] = (pairs[i][0], draw(_ODD))
        case 1:
            key = draw(st.sampled_from(["ts", "target", "ok", *_EDGES]))
            pairs.append((key, draw(_ODD | st.sampled_from(_EDGES.get(key, [True])))))
        case 2:
            pairs.append((draw(st.sampled_from(["rtt", "Ok", "ts "])), 1))
    return draw(st.permutations(pairs))


def _encoded(pairs: list[tuple[str, object]], spacing: str) -> str:
    """A JSON object with these pairs in this order (a key may come twice, as a careless writer does)."""
    return "{" + ",".join(f"{json.dumps(k)}:{spacing}{json.dumps(v)}" for k, v in pairs) + "}"


_LINES = st.builds(_encoded, _records(), st.sampled_from(["", " ", "\t"])) | st.builds(
    lambda s, i, junk: s[:i] + junk + s[i:],
    st.just('{"ts": "2026-11-01T00:00:00Z", "target": "core-arauca", "ok": true, "rtt_ms": 4.2}'),
    st.integers(0, 80), st.text(max_size=3))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(_LINES, st.sampled_from(["", "\n", "\r\n", " \n"]))
def test_whatever_the_fast_decoder_accepts_the_full_check_accepts_with_the_same_values(text: str, end: str) -> None:
    """The replay's fast path (msgspec, types and ranges checked while decoding) never accepts a line
    that :func:`parse_line` refuses, nor reads a value differently (same numbers of the same type: an
    int stays an int, as the standard library decodes it; for a key written twice, the last)."""
    text += end
    try:
        fast = record_decoder()(text)
    except ValueError:
        return  # declined: parse_line decides, as before
    # what the replay loop checks itself on a record the decoder gave: ts parsed, no cause on a good poll
    try:
        timestamp(fast.ts, "in.jsonl", 1)
        loop_refuses = (fast.cause is not UNSET and fast.ok) or (fast.metrics is not None and not fast.ok)
    except ReplayError:
        loop_refuses = True
    if loop_refuses:
        with pytest.raises(ReplayError):
            parse_line(text, "in.jsonl", 1)
        return
    full = parse_line(text, "in.jsonl", 1)  # raises ReplayError if the fast path accepted too much
    want = record(full)
    assert fast == want
    for name in ("rtt_ms", "loss"):
        assert type(getattr(fast, name)) is type(getattr(want, name))
    if fast.metrics is not None and want.metrics is not None:
        for name in ("onu_rx_dbm", "wireless_signal_dbm", "wireless_ccq_pct"):
            assert type(getattr(fast.metrics, name)) is type(getattr(want.metrics, name))


def test_the_fast_decoder_takes_the_usual_lines() -> None:
    """It must not decline the lines every recorder writes (the replay's speed depends on it)."""
    decode = record_decoder()
    for text in (GOOD.decode(), line(rtt_ms="4.2").decode(), line(rtt_ms="4", loss="0.25").decode(),
                 line(ok="false", cause='"los"').decode() + "\n", line(metrics='{"onu_rx_dbm": -28.5}').decode()):
        assert decode(text) == record(parse_line(text, "in.jsonl", 1))
