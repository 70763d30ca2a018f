"""The systemd units pass ``systemd-analyze verify`` and keep the hardening the service relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "systemd"
VENV_BIN = Path(sys.executable).parent


def installed_copy(unit: Path, folder: Path) -> Path:
    """The unit as installed, but pointing at this checkout's venv so ExecStart= resolves."""
    out = folder / unit.name
    out.write_text(unit.read_text().replace("/opt/isp-monitor/venv/bin", str(VENV_BIN)))
    return out


@pytest.mark.parametrize("unit", sorted(p.name for p in UNITS.glob("*.service")) + sorted(
    p.name for p in UNITS.glob("*.timer")))
def test_systemd_analyze_verify(unit, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: run the README's test command, which installs systemd")
    for u in UNITS.iterdir():
        installed_copy(u, tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == ""


def directives(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_daemon_unit_is_notify_unprivileged_and_hardened():
    d = directives(UNITS / "monitor.service")
    assert d["Type"] == ["notify"] and d["WatchdogSec"] and d["Restart"] == ["on-failure"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["User"] == ["isp-monitor"]
    assert d["AmbientCapabilities"] == ["CAP_NET_RAW"] and d["CapabilityBoundingSet"] == ["CAP_NET_RAW"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes"}.items():
        assert d[key] == [value]
    assert d["StateDirectory"] == ["isp-monitor"] and d["ConfigurationDirectory"] == ["isp-monitor"]
    assert any(v.startswith("snmp-community:") for v in d["LoadCredential"])
