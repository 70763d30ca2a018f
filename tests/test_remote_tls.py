"""Pollers and the core over TLS (issue 14): ``pollers.brokers`` entries take ``tls`` and ``ca_file``
(relative to the config's folder, port 8883 by default); a poller and the core configured from the
file talk through a real mosquitto's TLS listener whose certificate a throw-away CA signed, and a
core that trusts another CA does not connect (it says why, once)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.inventory.loader import load_inventory
from monitor.remote.core import brokers
from monitor.remote.link import CoreFeed, PollerLink
from monitor.remote.spool import PollerSpool
from monitor.state import State, StateChange
from tests.leaks import connections_to, unclosed
from tests.servers.certs import TestCA
from tests.servers.common import until
from tests.servers.mosquitto import PASSWORD, USER, Mosquitto
from tests.test_remote_link import T0, running

CONFIG = """
municipalities: [{{id: arauca, name: Arauca}}]
sites: [{{id: twr-a, municipality: arauca, name: Torre Arauca}}]
nodes: [{{id: ap-a, kind: ap, address: 127.0.0.2, site: twr-a}}]
pollers:
  brokers: [{broker}]
  zones: [{{id: arauca, municipalities: [arauca], pollers: [p-arauca]}}]
"""


def test_tls_and_a_ca_file_relative_to_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "sites.yaml"
    cfg.write_text(CONFIG.format(broker="{host: mqtt.noc.example, tls: true, ca_file: ca/mqtt.pem}"))
    inv = load_inventory(cfg, {})
    assert inv.pollers is not None
    (b,) = brokers(inv.pollers)
    assert (b.port, b.tls, b.ca_file) == (8883, True, str(tmp_path / "ca/mqtt.pem"))
    cfg.write_text(CONFIG.format(broker="{host: mqtt.noc.example, ca_file: ca/mqtt.pem}"))
    with pytest.raises(ConfigError, match="a CA file needs tls: true"):
        load_inventory(cfg, {})


async def test_a_poller_and_the_core_over_tls(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mqtt = tmp_path / "mqtt"
    mqtt.mkdir()
    broker = Mosquitto(mqtt, tls=True)
    assert broker.ca is not None
    cfg = tmp_path / "sites.yaml"
    cfg.write_text(CONFIG.format(broker=f"{{host: 127.0.0.1, port: {broker.tls_port}, tls: true, "
                                        f"ca_file: mqtt/mqtt-ca.crt, username: {USER}, "
                                        "password: {env: MQTT_PASSWORD}}"))
    inv = load_inventory(cfg, {"MQTT_PASSWORD": PASSWORD})
    assert inv.pollers is not None
    tls_brokers = brokers(inv.pollers)
    assert tls_brokers[0].ca_file == str(broker.ca.cert)
    got: list[StateChange] = []

    async def on_changes(poller: str, changes: Sequence[StateChange]) -> None:
        got.extend(changes)

    change = StateChange("ap-a", State.UP, State.DOWN, T0, "3 consecutive failed polls: timeout")
    spool = PollerSpool(tmp_path / "spool.db", "p-arauca", "arauca")
    link = PollerLink(spool, tls_brokers, heartbeat=0.5, resend_after=1.0)
    feed = CoreFeed(tls_brokers, inv.pollers.poller_zones(), inv.pollers.zone_of, on_changes)
    rogue = TestCA(tmp_path, "rogue-ca")  # a core that trusts another CA
    wary = CoreFeed([dataclasses.replace(tls_brokers[0], ca_file=str(rogue.cert))], inv.pollers.poller_zones(),
                    inv.pollers.zone_of, on_changes, client_id="wary-core")
    broker.start()
    try:
        with caplog.at_level(logging.ERROR, logger="monitor.remote.link"), unclosed() as leaks:
            async with running(link.run(), feed.run(), wary.run()):
                spool.add([change])
                link.added()
                await until(lambda: spool.backlog() == 0, 30, "the change acknowledged over TLS")
                assert got == [change]
                await until(lambda: any("certificate verify failed" in str(getattr(r, "kv", {}).get("error"))
                                        for r in caplog.records), 30, "the wary core's certificate error")
                assert not wary.connected.is_set()
        # the wary core's failed handshakes closed their sockets (paho leaves them to the collector)
        assert leaks == [] and connections_to(broker.tls_port) == 0
    finally:
        broker.stop()
        spool.close()
