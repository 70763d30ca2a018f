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
