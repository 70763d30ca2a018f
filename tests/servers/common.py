"""Helpers shared by the server fixtures: free ports, waiting for a condition, process lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
SNMPREC_DIR = SHARED / "snmprec"


#: ports handed out by :func:`free_port` in this process (each once: a server may not be bound yet)
_GIVEN: set[tuple[int, int]] = set()
_LOWEST = 10_000


def _ephemeral_floor() -> int:
    """The lowest port the kernel gives outgoing connections (``ip_local_port_range``)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (TCP by default, ``socket.SOCK_DGRAM`` for UDP), below the
    kernel's range for outgoing connections: a server started on it later, or again after a stop, finds
    it free. A port from that range (``bind`` to 0) could meanwhile be any outgoing connection's, even a
    client's connecting to it while nothing listened (TCP connects to itself when the kernel picks the
    destination as the source): mosquitto, started 20 s after its port was chosen while a poller kept
    trying to reach it, once failed with "Address already in use"."""
    top = _ephemeral_floor()
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(_LOWEST, top) if top > _LOWEST + 1000 else 0
        if (kind, port) in _GIVEN:
            continue
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        _GIVEN.add((kind, port))
        return port
    raise RuntimeError(f"no free port below {top}")


def wait_for(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``condition`` until it is true or fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            if condition():
                return
        except Exception:  # not ready yet is any exception
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


async def until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """The asyncio twin of :func:`wait_for`: poll ``condition`` on the running loop (so the code under
    test keeps running) until it is true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run the README's test command, which installs it")
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


class Process:
    """A server process we started; stopped by its PID (never by name, never by pid file)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@contextlib.contextmanager
def running(process: Process, ready: Callable[[], bool], what: str, timeout: float = 20.0) -> Iterator[Process]:
    """Start ``process``, wait until ``ready()``, yield it and always stop it afterwards."""
    process.start()
    try:
        try:
            wait_for(lambda: process.alive() and ready(), timeout, what)
        except TimeoutError as exc:
            raise RuntimeError(f"{what} did not start:\n{process.log_tail()}") from exc
        yield process
    finally:
        process.stop()
