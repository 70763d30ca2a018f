"""Log context travels as fields, never as ``key=value`` text inside the message.

Why: ``log_format: json`` renders fields as JSON keys; a message that carries ``kind=outage`` as text
loses them there (a log shipper cannot filter on ``kind``), and logfmt's quoting does not protect
values pasted into the message (an SNMP agent's bytes with a space or a quote in them).
"""

from __future__ import annotations

import ast
import json
import logging
import re
from pathlib import Path

import pytest

from monitor.clock import ManualClock
from monitor.correlate.service import CorrelationService
from monitor.logs import JsonFormatter, LogfmtFormatter
from monitor.state import State, StateChange
from tests.correlate_helpers import tree_inventory
from tests.test_correlate_service import SETTINGS, T0

MONITOR = Path(__file__).resolve().parents[1] / "monitor"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def _hand_made_logfmt() -> list[str]:
    """Logging calls whose message text has ``name=%s``/``name={...}`` in it."""
    found = []
    for path in sorted(MONITOR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LEVELS):
                continue
            args = node.args[1:] if node.func.attr == "log" else node.args
            if args and re.search(r"[a-z_]=(%|\{)", ast.unparse(args[0])):
                found.append(f"{path.relative_to(MONITOR.parent)}:{node.lineno}: {ast.unparse(args[0])[:80]}")
    return found


def test_no_logging_call_builds_key_value_text_by_hand() -> None:
    assert _hand_made_logfmt() == []


def test_incident_events_are_logged_with_their_fields_in_json(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The correlation service's line per lifecycle event: in JSON, kind/root/counts are keys."""
    inv = tree_inventory(1, 1, 4, gateway=True)
    clock = ManualClock(T0 - 1)
    svc = CorrelationService(inv, tmp_path / "monitor.db", SETTINGS, clock, poll_every=0)
    try:
        caplog.set_level(logging.INFO, logger="monitor.correlate")
        for tid in ("ap-000-00", *(t for t in inv.targets if t.startswith("cpe-"))):
            clock.set(T0)
            svc.on_state_changes([StateChange(tid, State.UP, State.DOWN, T0, "3 consecutive failed polls")])
        clock.set(T0 + 120)
        svc.tick()
    finally:
        svc.close()
    opened = [r for r in caplog.records if r.getMessage() == "incident opened"]
    assert len(opened) == 1
    doc = json.loads(JsonFormatter().format(opened[0]))
    assert {k: doc[k] for k in ("incident", "kind", "root", "endpoints", "customers")} == {
        "incident": "INC-000001", "kind": "outage", "root": "ap-000-00", "endpoints": 4, "customers": 4}
    line = LogfmtFormatter().format(opened[0])
    assert 'msg="incident opened" incident=INC-000001 kind=outage root=ap-000-00 endpoints=4 customers=4' in line
