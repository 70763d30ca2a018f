"""The ``isp`` pytest fixture: the emulated ISP, its agents, InfluxDB and the daemon, built once per module.

Building the network, starting seven ``snmpd`` and InfluxDB and waiting for the daemon's first
UP pass takes a few seconds; every scenario then starts from :meth:`IspRun.reset` (all faults
undone, every target UP again, no incident open). Teardown stops the daemon, the agents and the
database by the PIDs we started and deletes every namespace, also when a scenario failed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab.config import CONFIRMATION_WINDOW, write_config
from tests.lab.delivery import Receivers, daemon_delivers, receivers
from tests.lab.observe import Observer
from tests.lab.processes import DaemonProcess, lab_snmpd, started_here
from tests.lab.topology import IspLab, folder_name
from tests.servers.common import require_binary, wait_for
from tests.servers.influxdb import InfluxDB1

TARGETS = 37  # 7 infrastructure nodes + 30 CPEs
LATENCY_REPORT_ENV = "LAB_LATENCY_REPORT"  # a file to append the measured latencies to (JSON lines)


@dataclass
class IspRun:
    lab: IspLab
    daemon: DaemonProcess
    observe: Observer
    folder: Path
    receivers: Receivers | None = None  # None until the daemon delivers (issue 4 wired in)
    latencies: list[dict[str, object]] = field(default_factory=list)

    def all_up(self) -> bool:
        states = self.observe.states()
        return len(states) == TARGETS and all(s == "up" for s in states.values())

    def no_open_incident(self) -> bool:
        return all(r.status != "open" for r in self.observe.incidents())

    def reset(self, timeout: float = 30.0) -> float:
        """Undo every fault and wait for a quiet network; returns the wall time the scenario starts at."""
        self.lab.heal()
        if not self.daemon.alive():
            self.daemon.start()
        try:
            wait_for(lambda: self.all_up() and self.no_open_incident(), timeout, "every target up, no open incident")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\nstates: {self.observe.states()}\n{self.daemon.log_tail()}") from exc
        return time.time()

    def record_latency(self, scenario: str, fault_at: float, opened_at: float, **extra: object) -> None:
        """Fault injected -> incident opened (the engine's timestamp of the event), and -> the test
        saw it in the store (now: the daemon correlates in 1 s batches, the test polls every <=0.2 s)."""
        self.latencies.append({"scenario": scenario, "detect_s": round(opened_at - fault_at, 3),
                               "in_store_s": round(time.time() - fault_at, 3),
                               "confirmation_window_s": CONFIRMATION_WINDOW, **extra})


@pytest.fixture(scope="module")
def isp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IspRun]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, raw ICMP)")
    for tool in ("ip", "nft", "snmpd", "influxd"):
        require_binary(tool)
    folder = tmp_path_factory.mktemp(folder_name())
    with ExitStack() as stack:
        lab, influx, world = lab_world(stack, folder)
        config = write_config(lab, folder, influx.url, world.delivery_yaml(folder) if world else "")
        daemon = DaemonProcess(config, folder / "daemon.log")
        stack.callback(daemon.stop)
        run = IspRun(lab, daemon, Observer(config, folder / "var" / "monitor.db", influx), folder, world)
        daemon.start()
        run.reset(timeout=60)
        yield run
        _report(run)


def lab_folder(tmp_path_factory: pytest.TempPathFactory, *tools: str) -> Path:
    """Skip without root; fail clearly without one of ``tools``; the lab's temp folder, named so a later
    run can tell it stale (:func:`tests.lab.topology.folder_name`)."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, raw ICMP)")
    for tool in ("ip", "nft", "snmpd", "influxd", *tools):
        require_binary(tool)
    return tmp_path_factory.mktemp(folder_name())


def lab_world(stack: ExitStack, folder: Path) -> tuple[IspLab, InfluxDB1, Receivers | None]:
    """The network with its agents, InfluxDB (database ``monitor``) and, once the daemon delivers, the
    receivers; all undone by ``stack``."""
    lab = stack.enter_context(IspLab())
    stack.enter_context(lab_snmpd(lab, folder))
    (folder / "influx").mkdir()
    influx = InfluxDB1(folder / "influx")
    stack.enter_context(started_here(influx))
    influx.create_database("monitor")
    world = stack.enter_context(receivers(folder)) if daemon_delivers() else None
    return lab, influx, world


def _report(run: IspRun) -> None:
    if not run.latencies:
        return
    lines = [json.dumps(x, sort_keys=True) for x in run.latencies]
    print("\nlab detection latency:\n" + "\n".join(lines))
    target = os.environ.get(LATENCY_REPORT_ENV)
    if target:
        with open(target, "a") as out:
            out.write("\n".join(lines) + "\n")
