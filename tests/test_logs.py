"""Structured log lines: logfmt quoting, JSON, and secrets rendered by source only."""

from __future__ import annotations

import json
import logging

import pytest

from monitor.logs import JsonFormatter, LogfmtFormatter
from monitor.secret import Secret


def record(msg: str, **kv: object) -> logging.LogRecord:
    rec = logging.LogRecord("monitor.test", logging.WARNING, __file__, 1, msg, (), None)
    rec.kv = kv
    return rec


def test_logfmt_quotes_values_with_spaces_and_quotes() -> None:
    line = LogfmtFormatter().format(record("target down", target="ap-1", reason='3 failed "polls"', n=3))
    assert line.split(" ", 1)[1] == (
        'level=warning logger=monitor.test msg="target down" target=ap-1 reason="3 failed \\"polls\\"" n=3'
    )


def test_json_lines_keep_numbers_and_stringify_the_rest() -> None:
    doc = json.loads(JsonFormatter().format(record("x", n=3, ratio=0.5, who=Secret("sup3r", "env:X"))))
    assert doc["n"] == 3 and doc["ratio"] == 0.5 and doc["who"] == "Secret(env:X)"


def test_secrets_never_render_their_value() -> None:
    rec = record("auth failed", community=Secret("sup3rs3cret", "env:SNMP_COMMUNITY"))
    for fmt in (LogfmtFormatter(), JsonFormatter()):
        out = fmt.format(rec)
        assert "sup3rs3cret" not in out and "env:SNMP_COMMUNITY" in out


def test_an_episode_logs_when_failing_starts_and_when_it_ends_not_per_attempt(caplog: pytest.LogCaptureFixture) -> None:
    from monitor.logs import Episode

    caplog.set_level(logging.DEBUG)
    trouble = Episode(logging.getLogger("monitor.test"), "store refuses writes", "store takes writes again")
    for _ in range(5):
        trouble.failed(error="disk full")
    trouble.ok(held=3)
    trouble.ok()
    trouble.failed(error="locked")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "store refuses writes"), ("WARNING", "store takes writes again"), ("ERROR", "store refuses writes")]


def test_an_episode_shared_by_parts_ends_when_every_part_that_failed_succeeded(
        caplog: pytest.LogCaptureFixture) -> None:
    """The delivery workers and timer writing one outbox: one pair of lines for one fault, however the
    parts meet it; a part that never failed ends nothing."""
    from monitor.logs import Episode

    caplog.set_level(logging.DEBUG)
    seen: list[bool] = []
    trouble = Episode(logging.getLogger("monitor.test"), "outbox refuses writes", "outbox takes writes", seen.append)
    trouble.failed("email", error="server gone")
    trouble.failed("timer", error="server gone")
    trouble.ok("timer")
    trouble.ok("mqtt")
    assert trouble.active and seen == [True]
    trouble.ok("email")
    assert not trouble.active and seen == [True, False]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "outbox refuses writes"), ("WARNING", "outbox takes writes")]
