"""Processes of the lab: ``snmpd`` inside each infrastructure namespace, and the daemon under test.

Each is a :class:`tests.servers.common.Process` (stopped by the PID we started) that also gets
SIGKILL from the kernel when the test process dies (``PR_SET_PDEATHSIG``), so a killed pytest
leaves no agent or daemon behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.lab.topology import IspLab
from tests.netns import LAB_RANGE6
from tests.servers.common import Process, require_binary, wait_for
from tests.servers.restartable import RestartableServer

COMMUNITY = "lab-public"
ROOT = Path(__file__).resolve().parents[2]
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LabProcess(Process):
    """A :class:`Process` that the kernel kills when the test process dies."""

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
                preexec_fn=_die_with_parent,
            )


@contextmanager
def started_here(server: RestartableServer, timeout: float = 60.0) -> Iterator[RestartableServer]:
    """Like ``tests.tsdb_support.started`` (same ``stop()``), but the server dies with the test process."""
    proc = server.process = LabProcess(server.argv, server.root / f"{server.name}.log")
    proc.start()
    try:
        try:
            wait_for(lambda: proc.alive() and server.ready(), timeout, server.name)
        except TimeoutError as exc:
            raise RuntimeError(f"{server.name} did not start:\n{proc.log_tail()}") from exc
        yield server
    finally:
        server.stop()


def snmp_answers(address: str, port: int = 161) -> bool:
    agent = f"udp6:[{address}]:{port}" if ":" in address else f"{address}:{port}"
    out = subprocess.run(
        ["snmpget", "-v2c", "-c", COMMUNITY, "-t", "0.3", "-r", "0", "-On", agent,
         ".1.3.6.1.2.1.1.3.0"], capture_output=True, timeout=5, check=False,
    )
    return out.returncode == 0


@contextmanager
def lab_snmpd(lab: IspLab, tmp: Path) -> Iterator[dict[str, LabProcess]]:
    """One net-snmp agent per infrastructure namespace, on the node's own addresses (both families), port 161."""
    binary = require_binary("snmpd")
    require_binary("snmpget")
    procs: dict[str, LabProcess] = {}
    with ExitStack() as stack:
        for node, router in lab.routers.items():
            folder = tmp / f"snmpd-{node}"
            (folder / "persist").mkdir(parents=True, exist_ok=True)
            conf = folder / "snmpd.conf"
            conf.write_text(f"agentAddress udp:{router.address}:161,udp6:[{router.address6}]:161\n"
                            f"sysName {node}\nrocommunity {COMMUNITY} 198.18.0.0/15\n"
                            f"rocommunity6 {COMMUNITY} {LAB_RANGE6}\n")
            env = {"SNMP_PERSISTENT_DIR": str(folder / "persist"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                   "MIBS": ""}
            proc = LabProcess(lab.exec_argv(node, binary, "-f", "-C", "-c", str(conf), "-m", "", "-I", "-smux",
                                            "-Lo"), folder / "snmpd.log", env)
            proc.start()
            stack.callback(proc.stop)
            procs[node] = proc
        for node, proc in procs.items():
            wait_for(_answering(proc, lab.routers[node].target), 20, f"snmpd in {node}")
        yield procs


def _answering(proc: LabProcess, address: str) -> Callable[[], bool]:
    return lambda: proc.alive() and snmp_answers(address)


class DaemonProcess:
    """``python -m monitor run --config`` as a subprocess; killed hard or stopped by its PID."""

    role: tuple[str, ...] = ("run",)  # the subcommand and its arguments besides --config
    started = 'msg="monitor started"'  # the log line that says it is up
    wrap: tuple[str, ...] = ()  # a command it runs under, e.g. ``ip netns exec NS`` (tests/lab/ha.py)

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: LabProcess | None = None
        self.starts = 0

    def start(self) -> None:
        """Start and wait until it says "monitor started": its store exists and is migrated by then.

        Nobody else may open the store before that: a reader opening a store that is still being
        created would run the migrations concurrently with the daemon.
        """
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = LabProcess([*self.wrap, sys.executable, "-m", "monitor", self.role[0], "--config",
                                   str(self.config), *self.role[1:]], self.log, env)
        self.process.start()
        self.starts += 1
        try:
            wait_for(lambda: self.alive() and self.log.read_text().count(self.started) >= self.starts,
                     30, f"the start of monitor {self.role[0]}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from exc

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no flush, no clean shutdown."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        assert self.process.proc is not None
        self.process.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit status (None if it was not running)."""
        if self.process is None or not self.process.alive():
            return None
        self.process.stop(signal.SIGTERM, timeout=15)
        assert self.process.proc is not None
        return self.process.proc.returncode

    def log_tail(self, n: int = 60) -> str:
        return self.process.log_tail(n) if self.process else ""
