"""A reload (SIGHUP) with a hostile or mangled config keeps the running one, on the real daemon process.

Before (issue 10): a 352-byte billion laughs on SIGHUP made the daemon grow ~75 MB/s, stop polling
and ignore SIGTERM; a recursive anchor or a NUL byte killed it with a traceback; ``interval: .nan``
was "reloaded" and broke polling. Now each is refused ("config reload failed"), polling goes on
with the running config, and SIGTERM still stops the daemon cleanly.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.servers.common import free_port, wait_for
from tests.test_config_hostile import LAUGHS
from tests.test_daemon import EXTRA_CPE2, metric_value, metrics, start_daemon, states, write_config

pytestmark = pytest.mark.root

BAD = [
    ("billion laughs", LAUGHS.encode()),
    ("interval: .nan", None),  # written from the good config, see below
    ("icmp_timeout: .nan", None),
    ("recursive anchor", b"nodes: []\nx: &r [*r]\n"),
    ("NUL byte", b"nodes:\n  - a\x00b\n"),
    ("5,000 nested [", b"nodes: " + b"[" * 5000 + b"\n"),
]


def test_bad_reloads_keep_the_running_config_and_polling(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port)
    good = cfg.read_text()
    db = tmp_path / "var" / "monitor.db"
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log)
    try:
        wait_for(lambda: states(db) == {"core": "up", "ap-1": "up", "cpe-1": "up"}, 20, "all up")
        for n, (name, content) in enumerate(BAD, start=1):
            if content is None:  # a number gone wrong in an otherwise good file
                key = name.split(":")[0]
                content = re.sub(rf"{key}: [0-9.]+", name, good, count=1).encode()
                assert content != good.encode()
            cfg.write_bytes(content)
            before = metric_value(metrics(port), "monitor_polls_total")
            proc.send_signal(signal.SIGHUP)

            def refused(n: int = n) -> bool:
                return log.read_text().count("config reload failed") == n

            # still polling the running config: three targets every 0.2 s, all still up
            def polling(b: float = before) -> bool:
                return metric_value(metrics(port), "monitor_polls_total") >= b + 15

            wait_for(refused, 15, f"{name}: reload refused")
            wait_for(polling, 15, f"{name}: polling goes on")
            assert proc.poll() is None
            assert states(db) == {"core": "up", "ap-1": "up", "cpe-1": "up"}
        text = log.read_text()
        assert "Traceback" not in text and "config reloaded" not in text
        for why in ("aliases repeat the anchor", "polling.interval: must be a finite number",
                    "polling.icmp_timeout: must be a finite number", "alias *r is inside its own anchor",
                    "character U+0000 (NUL)", "nested more than 50 levels"):
            assert why in text, why
        # a good config afterwards is taken again
        write_config(tmp_path, port, EXTRA_CPE2)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: states(db).get("cpe-2") == "up", 20, "cpe-2 up after the good reload")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "monitor stopped" in log.read_text()


@contextmanager
def reloading_a_big_file(tmp_path: Path, entries: int) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """A running daemon (sd_notify to a socket of ours) told to reload a config with ``entries`` wrong
    maintenance windows; yields (process, metrics port, log) once it says RELOADING=1, i.e. while the
    file is being parsed. Kills the daemon afterwards if the test left it running."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(15)
    port = free_port()
    cfg = write_config(tmp_path, port)
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log, NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
    try:
        assert sock.recv(4096).startswith(b"READY=1")
        window = "start: '2026-11-01T02:00:00Z', end: '2026-11-01T04:00:00Z', reason: planned work on the tower"
        cfg.write_text(cfg.read_text() + "maintenance:\n" + f"  - {{node: nowhere, {window}}}\n" * entries)
        proc.send_signal(signal.SIGHUP)
        assert sock.recv(4096) == b"RELOADING=1"  # the reload has begun: the file is being read now
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()


def test_polling_goes_on_while_a_big_config_is_read(tmp_path: Path) -> None:
    """A reload parses the file in a worker thread: while a slow file (thousands of entries, here all
    wrong) is read, the event loop keeps polling and answering /metrics. Before, the loop stood still
    for the whole parse (seconds for a large inventory): no poll, no reply, no /metrics."""
    with reloading_a_big_file(tmp_path, 8000) as (proc, port, log):
        first = metric_value(metrics(port), "monitor_polls_total")
        served_during_reload = False
        while "config reload failed" not in log.read_text():
            polls = metric_value(metrics(port), "monitor_polls_total")
            if polls > first and "config reload failed" not in log.read_text():
                served_during_reload = True
        assert served_during_reload
        assert "problems=8000" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_sigterm_during_a_long_reload_stops_at_once(tmp_path: Path) -> None:
    """SIGTERM while a reload is still parsing a huge file: the parse gives up at its next node and the
    daemon exits. Before, stopping waited for the whole parse (here minutes of pure-Python YAML)."""
    with reloading_a_big_file(tmp_path, 60_000) as (proc, port, log):
        first = metric_value(metrics(port), "monitor_polls_total")
        wait_for(lambda: metric_value(metrics(port), "monitor_polls_total") > first, 30, "polling during the reload")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # the parse alone takes minutes
    assert "reading stopped: the daemon is shutting down" in log.read_text()
