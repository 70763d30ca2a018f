"""sd_notify against a real NOTIFY_SOCKET listener (a unix datagram socket, like systemd's)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from monitor.sdnotify import Notifier


def listener(tmp_path: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    return sock, path


def test_ready_watchdog_stopping_reach_the_socket(tmp_path: Path) -> None:
    sock, path = listener(tmp_path)
    with sock:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
        assert n.enabled and n.watchdog_interval == 2.0
        n.ready("polling 3 targets")
        n.watchdog()
        n.stopping()
        assert sock.recv(4096) == b"READY=1\nSTATUS=polling 3 targets"
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert sock.recv(4096) == b"STOPPING=1"


def test_watchdog_meant_for_another_pid_is_ignored() -> None:
    n = Notifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval == 0.0


def test_outside_systemd_everything_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    n.ready()  # must not raise
    n.watchdog()


def test_a_vanished_socket_never_raises(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    n.ready()
