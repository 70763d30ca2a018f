"""The poller's sink (:class:`monitor.remote.poller.Publisher`) and the core's logging of a burst.

A core failure makes each poller confirm its whole zone down in one batch ICMP round: those changes
must reach the spool as a few messages in one transaction, in order, not one message and one fsync
each (bench/pollers: 25,000 a poller). And the core must not write 100,000 log lines for them."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from monitor.inventory.loader import load_inventory
from monitor.remote.core import RemoteIntake
from monitor.remote.messages import MAX_CHANGES, decode
from monitor.remote.poller import Publisher
from monitor.remote.spool import PollerSpool
from monitor.state import State, StateChange
from monitor.store import EventStore
from tests.servers.mosquitto import Mosquitto
from tests.test_remote_core import config_text, write
from tests.test_remote_link import T0

ZONE_OF = {f"cpe-{i}": "saravena" for i in range(12_000)}


class Link:
    """What Publisher needs of a PollerLink: to be told that the spool has news."""

    def __init__(self) -> None:
        self.told = 0

    def added(self) -> None:
        self.told += 1


def down(i: int) -> StateChange:
    return StateChange(f"cpe-{i}", State.UP, State.DOWN, T0 + i, "3 consecutive failed polls: timeout")


async def test_changes_confirmed_in_one_turn_are_spooled_together_in_order(tmp_path: Path) -> None:
    spool = PollerSpool(tmp_path / "spool.db", "p-saravena", "saravena")
    link = Link()
    publish = Publisher(spool, link)  # type: ignore[arg-type]
    task = asyncio.create_task(publish.run())
    try:
        for i in range(12_000):  # one batch ICMP round: no await between the confirmations
            publish(down(i))
        assert spool.backlog() == 0  # nothing written inside the round
        for _ in range(100):
            if spool.backlog():
                break
            await asyncio.sleep(0)
        messages = spool.pending(limit=100)
        assert [seq for seq, _ in messages] == [1, 2, 3]  # 5,000 + 5,000 + 2,000: one transaction
        assert link.told == 1
        taken = [c for _, raw in messages for c in decode(raw, ZONE_OF, {"p-saravena": "saravena"}).changes]
        assert taken == [down(i) for i in range(12_000)]
        assert max(len(decode(raw, ZONE_OF, {"p-saravena": "saravena"}).changes) for _, raw in messages) == MAX_CHANGES
        publish(down(0))  # a later turn: a message of its own
        for _ in range(100):
            if spool.last_seq() == 4:
                break
            await asyncio.sleep(0)
        assert spool.last_seq() == 4 and link.told == 2
    finally:
        task.cancel()
        spool.close()


def test_flush_at_stop_spools_what_is_pending(tmp_path: Path) -> None:
    spool = PollerSpool(tmp_path / "spool.db", "p-saravena", "saravena")
    publish = Publisher(spool, Link())  # type: ignore[arg-type]
    publish(down(1))
    publish(down(2))
    publish.flush()
    publish.flush()  # nothing more: no empty message
    assert spool.last_seq() == 1 and publish.pending == []
    spool.close()


async def test_the_core_logs_a_burst_in_a_bounded_number_of_lines(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each of a message's first LOG_EACH (20; 2 here) downs its own line (as the core's own polls), the rest one line
    with the count; every change is still stored and correlated."""
    monkeypatch.setenv("MQTT_CORE_PASS", "unused")
    (tmp_path / "mqtt").mkdir()  # the config names a broker; nothing connects to it here
    inv = load_inventory(write(tmp_path / "core", config_text(Mosquitto(tmp_path / "mqtt"))))
    db = tmp_path / "core" / "var" / "monitor.db"
    db.parent.mkdir()
    store = EventStore(db)
    noted: list[StateChange] = []
    intake = RemoteIntake(inv, store, {}, noted.append, db.parent)
    changes = [StateChange(t, State.UP, State.DOWN, T0 + i, "3 consecutive failed polls: timeout")
               for i, t in enumerate(("twr-s", "ap-s", "cpe-1", "cpe-2", "cpe-3"))]
    monkeypatch.setattr("monitor.remote.core.LOG_EACH", 2)
    with caplog.at_level(logging.WARNING, logger="monitor.remote"):
        await intake.on_changes("p-saravena", changes)
    lines = [r for r in caplog.records if r.name == "monitor.remote"]
    assert [r.getMessage() for r in lines] == ["target down", "target down",
                                              "more targets down, degraded or unknown in the same batch"]
    assert lines[2].kv["down"] == 3 and lines[2].kv["poller"] == "p-saravena"  # type: ignore[attr-defined]
    assert noted == changes and {c.target for c in store.changes()} == {c.target for c in changes}
    store.close()
