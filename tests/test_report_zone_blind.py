"""A blind remote zone in the reports (issue 14): while every poller of a zone is silent the core cannot
tell whether its targets are up or down, so a report counts that time as unknown, neither up nor
down, for the zone's targets only; a change its poller confirmed meanwhile and handed over later
(a partition, not a dead poller) counts from its real time. The episodes are what the core's
:class:`~monitor.remote.core.BlindZones` recorded, read back by ``monitor report``'s source, on
SQLite and PostgreSQL (``where``, tests/store_engines.py)."""

from __future__ import annotations

from pathlib import Path

from monitor.remote.core import BlindZones
from monitor.report.compute import compute
from monitor.report.model import Figures, Period
from monitor.report.source import load_input
from monitor.state import State, StateChange, TargetState
from monitor.store import EventStore
from tests.store_engines import Where, pg_server_fixture, where_fixture  # noqa: F401
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
