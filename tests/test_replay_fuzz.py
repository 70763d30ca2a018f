"""Hypothesis over the ``monitor replay`` reader: arbitrary lines give incident events or our own
:class:`ReplayError` naming the file and a line, never another exception; and whatever a replay
accepts, the full line check accepts too (nothing odd slips through the fast path). Bounded:
~100-200 examples per property, no deadline."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.correlate.settings import CorrelationSettings
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.replay import replay, settings_for
from monitor.replay_input import ReplayError, parse_line, read_lines

CONFIG = Path(__file__).resolve().parents[1] / "config" / "sites.yaml"
LINE = re.compile(r"in\.jsonl:(\d+): \S")


@cache
def setup() -> tuple[Inventory, CorrelationSettings, list[str]]:
    inv = load_inventory(CONFIG, secrets=False)
    return inv, settings_for(inv), sorted(inv.targets)[:6]


def run(lines: list[str]) -> None:
    """Replay ``lines``: either events, and every line passed the full check, or our error."""
    inv, cfg, _ = setup()
    try:
        list(replay(inv, cfg, lines, source="in.jsonl"))
    except ReplayError as exc:
        m = LINE.match(str(exc))
        assert m is not None and 1 <= int(m.group(1)) <= len(lines), str(exc)
        return
    for n, line in enumerate(lines, 1):
        if line.strip():
            parse_line(line, "in.jsonl", n)  # raises if the replay accepted something it must not


# ---------------------------------------------------------------------------------------------- strategies

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.sampled_from([0, 1, 0.5, 4.2, -0.0, 3_600_000, 3_600_001, 1e300, "", "true"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
base = datetime(2026, 11, 1, tzinfo=UTC)
times = st.integers(0, 7200).map(lambda s: (base + timedelta(seconds=s)).isoformat()) | st.tuples(
    st.datetimes(), st.integers(-1439, 1439)).map(
    lambda p: p[0].replace(tzinfo=timezone(timedelta(minutes=p[1]))).isoformat())


@st.composite
def records(draw: st.DrawFn) -> dict[str, object]:
    """Mostly plausible records with one or two fields gone wrong (the interesting boundary)."""
    _, _, ids = setup()
    rec: dict[str, object] = {"ts": draw(times), "target": draw(st.sampled_from(ids)), "ok": draw(st.booleans())}
    for key, good in (("rtt_ms", st.floats(0, 500)), ("loss", st.floats(0, 1))):
        if draw(st.booleans()):
            rec[key] = draw(good)
    for key in draw(st.lists(st.sampled_from(["ts", "target", "ok", "rtt_ms", "loss", "rtt", "Ok"]), max_size=2)):
        rec[key] = draw(values | times)
    return rec


def dumps(rec: object) -> str:
    return json.dumps(rec)  # NaN and Infinity as a careless writer would; surrogates as \\u escapes


structured = records().map(dumps)
mangled = st.tuples(structured, st.integers(0, 80), st.text(max_size=4)).map(
    lambda t: t[0][: t[1]] + t[2] + t[0][t[1]:])
deep = st.integers(1, 3000).map(lambda n: "[" * n + "]" * n) | st.integers(1, 3000).map(
    lambda n: '{"ts": ' + "{" * n + "}" * n + "}")
lines = structured | mangled | deep | st.text(max_size=60) | st.just("") | st.just("   ")


# ---------------------------------------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(st.lists(lines, min_size=1, max_size=8))
def test_any_lines_give_events_or_our_error(batch: list[str]) -> None:
    run(batch)


@settings(max_examples=200, deadline=None)
@given(st.lists(structured, min_size=1, max_size=12).map(sorted))
def test_plausible_records_give_events_or_our_error(batch: list[str]) -> None:
    """Sorted, so more of them get past the time order and into the state machine and engine."""
    run(batch)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=80) | structured.map(str.encode), min_size=1, max_size=6))
def test_any_bytes_from_a_file_give_events_or_our_error(chunks: list[bytes]) -> None:
    """The CLI's path: bytes read and decoded line by line (bad UTF-8, CR, NUL, no final newline)."""
    data = b"\n".join(chunks)
    try:
        decoded = list(read_lines(io.BytesIO(data), "in.jsonl"))
    except ReplayError as exc:
        assert LINE.match(str(exc)) is not None, str(exc)
        return
    run(decoded)
