"""Per-poller broker credentials and topic ACLs (issue 14), on a real mosquitto whose password file and
ACL file the test makes, the ACL printed by ``monitor pollers acl`` from the config: a poller cannot
publish for another poller (a forged change, a forged last will, a forged acknowledgement go nowhere),
cannot read another poller's acknowledgements, still reads its own; and what a poller may publish on
its own topic is still checked by the core (a foreign-zone change is dropped and counted)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aiomqtt
import pytest

from monitor import cli
from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
from monitor.inventory.pollers import BrokerSettings
from monitor.remote.acl import mosquitto_acl
from monitor.remote.link import OFFLINE, Broker, CoreFeed, PollerLink
from monitor.remote.messages import PollerMessage, encode
from monitor.remote.spool import PollerSpool
from monitor.state import State, StateChange
from tests.servers.common import until
from tests.servers.mosquitto import Mosquitto
from tests.test_remote_link import T0, running

PASSWORDS = {"core": "core-pw-1", "p-arauca": "arauca-pw-2", "p-saravena": "saravena-pw-3"}
CONFIG = """
municipalities: [{id: arauca, name: Arauca}, {id: saravena, name: Saravena}]
sites:
  - {id: noc, municipality: arauca, name: NOC}
  - {id: twr-s, municipality: saravena, name: Torre Saravena}
nodes:
  - {id: core, kind: router, address: 127.0.0.1, site: noc}
  - {id: ap-a, kind: ap, address: 127.0.0.2, parent: core, site: noc}
  - {id: ap-s, kind: ap, address: 127.0.0.3, parent: core, site: twr-s}
pollers:
  brokers: [{host: 127.0.0.1, port: 1883, username: core, password: {env: MQTT_CORE_PASSWORD}}]
  zones:
    - {id: arauca, municipalities: [arauca], pollers: [p-arauca]}
    - {id: saravena, municipalities: [saravena], pollers: [p-saravena]}
"""


def change(target: str, reason: str, ts: float = T0) -> StateChange:
    return StateChange(target, State.UP, State.DOWN, ts, reason)


def acl_of(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    cfg = tmp_path / "sites.yaml"
    cfg.write_text(CONFIG)
    assert cli.main(["pollers", "acl", "--config", str(cfg)]) == 0
    return cfg, capsys.readouterr().out


def test_the_acl_names_the_core_and_confines_each_poller(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, acl = acl_of(tmp_path, capsys)
    blocks = {b.splitlines()[0]: b.splitlines()[1:] for b in acl.split("\nuser ")[1:]}
    assert blocks["core"] == ["topic read monitor/pollers/+/changes", "topic read monitor/pollers/+/status",
                              "topic write monitor/pollers/+/acked", "topic write monitor/pollers/core", "",
                              "# zone arauca"]
    assert blocks["p-arauca"] == ["topic write monitor/pollers/p-arauca/changes",
                                  "topic write monitor/pollers/p-arauca/status",
                                  "topic read monitor/pollers/p-arauca/acked", "topic read monitor/pollers/core", "",
                                  "# zone saravena"]


def test_a_username_that_would_write_another_rule_is_refused(tmp_path: Path) -> None:
    inv = load_inventory(_write(tmp_path, CONFIG), poller=True)
    assert inv.pollers is not None
    sneaky = inv.pollers.__class__(
        (BrokerSettings("127.0.0.1", 1883, "core\ntopic readwrite #"),), inv.pollers.zones, inv.pollers.zone_of)
    with pytest.raises(ConfigError, match="not usable in a mosquitto ACL"):
        mosquitto_acl(sneaky)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sites.yaml"
    path.write_text(text)
    return path


async def test_a_poller_publishes_and_reads_only_its_own_topics(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg, acl = acl_of(tmp_path, capsys)
    inv = load_inventory(cfg, poller=True)
    assert inv.pollers is not None
    mqtt = tmp_path / "mqtt"
    mqtt.mkdir()
    broker = Mosquitto(mqtt, users=PASSWORDS, acl=acl)
    broker.start()
    got: list[tuple[str, StateChange]] = []

    async def on_changes(poller: str, changes: Sequence[StateChange]) -> None:
        got.extend((poller, c) for c in changes)

    def login(user: str) -> Broker:
        return Broker("127.0.0.1", broker.auth_port, user, PASSWORDS[user])

    feed = CoreFeed([login("core")], inv.pollers.poller_zones(), inv.pollers.zone_of, on_changes)
    spool = PollerSpool(tmp_path / "spool.db", "p-saravena", "saravena")
    saravena = PollerLink(spool, [login("p-saravena")], heartbeat=3600.0)  # one heartbeat, on connecting
    try:
        async with running(feed.run(), saravena.run()):
            await until(lambda: feed.connected.is_set() and "p-saravena" in feed.last_seen, 30,
                        "the core subscribed and p-saravena's heartbeat through")
            async with aiomqtt.Client("127.0.0.1", broker.auth_port, username="p-arauca",
                                      password=PASSWORDS["p-arauca"], identifier="p-arauca-rogue") as rogue:
                forged = PollerMessage("changes", "p-saravena", "saravena", 1, T0, (change("ap-s", "forged"),))
                await rogue.publish("monitor/pollers/p-saravena/changes", encode(forged), qos=1)
                await rogue.publish("monitor/pollers/p-saravena/status", OFFLINE, qos=1, retain=True)
                await rogue.publish("monitor/pollers/p-saravena/acked", b"999", qos=1, retain=True)
                await rogue.publish("monitor/pollers/core", b"forged hello", qos=1, retain=True)
                foreign = PollerMessage("changes", "p-arauca", "arauca", 1, T0, (change("ap-s", "not my zone"),))
                await rogue.publish("monitor/pollers/p-arauca/changes", encode(foreign), qos=1)
                good = PollerMessage("changes", "p-arauca", "arauca", 2, T0, (change("ap-a", "mine"),))
                await rogue.publish("monitor/pollers/p-arauca/changes", encode(good), qos=1)
            # the broker forwards one publisher's messages in order: had any forgery passed, it came first
            await until(lambda: len(got) == 1, 30, "p-arauca's own change at the core")
            assert got == [("p-arauca", change("ap-a", "mine"))]
            assert feed.dropped == {"foreign_zone": 1}  # the core's own check, on the poller's own topic
            assert "p-saravena" not in feed.offline  # the forged last will never reached the core
            assert saravena.acked == 0  # nor the forged acknowledgement the poller
            # the core's hello reaches the poller (its ACL lets it read it), a poller's forged one does not
            await until(lambda: saravena.hello is not None, 30, "the core's hello at p-saravena")
            assert saravena.hello is not None and saravena.hello.startswith(b"monitor-core ")
            spool.add([change("ap-s", "real", T0 + 5)])  # p-saravena's own path still works both ways
            saravena.added()
            await until(lambda: spool.backlog() == 0, 30, "p-saravena's change acknowledged by the core")
            assert got[-1] == ("p-saravena", change("ap-s", "real", T0 + 5)) and saravena.acked == 1
            async with aiomqtt.Client("127.0.0.1", broker.auth_port, username="p-arauca",
                                      password=PASSWORDS["p-arauca"], identifier="p-arauca-spy") as spy:
                # one SUBSCRIBE: the broker sends the retained messages filter by filter, in this order
                await spy.subscribe([("monitor/pollers/p-saravena/acked", 1), ("monitor/pollers/p-saravena/status", 1),
                                     ("monitor/pollers/p-arauca/acked", 1)])
                seen = []
                async for message in spy.messages:
                    seen.append((str(message.topic), bytes(message.payload)))
                    if str(message.topic).startswith("monitor/pollers/p-arauca/"):
                        break
            assert seen == [("monitor/pollers/p-arauca/acked", b"0")]  # its own (message 1 was dropped)
    finally:
        broker.stop()
        spool.close()
