"""A blind remote zone in the reports (issue 14): while every poller of a zone is silent the core cannot
tell whether its targets are up or down, so a report counts that time as unknown, neither up nor
down, for the zone's targets only; a change its poller confirmed meanwhile and handed over later
(a partition, not a dead poller) counts from its real time. The episodes are what the core's
:class:`~monitor.remote.core.BlindZones` recorded, read back by ``monitor report``'s source, on
SQLite and PostgreSQL (``where``, tests/store_engines.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from monitor.remote.core import BlindZones
from monitor.remote.link import Broker, CoreFeed, PollerLink
from monitor.remote.silence import ZoneWatch
from monitor.remote.spool import PollerSpool
from monitor.report.compute import compute
from monitor.report.model import Figures, Period
from monitor.report.source import load_input
from monitor.state import State, StateChange, TargetState
from monitor.store import EventStore
from tests.servers.common import until
from tests.servers.mosquitto import Mosquitto
from tests.store_engines import Where, pg_server_fixture, where_fixture  # noqa: F401
from tests.test_remote_link import stop
from tests.test_remote_vantage_core import inventory

T0 = 1_796_550_000.0


def figures(where: Where, tmp_path: Path, until: float) -> dict[str, Figures]:
    report = compute(load_input(where, inventory(tmp_path), Period(T0, until, "test"), until=until), by="node")
    return {r.key: r.figures for r in report.rows}


def test_a_blind_zones_time_is_unknown_there_only_but_what_its_poller_handed_over(
        where: Where, tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    assert inv.pollers is not None
    store = EventStore(where)
    run = store.run_started(T0)
    store.append([StateChange(t, State.UNKNOWN, State.UP, T0, "answers") for t in inv.targets])
    states = {t: TargetState(State.UP, T0) for t in inv.targets}
    zones = BlindZones.watching(inv, store, states, T0)
    for p in ("p-town", "p-noc"):
        zones.heard(p, T0 + 100)  # their last word: nothing is known of saravena after it
    assert [n.zone for n in zones.step(T0 + 100 + inv.pollers.silent_after + 1)] == ["saravena"]
    zones.heard("p-town", T0 + 400)  # back; its spool brings the tower's DOWN, confirmed meanwhile
    store.append([StateChange("twr-s", State.UP, State.DOWN, T0 + 200, "2 consecutive failed polls")])
    store.run_alive(run, T0 + 1000)
    assert store.blind_zones() == [("saravena", T0 + 100, T0 + 400)]

    got = figures(where, tmp_path, T0 + 1000)
    assert (got["core"].up_s, got["core"].unknown_s) == (1000, 0)  # the NOC's zone: seen all along
    for t in ("ap-s", "cpe-1", "cpe-2"):  # nobody saw them for 300 s: neither up nor down
        assert (got[t].up_s, got[t].unknown_s, got[t].down_s) == (700, 300, 0), t
    # the tower: unknown until its DOWN, down from its real time on, one failure
    assert (got["twr-s"].up_s, got["twr-s"].unknown_s, got["twr-s"].down_s, got["twr-s"].failures) == (
        100, 100, 800, 1)
    store.close()


def test_a_core_restart_ends_the_blind_episode_it_left_open(where: Where, tmp_path: Path) -> None:
    """The core stopped while the zone was blind: its next start ends that episode (the time between
    is a period without a monitor, unknown anyway), so it does not run on for ever in the reports."""
    inv = inventory(tmp_path)
    assert inv.pollers is not None
    store = EventStore(where)
    zones = BlindZones.watching(inv, store, {}, T0)
    zones.step(T0 + inv.pollers.silent_after + 1)
    assert store.blind_zones() == [("saravena", T0, None)]
    BlindZones.watching(inv, store, {}, T0 + 500)
    assert store.blind_zones() == [("saravena", T0, T0 + 500)]
    store.close()


def test_a_blind_zone_its_poller_kept_polling_through_counts_as_its_log_says(where: Where, tmp_path: Path) -> None:
    """The same episode, but the poller was alive all along, only cut off from the core (its heartbeat
    says it has polled since before the episode): once its spool is in (a heartbeat sent after its
    return, its number taken) the episode is cut back to nothing, and the zone's time counts as its
    log says: up, the tower down from its real DOWN. A poller that restarted during the episode
    covers it from its restart on; old heartbeats (sent before the return) cover nothing yet."""
    inv = inventory(tmp_path)
    assert inv.pollers is not None
    store = EventStore(where)
    run = store.run_started(T0)
    store.append([StateChange(t, State.UNKNOWN, State.UP, T0, "answers") for t in inv.targets])
    zones = BlindZones.watching(inv, store, {t: TargetState(State.UP, T0) for t in inv.targets}, T0)
    for p in ("p-town", "p-noc"):
        zones.heard(p, T0 + 100)
    zones.step(T0 + 100 + inv.pollers.silent_after + 1)
    zones.heard("p-town", T0 + 400)
    store.append([StateChange("twr-s", State.UP, State.DOWN, T0 + 200, "2 consecutive failed polls")])
    zones.current("p-town", T0 + 150, T0 - 50)  # sent before the return (waited in its connection)
    assert store.blind_zones() == [("saravena", T0 + 100, T0 + 400)]
    zones.current("p-town", T0 + 401, T0 + 250)  # polling only since a restart at T0 + 250
    assert store.blind_zones() == [("saravena", T0 + 100, T0 + 250)]
    zones.current("p-noc", T0 + 402, T0 - 50)  # the NOC's poller ran all along: the rest is watched too
    assert store.blind_zones() == [("saravena", T0 + 100, T0 + 100)]
    store.run_alive(run, T0 + 1000)
    got = figures(where, tmp_path, T0 + 1000)
    for t in ("ap-s", "cpe-1", "cpe-2"):
        assert (got[t].up_s, got[t].unknown_s, got[t].down_s) == (1000, 0, 0), t
    assert (got["twr-s"].up_s, got["twr-s"].unknown_s, got["twr-s"].down_s) == (200, 0, 800)
    store.close()


@pytest.mark.servers
async def test_a_poller_cut_from_its_broker_and_back_leaves_no_unknown_time(tmp_path: Path) -> None:
    """Over a real mosquitto: the poller's link goes away (its backhaul) while it keeps polling and
    spooling, the core declares its zone blind, the link comes back: its heartbeats carry
    ``polling_since``, and once its spool is in the episode is cut back to nothing."""
    inv = inventory(tmp_path)
    assert inv.pollers is not None
    (tmp_path / "mqtt").mkdir()
    broker = Mosquitto(tmp_path / "mqtt")
    broker.start()
    store = EventStore(tmp_path / "monitor.db")
    start = time.time()
    states = {t: TargetState(State.UP, start) for t in inv.targets}
    zones = BlindZones(inv, ZoneWatch({"saravena": ("p-town",)}, 2.0, start), store, states)

    async def on_changes(poller: str, changes: Sequence[StateChange]) -> None:
        store.append(changes)

    async def steps() -> None:
        while True:
            zones.step(time.time())
            await asyncio.sleep(0.05)

    prefix = inv.pollers.prefix
    feed = CoreFeed([Broker("127.0.0.1", broker.port)], {"p-town": "saravena"}, inv.pollers.zone_of, on_changes,
                    prefix=prefix, watch=zones)
    spool = PollerSpool(tmp_path / "spool.db", "p-town", "saravena")
    polling_since = time.time()

    def link() -> PollerLink:
        return PollerLink(spool, [Broker("127.0.0.1", broker.port)], prefix=prefix, heartbeat=0.2,
                          resend_after=1.0, polling_since=polling_since)

    tasks = [asyncio.create_task(feed.run()), asyncio.create_task(steps())]
    poller = asyncio.create_task(link().run())
    try:
        await until(lambda: "p-town" in feed.last_seen, 60, "the poller heard")
        await stop([poller])  # its backhaul fails; it polls on
        await until(lambda: "saravena" in zones.watch.blind, 60, "the zone blind")
        spool.add([StateChange("twr-s", State.UP, State.DOWN, time.time(), "2 consecutive failed polls")])
        poller = asyncio.create_task(link().run())
        await until(lambda: spool.backlog() == 0 and "saravena" not in zones.watch.blind, 60, "back, spool in")
        await until(lambda: all(b == a for _, a, b in store.blind_zones()), 60,
                    f"the episode cut back to nothing: {store.blind_zones()}")
        assert len(store.blind_zones()) >= 1
    finally:
        await stop([poller, *tasks])
        broker.stop()
        spool.close()
        store.close()
