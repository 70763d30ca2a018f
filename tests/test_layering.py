"""Import seams that keep packages apart (issue 11): checked in a fresh interpreter, since whatever
this test process imported already would hide an import that a module makes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


def _imported(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60)
    return {m for m in out.stdout.split() if m.startswith("monitor")}


@pytest.mark.parametrize("module", ["monitor.api.config", "monitor.api.links", "monitor.delivery.config"])
def test_settings_that_hold_secrets_do_not_import_the_inventory(module: str) -> None:
    """The inventory holds the API and delivery settings; they hold Secrets. With Secret in the
    inventory's model the two packages imported each other."""
    assert not {m for m in _imported(module) if m.startswith("monitor.inventory")}


MONITOR = Path(__file__).resolve().parents[1] / "monitor"
#: the one module that writes the incident tables, and the one staff interface that drives it
INCIDENT_WRITERS = {"correlate/store.py", "correlate/staff.py"}
_TABLES = r"(incidents|incident_(events|actions|targets)|maintenance(_events)?|correlation_meta)"
_WRITE_SQL = re.compile(rf"\b(INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+{_TABLES}\b", re.IGNORECASE)
_STORE_WRITE = re.compile(r"\bstore\.(add_action|add_window|remove_window)\(")  # IncidentStore's, not Staff's


def _sources() -> list[tuple[str, str]]:
    return [(p.relative_to(MONITOR).as_posix(), p.read_text()) for p in sorted(MONITOR.rglob("*.py"))]


def test_only_the_staff_interface_acts_on_incidents() -> None:
    """Issue 11: staff actions have one owner (monitor.correlate.staff.Staff). Delivery's MQTT and desk
    acks, the API, the board and the config's windows went to the store each their own way."""
    offenders = [
        f"{name}: {m.group(0)}"
        for name, text in _sources() if name not in INCIDENT_WRITERS
        for m in (*_WRITE_SQL.finditer(text), *_STORE_WRITE.finditer(text))
    ]
    assert offenders == []


def test_incident_tables_are_read_only_inside_correlation() -> None:
    """The report read incidents, their events and maintenance windows with its own SQL; now it asks
    monitor.correlate.history, so the tables' SQL lives in one package (a second engine: issue 13)."""
    reads = re.compile(rf"\b(FROM|JOIN)\s+{_TABLES}\b", re.IGNORECASE)
    assert [f"{name}: {m.group(0)}" for name, text in _sources() if not name.startswith("correlate/")
            for m in reads.finditer(text)] == []


def test_the_command_line_module_is_not_a_library() -> None:
    """The API server and the board imported the staff actions from the CLI module."""
    assert [name for name, text in _sources() if "incidents_cli" in text and name != "cli.py"] == []


def test_callers_of_the_staff_interface_do_not_reach_behind_it() -> None:
    """``Staff.store`` is there for the daemon's own services, not for the API, the board or the CLI."""
    callers = ("api/", "web/", "incidents_cli.py")
    assert [f"{name}: {m.group(0)}" for name, text in _sources() if name.startswith(callers)
            for m in re.finditer(r"\b(incidents\(\)|incidents|api)\.store\b", text)] == []
