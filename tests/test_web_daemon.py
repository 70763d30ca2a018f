"""The status page lives with the daemon: up after start, moved by SIGHUP, gone on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.servers.common import free_port, wait_for
from tests.test_daemon import ROOT, start_daemon, write_config

pytestmark = pytest.mark.root


def page(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?lang=en", timeout=2) as r:
            return str(r.read().decode())
    except (urllib.error.URLError, OSError):
        return ""


def with_page(cfg: Path, port: int, title: str) -> None:
    base = cfg.read_text().split("\nstatus_page:", 1)[0]
    cfg.write_text(base + f'\nstatus_page: {{listen: "127.0.0.1:{port}", title: "{title}"}}\n')


def test_status_page_comes_up_with_the_daemon_moves_on_sighup_and_goes_on_sigterm(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_port())
    first, second = free_port(), free_port()
    with_page(cfg, first, "Uno")
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log)
    try:
        wait_for(lambda: "Service status: Whole network" in page(first), 20, "the page on the first port")
        assert "Municipio Uno" in page(first) and "Cliente Uno" not in page(first)
        with_page(cfg, second, "Dos")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "Dos" in page(second), 20, "the page on the new port after SIGHUP")
        assert page(first) == ""
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert page(second) == ""
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "status page listening" in text and "status page restarted for the reloaded config" in text


def test_the_page_runs_in_its_own_process_reloads_names_and_dies_with_the_daemon(tmp_path: Path) -> None:
    """Its own process (a crowd never shares the polls' event loop); a reload with the same
    ``status_page:`` gives it the new names; a daemon killed with SIGKILL takes it along (stdin EOF)."""
    cfg = write_config(tmp_path, free_port())
    port = free_port()
    with_page(cfg, port, "Uno")
    proc = start_daemon(cfg, tmp_path / "daemon.log")
    try:
        wait_for(lambda: "Municipio Uno" in page(port), 30, "the page")
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        cmdlines = [Path(f"/proc/{c}/cmdline").read_bytes() for c in children]
        assert any(b"monitor.web.child" in c for c in cmdlines)
        cfg.write_text(cfg.read_text().replace("Municipio Uno", "Municipio Renombrado"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "Municipio Renombrado" in page(port), 20, "the new name after SIGHUP")
        proc.kill()
        proc.wait(10)
        wait_for(lambda: page(port) == "", 10, "the page process to follow the daemon")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ctrl_c_to_the_process_group_stops_both_without_a_restart(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the daemon and the page's process together: the daemon stops the
    child itself, so the log has no 'exited; starting it again'."""
    cfg = write_config(tmp_path, free_port())
    port = free_port()
    with_page(cfg, port, "Uno")
    log = tmp_path / "daemon.log"
    with open(log, "ab") as out:  # the child has its own copy of the descriptor: ours closes now
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(cfg)], stdout=out,
                                stderr=out, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                start_new_session=True)
    try:
        wait_for(lambda: "Municipio Uno" in page(port), 30, "the page")
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        child = next(int(c) for c in children if b"monitor.web.child" in Path(f"/proc/{c}/cmdline").read_bytes())
        os.kill(child, signal.SIGINT)  # the terminal's Ctrl-C reaching the child first: it stays up
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert "Municipio Uno" in page(port)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(20) == 0
        assert page(port) == ""
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "monitor stopped" in text and "starting it again" not in text
