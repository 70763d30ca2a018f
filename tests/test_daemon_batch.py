"""The daemon polls ICMP-only targets in batches (one ``poll_many`` per tick), with the same outcomes
as polling each target on its own: real ICMP on loopback, some addresses blocked by the firewall
(tests/firewall.py), the probe's own counters to tell which path ran."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitor.daemon import Daemon
from monitor.inventory.loader import load_inventory
from monitor.probes.icmp import IcmpProbe
from tests.firewall import icmp_block
from tests.servers.common import free_port, until
from tests.test_daemon import changes, states
from tests.test_daemon import write_config as daemon_config

pytestmark = pytest.mark.root

INTERVAL = 0.2  # tests/test_daemon.py's
ENDPOINTS = [f"127.77.1.{i}" for i in range(10, 34)]
TARGETS = len(ENDPOINTS) + 3  # and its core, ap-1 and cpe-1
BLOCKED = ENDPOINTS[:4]


def write_config(folder: Path) -> Path:
    """tests/test_daemon.py's network (interval 0.2 s, 1 echo, DOWN after 2 polls) plus 24 endpoints."""
    folder.mkdir()
    cpes = "".join(f"      - {{id: cpe-x{i}, kind: cpe, address: {a}, parent: ap-1}}\n"
                   for i, a in enumerate(ENDPOINTS))
    return daemon_config(folder, free_port(), cpes)


async def run_until_settled(cfg: Path, batch_ahead: float | None) -> tuple[list[tuple[str, str, str, str]], IcmpProbe]:
    """Run the daemon until every blocked endpoint is DOWN and every other target UP; its changes."""
    db = cfg.parent / "var" / "monitor.db"
    daemon = Daemon(cfg, batch_ahead=batch_ahead)
    task = asyncio.create_task(daemon.run())
    down = {f"cpe-x{ENDPOINTS.index(a)}" for a in BLOCKED}
    try:
        await until(lambda: len(s := states(db)) == TARGETS
                    and all((v == "down") == (k in down) for k, v in s.items()), what="blocked down, others up")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 10)
    assert isinstance(daemon.icmp, IcmpProbe)
    return changes(db), daemon.icmp


async def test_due_icmp_targets_are_polled_as_one_batch_with_the_outcomes_of_single_polls(tmp_path: Path) -> None:
    with icmp_block() as fw:
        fw.block(*BLOCKED)
        batched, probe = await run_until_settled(write_config(tmp_path / "batch"), batch_ahead=INTERVAL)
        # every target is due within one interval of a tick: the first tick takes all 27 at once, and
        # so does each one after it (a batch of one would be a single poll)
        assert probe.single_polls == 0
        assert probe.batches >= 2  # a blocked endpoint is DOWN after its second poll
        assert probe.batched_polls / probe.batches > TARGETS * 0.75
        single, probe = await run_until_settled(write_config(tmp_path / "single"), batch_ahead=None)
        assert probe.batches == 0 and probe.single_polls >= TARGETS
    assert sorted(batched) == sorted(single)
    assert ("cpe-x0", "unknown", "down", "2 consecutive failed polls: blocked") in batched
    assert sum(1 for c in batched if c[3] == "first reply") == TARGETS - len(BLOCKED)


async def test_poll_many_gives_what_poll_gives_per_target(tmp_path: Path) -> None:
    """Probe level, the same targets both ways, answered and blocked."""
    inv = load_inventory(write_config(tmp_path / "cfg"))
    targets = list(inv.targets.values())
    probe = IcmpProbe()
    await probe.start()
    try:
        with icmp_block() as fw:
            fw.block(*BLOCKED)
            many = await probe.poll_many(targets, 1.0)
            one = [await probe.poll(t, 1.0) for t in targets]
    finally:
        await probe.close()

    def outcome(r: object) -> tuple[object, ...]:
        return tuple(getattr(r, k) for k in ("target", "address", "sent", "received", "error"))

    assert [outcome(r) for r in many] == [outcome(r) for r in one]
    assert sum(1 for r in many if r.error == "blocked") == len(BLOCKED)
    assert probe.batches == 1 and probe.batched_polls == len(targets) and probe.single_polls == len(targets)
