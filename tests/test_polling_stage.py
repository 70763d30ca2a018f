"""The polling stage on its own (what a separate poller process runs) and the daemon's probe close.

No root: the probes are scripted (the probe protocol, as ``monitor demo`` uses it); the event store is
the real SQLite one. Waiting is for a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.clock import SystemClock
from monitor.daemon import Daemon
from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Target
from monitor.polling.stage import PollingStage
from monitor.probes.base import IcmpResult, ProbeResult, SnmpResult
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.servers.common import until


def write_config(folder: Path) -> Path:
    path = folder / "sites.yaml"
    path.write_text("""
municipalities: [{id: m1, name: Municipio Uno}]
sites: [{id: s1, municipality: m1, name: Torre Uno}]
service_classes:
  residencial: {response_hours: 24, availability_target: 98.0}
polling: {interval: 0.2, icmp_count: 1, icmp_timeout: 0.1, down_after: 2, up_after: 2}
daemon: {state_dir: var, metrics_listen: ""}
nodes:
  - {id: core, kind: router, address: 127.0.0.1, site: s1}
  - {id: ap-1, kind: ap, address: 127.0.0.2, parent: core}
customers:
  - {id: C1, name: Cliente Uno, service_class: residencial,
     endpoints: [{id: cpe-1, kind: cpe, address: 127.0.0.3, parent: ap-1}]}
""")
    return path


class Scripted:
    """Answers every ping except those of the targets in ``silent``; counts its polls and closes."""

    def __init__(self, kind: str = "icmp", fail_close: bool = False) -> None:
        self.kind = kind
        self.silent: set[str] = set()
        self.polls = 0
        self.closed = False
        self.fail_close = fail_close

    async def start(self) -> None:
        pass

    async def poll(self, target: Target, timeout: float) -> ProbeResult:
        self.polls += 1
        if self.kind == "snmp":
            return SnmpResult(target.id, target.address, True)
        if target.id in self.silent:
            return IcmpResult(target.id, target.address, 1, 0, error="timeout")
        return IcmpResult(target.id, target.address, 1, 1, 1.0, 1.0, 1.0, 0.0)

    async def close(self) -> None:
        self.closed = True
        if self.fail_close:
            raise OSError("socket already gone")


async def test_the_stage_runs_alone_and_hands_confirmed_changes_to_its_sinks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the daemon: targets polled on their slots, transitions confirmed, stored and handed
    to the sinks in order; stopping drains and ends the run in the store."""
    monkeypatch.chdir(tmp_path)
    inv = load_inventory(write_config(tmp_path))
    probe = Scripted()
    stage = PollingStage(SystemClock(), probes=[probe])
    seen: list[StateChange] = []
    stage.sinks.append(seen.append)
    stage.open(inv)
    await stage.start_probes(inv)

    def state(tid: str) -> State:
        return stage.states[tid].state

    try:
        async with asyncio.TaskGroup() as tg:
            scheduler = tg.create_task(stage.schedule(inv, tg.create_task).run())
            heartbeat = tg.create_task(stage.heartbeat())
            await until(lambda: all(state(t) == State.UP for t in ("core", "ap-1", "cpe-1")), 30, "all up")
            probe.silent.add("ap-1")
            await until(lambda: state("ap-1") == State.DOWN, 30, "ap-1 down")
            stage.stop()
            await scheduler
            await stage.drain()
            heartbeat.cancel()
    finally:
        await stage.close()
    assert probe.closed
    assert [(c.target, c.old, c.new) for c in seen if c.target == "ap-1"] == [
        ("ap-1", State.UNKNOWN, State.UP), ("ap-1", State.UP, State.DOWN)]
    assert state("cpe-1") == State.UP and state("core") == State.UP
    store = EventStore(tmp_path / "var" / "monitor.db")
    try:
        assert [(c.old, c.new) for c in store.changes(targets=["ap-1"])] == [
            (State.UNKNOWN, State.UP), (State.UP, State.DOWN)]
    finally:
        store.close()


async def test_a_probe_that_fails_to_close_is_said_once_and_the_others_still_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The daemon stops cleanly, with one warning naming the probe and the error (it was swallowed)."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger="monitor")
    icmp, snmp = Scripted("icmp", fail_close=True), Scripted("snmp")
    daemon = Daemon(write_config(tmp_path), probes=[icmp, snmp])
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.ready.is_set() and icmp.polls >= 3, 30, "polls")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
    said = [r for r in caplog.records if r.getMessage() == "probe not closed cleanly"]
    assert len(said) == 1, said
    assert said[0].levelno == logging.WARNING
    kv = getattr(said[0], "kv", {})
    assert kv["probe"] == "icmp" and "socket already gone" in str(kv["error"]), kv
    assert snmp.closed
    assert caplog.records[-1].getMessage() == "monitor stopped"



#: the core's own stages, listeners and senders: a poller process runs the stage without them
CORE_ONLY = ("monitor.daemon", "monitor.pipeline", "monitor.api", "monitor.web", "monitor.notify", "monitor.desk",
             "monitor.report", "monitor.delivery.service", "monitor.delivery.channels", "monitor.correlate.engine",
             "monitor.correlate.service", "monitor.correlate.staff", "aiohttp", "jinja2", "aiosmtplib", "pysnmp")


def test_the_stage_imports_nothing_of_the_core() -> None:
    """Checked in a fresh interpreter (this one imported the daemon already): the polling stage and
    its probes load without correlation, delivery, the listeners or SNMP (imported when a target has it)."""
    code = "import sys, monitor.polling.stage, monitor.polling.probeset; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=180)
    dragged = [m for m in out.stdout.split() if any(m == c or m.startswith(c + ".") for c in CORE_ONLY)]
    assert not dragged, dragged


def test_a_core_with_no_targets_of_its_own_opens_no_icmp_socket(tmp_path: Path) -> None:
    """Every target a remote poller's: no raw ICMP socket (it would take a copy of every ICMP packet the
    host receives, the core's CPU for nothing: bench/pollers). A reload that brings targets opens it."""
    import dataclasses

    from monitor.polling.probeset import ProbeSet

    inv = load_inventory(write_config(tmp_path))
    probes = ProbeSet(SystemClock())

    async def run() -> None:
        await probes.start(dataclasses.replace(inv, targets={}))
        assert probes.icmp is None
        await probes.start(inv)
        assert probes.icmp is not None
        await probes.close()

    asyncio.run(run())
