"""The daemon end to end on loopback: real pings, real event store, signals, reload, restart.

Targets are loopback addresses; a target "fails" through an nftables rule that drops echo requests
to its address (tests/firewall.py). Waiting is always for a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from monitor.cli import waiting_for
from monitor.daemon import Daemon
from monitor.inventory.model import PollingSettings, SnmpCredentials, SnmpSettings, Target
from monitor.secret import Secret
from tests.firewall import icmp_block, lab_address
from tests.netns import NetnsLab, netns_lab  # noqa: F401 - pytest fixture
from tests.servers.common import free_port, until, wait_for

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[1]

# ap-1 and the CPEs tests block: this process's own addresses (blocks apply host-wide, tests/firewall.py)
AP1, CPE1, CPE2 = lab_address(10), lab_address(11), lab_address(12)
EXTRA_CPE2 = f"      - {{id: cpe-2, kind: cpe, address: {CPE2}, parent: ap-1}}\n"


def write_config(folder: Path, metrics_port: int, extra_endpoints: str = "") -> Path:
    path = folder / "sites.yaml"
    path.write_text(f"""
municipalities: [{{id: m1, name: Municipio Uno}}]
sites: [{{id: s1, municipality: m1, name: Torre Uno, lat: 7.0, lon: -70.7}}]
service_classes:
  residencial: {{response_hours: 24, availability_target: 98.0}}
polling: {{interval: 0.2, icmp_count: 1, icmp_timeout: 0.1, down_after: 2, up_after: 2}}
daemon: {{state_dir: var, metrics_listen: "127.0.0.1:{metrics_port}"}}
nodes:
  - {{id: core, kind: router, address: 127.0.0.1, site: s1}}
  - {{id: ap-1, kind: ap, address: {AP1}, parent: core}}
customers:
  - id: C1
    name: Cliente Uno
    service_class: residencial
    endpoints:
      - {{id: cpe-1, kind: cpe, address: {CPE1}, parent: ap-1}}
{extra_endpoints}""")
    return path


def changes(db: Path) -> list[tuple[str, str, str, str]]:
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return [tuple(r) for r in con.execute("SELECT target, old, new, reason FROM state_changes ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def states(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT target, state FROM target_state"))
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=15) as r:
        body: bytes = r.read()  # urlopen's reply is untyped (Any) in typeshed
        return body.decode()


def metric_value(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_down_confirmed_after_down_after_polls_and_recovery(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port)
    db = tmp_path / "var" / "monitor.db"
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: states(db) == {"core": "up", "ap-1": "up", "cpe-1": "up"}, what="all up")
        with icmp_block() as fw:
            fw.block(CPE1)
            await until(lambda: states(db).get("cpe-1") == "down", what="cpe-1 down")
            assert changes(db)[-1] == ("cpe-1", "up", "down", "2 consecutive failed polls: blocked")
            text = metrics(port)
            assert metric_value(text, 'monitor_targets{state="down"}') == 1
            assert metric_value(text, 'monitor_targets{state="up"}') == 2
        await until(lambda: states(db).get("cpe-1") == "up", what="cpe-1 up again")
        assert changes(db)[-1] == ("cpe-1", "down", "up", "2 consecutive replies")
        # only the transitions: 3 first replies, one down, one up — never one row per failed poll
        assert len(changes(db)) == 5
        assert metric_value(metrics(port), "monitor_polls_total") > 10
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 10)


async def test_netns_host_link_down_confirmed_after_down_after_polls(tmp_path: Path, netns_lab: NetnsLab) -> None:  # noqa: F811
    """A test host in its own network namespace: its link goes down, then comes back."""
    host = netns_lab.add_host()
    extra = f"      - {{id: cpe-ns, kind: cpe, address: {host.address}, parent: ap-1}}\n"
    cfg = write_config(tmp_path, free_port(), extra)
    db = tmp_path / "var" / "monitor.db"
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: states(db).get("cpe-ns") == "up", what="namespace host up")
        polls_before = metric_value(metrics_of(daemon), "monitor_polls_total")
        host.link_down()
        await until(lambda: states(db).get("cpe-ns") == "down", what="namespace host down")
        assert changes(db)[-1][:3] == ("cpe-ns", "up", "down")
        assert changes(db)[-1][3].startswith("2 consecutive failed polls")
        assert metric_value(metrics_of(daemon), "monitor_polls_total") > polls_before
        host.link_up()
        await until(lambda: states(db).get("cpe-ns") == "up", what="namespace host up again")
        assert changes(db)[-1] == ("cpe-ns", "down", "up", "2 consecutive replies")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 10)


def metrics_of(daemon: Daemon) -> str:
    assert daemon.inventory is not None
    return metrics(int(daemon.inventory.daemon.metrics_listen.rsplit(":", 1)[1]))


def start_daemon(cfg: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # the child has its own copy of the descriptor: ours closes now
        return subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(cfg)], stdout=out, stderr=out, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        )


def test_systemd_notify_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    """The daemon talks sd_notify to a real NOTIFY_SOCKET listener, as under Type=notify."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(15)
    proc = start_daemon(write_config(tmp_path, free_port()), tmp_path / "daemon.log",
                        NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="200000")
    try:
        assert sock.recv(4096).startswith(b"READY=1\nSTATUS=polling 3 targets")
        assert [sock.recv(4096) for _ in range(3)] == [b"WATCHDOG=1"] * 3
        proc.send_signal(signal.SIGTERM)
        while (msg := sock.recv(4096)) == b"WATCHDOG=1":
            pass
        assert msg == b"STOPPING=1"
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_process_sighup_reload_sigterm_and_restart_without_spurious_events(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port)
    db = tmp_path / "var" / "monitor.db"
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log)
    try:
        wait_for(lambda: states(db) == {"core": "up", "ap-1": "up", "cpe-1": "up"}, 60, "all up")
        # SIGHUP with a new endpoint: it is polled, the others keep their state (no new rows for them)
        write_config(tmp_path, port, EXTRA_CPE2)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: states(db).get("cpe-2") == "up", 60, "cpe-2 up after reload")
        assert [c[0] for c in changes(db)].count("cpe-1") == 1
        # a broken config on SIGHUP is refused and the daemon keeps running
        cfg.write_text(cfg.read_text() + "\nbogus_key: 1\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "config reload failed" in log.read_text(), 30, "reload error logged")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "monitor stopped" in text
    assert 'msg="first poll pass complete" targets=3 unknown=0 up=3 down=0 degraded=0' in text
    assert 'msg="target up"' not in text  # first contact is logged at debug level only
    before = changes(db)

    # restart: the stored states are resumed, so many polls later there is still no new event
    write_config(tmp_path, port, EXTRA_CPE2)
    proc = start_daemon(cfg, log)
    try:
        wait_for(lambda: metric_value(metrics(port), "monitor_polls_total") >= 5 * 4, 60, "20 polls after restart")
        assert changes(db) == before
        assert metric_value(metrics(port), 'monitor_targets{state="up"}') == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_check_config_cli(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_port())
    ok = subprocess.run([sys.executable, "-m", "monitor", "check-config", str(cfg)], capture_output=True, text=True,
                        cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert "Municipio Uno" in ok.stdout or "m1" in ok.stdout
    cfg.write_text(cfg.read_text().replace("parent: ap-1", "parent: ap-9"))
    bad = subprocess.run([sys.executable, "-m", "monitor", "check-config", str(cfg)], capture_output=True,
                         text=True, cwd=ROOT)
    assert bad.returncode == 2
    assert "ap-9" in bad.stderr and str(cfg) in bad.stderr


def test_probe_says_what_it_waits_for_snmp_too() -> None:
    creds = SnmpCredentials("c", "2c", Secret("x", "env:C"))
    t = Target("ap-1", "ap", "node", "127.0.0.3", snmp=SnmpSettings("airos", creds, timeout=2.0, retries=1),
               polling=PollingSettings(interval=60, icmp_count=3, icmp_timeout=1.0))
    assert waiting_for(t) == ("probing ap-1 (ap): ICMP 3 echo requests to 127.0.0.3, replies awaited up to 1 s; "
                              "SNMP v2c (airos) on port 161, 2 s per request, 1 retry; at most 12 s ...")


def test_probe_cli_prints_the_measurement(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_port())
    r = subprocess.run([sys.executable, "-m", "monitor", "probe", "core", "--config", str(cfg)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    # what it waits for, said before the wait (issue 18: a silent target looked like a hang)
    assert r.stderr.splitlines()[0] == ("probing core (router): ICMP 1 echo request to 127.0.0.1, replies awaited "
                                        "up to 0.1 s; at most 0.16 s ...")
    assert r.stderr.splitlines()[1].startswith("done after ")
    assert r.stdout.splitlines()[0] == "core (router, 127.0.0.1)"
    assert "icmp: 1/1 replies, loss 0%" in r.stdout
    assert r.stdout.rstrip().endswith("verdict: OK")
    with icmp_block() as fw:
        fw.block(CPE1)
        r = subprocess.run([sys.executable, "-m", "monitor", "probe", "cpe-1", "--config", str(cfg)],
                           capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1
    assert "verdict: UNREACHABLE" in r.stdout


async def test_reload_records_the_end_of_removed_targets(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_port(), EXTRA_CPE2)
    db = tmp_path / "var" / "monitor.db"
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: states(db).get("cpe-2") == "up" and states(db).get("cpe-1") == "up", what="all up")
        write_config(tmp_path, free_port())  # cpe-2 is gone
        assert await daemon.reload()
        assert changes(db)[-1] == ("cpe-2", "up", "unknown", "removed from the inventory")
        assert "cpe-2" not in daemon.states
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 10)
