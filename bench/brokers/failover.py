"""A broker node killed while a poller streams changes: what the core loses, takes twice, and how long
the rest takes (issue 14, docs/install.md "Two brokers").

Three setups on loopback, each a poller (PollerLink, its spool) streaming ``--changes`` changes, one
per message, and a core (CoreFeed) counting what the brokers delivered:

- ``independent``: two unrelated mosquittos, both listed on both sides (the core on both at once);
- ``bridge``: mosquitto A bridged to B (changes/status out, acked in), poller on A, core on B;
- ``nats``: a 3-node nats-server cluster (JetStream, MQTT listener, stream_replicas 3), the core on
  node 2; needs Debian's ``nats-server`` (not among the test packages).

The node the poller is on is killed with SIGKILL once the core has taken a fifth of the stream.

    python -m bench.brokers.failover --setup independent --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from monitor.remote.link import Broker, PollerLink
from monitor.remote.spool import PollerSpool
from monitor.state import StateChange
from tests.servers.common import Process, free_port, require_binary, until, wait_for
from tests.servers.mosquitto import Mosquitto
from tests.test_remote_brokers import POLLERS, ZONE_OF, CountingFeed, down
from tests.test_remote_link import running

BRIDGE = """
connection to-b
address 127.0.0.1:{port}
cleansession false
topic monitor/pollers/+/changes out 1
topic monitor/pollers/+/status out 1
topic monitor/pollers/+/acked in 1
"""
NATS = """
server_name: n{i}
listen: 127.0.0.1:{client}
jetstream {{ store_dir: "{root}/js" }}
cluster {{ name: c1, listen: 127.0.0.1:{cluster}, routes: [{routes}] }}
mqtt {{ listen: 127.0.0.1:{mqtt}, stream_replicas: 3 }}
"""


def answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


class Nodes:
    """The brokers of one setup: ``poller`` and ``core`` lists, ``kill()`` ends the poller's node."""

    def __init__(self, setup: str, tmp: Path) -> None:
        self.mosquittos: list[Mosquitto] = []
        self.nats: list[Process] = []
        if setup == "nats":
            binary = require_binary("nats-server")
            client, cluster, mqtt = ([free_port() for _ in range(3)] for _ in range(3))
            for i in range(3):
                root = tmp / f"n{i}"
                root.mkdir()
                routes = ",".join(f"nats-route://127.0.0.1:{cluster[j]}" for j in range(3) if j != i)
                (root / "nats.conf").write_text(NATS.format(i=i, client=client[i], root=root, cluster=cluster[i],
                                                            routes=routes, mqtt=mqtt[i]))
                self.nats.append(Process([binary, "-c", str(root / "nats.conf")], root / "nats.log"))
                self.nats[-1].start()
            wait_for(lambda: all(answers(port) for port in mqtt), 60, "nats-server's MQTT listeners")
            brokers = [Broker("127.0.0.1", p) for p in mqtt]
            self.poller, self.core = brokers, [brokers[1]]
            return
        for name in ("a", "b"):
            (tmp / name).mkdir()
            self.mosquittos.append(Mosquitto(tmp / name))
        a, b = self.mosquittos
        if setup == "bridge":
            a.config.write_text(a.config.read_text() + BRIDGE.format(port=b.port))
        for m in reversed(self.mosquittos):
            m.start()
        self.poller = [Broker("127.0.0.1", a.port), Broker("127.0.0.1", b.port)]
        self.core = self.poller if setup == "independent" else self.poller[::-1]

    def kill(self) -> None:
        victim = self.nats[0] if self.nats else self.mosquittos[0].process
        assert victim is not None
        victim.stop(signal.SIGKILL)

    def stop(self) -> None:
        for p in self.nats:
            p.stop()
        for m in self.mosquittos:
            m.stop()


async def once(setup: str, tmp: Path, n: int) -> str:
    nodes = Nodes(setup, tmp)
    taken: list[StateChange] = []

    async def on_changes(poller: str, changes: Sequence[StateChange]) -> None:
        taken.extend(changes)

    spool = PollerSpool(tmp / "spool.db", "p-arauca", "arauca")
    link = PollerLink(spool, nodes.poller, heartbeat=0.5, resend_after=1.0)
    feed = CountingFeed(nodes.core, POLLERS, ZONE_OF, on_changes)
    try:
        async with running(link.run(), feed.run()):
            await until(lambda: feed.connected.is_set() and link.connected.is_set(), 60, "both connected")
            for i in range(1, n // 2 + 1):
                spool.add([down(i)])
                link.added()
            await until(lambda: len(taken) >= n // 5, 120, "a fifth through")
            nodes.kill()
            loop = asyncio.get_running_loop()
            killed = loop.time()
            for i in range(n // 2 + 1, n + 1):
                spool.add([down(i)])
                link.added()
            await until(lambda: spool.backlog() == 0, 600, "every change acknowledged")
            seconds = loop.time() - killed
    finally:
        nodes.stop()
        spool.close()
    targets = [c.target for c in taken]
    return (f"setup={setup} changes={n} lost={n - len(set(targets))} twice={len(targets) - len(set(targets))} "
            f"broker_repeats={feed.delivered - n} in_order={targets == [f'cpe-{i}' for i in range(1, n + 1)]} "
            f"drain_s={seconds:.1f}")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--setup", choices=("independent", "bridge", "nats"), default="independent")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--changes", type=int, default=1000, choices=range(10, len(ZONE_OF) + 1), metavar="N")
    args = p.parse_args()
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            print(await once(args.setup, Path(d), args.changes), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
