"""Several vantage points at the core (issue 14): two pollers of one zone, combined before correlation.

The core stores and correlates the *effective* state (monitor.remote.vantage): a tower only one
poller sees down is not an outage, the second poller's report makes it one, once; a poller whose
uplink fails is set aside; a silent poller is set aside while the other is heard; a vantage node the
core polls itself blinds the poller that sees through it. Through the real intake and event store,
and once through a real mosquitto with two poller links."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from monitor.inventory.loader import load_inventory
from monitor.inventory.model import Inventory
from monitor.remote.core import RemoteIntake
from monitor.remote.link import Broker, PollerLink
from monitor.remote.spool import PollerSpool
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.servers.common import until
from tests.servers.mosquitto import PASSWORD, USER, Mosquitto
from tests.test_remote_link import running
from tests.tsdb_support import started

UP, DOWN, UNK = State.UP, State.DOWN, State.UNKNOWN
T0 = 1_796_550_000.0
TOWN = ["twr-s", "ap-s", "cpe-1", "cpe-2"]
CONFIG = """
municipalities: [{id: arauca, name: Arauca}, {id: saravena, name: Saravena}]
sites:
  - {id: noc, municipality: arauca, name: NOC}
  - {id: twr-site, municipality: saravena, name: Torre Saravena}
service_classes:
  residencial: {response_hours: 24, availability_target: 98.0}
daemon: {state_dir: var, metrics_listen: ""}
nodes:
  - {id: core, kind: router, address: 127.0.0.1, site: noc}
  - {id: twr-s, kind: tower, address: 127.0.0.2, parent: core, site: twr-site}
  - {id: ap-s, kind: ap, address: 127.0.0.3, parent: twr-s, site: twr-site}
customers:
  - {id: C1, name: Uno, service_class: residencial,
     endpoints: [{id: cpe-1, kind: cpe, address: 127.0.0.4, parent: ap-s}]}
  - {id: C2, name: Dos, service_class: residencial,
     endpoints: [{id: cpe-2, kind: cpe, address: 127.0.0.5, parent: ap-s}]}
pollers:
  brokers: [{host: 127.0.0.1, port: PORT, username: USER, password: {env: MQTT_CORE_PASS}}]
  zones:
    - {id: noc, municipalities: [arauca]}
    - {id: saravena, municipalities: [saravena], pollers: [p-town, p-noc], vantage: {p-noc: core}}
"""


def inventory(tmp_path: Path, port: int = 1883) -> Inventory:
    path = tmp_path / "sites.yaml"
    path.write_text(CONFIG.replace("PORT", str(port)).replace("USER", USER))
    return load_inventory(path, env={"MQTT_CORE_PASS": PASSWORD})


def ch(target: str, old: State, new: State, ts: float) -> StateChange:
    return StateChange(target, old, new, ts, "2 consecutive failed polls: timeout" if new is DOWN else "answers")


@pytest.fixture
def intake(tmp_path: Path) -> RemoteIntake:
    store = EventStore(tmp_path / "monitor.db")
    noted: list[StateChange] = []
    intake = RemoteIntake(inventory(tmp_path), store, {}, noted.append, tmp_path)
    intake.noted = noted  # type: ignore[attr-defined]
    return intake


async def both_see_the_town_up(intake: RemoteIntake) -> None:
    for p in ("p-town", "p-noc"):
        await intake.on_changes(p, [ch(t, UNK, UP, T0) for t in TOWN])


async def test_a_tower_one_poller_sees_down_is_no_outage_and_both_make_one(intake: RemoteIntake) -> None:
    await both_see_the_town_up(intake)
    noted: list[StateChange] = intake.noted  # type: ignore[attr-defined]
    assert [(c.target, c.new) for c in noted] == [(t, UP) for t in TOWN]  # the first view of each: up
    noted.clear()
    await intake.on_changes("p-town", [ch("twr-s", UP, DOWN, T0 + 60)])
    assert noted == [] and intake.states["twr-s"].state is UP  # the NOC sees it answer
    await intake.on_changes("p-noc", [ch("twr-s", UP, DOWN, T0 + 75)])
    await intake.on_changes("p-noc", [ch("twr-s", UP, DOWN, T0 + 75)])  # a repeat (QoS 1)
    assert [(c.target, c.old, c.new, c.ts) for c in noted] == [("twr-s", UP, DOWN, T0 + 75)]
    assert noted[0].reason.endswith("down from every vantage point: p-town, p-noc")
    stored = [c for c in intake.store.changes() if c.target == "twr-s"]
    assert [(c.new, c.ts) for c in stored] == [(UP, T0), (DOWN, T0 + 75)]  # the effective changes, once
    assert intake.states["twr-s"].state is DOWN


async def test_a_town_poller_whose_uplink_fails_is_set_aside(intake: RemoteIntake,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "monitor.remote")
    await both_see_the_town_up(intake)
    noted: list[StateChange] = intake.noted  # type: ignore[attr-defined]
    noted.clear()
    await intake.on_changes("p-town", [ch(t, UP, DOWN, T0 + 60) for t in TOWN])
    assert noted == [] and all(intake.states[t].state is UP for t in TOWN)
    lines = [(r.getMessage(), r.kv) for r in caplog.records if r.name == "monitor.remote"]  # type: ignore[attr-defined]
    assert lines == [("poller blind, its view set aside",
                      {"poller": "p-town", "zone": "saravena", "why": "blind: all 4 targets it sees are down"})]
    await intake.on_changes("p-town", [ch("twr-s", DOWN, UP, T0 + 300)])
    assert caplog.records[-1].getMessage() == "poller sees its zone again, its view counts"
    assert noted == []


async def test_a_silent_poller_is_set_aside_while_the_other_is_heard(intake: RemoteIntake) -> None:
    await both_see_the_town_up(intake)
    noted: list[StateChange] = intake.noted  # type: ignore[attr-defined]
    noted.clear()
    await intake.on_changes("p-noc", [ch("ap-s", UP, DOWN, T0 + 60)])  # the town still sees it
    assert noted == []
    intake.silence({"p-town"}, T0 + 200)  # the town poller said nothing for silent_after
    assert [(c.target, c.new, c.ts) for c in noted] == [("ap-s", DOWN, T0 + 200)]
    intake.silence({"p-town", "p-noc"}, T0 + 300)  # the whole zone silent: blind (BlindZones), no change here
    intake.silence(set(), T0 + 400)
    assert [(c.target, c.new) for c in noted[1:]] == [("ap-s", UP)]


async def test_a_poller_back_from_silence_is_not_believed_before_its_backlog_is_in(intake: RemoteIntake) -> None:
    """The town poller was cut from the broker while the tower failed: the NOC's view made it down. Back,
    the town's old view (up) would bring the tower up until its spool's failure arrived: one real
    change, one stored change."""
    await both_see_the_town_up(intake)
    noted: list[StateChange] = intake.noted  # type: ignore[attr-defined]
    noted.clear()
    intake.silence({"p-town"}, T0 + 100)
    await intake.on_changes("p-noc", [ch("twr-s", UP, DOWN, T0 + 130)])
    intake.silence(set(), T0 + 200)  # heard again
    await intake.on_changes("p-town", [ch("twr-s", UP, DOWN, T0 + 128)])  # its backlog
    intake.caught_up("p-town", T0 + 205)  # its heartbeat's number is taken
    assert [(c.target, c.new, c.ts) for c in noted] == [("twr-s", DOWN, T0 + 130)]
    assert intake.vantage is not None and intake.vantage.aside("saravena") == {}


async def test_a_core_restart_keeps_what_each_poller_saw_where_it_differs(tmp_path: Path) -> None:
    """The NOC poller sees the AP down, the town poller sees it answer: up. After a core restart the
    town's report of the AP failing is an outage, because the NOC's view was kept (remote-views.json),
    not guessed from the stored "up" (which would outvote the town and miss it)."""
    store = EventStore(tmp_path / "monitor.db")
    noted: list[StateChange] = []
    intake = RemoteIntake(inventory(tmp_path), store, {}, noted.append, tmp_path)
    await both_see_the_town_up(intake)
    await intake.on_changes("p-noc", [ch("ap-s", UP, DOWN, T0 + 60)])
    intake.silence(set(), T0 + 61)  # the daemon's once-a-second step: the views are saved
    assert (tmp_path / "remote-views.json").exists()
    noted.clear()
    again = RemoteIntake(inventory(tmp_path), store, {}, noted.append, tmp_path)  # the core restarted
    assert again.vantage is not None and again.vantage.views["p-noc"]["ap-s"] == (DOWN, T0 + 60)
    await again.on_changes("p-town", [ch("ap-s", UP, DOWN, T0 + 300)])
    assert [(c.target, c.new, c.ts) for c in noted] == [("ap-s", DOWN, T0 + 300)]
    (tmp_path / "remote-views.json").write_text('{"v": 1, "views": {"p-noc": {"ap-s": ["sideways", 1]}}}')
    third = RemoteIntake(inventory(tmp_path), store, {}, noted.append, tmp_path)  # unreadable: the seed alone
    assert third.vantage is not None and third.vantage.views["p-noc"]["ap-s"][0] is DOWN
    store.close()


async def test_a_vantage_node_the_core_polls_blinds_the_poller_behind_it(intake: RemoteIntake) -> None:
    await both_see_the_town_up(intake)
    noted: list[StateChange] = intake.noted  # type: ignore[attr-defined]
    await intake.on_changes("p-town", [ch("cpe-2", UP, DOWN, T0 + 60)])
    noted.clear()
    intake.core_change(ch("core", UP, DOWN, T0 + 100))  # the NOC's own router: the NOC poller is blind
    assert [(c.target, c.new) for c in noted] == [("cpe-2", DOWN)]  # the town's view alone now
    intake.core_change(ch("core", DOWN, UP, T0 + 200))
    assert [(c.target, c.new) for c in noted[1:]] == [("cpe-2", UP)]


async def test_effective_changes_the_store_refuses_wait_in_order_and_are_stored_once(tmp_path: Path) -> None:
    """The store is locked: the message is not acknowledged (StorageError), its effective change
    waits; the resend changes no view, and the held change is stored and correlated once."""
    db = tmp_path / "monitor.db"
    store = EventStore(db, busy_timeout=0.2)
    noted: list[StateChange] = []
    intake = RemoteIntake(inventory(tmp_path), store, {}, noted.append, tmp_path)
    await both_see_the_town_up(intake)
    await intake.on_changes("p-town", [ch("twr-s", UP, DOWN, T0 + 60)])
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    message = [ch("twr-s", UP, DOWN, T0 + 70)]
    with pytest.raises(Exception, match="locked"):
        await intake.on_changes("p-noc", message)
    assert len(noted) == len(TOWN)
    locker.execute("ROLLBACK")
    locker.close()
    await intake.on_changes("p-noc", message)  # the poller's resend
    assert [(c.target, c.new, c.ts) for c in noted[len(TOWN):]] == [("twr-s", DOWN, T0 + 70)]
    assert [c.new for c in store.changes() if c.target == "twr-s"] == [UP, DOWN]
    store.close()


@pytest.mark.servers
async def test_two_pollers_of_one_zone_through_a_real_broker(tmp_path: Path) -> None:
    """Both pollers publish through mosquitto (their spools, numbering and acks): the town's report
    of a tower down alone moves nothing at the core, the NOC's makes one stored change."""
    (tmp_path / "mqtt").mkdir()
    broker = Mosquitto(tmp_path / "mqtt")
    inv = inventory(tmp_path, broker.auth_port)
    store = EventStore(tmp_path / "monitor.db")
    noted: list[StateChange] = []
    intake = RemoteIntake(inv, store, {}, noted.append, tmp_path)
    feed = intake.feed(inv)
    links = {p: PollerLink(PollerSpool(tmp_path / f"{p}.db", p, "saravena"),
                           [Broker("127.0.0.1", broker.auth_port, USER, PASSWORD)], heartbeat=0.5, resend_after=1.0)
             for p in ("p-town", "p-noc")}

    def send(poller: str, *changes: StateChange) -> None:
        links[poller].spool.add(list(changes))
        links[poller].added()

    with started(broker):
        async with running(feed.run(), *(link.run() for link in links.values())):
            await until(lambda: feed.connected.is_set() and all(lk.connected.is_set() for lk in links.values()), 60,
                        "core and both pollers connected")
            for p in links:
                send(p, *(ch(t, UNK, UP, T0) for t in TOWN))
            await until(lambda: all(lk.spool.backlog() == 0 for lk in links.values()), 60, "both views taken")
            assert sorted(c.target for c in noted) == sorted(TOWN)
            send("p-town", ch("twr-s", UP, DOWN, T0 + 60))
            await until(lambda: links["p-town"].spool.backlog() == 0, 60, "the town's report acknowledged")
            assert len(noted) == len(TOWN) and intake.states["twr-s"].state is UP
            send("p-noc", ch("twr-s", UP, DOWN, T0 + 65))
            await until(lambda: len(noted) == len(TOWN) + 1, 60, "the tower down at the core")
            await until(lambda: links["p-noc"].spool.backlog() == 0, 60, "the NOC's report acknowledged")
            intake.silence({"p-town"}, T0 + 100)  # as the daemon's zone step would after silent_after
            intake.silence(set(), T0 + 101)
            assert intake.vantage is not None and intake.vantage.catching == {"p-town"}
            await until(lambda: intake.vantage is not None and not intake.vantage.catching, 60,
                        "the town poller's next heartbeat: nothing of it missing, it counts again")
    for link in links.values():
        link.spool.close()
    assert [(c.target, c.new, c.ts) for c in noted[len(TOWN):]] == [("twr-s", DOWN, T0 + 65)]
    assert [c.new for c in store.changes() if c.target == "twr-s"] == [UP, DOWN]
    store.close()
