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
def test_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: run the README's test command, which installs systemd")
    for u in UNITS.iterdir():
        installed_copy(u, tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # verify also loads the machine's installed units (e.g. request-tracker5.service warns about its
    # Debian dependencies); only what it says about ours matters
    ours = [ln for ln in r.stderr.splitlines() if str(tmp_path) in ln or any(u.name in ln for u in UNITS.iterdir())]
    assert ours == []


def directives(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_daemon_unit_is_notify_unprivileged_and_hardened() -> None:
    d = directives(UNITS / "monitor.service")
    assert d["Type"] == ["notify"] and d["WatchdogSec"] and d["Restart"] == ["on-failure"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["User"] == ["isp-monitor"]
    assert d["AmbientCapabilities"] == ["CAP_NET_RAW"] and d["CapabilityBoundingSet"] == ["CAP_NET_RAW"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes"}.items():
        assert d[key] == [value]
    assert d["StateDirectory"] == ["isp-monitor"] and d["ConfigurationDirectory"] == ["isp-monitor"]
    assert any(v.startswith("snmp-community:") for v in d["LoadCredential"])


def exec_start(unit: Path) -> str:
    """The ExecStart= command line with continuation lines joined and systemd's %% unescaped."""
    text = unit.read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=").replace("%%", "%")


def test_report_unit_command_writes_last_months_reports(tmp_path: Path) -> None:
    """Run the report unit's own command (paths swapped for the test's) on a real store."""
    from monitor.state import State, StateChange
    from monitor.store import EventStore

    cfg = tmp_path / "sites.yaml"
    cfg.write_text(
        "municipalities: [{id: arauca, name: Arauca}]\n"
        "sites: [{id: s1, municipality: arauca, name: Torre}]\n"
        "service_classes: {residencial: {response_hours: 24, availability_target: 98.0}}\n"
        "daemon: {state_dir: var}\n"
        "nodes: [{id: core, kind: router, address: 127.0.0.1, site: s1}]\n"
        "customers: [{id: C1, name: Uno, service_class: residencial,"
        " endpoints: [{id: cpe-1, kind: cpe, address: 127.0.1.1, parent: core}]}]\n"
    )
    store = EventStore(tmp_path / "var" / "monitor.db")
    store.append([StateChange("core", State.UNKNOWN, State.UP, 1_700_000_000.0, "first reply")])
    store.close()
    command = (
        exec_start(UNITS / "monitor-report.service")
        .replace("/opt/isp-monitor/venv/bin", str(VENV_BIN))
        .replace("/etc/isp-monitor/sites.yaml", str(cfg))
    )
    reports = tmp_path / "reports"
    reports.mkdir()
    argv = command.split(" ", 2)
    assert argv[:2] == ["/bin/sh", "-ec"]
    r = subprocess.run(["/bin/sh", "-ec", argv[2].strip("'")], capture_output=True, text=True,
                       env={"REPORT_DIR": str(reports), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    first = subprocess.run(["date", "+%Y-%m-01"], capture_output=True, text=True).stdout.strip()
    month = subprocess.run(["date", "-d", f"{first} -1 month", "+%Y-%m"], capture_output=True, text=True).stdout.strip()
    names = sorted(p.name for p in reports.iterdir())
    assert names == [f"availability-{month}-customers.csv", f"availability-{month}-en.html",
                     f"availability-{month}-es.html"]
    assert "<svg" in (reports / f"availability-{month}-es.html").read_text()


HARDENING = ("User", "Group", "StateDirectory", "StateDirectoryMode", "ConfigurationDirectory",
             "ConfigurationDirectoryMode", "WorkingDirectory", "AmbientCapabilities", "CapabilityBoundingSet",
             "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
             "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
             "ProtectClock", "ProtectHostname", "ProtectProc", "RestrictNamespaces", "RestrictRealtime",
             "RestrictSUIDSGID", "LockPersonality", "RestrictAddressFamilies", "SystemCallArchitectures", "UMask")


def test_poller_unit_is_hardened_as_the_daemon_and_runs_monitor_poll() -> None:
    """The poller role (issue 14) runs with the daemon's sandbox and only CAP_NET_RAW; its command line
    is one ``monitor poll`` accepts, with the zone and poller id from poller.env and its own broker
    password as a credential."""
    from monitor.cli import _parser

    daemon, poller = directives(UNITS / "monitor.service"), directives(UNITS / "monitor-poller.service")
    assert {k: poller.get(k) for k in HARDENING} == {k: daemon.get(k) for k in HARDENING}
    assert poller["Restart"] == ["on-failure"] and poller["EnvironmentFile"][0] == "/etc/isp-monitor/poller.env"
    assert poller["Type"] == ["notify"] and poller["WatchdogSec"]  # monitor poll speaks sd_notify
    assert any(v.startswith("mqtt-password:") for v in poller["LoadCredential"])
    argv = (exec_start(UNITS / "monitor-poller.service").replace("${MONITOR_ZONE}", "saravena")
            .replace("${MONITOR_POLLER}", "p-saravena-1").replace("%d", "/run/credentials/x").split())
    assert argv[0] == "/opt/isp-monitor/venv/bin/monitor"
    args = _parser().parse_args(argv[1:])
    assert (args.zone, args.poller, str(args.mqtt_password_file)) == (
        "saravena", "p-saravena-1", "/run/credentials/x/mqtt-password")
