"""The lab with a remote poller and two independent brokers (issue 14, docs/install.md "Two brokers").

The poller lab of ``tests/lab/pollers.py`` (the core polls the NOC's zone, ``monitor poll`` the
Saravena zone), with the broker option the project chose against a single point of failure: two
mosquittos that know nothing of each other, each on a machine of its own hanging off the core
router (:meth:`IspLab.attach_host`, its own namespace and address), both listed in
``pollers.brokers`` on both sides in the same order. The poller uses one at a time and moves on
when it dies; the core listens on both at once. Killing one broker's process (SIGKILL) is a broker
machine's crash; nothing of the other, of the poller or of the core is touched.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from tests.lab.fixtures import lab_folder, lab_world
from tests.lab.pollers import PollerRun, core_and_poller
from tests.lab.processes import started_here
from tests.servers.mosquitto import Mosquitto

BROKER_HOSTS = ("mqtt-1", "mqtt-2")


@dataclass
class BrokersRun:
    poller_run: PollerRun  # the first broker in its ``broker`` (only for the shared helpers' sake)
    brokers: dict[str, Mosquitto]  # "host:port" of the poller's (anonymous) listener -> its broker

    def in_use(self) -> str:
        """The broker the poller is connected to: its log's last ``poller connected`` line."""
        found = re.findall(r'msg="poller connected" broker=(\S+)', self.poller_run.poller.log.read_text())
        assert found, self.poller_run.poller.log_tail()
        return str(found[-1])

    def kill(self, where: str) -> None:
        """SIGKILL one broker (``ip netns exec`` execs it: the PID is mosquitto's own), as a crash would."""
        broker = self.brokers[where]
        assert broker.process is not None and broker.process.proc is not None
        os.kill(broker.process.pid, signal.SIGKILL)
        broker.process.proc.wait(10)


@pytest.fixture(scope="module")
def brokers_isp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokersRun]:
    folder = lab_folder(tmp_path_factory, "mosquitto")
    with ExitStack() as stack:
        lab, influx, world = lab_world(stack, folder)
        brokers: list[Mosquitto] = []
        for name in BROKER_HOSTS:
            host = lab.attach_host(name, "core")
            (folder / name).mkdir()
            broker = Mosquitto(folder / name, host=host.address)
            broker.argv = lab.exec_argv(name, *broker.argv)
            stack.enter_context(started_here(broker))
            brokers.append(broker)
        run, poller = core_and_poller(stack, folder, lab, influx, world, brokers)
        yield BrokersRun(PollerRun(run, poller, brokers[0]), {f"{b.host}:{b.port}": b for b in brokers})
