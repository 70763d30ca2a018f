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
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?lang=en", timeout=10) as r:
            return str(r.read().decode())
    except (urllib.error.URLError, OSError):
        return ""


def with_page(cfg: Path, port: int, title: str) -> None:
    base = cfg.read_text().split("\nstatus_page:", 1)[0]
    cfg.write_text(base + f'\nstatus_page: {{listen: "127.0.0.1:{port}", title: "{title}"}}\n')


def page_child(pid: int) -> int | None:
    """The pid of the daemon's status page process, or None while it has none (children come and go)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    for c in children:
        try:
            if b"monitor.web.child" in Path(f"/proc/{c}/cmdline").read_bytes():
                return int(c)
        except OSError:
            continue  # exited between the two reads
    return None


def test_status_page_comes_up_with_the_daemon_moves_on_sighup_and_goes_on_sigterm(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_port())
    first, second = free_port(), free_port()
    with_page(cfg, first, "Uno")
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log)
    try:
        wait_for(lambda: "Service status: Whole network" in page(first), 60, "the page on the first port")
        assert "Municipio Uno" in page(first) and "Cliente Uno" not in page(first)
        with_page(cfg, second, "Dos")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "Dos" in page(second), 60, "the page on the new port after SIGHUP")
        assert page(first) == ""
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
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
        wait_for(lambda: "Municipio Uno" in page(port), 60, "the page")
        assert page_child(proc.pid) is not None
        cfg.write_text(cfg.read_text().replace("Municipio Uno", "Municipio Renombrado"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "Municipio Renombrado" in page(port), 60, "the new name after SIGHUP")
        proc.kill()
        proc.wait(60)
        wait_for(lambda: page(port) == "", 60, "the page process to follow the daemon")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_sighup_while_the_page_process_starts_is_a_reload_not_the_end(tmp_path: Path) -> None:
    """Whoever sees the daemon up (its page's process, its API) may send SIGHUP at once: the handler
    must be in place before anything starts, or SIGHUP's default action kills the daemon (on a loaded
    machine the gap between the page's ``ready`` and the handlers was seconds long)."""
    cfg = write_config(tmp_path, free_port())
    port = free_port()
    with_page(cfg, port, "Uno")
    proc = start_daemon(cfg, tmp_path / "daemon.log")
    try:
        wait_for(lambda: page_child(proc.pid) is not None or proc.poll() is not None, 60, "the page's process")
        cfg.write_text(cfg.read_text().replace("Municipio Uno", "Municipio Renombrado"))
        proc.send_signal(signal.SIGHUP)  # the daemon is still waiting for the page's "ready"
        wait_for(lambda: "Municipio Renombrado" in page(port) or proc.poll() is not None, 60, "the new name")
        assert proc.poll() is None, f"the daemon died of the SIGHUP ({proc.returncode})"
        assert "Municipio Renombrado" in page(port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
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
        wait_for(lambda: "Municipio Uno" in page(port), 60, "the page")
        child = page_child(proc.pid)
        assert child is not None
        os.kill(child, signal.SIGINT)  # the terminal's Ctrl-C reaching the child first: it stays up
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert "Municipio Uno" in page(port)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0
        assert page(port) == ""
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "monitor stopped" in text and "starting it again" not in text
