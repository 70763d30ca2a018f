"""``monitor poll`` end to end (issue 14): a real poller process polls only its zone by real ICMP on
loopback and publishes each confirmed change through a real mosquitto to a core (CoreFeed) that
acknowledges it; SIGTERM stops it cleanly. The broker authenticates the poller as itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from monitor.remote.link import Broker, CoreFeed
from monitor.remote.spool import PollerSpool
from monitor.state import State, StateChange
from tests.firewall import icmp_block, lab_address
from tests.servers.common import until
from tests.servers.mosquitto import PASSWORD, USER, Mosquitto
from tests.test_remote_core import unacked
from tests.test_remote_link import stop

pytestmark = [pytest.mark.servers, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="ICMP and nftables need root")]
ROOT = Path(__file__).resolve().parents[1]


def config(tmp: Path, broker: Mosquitto) -> Path:
    a, b, c = lab_address(0), lab_address(1), lab_address(2)
    path = tmp / "sites.yaml"
    path.write_text(f"""
municipalities: [{{id: arauca, name: Arauca}}, {{id: saravena, name: Saravena}}]
sites:
  - {{id: noc, municipality: arauca, name: NOC}}
  - {{id: twr-s, municipality: saravena, name: Torre Saravena}}
service_classes:
  residencial: {{response_hours: 24, availability_target: 98.0}}
polling: {{interval: 0.2, icmp_count: 1, icmp_timeout: 0.1, down_after: 2, up_after: 2}}
daemon: {{state_dir: var}}
nodes:
  - {{id: core, kind: router, address: 127.0.0.1, site: noc}}
  - {{id: ap-s, kind: ap, address: {a}, parent: core, site: twr-s}}
customers:
  - id: C1
    name: Uno
    service_class: residencial
    endpoints: [{{id: cpe-s, kind: cpe, address: {b}, parent: ap-s}}]
  - id: C2
    name: Dos
    service_class: residencial
    endpoints: [{{id: cpe-n, kind: cpe, address: {c}, parent: core}}]
pollers:
  brokers: [{{host: 127.0.0.1, port: {broker.auth_port}}}]
  zones:
    - {{id: noc, municipalities: [arauca]}}
    - {{id: saravena, municipalities: [saravena], pollers: [p-saravena]}}
""")
    return path


async def test_a_poller_polls_its_zone_and_the_core_gets_each_change_once(tmp_path: Path) -> None:
    mqtt = tmp_path / "mqtt"
    mqtt.mkdir()
    broker = Mosquitto(mqtt)
    broker.start()
    cfg = config(tmp_path, broker)
    (tmp_path / "mqtt.pass").write_text(PASSWORD + "\n")
    got: list[StateChange] = []

    async def on_changes(poller: str, changes: Sequence[StateChange]) -> None:
        assert poller == "p-saravena"
        got.extend(changes)

    zone_of = {"core": "noc", "cpe-n": "noc", "ap-s": "saravena", "cpe-s": "saravena"}
    feed = CoreFeed([Broker("127.0.0.1", broker.auth_port, USER, PASSWORD)], {"p-saravena": "saravena"}, zone_of,
                    on_changes)
    core = asyncio.create_task(feed.run())
    log = open(tmp_path / "poller.log", "ab")  # noqa: SIM115 - the child owns it
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # systemd's end of sd_notify (Type=notify unit)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    told: list[bytes] = []

    def heard(line: bytes) -> bool:
        with contextlib.suppress(BlockingIOError):
            while True:
                told.extend(notify.recv(4096).split(b"\n"))
        return line in told

    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "poll", "--config", str(cfg), "--zone", "saravena",
         "--poller", "p-saravena", "--mqtt-user", USER, "--mqtt-password-file", str(tmp_path / "mqtt.pass")],
        stdout=log, stderr=log, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                   "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
                                                   "WATCHDOG_USEC": "1000000"})
    try:
        await until(lambda: heard(b"READY=1") and heard(b"WATCHDOG=1"), 30, "ready and alive, told to systemd")
        with icmp_block() as fw:
            await until(lambda: {c.target for c in got if c.new is State.UP} == {"ap-s", "cpe-s"}, 30,
                        "the zone's targets confirmed up at the core")
            fw.block(lab_address(1), lab_address(2))  # cpe-s (its zone) and cpe-n (the core's own zone)
            t0 = time.time()
            await until(lambda: any(c.target == "cpe-s" and c.new is State.DOWN for c in got), 30, "cpe-s down")
            down = next(c for c in got if c.target == "cpe-s" and c.new is State.DOWN)
            assert t0 < down.ts < time.time()  # confirmed at the poller, at the poller's time
            fw.unblock(lab_address(1))
            await until(lambda: [c.new for c in got if c.target == "cpe-s"][-1] is State.UP, 30, "cpe-s up again")
        assert {c.target for c in got} == {"ap-s", "cpe-s"}  # never the core's own zone
        assert len({(c.target, c.new, c.ts) for c in got}) == len(got)  # each change once
        # the core's last ack is on its way (this loop runs the core): wait for the spool to empty, and
        # for the exit without blocking the loop (proc.wait() would hold up the core's acks)
        await until(lambda: unacked(tmp_path / "var" / "poller-p-saravena.db") == 0, 30, "every change acked")
        proc.send_signal(signal.SIGTERM)
        await until(lambda: proc.poll() is not None, 30, "the poller exits on SIGTERM")
        assert proc.returncode == 0, (tmp_path / "poller.log").read_text()[-2000:]
        assert heard(b"STOPPING=1")
        spool = PollerSpool(tmp_path / "var" / "poller-p-saravena.db", "p-saravena", "saravena")
        assert spool.backlog() == 0 and spool.last_seq() == feed.sequences.through("p-saravena")
        spool.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        notify.close()
        await stop([core])
        broker.stop()
