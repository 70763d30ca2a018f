"""A remote zone the core cannot see: one technician alert per episode, one recovery (issue 14).

Pure rules first (:func:`monitor.delivery.zones.plan`, times injected), then the whole core against a
real mosquitto and a real SMTP server: a poller that stops heartbeating makes exactly one alert to
the technician on call for its zone, by e-mail and on the technicians' MQTT topic, and no customer
notice, a core restart meanwhile alerts nobody again, and the poller's return makes one recovery on
each."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from collections.abc import Collection
from email.message import EmailMessage
from pathlib import Path

import aiomqtt
import pytest

from monitor.daemon import Daemon
from monitor.delivery import zones
from monitor.delivery.planner import Context, GlobalMemory, Item
from monitor.inventory.model import Inventory
from monitor.inventory.pollers import PollersSettings, Zone
from monitor.remote.link import Broker, PollerLink, cancel_until_done
from monitor.remote.silence import Sight, ZoneNews, ZoneWatch
from monitor.remote.spool import PollerSpool
from tests.delivery_support import T0, load
from tests.servers.common import until
from tests.servers.mosquitto import Mosquitto
from tests.servers.smtp import SmtpServer
from tests.tsdb_support import started


def with_zones(inv: Inventory) -> Inventory:
    """The delivery fixture's network with Tame watched by a remote poller, Arauca by the core."""
    ctx = Context(inv, inv.delivery)  # type: ignore[arg-type]
    zone_of = {t: "tame" if ctx.place(t)["municipality"] == "tame" else "noc" for t in inv.targets}
    return dataclasses.replace(inv, pollers=PollersSettings(
        (), {"noc": Zone("noc"), "tame": Zone("tame", ("p-tame",))}, zone_of))


def sight(blind: dict[str, float] | None = None, seen: Collection[str] = (), configured: Collection[str] = ("tame",)
          ) -> Sight:
    return Sight({z: ZoneNews(z, True, at, at - 60, ("p-tame",)) for z, at in (blind or {}).items()},
                 frozenset(seen), frozenset(configured))


def zone_items(inv: Inventory) -> list[Item]:
    """One alert and one recovery, for the template tests."""
    ctx, glob = Context(with_zones(inv), inv.delivery), GlobalMemory()  # type: ignore[arg-type]
    return zones.plan(sight({"tame": T0}), glob, ctx, T0) + zones.plan(sight(seen={"tame"}), glob, ctx, T0 + 900)


def test_a_blind_zone_alerts_the_technician_on_call_once_and_its_return_once(tmp_path: Path) -> None:
    inv = with_zones(load(tmp_path))
    ctx, glob = Context(inv, inv.delivery), GlobalMemory()  # type: ignore[arg-type]
    assert zones.plan(sight(), glob, ctx, T0) == []  # the core just started: the poller's time to show up
    alert = zones.plan(sight({"tame": T0}), glob, ctx, T0)
    tech = inv.delivery.technicians[ctx.oncall("twr-t", T0)[0]]  # type: ignore[union-attr]
    assert [(i.channel, i.recipient, i.template, i.incident) for i in alert] == [
        ("email", tech.email, "technician_zone_blind", f"ZONE-tame-{int(T0)}"),
        ("mqtt", tech.id, "", f"ZONE-tame-{int(T0)}")]  # the technicians' topic, as an incident's alert
    mqtt = alert[1].data
    assert (mqtt["topic"], mqtt["retain"]) == ("isp/technicians/tame", False)
    assert {k: mqtt["payload"][k] for k in ("incident", "kind", "event", "zone", "node", "technician", "pollers")} == {
        "incident": f"ZONE-tame-{int(T0)}", "kind": "blind", "event": "zone_blind", "zone": "tame", "node": "twr-t",
        "technician": tech.id, "pollers": "p-tame"}
    data = alert[0].data
    assert (data["zone"], data["node"], data["municipality_name"], data["pollers"]) == ("tame", "twr-t", "Tame",
                                                                                       "p-tame")
    assert inv.pollers is not None
    assert data["targets"] == sum(z == "tame" for z in inv.pollers.zone_of.values())
    assert glob.zones == {"tame": T0}
    for later in (T0 + 1, T0 + 3600):  # the same episode: nothing more, whatever the step's time
        assert zones.plan(sight({"tame": later}), glob, ctx, later) == []
    back = zones.plan(sight(seen={"tame"}), glob, ctx, T0 + 900)
    assert [(i.recipient, i.template, i.incident, i.data["duration_min"]) for i in back[:1]] == [
        (tech.email, "technician_zone_back", f"ZONE-tame-{int(T0)}", 15)]
    assert [(i.action, i.data["payload"]["event"]) for i in back[1:]] == [("zone_back_mqtt", "zone_back")]
    assert glob.zones == {} and zones.plan(sight(seen={"tame"}), glob, ctx, T0 + 901) == []
    again = zones.plan(sight({"tame": T0 + 2000}), glob, ctx, T0 + 2000)  # a new episode: a new alert
    assert {i.incident for i in again} == {f"ZONE-tame-{int(T0 + 2000)}"} and len(again) == 2


def test_the_memory_carries_an_episode_across_a_restart(tmp_path: Path) -> None:
    """Stored and read back (what a restart does): the zone blind again later is the same episode, and
    a poller seen after the restart, or the zone dropped from the config, ends it once."""
    inv = with_zones(load(tmp_path))
    ctx, glob = Context(inv, inv.delivery), GlobalMemory()  # type: ignore[arg-type]
    assert len(zones.plan(sight({"tame": T0}), glob, ctx, T0)) == 2  # e-mail and MQTT
    stored = GlobalMemory.from_dict(glob.to_dict())
    assert zones.plan(sight({"tame": T0 + 500}), stored, ctx, T0 + 500) == []
    assert zones.plan(sight(), stored, ctx, T0 + 500) == []  # not heard yet after the restart: waits
    assert [i.incident for i in zones.plan(sight(seen={"tame"}), stored, ctx, T0 + 600)] == [f"ZONE-tame-{int(T0)}"] * 2
    gone = GlobalMemory.from_dict(glob.to_dict())
    back = zones.plan(sight(configured=()), gone, ctx, T0 + 600)
    assert [i.action for i in back] == ["zone_back", "zone_back_mqtt"] and gone.zones == {}
    assert GlobalMemory.from_dict({}).zones == {}  # a memory stored before zones existed


def test_nobody_on_call_or_no_zone_targets_means_no_item(tmp_path: Path) -> None:
    inv = load(tmp_path)  # no pollers: section
    ctx, glob = Context(inv, inv.delivery), GlobalMemory()  # type: ignore[arg-type]
    assert zones.plan(sight({"tame": T0}), glob, ctx, T0) == [] and glob.zones == {"tame": T0}


def test_the_watch_sees_a_zone_only_through_a_live_poller() -> None:
    """``sight``: a zone is seen once one of its pollers is heard and not silent; an old retained
    heartbeat (a poller dead before the core started) is not; the start's grace is neither."""
    watch = ZoneWatch({"tame": ["p-1", "p-2"], "arauca": ["p-3"]}, 60.0, T0)
    assert watch.sight(T0 + 1) == Sight({}, frozenset(), frozenset({"tame", "arauca"}))
    watch.heard("p-3", T0 - 3600)  # retained, from an hour ago
    watch.heard("p-2", T0 + 5)
    assert watch.sight(T0 + 10).seen == {"tame"}
    watch.step(T0 + 61)
    now = watch.sight(T0 + 61)
    assert set(now.blind) == {"arauca"} and now.blind["arauca"].at == T0 + 61 and now.seen == {"tame"}
    assert now.blind["arauca"].pollers == ("p-3",) and now.blind["arauca"].last_heard == T0 - 3600


# -- the whole core, real mosquitto and SMTP -------------------------------------------------------------

CONFIG = """
municipalities: [{{id: saravena, name: Saravena}}]
sites: [{{id: twr-site, municipality: saravena, name: Torre Saravena}}]
service_classes: {{residencial: {{response_hours: 24, availability_target: 98.0}}}}
polling: {{interval: 60}}
daemon: {{state_dir: var, metrics_listen: ""}}
nodes:
  - {{id: twr-s, kind: tower, address: 127.0.0.2, site: twr-site}}
  - {{id: ap-s, kind: ap, address: 127.0.0.3, parent: twr-s, site: twr-site}}
customers:
  - {{id: C1, name: Cliente 1, service_class: residencial, contacts: {{email: c1@example.com}},
      endpoints: [{{id: cpe-1, kind: cpe, address: 127.0.0.4, parent: ap-s}}]}}
pollers:
  brokers: [{{host: 127.0.0.1, port: {mqtt}}}]
  heartbeat: 0.5s
  silent_after: 3s
  zones: [{{id: saravena, municipalities: [saravena], pollers: [p-saravena]}}]
delivery:
  smtp: {{host: 127.0.0.1, port: {smtp}, security: none, from: "NOC <noc@isp.example>"}}
  technicians: [{{id: ana, name: Ana Torres, email: ana@isp.example}}]
  oncall: [{{municipality: "*", shifts: [{{days: [mon-sun], tiers: [ana]}}]}}]
  customers: {{kinds: [outage, suspected], channels: [email], company: Llanos Net}}
  mqtt: {{host: 127.0.0.1, port: {mqtt}}}
  retry: {{initial: 0.2s, maximum: 1s}}
"""


def zone_rows(db: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return [(a, r) for a, r in con.execute("SELECT action, recipient FROM outbox WHERE incident LIKE 'ZONE-%'")]
    finally:
        con.close()


def subjects(smtp: SmtpServer) -> list[str]:
    mails: list[EmailMessage] = list(smtp.logical().values())
    assert {str(m["To"]) for m in mails} <= {"ana@isp.example"}  # never a customer
    return sorted(str(m["Subject"]) for m in mails)


@pytest.mark.servers
async def test_a_silent_poller_is_one_technician_alert_across_a_core_restart_and_one_recovery(
        tmp_path: Path) -> None:
    for d in ("mqtt", "smtp", "core"):
        (tmp_path / d).mkdir()
    broker, smtp = Mosquitto(tmp_path / "mqtt"), SmtpServer(tmp_path / "smtp")
    cfg = tmp_path / "core" / "sites.yaml"
    cfg.write_text(CONFIG.format(mqtt=broker.port, smtp=smtp.port))
    db = tmp_path / "core" / "var" / "monitor.db"
    spool = PollerSpool(tmp_path / "spool.db", "p-saravena", "saravena")

    def poller() -> asyncio.Task[None]:
        return asyncio.create_task(PollerLink(spool, [Broker("127.0.0.1", broker.port)], heartbeat=0.5).run())

    def zone_seen(d: Daemon) -> bool:
        return d.zones is not None and "saravena" in d.zones.watch.sight(d.clock.now()).seen

    async def core() -> tuple[Daemon, asyncio.Task[None]]:
        d = Daemon(cfg)
        return d, asyncio.create_task(d.run())

    async def stop(d: Daemon, task: asyncio.Task[None]) -> None:
        d.request_stop()
        await asyncio.wait_for(task, 60)

    heard: list[dict[str, object]] = []  # the technicians' topic, as Ana's phone app subscribes to it
    listening = asyncio.Event()

    async def phone() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="ana-phone") as client:
            await client.subscribe("isp-monitor/technicians/#", qos=1)
            listening.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes) and str(message.topic) == "isp-monitor/technicians/saravena"
                heard.append(json.loads(message.payload))

    def events() -> list[object]:
        return [m["event"] for m in heard]

    with started(broker), started(smtp):
        app = asyncio.create_task(phone())
        await until(listening.is_set, 60, "the technician's app subscribed")
        daemon, task = await core()
        link = poller()
        try:
            await until(lambda: zone_seen(daemon), 60, "the poller heard")
            await cancel_until_done(link)  # it stops heartbeating
            await until(lambda: len(subjects(smtp)) == 1 and events() == ["zone_blind"], 60,
                        "the blind zone's alert, by e-mail and MQTT")
            first = subjects(smtp)[0]  # Ana reads Spanish (the default)
            assert first.startswith("[ZONE-saravena-") and "SIN VISIBILIDAD zona saravena" in first
            assert heard[0]["incident"] == first[1:].split("]")[0]  # the same episode's reference
            assert {k: heard[0][k] for k in ("kind", "zone", "node", "technician", "pollers", "targets")} == {
                "kind": "blind", "zone": "saravena", "node": "twr-s", "technician": "ana", "pollers": "p-saravena",
                "targets": 3}
            await stop(daemon, task)

            daemon, task = await core()  # restarted while the zone is still blind
            await until(lambda: daemon.zones is not None and "saravena" in daemon.zones.watch.blind, 60,
                        "the zone blind again after the restart")  # its delivery sync ran in the same step
            # the same episode: no second alert
            assert sorted(zone_rows(db)) == [("zone_blind", "ana@isp.example"), ("zone_blind_mqtt", "ana")]
            link = poller()  # it returns
            await until(lambda: len(subjects(smtp)) == 2 and events() == ["zone_blind", "zone_back"], 60,
                        "the recovery, by e-mail and MQTT")
            assert "VISIBLE de nuevo: zona saravena" in subjects(smtp)[1]
            assert subjects(smtp)[0].split("]")[0] == subjects(smtp)[1].split("]")[0]  # one episode, one tag
            assert heard[1]["incident"] == heard[0]["incident"]
            assert sorted(zone_rows(db)) == [("zone_back", "ana@isp.example"), ("zone_back_mqtt", "ana"),
                                             ("zone_blind", "ana@isp.example"), ("zone_blind_mqtt", "ana")]
            assert max(smtp.repeats().values()) == 1
        finally:
            await cancel_until_done(link)
            if not task.done():
                await stop(daemon, task)
            await cancel_until_done(app)
            spool.close()
    assert events() == ["zone_blind", "zone_back"]  # once each, the restart included
